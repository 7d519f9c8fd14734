package nixload

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/testenv"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/fixture"
	"golang.org/x/sys/unix"
)

// Loader processes: the test binary re-executed with these variables set
// runs one LoadFile and prints the Image as JSON.
const (
	envLoaderStore = "NIXLOAD_TEST_LOADER_STORE"
	envLoaderImage = "NIXLOAD_TEST_LOADER_IMAGE"
	envLoaderGC    = "NIXLOAD_TEST_LOADER_GC" // run GC instead, print its stats
)

// TestLoaderProcess is the body of a loader process; in a normal run it
// returns at once.
func TestLoaderProcess(t *testing.T) {
	store := os.Getenv(envLoaderStore)
	if store == "" {
		return
	}
	s, err := Open(store)
	if err == nil && os.Getenv(envLoaderGC) != "" {
		var st GCStats
		if st, err = s.GC(nil, nil); err == nil {
			json.NewEncoder(os.Stdout).Encode(st)
			os.Exit(0)
		}
	}
	if err == nil {
		var img *Image
		img, err = s.LoadFile(context.Background(), os.Getenv(envLoaderImage), LoadOptions{})
		if err == nil {
			json.NewEncoder(os.Stdout).Encode(img)
			os.Exit(0)
		}
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

// procEnv is a directory every test uid can read, holding a copy of the
// test binary, the images, and a store owned by the loaders' uid.
type procEnv struct {
	dir, bin, store string
	cred            *syscall.Credential
}

func newProcEnv(t *testing.T, asUser bool) *procEnv {
	t.Helper()
	dir, err := os.MkdirTemp("", "nixload-proc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &procEnv{dir: dir, bin: filepath.Join(dir, "nixload.test"), store: filepath.Join(dir, "cache")}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.CopyFile(p.bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(p.store, 0o700); err != nil {
		t.Fatal(err)
	}
	if asUser {
		uid, gid, ok := unprivileged()
		if !ok {
			t.Fatal("no unprivileged uid to switch to")
		}
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(p.store, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func (p *procEnv) loader(image string) *exec.Cmd {
	cmd := exec.Command(p.bin, "-test.run=^TestLoaderProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envLoaderStore+"="+p.store, envLoaderImage+"="+image)
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	return cmd
}

// gc runs GC in a process of the loaders' uid.
func (p *procEnv) gc(t *testing.T) GCStats {
	t.Helper()
	cmd := p.loader("")
	cmd.Env = append(cmd.Env, envLoaderGC+"=1")
	out, err := cmd.Output()
	var st GCStats
	if err == nil {
		err = json.Unmarshal(out, &st)
	}
	if err != nil {
		t.Fatalf("gc: %s %v", out, err)
	}
	return st
}

func (p *procEnv) writeImage(t *testing.T, name string, layers []fixture.Layer, opts fixture.ArchiveOptions) string {
	t.Helper()
	var buf bytes.Buffer
	if err := fixture.WriteDockerArchive(&buf, layers, nil, opts); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// identities are the users loader processes run as: always the current
// one, and an unprivileged uid when the tests run as root.
func identities() []struct {
	name         string
	unprivileged bool
} {
	ids := []struct {
		name         string
		unprivileged bool
	}{{"current user", false}}
	if _, _, ok := unprivileged(); ok {
		ids = append(ids, struct {
			name         string
			unprivileged bool
		}{"unprivileged", true})
	}
	return ids
}

// bulkyLayers makes layers big enough that concurrent loaders overlap.
func bulkyLayers(t *testing.T) []fixture.Layer {
	t.Helper()
	layers, err := fixture.LargeImage(busybox(t), 24<<20, 400)
	if err != nil {
		t.Fatal(err)
	}
	return layers
}

func TestConcurrentLoadersUnpackEachLayerOnce(t *testing.T) {
	layers := bulkyLayers(t)
	for _, id := range identities() {
		for _, first := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s manifest first=%v", id.name, first), func(t *testing.T) {
				p := newProcEnv(t, id.unprivileged)
				image := p.writeImage(t, "img.tar", layers, fixture.ArchiveOptions{ManifestFirst: first})
				const n = 4
				var cmds []*exec.Cmd
				var outs []*bytes.Buffer
				for i := 0; i < n; i++ {
					cmd := p.loader(image)
					var out, errOut bytes.Buffer
					cmd.Stdout, cmd.Stderr = &out, &errOut
					if err := cmd.Start(); err != nil {
						t.Fatal(err)
					}
					cmds = append(cmds, cmd)
					outs = append(outs, &out)
					t.Cleanup(func() {
						if t.Failed() {
							t.Logf("loader stderr: %s", errOut.String())
						}
					})
				}
				total := 0
				for i, cmd := range cmds {
					if err := cmd.Wait(); err != nil {
						t.Fatalf("loader %d: %v", i, err)
					}
					var img Image
					if err := json.Unmarshal(outs[i].Bytes(), &img); err != nil {
						t.Fatalf("loader %d output %q: %v", i, outs[i], err)
					}
					if img.ChainID != chainOf(t, layers) {
						t.Fatalf("loader %d: chain %s", i, img.ChainID)
					}
					total += img.UnpackedLayers
				}
				if total != len(layers) {
					t.Fatalf("layers unpacked %d times in total, want %d", total, len(layers))
				}
				assertStoreState(t, p.store, len(layers), 1)
			})
		}
	}
}

// assertStoreState checks the published layers and trees and that no temp
// dirs are left.
func assertStoreState(t *testing.T, store string, layers, trees int) {
	t.Helper()
	assertPublished(t, store, map[string]int{"layers": layers, "trees": trees, "tmp": 0})
}

func assertPublished(t *testing.T, store string, counts map[string]int) {
	t.Helper()
	for sub, want := range counts {
		ents, err := os.ReadDir(filepath.Join(store, sub))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			if sub == "layers" && !e.IsDir() {
				continue // each layer's record beside it
			}
			names = append(names, e.Name())
		}
		if len(names) != want {
			t.Errorf("%s/ has %v, want %d entries", sub, names, want)
		}
	}
}

func TestKilledLoaderLeavesOnlyTempDirs(t *testing.T) {
	layers := bulkyLayers(t)
	for _, id := range identities() {
		t.Run(id.name, func(t *testing.T) {
			p := newProcEnv(t, id.unprivileged)
			image := p.writeImage(t, "img.tar", layers, fixture.ArchiveOptions{})
			full, err := os.ReadFile(image)
			if err != nil {
				t.Fatal(err)
			}
			fifo := filepath.Join(p.dir, "img.fifo")
			if err := unix.Mkfifo(fifo, 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := p.loader(fifo)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			killed := false
			t.Cleanup(func() {
				if !killed {
					cmd.Process.Kill()
					cmd.Wait()
				}
			})
			w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				// The loader blocks reading the rest, mid-layer, until killed.
				w.Write(full[:len(full)*3/4])
			}()
			waitForPartialLayer(t, p.store)
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			killed = true
			w.Close()
			if ents, _ := os.ReadDir(filepath.Join(p.store, "tmp")); len(ents) == 0 {
				t.Fatal("the killed loader left no temp dir: it was not mid-unpack")
			}
			assertPublished(t, p.store, map[string]int{"layers": 0, "trees": 0, "images": 0})
			if t.Failed() {
				return
			}
			// A loader killed while assembling leaves the image's modes:
			// 0555 and 0000 directories with files inside.
			leftover := p.leftoverTemp(t)
			for _, d := range []struct {
				path string
				mode os.FileMode
			}{{"ro", 0o555}, {"none", 0}} {
				dir := filepath.Join(leftover, d.path)
				os.Mkdir(dir, 0o755)
				os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o400)
				if p.cred != nil {
					os.Chown(dir, int(p.cred.Uid), int(p.cred.Gid))
					os.Chown(filepath.Join(dir, "f"), int(p.cred.Uid), int(p.cred.Gid))
				}
				os.Chmod(dir, d.mode)
			}
			// --gc removes it, with the loader gone.
			if st := p.gc(t); st.Temp != 1 || st.Bytes == 0 {
				t.Fatalf("gc after the crash: %+v, want the temp dir removed and its bytes counted", st)
			}
			assertPublished(t, p.store, map[string]int{"tmp": 0})
			// The next loader, as the same user, succeeds.
			out, err := p.loader(image).Output()
			if err != nil {
				t.Fatalf("load after the crash: %v", err)
			}
			var img Image
			if err := json.Unmarshal(out, &img); err != nil || img.UnpackedLayers != len(layers) {
				t.Fatalf("load after the crash: %s %v", out, err)
			}
			assertStoreState(t, p.store, len(layers), 1)
		})
	}
}

// leftoverTemp is the one temp dir a killed loader left.
func (p *procEnv) leftoverTemp(t *testing.T) string {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(p.store, "tmp"))
	for _, e := range ents {
		if e.IsDir() {
			return filepath.Join(p.store, "tmp", e.Name())
		}
	}
	t.Fatal("no temp dir left")
	return ""
}

// waitForPartialLayer waits until a loader's temp dir holds unpacked files.
func waitForPartialLayer(t *testing.T, store string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		found := false
		filepath.WalkDir(filepath.Join(store, "tmp"), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() && strings.Contains(p, "/data/") {
				found = true
				return filepath.SkipAll
			}
			return nil
		})
		if found {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the loader never started unpacking")
}

func TestOpenAndGCKeepLiveTempDirs(t *testing.T) {
	e := newEnv(t)
	tmp, err := e.store.newTemp()
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.remove()
	if _, err := Open(e.store.Root()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp.path); err != nil {
		t.Fatalf("Open removed a live loader's temp dir: %v", err)
	}
	if st, err := e.store.GC(nil, nil); err != nil || st.Temp != 0 {
		t.Fatalf("GC: %+v %v", st, err)
	}
	if _, err := os.Stat(tmp.path); err != nil {
		t.Fatalf("GC removed a live loader's temp dir: %v", err)
	}
}

// TestUnreadableDirsLoadForEveryUser: a directory the image makes
// unreadable or unsearchable (0000, 0311) is loaded by a loader of any
// uid, root's permission checks aside, with its mode less the owner's
// write bit; GC of the same uid then removes the tree.
func TestUnreadableDirsLoadForEveryUser(t *testing.T) {
	layers := []fixture.Layer{{Entries: []fixture.Entry{
		fixture.Dir("locked/", 0o000),
		fixture.File("locked/f", []byte("x"), 0o644),
		fixture.Dir("blind/", 0o311),
		fixture.File("blind/g", []byte("y"), 0o600),
	}}}
	for _, id := range identities() {
		t.Run(id.name, func(t *testing.T) {
			p := newProcEnv(t, id.unprivileged)
			image := p.writeImage(t, "img.tar", layers, fixture.ArchiveOptions{})
			out, err := p.loader(image).CombinedOutput()
			if err != nil {
				t.Fatalf("load: %v: %s", err, out)
			}
			var img Image
			if err := json.Unmarshal(out, &img); err != nil {
				t.Fatalf("loader output %q: %v", out, err)
			}
			for path, want := range map[string]os.FileMode{"locked": os.ModeDir, "blind": os.ModeDir | 0o111} {
				st, err := os.Lstat(filepath.Join(img.Rootfs, path))
				if err != nil || st.Mode() != want {
					t.Errorf("%s: mode %v (%v), want %v", path, st.Mode(), err, want)
				}
			}
			if err := os.RemoveAll(filepath.Join(p.store, "sources")); err != nil {
				t.Fatal(err)
			}
			if st := p.gc(t); st.Trees != 1 {
				t.Errorf("GC removed %d trees, want 1", st.Trees)
			}
		})
	}
}

package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/fixture"
)

// These tests run images shaped as real tools build them (podman save -m,
// nix's wrapper scripts and result links, rootfs imports with odd entry
// kinds) and check what a command inside sees.

func baseLayer(t *testing.T) fixture.Layer {
	t.Helper()
	bb, err := busyboxPath()
	if err != nil {
		t.Fatal(err)
	}
	l, err := fixture.BusyboxLayer(bb)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// configWith is the fixture config plus env.
func configWith(env ...string) *ocispec.ImageConfig {
	cfg := fixture.DefaultConfig()
	cfg.Env = append(cfg.Env, env...)
	return &cfg
}

// writeFor writes data at path and hands it to the user.
func writeFor(t *testing.T, u *testUser, path string, data []byte, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	chown(t, u, path)
	return path
}

func dockerArchive(t *testing.T, layers []fixture.Layer, cfg *ocispec.ImageConfig) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := fixture.WriteDockerArchive(&buf, layers, cfg, fixture.ArchiveOptions{}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// twins writes x.tar and y.tar: the same layers, configs TWIN=x and TWIN=y
// (the same size, as a changed Env in a flake gives).
func twins(t *testing.T, u *testUser, dir string) (x, y string) {
	t.Helper()
	layers := []fixture.Layer{baseLayer(t)}
	x = writeFor(t, u, filepath.Join(dir, "x.tar"), dockerArchive(t, layers, configWith("TWIN=x")), 0o644)
	y = writeFor(t, u, filepath.Join(dir, "y.tar"), dockerArchive(t, layers, configWith("TWIN=y")), 0o644)
	return x, y
}

// wrapper writes an image script that prints archive, as nix builds one:
// scripts for archives whose paths are the same length are the same
// length, and like every Nix store file they get mtime 1.
func wrapper(t *testing.T, u *testUser, path, archive string) {
	t.Helper()
	writeFor(t, u, path, []byte("#!/bin/sh\nexec cat '"+archive+"'\n"), 0o755)
	if err := os.Chtimes(path, time.Unix(1, 0), time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
}

// callModes are a one-shot container and a warm one (whose repeated
// calls the fast path serves).
var callModes = []struct {
	name string
	args []string
}{{"one-shot", []string{"--no-keep-warm"}}, {"warm", nil}}

func echoTwin(t *testing.T, u *testUser, wd, image string, mode []string, env []string) result {
	t.Helper()
	args := append(append([]string{"--image", image, "-d", wd}, mode...), "sh", "-c", "echo $TWIN")
	return u.run(context.Background(), t, runOpts{dir: wd, env: env}, args...)
}

// TestConfigOnlyTwins: images with the same layers and different configs
// never share a config: X, Y, X prints X, Y, X, one-shot and warm.
func TestConfigOnlyTwins(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		x, y := twins(t, u, wd)
		settle(t, x, y) // old enough for the source cache and tickets to be used
		for _, m := range callModes {
			for i, img := range []string{x, y, x} {
				want := strings.TrimSuffix(filepath.Base(img), ".tar")
				r := echoTwin(t, u, wd, img, m.args, nil)
				if r.code != 0 || r.stdout != want+"\n" {
					t.Fatalf("%s call %d (%s): %v, want %s", m.name, i, filepath.Base(img), r, want)
				}
			}
		}
		// The warm calls just made left tickets: the fast path serves
		// each twin its own container.
		if r := echoTwin(t, u, wd, x, nil, require); r.code != 0 || r.stdout != "x\n" {
			t.Fatalf("fast path, x: %v", r)
		}
		// --load says what each is and what they share.
		type loaded struct {
			ID      string `json:"id"`
			ChainID string `json:"chain_id"`
			Rootfs  string `json:"rootfs"`
			Shared  struct {
				Tree   []string       `json:"tree"`
				Layers map[string]int `json:"layers"`
			} `json:"shared"`
		}
		var lx, ly loaded
		for _, l := range []struct {
			img string
			out *loaded
		}{{x, &lx}, {y, &ly}} {
			r := u.run(context.Background(), t, runOpts{}, "--load", l.img)
			wantOK(t, r)
			if err := json.Unmarshal([]byte(r.stdout), l.out); err != nil {
				t.Fatalf("--load %s: %q: %v", l.img, r.stdout, err)
			}
		}
		if lx.ID == ly.ID || lx.ChainID != ly.ChainID || lx.Rootfs != ly.Rootfs ||
			!slices.Contains(ly.Shared.Tree, lx.ID) || ly.Shared.Layers[lx.ID] != 1 {
			t.Fatalf("--load of the twins: %+v and %+v; want two ids sharing one tree", lx, ly)
		}
	})
}

// TestRebuiltImageFile: a wrapper script rebuilt at the same path, of the
// same size and with mtime 1 (and often the same inode), is the new image.
func TestRebuiltImageFile(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		for _, m := range callModes {
			wd := u.workdir(t)
			x, y := twins(t, u, wd)
			script := filepath.Join(wd, "image")
			wrapper(t, u, script, x)
			settle(t, x, y, script)
			var before syscall.Stat_t
			syscall.Stat(script, &before)
			if r := echoTwin(t, u, wd, script, m.args, nil); r.code != 0 || r.stdout != "x\n" {
				t.Fatalf("%s, first build: %v", m.name, r)
			}
			os.Remove(script)
			wrapper(t, u, script, y)
			var after syscall.Stat_t
			syscall.Stat(script, &after)
			if after.Size != before.Size || after.Mtim != before.Mtim {
				t.Fatal("the rebuilt wrapper differs in size or mtime: the test proves nothing")
			}
			t.Logf("%s: inode reused: %v", m.name, after.Ino == before.Ino)
			if r := echoTwin(t, u, wd, script, m.args, nil); r.code != 0 || r.stdout != "y\n" {
				t.Fatalf("%s, rebuilt wrapper: %v, want y", m.name, r)
			}
		}
	})
}

// TestResultSymlinkSwitched: `result` pointed at a new build runs the new
// image.
func TestResultSymlinkSwitched(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		for _, m := range callModes {
			wd := u.workdir(t)
			x, y := twins(t, u, wd)
			result := filepath.Join(wd, "result")
			if err := os.Symlink(x, result); err != nil {
				t.Fatal(err)
			}
			settle(t, x, y)
			if r := echoTwin(t, u, wd, result, m.args, nil); r.code != 0 || r.stdout != "x\n" {
				t.Fatalf("%s, first build: %v", m.name, r)
			}
			tmp := result + ".new"
			if err := os.Symlink(y, tmp); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, result); err != nil {
				t.Fatal(err)
			}
			if r := echoTwin(t, u, wd, result, m.args, nil); r.code != 0 || r.stdout != "y\n" {
				t.Fatalf("%s, switched result: %v, want y", m.name, r)
			}
		}
	})
}

// TestEntryKindsInside: what the caller sees inside is the image's own
// modes (0555 directories, 0400 files), its FIFOs, and hardlinks to
// symlinks; device nodes are left out with a one-line notice on stderr,
// which is no terminal here.
func TestEntryKindsInside(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		kinds := fixture.Layer{Entries: []fixture.Entry{
			fixture.Dir("ro/", 0o555),
			fixture.File("ro/secret", []byte("s3cret\n"), 0o400),
			fixture.Dir("srv/", 0o755),
			{Name: "srv/fifo", Type: tar.TypeFifo, Mode: 0o620},
			fixture.Symlink("bin/x", "busybox"),
			fixture.Hardlink("bin/y", "bin/x"),
			{Name: "opt/special", Type: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		}}
		img := writeFor(t, u, filepath.Join(wd, "kinds.tar"), dockerArchive(t, []fixture.Layer{baseLayer(t), kinds}, nil), 0o644)
		probe := `stat -c '%a %F' /ro /ro/secret /srv/fifo; readlink /bin/y; cat /ro/secret; ` +
			`touch /ro/new 2>/dev/null && echo writable || echo read-only; test -e /opt/special || echo no-device`
		r := u.run(context.Background(), t, runOpts{dir: wd}, "--image", img, "-d", wd, "sh", "-c", probe)
		want := "555 directory\n400 regular file\n620 fifo\nbusybox\ns3cret\nread-only\nno-device\n"
		if r.code != 0 || r.stdout != want {
			t.Fatalf("inside: %v\nwant stdout %q", r, want)
		}
		if strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "1 device node(s) (opt/special) that a rootless sandbox cannot create") {
			t.Fatalf("stderr %q: want one notice line naming opt/special", r.stderr)
		}
		// Said when the image is unpacked, not on every call.
		if r := u.run(context.Background(), t, runOpts{dir: wd}, "--image", img, "-d", wd, "true"); r.code != 0 || r.stderr != "" {
			t.Fatalf("second call: %v", r)
		}
	})
}

// TestMultiImageArchive: an archive of two images is refused naming them,
// and FILE:REF picks one, warm calls and the fast path included.
func TestMultiImageArchive(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		base := baseLayer(t)
		imgs := []fixture.Image{
			{Layers: []fixture.Layer{base}, Config: configWith("WHO=alpha"), Tags: []string{"alpha:latest"}},
			{Layers: []fixture.Layer{base}, Config: configWith("WHO=beta"), Tags: []string{"localhost/beta:1"}},
		}
		var buf bytes.Buffer
		if err := fixture.WriteDockerArchiveImages(&buf, imgs, fixture.ArchiveOptions{}); err != nil {
			t.Fatal(err)
		}
		two := writeFor(t, u, filepath.Join(wd, "two.tar"), buf.Bytes(), 0o644)
		layout := filepath.Join(wd, "layout")
		if err := fixture.WriteOCIImagesLayout(layout, imgs, fixture.ArchiveOptions{}); err != nil {
			t.Fatal(err)
		}
		filepath.Walk(layout, func(p string, _ os.FileInfo, _ error) error { chown(t, u, p); return nil })
		settle(t, two)
		who := func(env []string, image string) result {
			return u.run(context.Background(), t, runOpts{dir: wd, env: env}, "--image", image, "-d", wd, "--no-keep-warm", "sh", "-c", "echo $WHO")
		}
		// Which image a reference names, by --load's id (no container).
		id := func(image string) string {
			r := u.run(context.Background(), t, runOpts{}, "--load", image)
			wantOK(t, r)
			var l struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
				t.Fatalf("--load %s: %q: %v", image, r.stdout, err)
			}
			return l.ID
		}
		for _, src := range []string{two, layout} {
			wantSandboxError(t, who(nil, src), "the archive holds 2 images (alpha:latest, localhost/beta:1): name one as "+src+":REF")
			wantSandboxError(t, who(nil, src+":gamma"), `no image "gamma" in the archive; it holds alpha:latest, localhost/beta:1`)
			alpha, beta := id(src+":alpha:latest"), id(src+":localhost/beta:1")
			if alpha == beta {
				t.Fatalf("%s: both references load %s", src, alpha)
			}
			for ref, want := range map[string]string{"alpha": alpha, "@0": alpha, "beta:1": beta, "@1": beta} {
				if got := id(src + ":" + ref); got != want {
					t.Fatalf("%s:%s loads %s, want %s", src, ref, got, want)
				}
			}
		}
		// What runs is the image named.
		for ref, want := range map[string]string{"alpha": "alpha", "@1": "beta"} {
			if r := who(nil, two+":"+ref); r.code != 0 || r.stdout != want+"\n" {
				t.Fatalf("%s:%s: %v, want %s", two, ref, r, want)
			}
		}
		warm := func(env []string) result {
			return u.run(context.Background(), t, runOpts{dir: wd, env: env}, "--image", two+":beta:1", "-d", wd, "sh", "-c", "echo $WHO")
		}
		for _, env := range [][]string{nil, require} {
			if r := warm(env); r.code != 0 || r.stdout != "beta\n" {
				t.Fatalf("warm FILE:REF (%v): %v", env, r)
			}
		}
		// An OCI index whose only platform is not this machine's.
		other := "arm64"
		if runtime.GOARCH == "arm64" {
			other = "amd64"
		}
		buf.Reset()
		foreign := []fixture.Image{{Layers: []fixture.Layer{base}, Platform: &ocispec.Platform{OS: "linux", Architecture: other}}}
		if err := fixture.WriteOCIImagesTar(&buf, foreign, fixture.ArchiveOptions{}); err != nil {
			t.Fatal(err)
		}
		f := writeFor(t, u, filepath.Join(wd, "foreign.tar"), buf.Bytes(), 0o644)
		wantSandboxError(t, who(nil, f), "the image is for linux/"+other+" only; this machine is linux/"+runtime.GOARCH)
	})
}

// TestRefusedFiles: files that are no image are refused in one line that
// says what they are.
func TestRefusedFiles(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		var src, deep, dirTar bytes.Buffer
		if err := fixture.WriteSourceTarball(&src, false); err != nil {
			t.Fatal(err)
		}
		if err := fixture.WriteSourceTarball(&deep, true); err != nil {
			t.Fatal(err)
		}
		if err := fixture.WriteDirLayoutTar(&dirTar, []fixture.Layer{baseLayer(t)}, nil); err != nil {
			t.Fatal(err)
		}
		dirLayout := filepath.Join(wd, "dirlayout")
		if err := fixture.WriteDirLayout(dirLayout, []fixture.Layer{baseLayer(t)}, nil); err != nil {
			t.Fatal(err)
		}
		filepath.Walk(dirLayout, func(p string, _ os.FileInfo, _ error) error { chown(t, u, p); return nil })
		for _, tc := range []struct {
			path, want string
		}{
			{writeFor(t, u, filepath.Join(wd, "src.tar"), src.Bytes(), 0o644), "not an image: the tar has no manifest.json or index.json"},
			{writeFor(t, u, filepath.Join(wd, "deep.tar"), deep.Bytes(), 0o644), "not an image: the tar holds pkg-1.0/src/lib/util.c"},
			{writeFor(t, u, filepath.Join(wd, "dir.tar"), dirTar.Bytes(), 0o644), "this is a containers-image dir: layout packed in a tar, which is not an image archive; unpack it and convert it with skopeo copy dir:DIR oci-archive:IMAGE.tar"},
			{dirLayout, dirLayout + " is a containers-image dir: layout, which is not supported: convert it with skopeo copy dir:" + dirLayout + " oci:NEWDIR"},
		} {
			wantSandboxError(t, u.run(context.Background(), t, runOpts{dir: wd}, "--image", tc.path, "-d", wd, "true"), tc.want)
		}
	})
}

// TestSparseLayerAndCap: a sparse layer stays small on disk and shows its
// full size inside; the cap on unpacked bytes refuses it (125, nothing
// left behind) until raised; a bad cap value is one clear line.
func TestSparseLayerAndCap(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		const size = 2 << 30
		sparse := fixture.Layer{Entries: []fixture.Entry{fixture.Sparse("sparse", size, 0o644,
			fixture.SparseChunk{Offset: 0, Data: []byte("head")}, fixture.SparseChunk{Offset: size - 4, Data: []byte("tail")})}}
		data := dockerArchive(t, []fixture.Layer{baseLayer(t), sparse}, nil)
		if len(data) > 8<<20 {
			t.Fatalf("the archive is %d bytes", len(data))
		}
		img := writeFor(t, u, filepath.Join(wd, "sparse.tar"), data, 0o644)
		run := func(args ...string) result {
			return u.run(context.Background(), t, runOpts{dir: wd}, append(append(args, "--image", img, "-d", wd), "sh", "-c", "stat -c %s /sparse; tail -c 4 /sparse")...)
		}
		wantSandboxError(t, run("--max-image-size", "1G"), "the image unpacks to more than 1GiB, the limit for one image; if you trust it, raise the limit with --max-image-size")
		if ents, _ := os.ReadDir(filepath.Join(u.cache, "nix-sandbox", "tmp")); len(ents) != 0 {
			t.Fatalf("the refused load left %d temp entries", len(ents))
		}
		wantSandboxError(t, run("--max-image-size", "lots"), `--max-image-size "lots": want a size from 1MiB to 1024TiB`)
		r := run()
		if r.code != 0 || r.stdout != "2147483648\ntail" {
			t.Fatalf("sparse image: %v", r)
		}
		out := u.run(context.Background(), t, runOpts{}, "--load", img)
		wantOK(t, out)
		var loaded struct {
			Rootfs string `json:"rootfs"`
		}
		if err := json.Unmarshal([]byte(out.stdout), &loaded); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(loaded.Rootfs, "sparse"), &st); err != nil || st.Size != size || st.Blocks*512 > 1<<20 {
			t.Fatalf("the sparse file in the cache: size %d, %d bytes on disk (%v)", st.Size, st.Blocks*512, err)
		}
	})
}

// TestLoadRecordsSource: after --load FILE, --image FILE is a cache hit:
// the image script does not run again.
func TestLoadRecordsSource(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		archive := writeFor(t, u, filepath.Join(wd, "img.tar"), dockerArchive(t, []fixture.Layer{baseLayer(t)}, nil), 0o644)
		counter := writeFor(t, u, filepath.Join(wd, "runs"), nil, 0o644)
		script := writeFor(t, u, filepath.Join(wd, "stream"), []byte("#!/bin/sh\necho run >> '"+counter+"'\nexec cat '"+archive+"'\n"), 0o755)
		settle(t, script)
		wantOK(t, u.run(context.Background(), t, runOpts{}, "--load", script))
		wantOK(t, u.run(context.Background(), t, runOpts{dir: wd}, "--image", script, "-d", wd, "--no-keep-warm", "true"))
		if b, _ := os.ReadFile(counter); string(b) != "run\n" {
			t.Fatalf("the image script ran %d times, want once", strings.Count(string(b), "run"))
		}
	})
}

// TestGCRemovesInterruptedLoad: a loader killed mid-layer leaves its temp
// dir; --gc removes it and says so.
func TestGCRemovesInterruptedLoad(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		// A layer of its own (no other test has it cached), 2 MB of data.
		blob := bytes.Repeat([]byte(wd), 2<<20/len(wd))
		own := fixture.Layer{Entries: []fixture.Entry{fixture.File("data/blob", blob, 0o644)}}
		archive := writeFor(t, u, filepath.Join(wd, "img.tar"), dockerArchive(t, []fixture.Layer{own, baseLayer(t)}, nil), 0o644)
		// Part of the archive, then a stall: the loader waits mid-layer.
		pidFile := writeFor(t, u, filepath.Join(wd, "stall.pid"), nil, 0o644)
		script := writeFor(t, u, filepath.Join(wd, "stall"), []byte("#!/bin/sh\nhead -c 600000 '"+archive+"'\necho $$ > '"+pidFile+"'\nexec sleep 120\n"), 0o755)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cmd := u.command(ctx, runOpts{}, "--load", script)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		tmp := filepath.Join(u.cache, "nix-sandbox", "tmp")
		waitFor(t, 30*time.Second, func() bool {
			select {
			case <-exited:
				t.Fatalf("the loader exited before it was killed: %s", stderr.String())
			default:
			}
			found := false
			filepath.Walk(tmp, func(p string, info os.FileInfo, err error) error {
				found = found || (err == nil && info.Mode().IsRegular() && strings.HasSuffix(p, "data/blob"))
				return nil
			})
			return found
		})
		cmd.Process.Kill()
		<-exited
		// The script runs in its own process group, which the killed
		// loader can no longer end: end it here.
		waitFor(t, 10*time.Second, func() bool { b, _ := os.ReadFile(pidFile); return len(b) > 0 })
		if b, _ := os.ReadFile(pidFile); len(b) > 0 {
			var pid int
			fmt.Sscan(string(b), &pid)
			if pid > 0 {
				syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
		ents, _ := os.ReadDir(tmp)
		if len(ents) == 0 {
			t.Fatal("the killed loader left no temp dir")
		}
		r := u.run(context.Background(), t, runOpts{}, "--gc")
		wantOK(t, r)
		if !strings.Contains(r.stdout, "and 1 temp dirs of interrupted loads") {
			t.Fatalf("--gc did not report the interrupted load: %v", r)
		}
		if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
			t.Fatalf("--gc left %d temp entries", len(ents))
		}
	})
}

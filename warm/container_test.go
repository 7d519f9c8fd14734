package warm

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

// containerWorld is one identity's sandbox: a busybox image, a workdir,
// a home, cache and temp roots, all owned by that identity.
type containerWorld struct {
	uid, gid uint32
	exe      string // the test binary, executable by uid
	temp     string
	spec     Spec
	workdir  string
}

type testIdentity struct {
	name     string
	uid, gid uint32
}

// containerIdentities are root and an unprivileged uid when the test runs
// as root, else the current user alone.
func containerIdentities(t *testing.T) []testIdentity {
	if os.Getuid() != 0 {
		return []testIdentity{{"self", uint32(os.Getuid()), uint32(os.Getgid())}}
	}
	uid, gid := unprivileged(t)
	return []testIdentity{{"root", 0, 0}, {"unprivileged", uid, gid}}
}

func requireUserns(t testing.TB) {
	t.Helper()
	cmd := exec.Command("/bin/true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS}
	if err := cmd.Run(); err != nil {
		skipOrFail(t, "user namespaces are not available: %v", err)
	}
}

// newContainerWorld builds the world for one identity.
func newContainerWorld(t testing.TB, id testIdentity) *containerWorld {
	t.Helper()
	bb, err := lookBusybox()
	if err != nil {
		skipOrFail(t, "busybox not found (install busybox-static): %v", err)
	}
	exe := publicTestBinary(t)
	base := shortTempDir(t)
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	w := &containerWorld{uid: id.uid, gid: id.gid, exe: exe, temp: filepath.Join(base, "t"), workdir: filepath.Join(base, "work")}
	rootfs := filepath.Join(base, "rootfs")
	cache := filepath.Join(base, "c")
	home := filepath.Join(base, "home")
	for _, d := range []string{filepath.Join(rootfs, "bin"), filepath.Join(rootfs, "etc"), cache, home, w.temp, w.workdir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := copyExecutable(bb, filepath.Join(rootfs, "bin", "busybox")); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(filepath.Join(rootfs, "bin", "busybox"), 0o755)
	for _, applet := range []string{"sh", "id", "cat", "grep", "touch", "sleep", "echo", "true", "ls", "hostname", "tr"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc", "passwd"), []byte("image:x:1234:1234::/:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := filepath.Walk(base, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(id.uid), int(id.gid))
	}); err != nil {
		t.Fatal(err)
	}
	img := oci.Image{Rootfs: rootfs}
	if dynamic(exe) {
		// The agent is this test binary; when it needs the host's libc,
		// the image borrows the host's library dirs (like the host image).
		img.HostBinds = []string{"/usr", "/lib", "/lib64"}
	}
	w.spec = Spec{
		Key:       Key(t.Name()),
		TTL:       time.Hour,
		Image:     "busybox-test",
		ChainID:   "sha256:test",
		CacheRoot: cache,
		Users:     []oci.User{{Name: "caller", UID: id.uid, GID: id.gid, Home: "/home/caller", Shell: "/bin/sh"}},
		Create: namespaceOptions(oci.Config{
			Image:      img,
			Workdir:    w.workdir,
			Home:       home,
			HomeTarget: "/home/caller",
			Hostname:   "sandbox",
		}),
	}
	t.Cleanup(func() { _ = Stop(w.temp, "all") })
	return w
}

// dynamic reports whether the ELF file at path needs a program interpreter.
func dynamic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return true
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}

// client runs the test binary as a client, as the world's identity.
func (w *containerWorld) client(t *testing.T, user UserSpec, argv ...string) *exec.Cmd {
	t.Helper()
	args, _ := json.Marshal(testClientArgs{TempRoot: w.temp, Spec: w.spec, Argv: argv,
		Env: []string{"PATH=/bin"}, Cwd: w.workdir, User: user})
	cmd := exec.Command(w.exe)
	cmd.Env = []string{envTestClient + "=" + string(args), "PATH=/usr/bin:/bin"}
	cmd.Dir = "/"
	if w.uid != uint32(os.Getuid()) || w.gid != uint32(os.Getgid()) {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: w.uid, Gid: w.gid}}
	}
	return cmd
}

func (w *containerWorld) caller() UserSpec { return UserSpec{Mode: "caller", UID: w.uid, GID: w.gid} }

// run runs argv to completion and returns stdout, stderr and exit code.
func (w *containerWorld) run(t *testing.T, user UserSpec, argv ...string) (string, string, int) {
	t.Helper()
	cmd := w.client(t, user, argv...)
	var out, serr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &serr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), serr.String(), code
}

func TestContainerEndToEnd(t *testing.T) {
	requireUserns(t)
	for _, id := range containerIdentities(t) {
		t.Run(id.name, func(t *testing.T) {
			w := newContainerWorld(t, id)
			t.Run("inside the container", func(t *testing.T) {
				out, serr, code := w.run(t, w.caller(), "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; hostname; ls /bin/busybox")
				want := oci.AgentTarget + " \nsandbox\n/bin/busybox\n"
				if code != 0 || out != want {
					t.Fatalf("exit %d stdout %q stderr %q, want %q", code, out, serr, want)
				}
			})
			t.Run("caller identity", func(t *testing.T) {
				out, serr, code := w.run(t, w.caller(), "sh", "-c", identityScript, "sh", w.workdir)
				if code != 0 {
					t.Fatalf("exit %d, stderr %q", code, serr)
				}
				want := [2]string{strconv.Itoa(int(w.uid)), strconv.Itoa(int(w.gid))}
				if got := [2]string{fieldOf(out, "uid"), fieldOf(out, "gid")}; got != want {
					t.Errorf("id -u/-g = %v, want %v", got, want)
				}
				if v := fieldOf(out, "CapEff"); strings.Trim(v, "0") != "" {
					t.Errorf("CapEff = %s, want 0", v)
				}
				fi, err := os.Stat(filepath.Join(w.workdir, "created"))
				if err != nil {
					t.Fatal(err)
				}
				if st := fi.Sys().(*syscall.Stat_t); st.Uid != w.uid || st.Gid != w.gid {
					t.Errorf("created file is %d:%d on the host, want %d:%d", st.Uid, st.Gid, w.uid, w.gid)
				}
			})
			t.Run("user root", func(t *testing.T) {
				out, serr, code := w.run(t, UserSpec{Mode: "root"}, "id", "-u")
				if code != 0 || strings.TrimSpace(out) != "0" {
					t.Fatalf("exit %d stdout %q stderr %q, want uid 0", code, out, serr)
				}
			})
			t.Run("caller name in passwd", func(t *testing.T) {
				out, _, code := w.run(t, w.caller(), "sh", "-c", "grep '^caller:' /etc/passwd; grep '^image:' /etc/passwd")
				if code != 0 || !strings.Contains(out, "caller:x:"+strconv.Itoa(int(w.uid))) || !strings.Contains(out, "image:x:1234") {
					t.Fatalf("exit %d, passwd lines %q", code, out)
				}
			})
			t.Run("agent binary not writable", func(t *testing.T) {
				for _, u := range []UserSpec{w.caller(), {Mode: "root"}} {
					_, _, code := w.run(t, u, "sh", "-c", "echo x >> /proc/1/exe || exit 9; echo y >> "+oci.AgentTarget+" || exit 9")
					if code != 9 {
						t.Errorf("user %s: writing the agent binary gave exit %d, want the write refused (9)", u.Mode, code)
					}
				}
			})
			t.Run("agent killed mid-request", func(t *testing.T) {
				cmd := w.client(t, w.caller(), "sh", "-c", "echo ready; sleep 100")
				var serr bytes.Buffer
				cmd.Stderr = &serr
				stdout, _ := cmd.StdoutPipe()
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
					_ = cmd.Wait()
					t.Fatalf("read %q, client stderr %q", line, serr.String())
				}
				m, err := readMeta(warmDir(w.temp, w.spec.Key))
				if err != nil {
					t.Fatal(err)
				}
				if err := syscall.Kill(m.AgentPid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				err = cmd.Wait()
				if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 125 || !strings.Contains(serr.String(), "agent died") {
					t.Fatalf("client: %v, stderr %q; want exit 125 saying the agent died", err, serr.String())
				}
				out, serr2, code := w.run(t, w.caller(), "echo", "healed")
				if code != 0 || out != "healed\n" {
					t.Fatalf("next call: exit %d stdout %q stderr %q", code, out, serr2)
				}
			})
			t.Run("orphans reaped by the agent", func(t *testing.T) {
				for i := 0; i < 5; i++ {
					if _, serr, code := w.run(t, w.caller(), "sh", "-c", "sleep 0.01 & sleep 0.01 & exit 0"); code != 0 {
						t.Fatalf("exit %d stderr %q", code, serr)
					}
				}
				time.Sleep(200 * time.Millisecond)
				out, _, _ := w.run(t, UserSpec{Mode: "root"}, "sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null | grep -c ') Z ' || true")
				if strings.TrimSpace(out) != "0" {
					t.Fatalf("%s zombies in the container", strings.TrimSpace(out))
				}
			})
			t.Run("one-shot leaves nothing", func(t *testing.T) {
				before, _ := os.ReadDir(warmRoot(w.temp))
				ws := *w
				ws.spec.OneShot = true
				out, serr, code := ws.run(t, w.caller(), "echo", "once")
				if code != 0 || out != "once\n" {
					t.Fatalf("exit %d stdout %q stderr %q", code, out, serr)
				}
				after, _ := os.ReadDir(warmRoot(w.temp))
				if len(after) != len(before) {
					t.Fatalf("warm root had %d entries, now %d", len(before), len(after))
				}
			})
			t.Run("list and stop", func(t *testing.T) {
				infos, err := List(w.temp)
				if err != nil || len(infos) != 1 || infos[0].Key != w.spec.Key || infos[0].ChainID != "sha256:test" || infos[0].Workdir != w.workdir {
					t.Fatalf("List = %+v, %v", infos, err)
				}
				if err := Stop(w.temp, "all"); err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(warmDir(w.temp, w.spec.Key)); err == nil {
					t.Fatal("warm dir left after Stop")
				}
				if procAlive(infos[0].Pid) {
					t.Fatal("agent alive after Stop")
				}
			})
		})
	}
}

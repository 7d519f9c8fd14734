package warm

import (
	"context"
	"fmt"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/testenv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/namespace"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netfwd"
)

// The test binary plays every part the sandbox binary plays, chosen by the
// same environment variables, plus a client part for tests that must kill
// a client process.
func TestMain(m *testing.M) {
	switch {
	case namespace.IsInit():
		namespace.Init()
	case IsAgent():
		os.Exit(RunAgent())
	case IsSupervisor():
		os.Exit(RunSupervisor())
	case os.Getenv(envTestClient) != "":
		os.Exit(testClientMain())
	case os.Getenv(envTestListener) != "":
		os.Exit(testListenerMain(os.Getenv(envTestListener)))
	}
	os.Exit(m.Run())
}

// envTestClient makes the test binary a client: the value is a JSON
// testClientArgs.
const envTestClient = "_WARM_TEST_CLIENT"

type testClientArgs struct {
	TempRoot string   `json:"temp_root"`
	Spec     Spec     `json:"spec"`
	Argv     []string `json:"argv"`
	Env      []string `json:"env"`
	Cwd      string   `json:"cwd"`
	User     UserSpec `json:"user"`
}

func testClientMain() int {
	var a testClientArgs
	if err := jsonUnmarshalString(os.Getenv(envTestClient), &a); err != nil {
		fmt.Fprintln(os.Stderr, "test client:", err)
		return 125
	}
	code, err := Run(context.Background(), a.TempRoot, a.Spec, Request{Argv: a.Argv, Env: a.Env, Cwd: a.Cwd, User: a.User})
	if err != nil {
		fmt.Fprintln(os.Stderr, "lectic-nix-sandbox:", err)
	}
	return code
}

// skipOrFail turns a skip into a failure when CI=true.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	testenv.Missing(t, fmt.Sprintf(format, args...))
}

// toolDir makes a directory of busybox applets, the PATH of test commands.
func toolDir(t *testing.T) string {
	t.Helper()
	bb, err := lookBusybox()
	if err != nil {
		skipOrFail(t, "busybox not found (install busybox-static): %v", err)
	}
	dir := shortTempDir(t)
	for _, name := range []string{"sh", "sleep", "cat", "true", "echo", "id", "ls", "touch", "kill", "grep", "head"} {
		if err := os.Symlink(bb, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "noexec"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func lookBusybox() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", os.ErrNotExist
}

// testAgent is an agent started directly by a test, as a plain process.
type testAgent struct {
	tempRoot string
	key      string
	build    string
	proc     *os.Process
}

type agentOpts struct {
	ttl     int
	oneShot bool
	cred    *syscall.Credential
	dirMode os.FileMode
	// reports, when set, is given the supervisor's end of a report
	// channel whose other end the agent serves (netreport.go).
	reports func(*netfwd.ReportSender)
}

// startTestAgent runs the test binary as an agent on T/warm/<key>/agent.sock.
func startTestAgent(t *testing.T, o agentOpts) *testAgent {
	t.Helper()
	tempRoot := shortTempDir(t)
	key := Key(t.Name())
	dir := warmDir(tempRoot, key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	lfd, err := listen(filepath.Join(dir, sockName))
	if err != nil {
		t.Fatal(err)
	}
	lf := os.NewFile(uintptr(lfd), "listener")
	defer lf.Close()
	env := []string{envAgent + "=1", envBuild + "=testbuild", envTTL + "=" + strconv.Itoa(o.ttl)}
	if o.oneShot {
		env = append(env, envOneShot+"=1")
	}
	files := []*os.File{nil, os.Stderr, os.Stderr, lf}
	if o.reports != nil {
		sender, agentEnd, err := netfwd.ReportPair()
		if err != nil {
			t.Fatal(err)
		}
		defer agentEnd.Close()
		t.Cleanup(func() { sender.Close() })
		o.reports(sender)
		env = append(env, envReports+"="+strconv.Itoa(len(files)))
		files = append(files, agentEnd)
	}
	exe := "/proc/self/exe"
	if o.cred != nil {
		exe = publicTestBinary(t)
		if err := os.Chown(dir, int(o.cred.Uid), int(o.cred.Gid)); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(tempRoot, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p, err := os.StartProcess(exe, []string{"agent"}, &os.ProcAttr{
		Env:   env,
		Files: files,
		Sys:   &syscall.SysProcAttr{Setpgid: true, Credential: o.cred, Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		t.Fatal(err)
	}
	a := &testAgent{tempRoot: tempRoot, key: key, build: "testbuild", proc: p}
	t.Cleanup(func() {
		_ = p.Kill()
		_, _ = p.Wait()
	})
	return a
}

// publicTestBinary copies the test binary where an unprivileged uid can
// execute it (the go build cache is private to root).
func publicTestBinary(t testing.TB) string {
	t.Helper()
	dir := shortTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "warm.test")
	if err := copyExecutable("/proc/self/exe", dst); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// unprivileged returns the uid/gid tests drop to: user sandboxtest when it
// exists, else nobody.
func unprivileged(t testing.TB) (uid, gid uint32) {
	t.Helper()
	if os.Getuid() != 0 {
		skipOrFail(t, "dropping to an unprivileged uid needs root")
	}
	u, g := testenv.Unprivileged()
	return uint32(u), uint32(g)
}

// shortTempDir keeps socket paths well below the sun_path limit.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "wt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeWarmDir(dir) })
	return dir
}

func (a *testAgent) spec() Spec { return Spec{Key: a.key, BuildID: a.build} }

// run runs argv through the agent with the given stdio and returns the
// exit code.
func (a *testAgent) run(t *testing.T, r Request) (int, error) {
	t.Helper()
	if r.Cwd == "" {
		r.Cwd = "/"
	}
	if r.User.Mode == "" {
		r.User.Mode = "root"
	}
	return Run(context.Background(), a.tempRoot, a.spec(), r)
}

// waitExit waits for the agent process to end within d.
func (a *testAgent) waitExit(t *testing.T, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		_, _ = a.proc.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("agent still running after %s", d)
	}
}

// procAlive reports whether pid exists and is not a zombie.
func procAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

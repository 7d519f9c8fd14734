package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/testenv"
)

// world is built once per test binary: the static sandbox binary, the fixture
// images, and a state directory per test user. Everything under root is
// world-traversable so the unprivileged user can reach it.
type world struct {
	root   string
	bin    string
	probe  string            // integration/probe, static; also in the busybox image
	images map[string]string // fixture name -> path
	users  []*testUser
	skip   string // why the sandbox tests cannot run on this machine
}

// testUser is one identity the suite runs the binary as. Each has its own
// cache, temp and data dirs, shared by the tests so images unpack once.
type testUser struct {
	name     string
	uid, gid int
	home     string
	cache    string
	temp     string
	data     string
}

var suite *world

func TestMain(m *testing.M) {
	if sock := os.Getenv(envListener); sock != "" {
		os.Exit(listenerMain(sock))
	}
	code, err := runSuite(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func runSuite(m *testing.M) (int, error) {
	root, err := os.MkdirTemp("", "lns-it-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(root)
	if err := os.Chmod(root, 0o755); err != nil {
		return 1, err
	}
	w := &world{root: root, images: map[string]string{}}
	if err := w.build(); err != nil {
		return 1, err
	}
	if err := w.makeImages(); err != nil {
		if testenv.InCI() {
			return 1, err
		}
		w.skip = err.Error()
	}
	if err := w.makeUsers(); err != nil {
		return 1, err
	}
	suite = w
	code := m.Run()
	w.stopAll()
	return code, nil
}

// build compiles the binary exactly as the Makefile does.
func (w *world) build() error {
	w.bin = filepath.Join(w.root, "bin", "lectic-nix-sandbox")
	cmd := exec.Command(filepath.Join(repoRoot(), "scripts", "build.sh"), w.bin)
	cmd.Dir = repoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build binary: %v\n%s", err, out)
	}
	w.probe = filepath.Join(w.root, "bin", "probe")
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd = exec.Command(goBin, "build", "-o", w.probe, "./integration/probe")
	cmd.Dir = repoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the probe: %v\n%s", err, out)
	}
	return os.Chmod(filepath.Dir(w.bin), 0o755)
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// makeUsers picks the identities to run as: when the suite runs as root,
// root itself and an unprivileged user (sandboxtest if present, else
// nobody); otherwise only the current user.
func (w *world) makeUsers() error {
	if os.Geteuid() != 0 {
		return w.addUser("self", os.Getuid(), os.Getgid())
	}
	if err := w.addUser("root", 0, 0); err != nil {
		return err
	}
	uid, gid := testenv.Unprivileged()
	return w.addUser("unprivileged", uid, gid)
}

func (w *world) addUser(name string, uid, gid int) error {
	base := filepath.Join(w.root, "u", name)
	u := &testUser{name: name, uid: uid, gid: gid,
		home: filepath.Join(base, "home"), cache: filepath.Join(base, "cache"),
		temp: filepath.Join(base, "t"), data: filepath.Join(base, "data")}
	for _, d := range []string{base, u.home, u.cache, u.temp, u.data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.Chown(d, uid, gid); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Dir(base), 0o755); err != nil {
		return err
	}
	w.users = append(w.users, u)
	return nil
}

func (w *world) stopAll() {
	for _, u := range w.users {
		u.run(context.Background(), nil, runOpts{}, "--stop", "all")
	}
}

// forEachUser runs f as a subtest for every identity.
func forEachUser(t *testing.T, f func(t *testing.T, u *testUser)) {
	t.Helper()
	if suite.skip != "" {
		t.Skip(suite.skip)
	}
	for _, u := range suite.users {
		t.Run(u.name, func(t *testing.T) { f(t, u) })
	}
}

type runOpts struct {
	env   []string // extra environment, NAME=VALUE
	stdin io.Reader
	dir   string // cwd of the client (default: a fresh workdir)
}

type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %q\nstderr: %q", r.code, r.stdout, r.stderr)
}

// env is the environment a Lectic user would have, pointed at this user's
// private state directories.
func (u *testUser) env(extra []string) []string {
	env := []string{
		"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
		"HOME=" + u.home,
		"USER=" + u.loginName(),
		"LECTIC_CACHE=" + u.cache,
		"LECTIC_TEMP=" + u.temp,
		"LECTIC_DATA=" + u.data,
		// Nix must never wait on the unreachable binary cache.
		"NIX_CONFIG=substituters =\nexperimental-features = nix-command flakes",
	}
	return append(env, extra...)
}

func (u *testUser) loginName() string {
	if pw, err := user.LookupId(strconv.Itoa(u.uid)); err == nil {
		return pw.Username
	}
	return "user" + strconv.Itoa(u.uid)
}

func (u *testUser) command(ctx context.Context, o runOpts, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, suite.bin, args...)
	cmd.Env = u.env(o.env)
	cmd.Dir = o.dir
	cmd.Stdin = o.stdin
	if os.Geteuid() == 0 && u.uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
			Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: u.groups()}}
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// groups gives the unprivileged user the supplementary groups it has on the
// host (nix-users matters for building through the daemon).
func (u *testUser) groups() []uint32 {
	pw, err := user.LookupId(strconv.Itoa(u.uid))
	if err != nil {
		return []uint32{}
	}
	ids, err := pw.GroupIds()
	if err != nil {
		return []uint32{}
	}
	var gs []uint32
	for _, id := range ids {
		if n, err := strconv.Atoi(id); err == nil {
			gs = append(gs, uint32(n))
		}
	}
	return gs
}

func (u *testUser) run(ctx context.Context, t *testing.T, o runOpts, args ...string) result {
	if t != nil {
		t.Helper()
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := u.command(ctx, o, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.code = 128 + int(ws.Signal())
		}
	default:
		if t != nil {
			t.Fatalf("run %v: %v", args, err)
		}
		r.code = -1
	}
	return r
}

// workdir makes a fresh directory owned by the user, as a project checkout
// would be.
func (u *testUser) workdir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp(filepath.Join(suite.root, "u", u.name), "w")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}
	return dir
}

// sandbox runs args in the sandbox on the busybox fixture with workdir wd.
func (u *testUser) sandbox(t *testing.T, wd string, o runOpts, args ...string) result {
	t.Helper()
	if o.dir == "" {
		o.dir = wd
	}
	full := append([]string{"--image", suite.images["busybox"], "-d", wd}, args...)
	return u.run(context.Background(), t, o, full...)
}

// wantOK fails the test unless r exited 0.
func wantOK(t *testing.T, r result) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("want exit 0, got %v", r)
	}
}

// wantSandboxError checks the 125 contract: one line on stderr containing
// want, nothing on stdout.
func wantSandboxError(t *testing.T, r result, want string) {
	t.Helper()
	if r.code != 125 {
		t.Fatalf("want exit 125, got %v", r)
	}
	if r.stdout != "" {
		t.Fatalf("stdout must stay empty on a sandbox failure, got %q", r.stdout)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.Contains(r.stderr, want) {
		t.Fatalf("want one stderr line containing %q, got %q", want, r.stderr)
	}
}

// chownTree hands a path created by the test (as root) to the user.
func chown(t *testing.T, u *testUser, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if err := os.Lchown(p, u.uid, u.gid); err != nil {
			t.Fatal(err)
		}
	}
}

// requireTool skips (or, in CI, fails) when a host tool is missing.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		testenv.Missing(t, name+" is not installed; install it to run this test")
	}
	return p
}

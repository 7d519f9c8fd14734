package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/testenv"
)

// attacker is the uid of the other local user in these tests: no test
// user has it.
const attacker = 12345

// envListener makes the test binary a unix socket listener at the path in
// its value, as another local user would run one to catch our calls.
const envListener = "_IT_LISTENER"

// listenerMain says "ready", then for each connection what it received.
func listenerMain(path string) int {
	lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Bind(lfd, &unix.SockaddrUnix{Name: path})
	}
	if err == nil {
		err = unix.Listen(lfd, 16)
	}
	if err == nil {
		// Anyone may connect, as an attacker would want.
		err = os.Chmod(path, 0o777)
	}
	if err != nil {
		fmt.Println("listen:", err)
		return 1
	}
	fmt.Println("ready")
	for {
		fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if err != nil {
			return 1
		}
		tv := unix.NsecToTimeval(int64(2 * time.Second))
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		buf := make([]byte, 1<<20)
		oob := make([]byte, unix.CmsgSpace(4*4))
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
		if err == nil && (n > 0 || oobn > 0) {
			fmt.Printf("received %d bytes and %d bytes of fds\n", n, oobn)
		} else {
			fmt.Println("received nothing")
		}
		unix.Close(fd)
	}
}

// foreignListener runs a listener as the attacker uid and returns its
// socket (made in a dir of the attacker's) and its report lines.
func foreignListener(t *testing.T) (sock string, lines *bufio.Scanner) {
	t.Helper()
	dir, err := os.MkdirTemp(suite.root, "attacker")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "listener")
	if err := testenv.CopyFile(bin, os.Args[0], 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	sockDir := filepath.Join(dir, "s")
	os.Mkdir(sockDir, 0o755)
	os.Chown(sockDir, attacker, attacker)
	sock = filepath.Join(sockDir, "agent.sock")
	cmd := exec.Command(bin)
	cmd.Env = []string{envListener + "=" + sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: attacker, Gid: attacker}, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines = bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("listener: %q", lines.Text())
	}
	return sock, lines
}

// TestPeerCredentialMismatch: another user who wins a race for the agent's
// socket path (the swap the temp root's ancestor check now prevents, or
// any other way a socket of theirs gets there) receives nothing: neither
// the Go client nor the fast path sends a request or the caller's stdio
// to a socket served by another uid, and the call fails with one line.
func TestPeerCredentialMismatch(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		if os.Geteuid() != 0 {
			testenv.Missing(t, "only root can run a listener as another user")
		}
		wd := u.workdir(t)
		img := privateImage(t, u)
		settle(t, img)
		call := func(env []string) result {
			return u.run(context.Background(), t, runOpts{dir: wd, env: env}, "--image", img, "-d", wd, "echo", "forged?")
		}
		wantOK(t, call(nil))
		wantOK(t, call(require))
		ws := u.warmFor(t, wd)
		if len(ws) != 1 {
			t.Fatalf("want one container, got %+v", ws)
		}
		real := filepath.Join(u.temp, "nix-sandbox", "warm", ws[0].Key, "agent.sock")
		aside := real + ".real"
		sock, lines := foreignListener(t)
		// Swapped in one step, as in the attack: the path never goes
		// missing (a ticket whose socket is gone is pruned by whichever
		// container of the user ends meanwhile). The agent's own socket
		// stays reachable by a second link, and comes back at the end.
		if err := os.Link(real, aside); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(sock, real); err != nil {
			t.Fatal(err)
		}
		defer os.Rename(aside, real)
		for _, env := range [][]string{require, nil, slow} {
			r := call(env)
			if env == nil || env[0] == slow[0] {
				wantSandboxError(t, r, fmt.Sprintf("served by another user: uid %d", attacker))
			} else {
				wantSandboxError(t, r, "the fast path was not taken: the agent socket is served by another user")
			}
			if !lines.Scan() || lines.Text() != "received nothing" {
				t.Fatalf("%v: the other user's listener got: %q", env, lines.Text())
			}
		}
		// Management commands do not talk to it either.
		wantOK(t, u.run(context.Background(), t, runOpts{}, "--list"))
		if !lines.Scan() || lines.Text() != "received nothing" {
			t.Fatalf("--list: the other user's listener got: %q", lines.Text())
		}
	})
}

// TestForeignTempDirFallsBack: the temp root Lectic gives lies in a
// directory another user owns (a sticky one, as /tmp/lectic made 1777 by
// whoever came first). The call does not use it, and goes on without a
// word in the caller's own fallback, where the fast path finds it too.
func TestForeignTempDirFallsBack(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		if os.Geteuid() != 0 {
			testenv.Missing(t, "only root can make a temp dir that another user owns")
		}
		wd := u.workdir(t)
		img := privateImage(t, u)
		settle(t, img)
		for _, mode := range []os.FileMode{0o777 | os.ModeSticky, 0o755} {
			shared := filepath.Join(suite.root, fmt.Sprintf("shared-%s-%o", u.name, mode.Perm()))
			if err := os.Mkdir(shared, 0o755); err != nil {
				t.Fatal(err)
			}
			os.Chmod(shared, mode)
			os.Chown(shared, attacker, attacker)
			env := []string{"LECTIC_TEMP=" + shared}
			args := []string{"--image", img, "-d", wd, "sh", "-c", "echo ok"}
			r := u.run(context.Background(), t, runOpts{dir: wd, env: env}, args...)
			if r.code != 0 || r.stdout != "ok\n" || r.stderr != "" {
				t.Fatalf("a call with a foreign temp root: %v", r)
			}
			r = u.run(context.Background(), t, runOpts{dir: wd, env: append(env, require...)}, args...)
			if r.code != 0 || r.stdout != "ok\n" {
				t.Fatalf("the fast path with a foreign temp root: %v", r)
			}
			r = u.run(context.Background(), t, runOpts{dir: wd, env: env}, "--list", "--json")
			if r.code != 0 || !strings.Contains(r.stdout, wd) {
				t.Fatalf("--list with a foreign temp root: %v", r)
			}
			if ents, _ := os.ReadDir(shared); len(ents) != 0 {
				t.Fatalf("the other user's dir gained %d entries", len(ents))
			}
			// The fallback is the cache's (the suite's users have no
			// /run/user dir), where the warm dir is now.
			fallback := filepath.Join(u.cache, "nix-sandbox", "temp", "warm")
			if ents, err := os.ReadDir(fallback); err != nil || len(ents) == 0 {
				t.Fatalf("no warm container in the fallback %s: %v", fallback, err)
			}
			wantOK(t, u.run(context.Background(), t, runOpts{dir: wd, env: env}, "--stop", "all"))
		}
	})
}

// bareMCPEnv is what Lectic gives an MCP server's command: nothing else.
func (u *testUser) bareMCPEnv(home string) []string {
	return []string{"HOME=" + home, "LOGNAME=" + u.loginName(), "PATH=/usr/local/bin:/usr/bin:/bin",
		"SHELL=/bin/sh", "TERM=xterm", "USER=" + u.loginName()}
}

// bareExecEnv is what Lectic gives an exec tool's command: the user's own
// environment, and its own variables, LECTIC_TEMP forced to
// $TMPDIR/lectic (TMPDIR unset: /tmp/lectic).
func (u *testUser) bareExecEnv(home, wd string) []string {
	return append(u.bareMCPEnv(home),
		"LANG=C.UTF-8",
		"LECTIC_CONFIG="+home+"/.config/lectic",
		"LECTIC_DATA="+home+"/.local/share/lectic",
		"LECTIC_CACHE="+home+"/.cache/lectic",
		"LECTIC_STATE="+home+"/.local/state/lectic",
		"LECTIC_TEMP=/tmp/lectic",
		"LECTIC_FILE="+wd+"/sub/chat.lec",
		"LECTIC_INTERLOCUTOR=Assistant")
}

// fakeTmp is a private /tmp for calls run through inFakeTmp: it holds a
// /tmp/lectic that another user made (mode 1777) and the suite's own
// files at their usual path. run is what /run/user looks like there.
type fakeTmp struct {
	tmp, run string
}

func newFakeTmp(t *testing.T, u *testUser, runtimeDir bool) *fakeTmp {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "only root can give a call a private /tmp")
	}
	requireTool(t, "unshare")
	requireTool(t, "setpriv")
	base, err := os.MkdirTemp(suite.root, "faketmp")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeTmp{tmp: filepath.Join(base, "tmp"), run: filepath.Join(base, "run")}
	for _, d := range []string{f.tmp, f.run, filepath.Join(f.tmp, filepath.Base(suite.root))} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(base, 0o755)
	os.Chmod(f.tmp, 0o777|os.ModeSticky)
	lectic := filepath.Join(f.tmp, "lectic")
	os.Mkdir(lectic, 0o777)
	os.Chmod(lectic, 0o777|os.ModeSticky)
	os.Chown(lectic, attacker, attacker)
	if runtimeDir {
		d := filepath.Join(f.run, strconv.Itoa(u.uid))
		os.Mkdir(d, 0o700)
		os.Chown(d, u.uid, u.gid)
	}
	home := filepath.Join(f.tmp, "h"+strconv.Itoa(u.uid))
	os.Mkdir(home, 0o755)
	os.Chown(home, u.uid, u.gid)
	return f
}

// home is the user's $HOME inside the fake /tmp: short, so the cache's
// fallback fits socket paths.
func (f *fakeTmp) home(u *testUser) string { return "/tmp/h" + strconv.Itoa(u.uid) }

// run runs the binary as u in a mount namespace where /tmp and /run/user
// are the fake ones, with exactly env.
func (f *fakeTmp) call(t *testing.T, u *testUser, dir string, env []string, args ...string) result {
	t.Helper()
	script := `set -e
mount --bind "$1" "$2/$(basename "$3")"
mount --rbind "$2" /tmp
mount --bind "$4" /run/user
cd "$5"
shift 5
exec "$@"`
	argv := []string{"--mount", "--propagation", "private", "sh", "-c", script, "sh",
		suite.root, f.tmp, suite.root, f.run, dir,
		"setpriv", "--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--clear-groups",
		"env", "-i"}
	argv = append(append(argv, env...), suite.bin)
	argv = append(argv, args...)
	cmd := exec.Command("unshare", argv...)
	cmd.Dir = dir
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("unshare: %v", err)
	}
	return r
}

// TestMCPAndExecShareAContainer: /tmp/lectic belongs to another user.
// An exec tool (LECTIC_TEMP=/tmp/lectic forced by Lectic) and an MCP
// server (HOME LOGNAME PATH SHELL TERM USER, nothing else) of the same
// user and workdir both fall back, without a word, to the same per-user
// dir and reach the same warm container, on the Go path and on the fast
// path; nothing lands in the other user's dir.
func TestMCPAndExecShareAContainer(t *testing.T) {
	for _, runtimeDir := range []bool{true, false} {
		t.Run(fmt.Sprintf("runtime dir %v", runtimeDir), func(t *testing.T) {
			forEachUser(t, func(t *testing.T, u *testUser) {
				f := newFakeTmp(t, u, runtimeDir)
				home := f.home(u)
				wd := u.workdir(t)
				// The conversation, which exec tools name in LECTIC_FILE and
				// MCP servers do not: the containers must still be one.
				os.Mkdir(filepath.Join(wd, "sub"), 0o755)
				os.WriteFile(filepath.Join(wd, "sub", "chat.lec"), []byte("---\n"), 0o644)
				chown(t, u, filepath.Join(wd, "sub"), filepath.Join(wd, "sub", "chat.lec"))
				img := privateImage(t, u)
				settle(t, img)
				exec, mcp := u.bareExecEnv(home, wd), u.bareMCPEnv(home)
				args := func(cmd string) []string { return []string{"--image", img, "sh", "-c", cmd} }
				token := strconv.FormatInt(time.Now().UnixNano(), 10)
				r := f.call(t, u, wd, exec, args("echo "+token+" > /tmp/token; echo written")...)
				if r.code != 0 || r.stdout != "written\n" || r.stderr != "" {
					t.Fatalf("exec tool: %v", r)
				}
				for _, env := range [][]string{mcp, exec, append(mcp, require...), append(exec, require...)} {
					r := f.call(t, u, wd, env, args("cat /tmp/token")...)
					if r.code != 0 || r.stdout != token+"\n" {
						t.Fatalf("%v: not the same container: %v", env, r)
					}
				}
				var keys []string
				for _, env := range [][]string{exec, mcp} {
					r := f.call(t, u, wd, env, "--list", "--json")
					var ws []warmInfo
					if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ws) != nil || len(ws) != 1 {
						t.Fatalf("--list: %v", r)
					}
					keys = append(keys, ws[0].Key)
				}
				if keys[0] != keys[1] {
					t.Fatalf("exec tools and MCP servers list different containers: %v", keys)
				}
				want := filepath.Join(f.tmp, "h"+strconv.Itoa(u.uid), ".cache", "lectic", "nix-sandbox", "temp")
				if runtimeDir {
					want = filepath.Join(f.run, strconv.Itoa(u.uid), "lectic", "nix-sandbox")
				}
				if _, err := os.Stat(filepath.Join(want, "warm", keys[0])); err != nil {
					t.Fatalf("the container is not in the fallback %s: %v", want, err)
				}
				if ents, _ := os.ReadDir(filepath.Join(f.tmp, "lectic")); len(ents) != 0 {
					t.Fatalf("the other user's /tmp/lectic gained %d entries", len(ents))
				}
				if r := f.call(t, u, wd, mcp, "--stop", "all"); r.code != 0 {
					t.Fatalf("--stop all: %v", r)
				}
			})
		})
	}
}

// TestOtherTempRootHidden: an MCP server's temp root (/tmp/lectic, the
// caller's own here) lies in the workdir (/tmp) of an exec tool whose
// calls use another ($TMPDIR/lectic). A command of the exec tool can
// neither see nor change it, so it cannot plant a listener where the MCP
// server's next call looks for its agent; on both paths.
func TestOtherTempRootHidden(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		f := newFakeTmp(t, u, false)
		lectic := filepath.Join(f.tmp, "lectic")
		os.Chmod(lectic, 0o700)
		chown(t, u, lectic)
		tmpdir := filepath.Join(f.tmp, "x"+strconv.Itoa(u.uid))
		os.Mkdir(tmpdir, 0o700)
		chown(t, u, tmpdir)
		home := f.home(u)
		img := privateImage(t, u)
		settle(t, img)
		wd := u.workdir(t)
		mcp := u.bareMCPEnv(home)
		if r := f.call(t, u, wd, mcp, "--image", img, "true"); r.code != 0 {
			t.Fatalf("the MCP server's call: %v", r)
		}
		exec := append(u.bareExecEnv(home, wd), "TMPDIR=/tmp/"+filepath.Base(tmpdir), "LECTIC_TEMP=/tmp/"+filepath.Base(tmpdir)+"/lectic")
		probe := `t=/tmp/lectic/nix-sandbox
echo "ls=$(ls -A $t 2>&1 | tr '\n' ,)"
echo "plant=$( (mkdir -p $t/fast && echo x > $t/fast/ticket) 2>&1 | tail -1 | sed 's/.*: //')"
echo "move=$( (mv /tmp/lectic /tmp/lectic-aside) 2>&1 | sed 's/.*: //')"`
		for _, mode := range [][]string{nil, require} {
			r := f.call(t, u, "/tmp", append(append([]string(nil), exec...), mode...), "--image", img, "sh", "-c", probe)
			if r.code != 0 {
				t.Fatalf("%v: %v", mode, r)
			}
			for _, want := range []string{"ls=\n", "plant=Read-only file system\n", "move=Device or resource busy\n"} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("%v: want %q in %q", mode, want, r.stdout)
				}
			}
		}
		if _, err := os.Lstat(filepath.Join(lectic, "nix-sandbox", "fast", "ticket")); err == nil {
			t.Error("a ticket was planted in the MCP server's temp root")
		}
		for _, env := range [][]string{mcp, exec} {
			if r := f.call(t, u, wd, env, "--stop", "all"); r.code != 0 {
				t.Fatalf("--stop all: %v", r)
			}
		}
	})
}

// TestFIFOTicket: a FIFO named like a ticket (or left where a lock goes)
// hangs nothing: neither the call, on either path, nor --list, --prune and
// --stop all, which also leaves no lock files behind.
func TestFIFOTicket(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		img := privateImage(t, u)
		settle(t, img)
		call := func(env []string, args ...string) result {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			return u.run(ctx, t, runOpts{dir: wd, env: env}, append([]string{"--image", img, "-d", wd}, args...)...)
		}
		wantOK(t, call(nil, "true"))
		wantOK(t, call(require, "true"))
		fast := filepath.Join(u.temp, "nix-sandbox", "fast")
		ents, err := os.ReadDir(fast)
		if err != nil || len(ents) == 0 {
			t.Fatalf("no tickets: %v", err)
		}
		for _, e := range ents {
			p := filepath.Join(fast, e.Name())
			os.Remove(p)
			if err := unix.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
			chown(t, u, p)
		}
		warmRoot := filepath.Join(u.temp, "nix-sandbox", "warm")
		junkLock := filepath.Join(warmRoot, "0123456789abcdef.lock")
		if err := unix.Mkfifo(junkLock, 0o600); err != nil {
			t.Fatal(err)
		}
		chown(t, u, junkLock)
		wantSandboxError(t, call(require, "true"), "the fast path was not taken: the ticket is not a private file")
		if r := call(nil, "echo", "served"); r.code != 0 || r.stdout != "served\n" {
			t.Fatalf("the call after a FIFO ticket: %v", r)
		}
		wantOK(t, call(require, "true"))
		for _, args := range [][]string{{"--list"}, {"--prune"}, {"--stop", "all"}} {
			r := call(nil, args...)
			if r.code != 0 {
				t.Fatalf("%v: %v", args, r)
			}
		}
		ents, _ = os.ReadDir(warmRoot)
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".lock") {
				t.Errorf("--stop all left %s", e.Name())
			}
		}
	})
}

// TestManagementEndsOnSIGTERM: --stop, waiting for a supervisor that does
// not go away (its alive lock held), ends on SIGTERM as any command does,
// rather than catching the signal and waiting on.
func TestManagementEndsOnSIGTERM(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		key := fmt.Sprintf("%016x", time.Now().UnixNano())
		warmRoot := filepath.Join(u.temp, "nix-sandbox", "warm")
		dir := filepath.Join(warmRoot, key)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		alive, err := os.OpenFile(filepath.Join(dir, "alive"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer alive.Close()
		chown(t, u, filepath.Dir(warmRoot), warmRoot, dir, alive.Name())
		if err := unix.Flock(int(alive.Fd()), unix.LOCK_EX); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cmd := u.command(ctx, runOpts{}, "--stop", key)
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(500*time.Millisecond, cancel)
		// Ignored, SIGTERM is followed by SIGKILL after cmd.WaitDelay.
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("--stop ended with %v, not by SIGTERM", err)
		}
		if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Fatalf("--stop ended with %v, not by SIGTERM", err)
		}
	})
}

// stateProbe tries, from inside, what a command with no network could do
// to the sandbox's own state when the workdir holds it: list and write
// the cache (plant etc/ld.so.preload in an image), the temp root (rewrite
// a ticket, replace agent.sock), LECTIC_DATA and the binary, and move the
// directories on the way aside. It prints one line per attempt.
const stateProbe = `
cache=$1 temp=$2 data=$3 bin=$4 wd=$5
echo "cache-ls=$(ls -A "$cache" 2>&1 | tr '\n' ,)"
echo "cache-plant=$( (mkdir -p "$cache/rootfs/x/root/etc" && echo /evil.so > "$cache/rootfs/x/root/etc/ld.so.preload") 2>&1 | tail -1 | sed 's/.*: //')"
echo "cache-move=$( (mv "$(dirname "$cache")" "$(dirname "$cache")-aside") 2>&1 | sed 's/.*: //')"
echo "temp-ls=$(ls -A "$temp" 2>&1 | tr '\n' ,)"
echo "temp-plant=$( (mkdir -p "$temp/fast" && echo x > "$temp/fast/ticket") 2>&1 | tail -1 | sed 's/.*: //')"
echo "temp-move=$( (mv "$(dirname "$temp")" "$(dirname "$temp")-aside") 2>&1 | sed 's/.*: //')"
echo "data-write=$( (echo x > "$data/lectic-hello") 2>&1 | sed 's/.*: //')"
echo "bin-write=$( (touch -c "$bin") 2>&1 | sed 's/.*: //')"
echo "free=$(echo ok > "$wd/free" && cat "$wd/free")"
`

// TestStateUnreachable: with the workdir = $HOME (the default cache, the
// plugin in LECTIC_DATA and the binary inside it) and with the workdir =
// $TMPDIR (the default temp root inside it), a command can neither see the
// temp root and the cache nor write LECTIC_DATA or the binary, nor move
// the directories that lead to them; the rest of the workdir stays
// writable. Checked on both paths.
func TestStateUnreachable(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		home, err := os.MkdirTemp(suite.root, "h")
		if err != nil {
			t.Fatal(err)
		}
		tmpdir, err := os.MkdirTemp(suite.root, "t")
		if err != nil {
			t.Fatal(err)
		}
		data := filepath.Join(home, ".local", "share", "lectic")
		bin := filepath.Join(data, "plugins", "nix-sandbox", "lectic-nix-sandbox")
		for _, d := range []string{home, tmpdir, filepath.Dir(bin)} {
			os.MkdirAll(d, 0o755)
		}
		if err := testenv.CopyFile(bin, suite.bin, 0o755); err != nil {
			t.Fatal(err)
		}
		filepath.Walk(home, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, u.uid, u.gid) })
		chown(t, u, tmpdir)
		img := privateImage(t, u)
		settle(t, img, bin)
		for _, tc := range []struct {
			name    string
			workdir string
			env     []string
			cache   string
			temp    string
		}{
			{"workdir is HOME", home, []string{"HOME=" + home, "LECTIC_CACHE=", "LECTIC_DATA=", "LECTIC_TEMP=" + u.temp},
				filepath.Join(home, ".cache", "lectic", "nix-sandbox"), filepath.Join(u.temp, "nix-sandbox")},
			{"workdir is TMPDIR", tmpdir, []string{"HOME=" + home, "LECTIC_CACHE=", "LECTIC_DATA=", "LECTIC_TEMP=", "TMPDIR=" + tmpdir},
				filepath.Join(home, ".cache", "lectic", "nix-sandbox"), filepath.Join(tmpdir, "lectic", "nix-sandbox")},
		} {
			t.Run(tc.name, func(t *testing.T) {
				call := func(mode []string) result {
					cmd := exec.Command(bin, "--image", img, "sh", "-c", stateProbe, "sh", tc.cache, tc.temp, data, bin, tc.workdir)
					cmd.Env = append(append(u.env(nil), tc.env...), mode...)
					cmd.Dir = tc.workdir
					if os.Geteuid() == 0 && u.uid != 0 {
						cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid)}}
					}
					var out, errb strings.Builder
					cmd.Stdout, cmd.Stderr = &out, &errb
					err := cmd.Run()
					r := result{stdout: out.String(), stderr: errb.String()}
					if ee, ok := err.(*exec.ExitError); ok {
						r.code = ee.ExitCode()
					}
					return r
				}
				for _, mode := range [][]string{nil, require} {
					r := call(mode)
					if r.code != 0 {
						t.Fatalf("%v: %v", mode, r)
					}
					got := map[string]string{}
					for _, l := range strings.Split(r.stdout, "\n") {
						if k, v, ok := strings.Cut(l, "="); ok {
							got[k] = v
						}
					}
					want := map[string]string{"free": "ok"}
					if strings.HasPrefix(tc.cache, tc.workdir+"/") {
						want["cache-ls"], want["cache-plant"], want["cache-move"] = "", "Read-only file system", "Device or resource busy"
						want["data-write"], want["bin-write"] = "Read-only file system", "Read-only file system"
					}
					if strings.HasPrefix(tc.temp, tc.workdir+"/") {
						want["temp-ls"], want["temp-plant"], want["temp-move"] = "", "Read-only file system", "Device or resource busy"
					}
					for k, w := range want {
						if got[k] != w {
							t.Errorf("%v: %s = %q, want %q", mode, k, got[k], w)
						}
					}
				}
				// On the host: the image tree has no planted file, the tickets
				// and the agent's socket are the sandbox's own.
				trees, _ := filepath.Glob(filepath.Join(tc.cache, "rootfs", "*", "root", "etc", "ld.so.preload"))
				if len(trees) != 0 {
					t.Errorf("planted: %v", trees)
				}
				if _, err := os.Lstat(filepath.Join(tc.temp, "fast", "ticket")); err == nil {
					t.Error("a ticket was planted")
				}
				if r := call(require); r.code != 0 {
					t.Errorf("the fast path after the probes: %v", r)
				}
			})
		}
	})
}

// hostConfigProbe tries to change, from inside, what the host runs
// later, and what a command must still be able to do.
const hostConfigProbe = `
try() { name=$1; shift; echo "$name=$( ("$@") 2>&1 | tail -1 | sed 's/.*: //')"; }
try lectic-yaml sh -c 'echo "hooks: evil" >> lectic.yaml'
try lec sh -c 'echo evil >> chat.lec'
try hook sh -c 'echo evil > .git/hooks/pre-commit'
try git-config sh -c 'echo "[core] fsmonitor = evil" >> .git/config'
try envrc sh -c 'echo evil >> .envrc'
try image sh -c 'echo evil >> image.tar'
try file sh -c 'echo evil >> sub/conv.lec'
try nearest sh -c 'echo evil >> sub/lectic.yaml'
try git-move sh -c 'mv .git .git-aside'
try commit sh -c 'echo obj > .git/objects/x && echo ref > .git/refs/heads/main && cat .git/objects/x'
try husky sh -c 'echo evil >> .husky/pre-commit'
try submodule-hook sh -c 'echo evil > .git/modules/lib/hooks/pre-commit'
try nested-hook sh -c 'echo evil > src/proj/.git/hooks/pre-commit'
try nested-config sh -c 'echo "[core] fsmonitor = evil" >> src/proj/.git/config'
try nested-lec sh -c 'echo evil >> notes/old.lec'
try nested-yaml sh -c 'echo evil >> notes/deep/lectic.yaml'
try nested-move sh -c 'mv src/proj/.git src/proj/.git-aside'
try nested-commit sh -c 'echo obj > src/proj/.git/objects/x && cat src/proj/.git/objects/x'
try free sh -c 'echo ok > notes.txt && cat notes.txt'
`

// TestHostConfigReadOnly: what the host runs later (lectic.yaml, the .lec
// files, .git/hooks and .git/config, .envrc, the image file in use, the
// conversation Lectic names and its lectic.yaml) is read-only inside the
// workdir on both paths, below its top too (a repository in a subdir, as
// in a workdir of $HOME; a submodule's git dir; the hooks dir
// core.hooksPath names, as husky sets it; .lec files in a subdir), while
// .git stays writable so commits work; --allow-host-config-writes turns
// it off.
func TestHostConfigReadOnly(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		files := map[string]string{"lectic.yaml": "host", "chat.lec": "host", ".git/hooks/pre-commit": "host",
			".git/config": "[core]\n\thooksPath = .husky\n", ".envrc": "host", "sub/conv.lec": "host", "sub/lectic.yaml": "host",
			".husky/pre-commit": "host", ".git/modules/lib/HEAD": "host", ".git/modules/lib/config": "host",
			"lib/.git": "gitdir: ../.git/modules/lib\n", "src/proj/.git/config": "host",
			"notes/old.lec": "host", "notes/deep/lectic.yaml": "host"}
		for _, d := range []string{".git/hooks", ".git/objects", ".git/refs/heads", "sub", ".husky", ".git/modules/lib/hooks",
			"lib", "src/proj/.git/hooks", "src/proj/.git/objects", "notes/deep"} {
			os.MkdirAll(filepath.Join(wd, d), 0o755)
		}
		for f, c := range files {
			os.WriteFile(filepath.Join(wd, f), []byte(c), 0o644)
		}
		img := filepath.Join(wd, "image.tar")
		data, _ := os.ReadFile(suite.images["busybox"])
		os.WriteFile(img, data, 0o644)
		filepath.Walk(wd, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, u.uid, u.gid) })
		settle(t, img)
		env := []string{"LECTIC_FILE=" + filepath.Join(wd, "sub", "conv.lec")}
		probe := func(mode []string, extra ...string) map[string]string {
			args := append(append([]string{"--image", img}, extra...), "sh", "-c", hostConfigProbe)
			r := u.run(context.Background(), t, runOpts{dir: wd, env: append(append([]string(nil), env...), mode...)}, args...)
			if r.code != 0 {
				t.Fatalf("%v: %v", mode, r)
			}
			got := map[string]string{}
			for _, l := range strings.Split(r.stdout, "\n") {
				if k, v, ok := strings.Cut(l, "="); ok {
					got[k] = v
				}
			}
			return got
		}
		for _, mode := range [][]string{nil, require} {
			got := probe(mode)
			for _, k := range []string{"lectic-yaml", "lec", "hook", "git-config", "envrc", "image", "file", "nearest",
				"husky", "submodule-hook", "nested-hook", "nested-config", "nested-lec", "nested-yaml"} {
				if got[k] != "Read-only file system" {
					t.Errorf("%v: %s = %q, want it read-only", mode, k, got[k])
				}
			}
			if got["git-move"] != "Device or resource busy" || got["nested-move"] != "Device or resource busy" ||
				got["commit"] != "obj" || got["nested-commit"] != "obj" || got["free"] != "ok" {
				t.Errorf("%v: git-move %q, nested-move %q, commit %q, nested-commit %q, free %q", mode,
					got["git-move"], got["nested-move"], got["commit"], got["nested-commit"], got["free"])
			}
		}
		for f, c := range files {
			if b, _ := os.ReadFile(filepath.Join(wd, f)); string(b) != c {
				t.Errorf("%s changed on the host: %q", f, b)
			}
		}
		// Turned off, they are the command's to change.
		got := probe(nil, "--allow-host-config-writes")
		if got["lectic-yaml"] != "" || got["hook"] != "" {
			t.Errorf("--allow-host-config-writes: lectic-yaml %q hook %q", got["lectic-yaml"], got["hook"])
		}
	})
}

// TestHostConfigCreatedIsReported: a protected name that a command creates
// where none existed is reported on the caller's stderr after that call,
// on either path, and read-only from the next call on.
func TestHostConfigCreatedIsReported(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		// A conversation in a subdir: a lectic.yaml made beside it would
		// be the one a Lectic run of it reads.
		os.Mkdir(filepath.Join(wd, "notes"), 0o755)
		os.WriteFile(filepath.Join(wd, "notes", "old.lec"), []byte("---\n"), 0o644)
		chown(t, u, filepath.Join(wd, "notes"), filepath.Join(wd, "notes", "old.lec"))
		img := privateImage(t, u)
		settle(t, img)
		call := func(mode []string, cmd string) result {
			return u.run(context.Background(), t, runOpts{dir: wd, env: mode}, "--image", img, "sh", "-c", cmd)
		}
		wantOK(t, call(nil, "true"))
		wantOK(t, call(require, "true"))
		for i, tc := range []struct {
			mode []string
			name string
		}{{require, ".envrc"}, {nil, "lectic.yaml"}, {require, "evil.lec"}, {require, "notes/lectic.yaml"}} {
			r := call(tc.mode, "echo evil > "+tc.name)
			want := "lectic-nix-sandbox: warning: the command created " + filepath.Join(wd, tc.name) + ", which the host may run later"
			if r.code != 0 || !strings.HasPrefix(r.stderr, want) || strings.Count(r.stderr, "\n") != 1 {
				t.Fatalf("%d %v: creating %s: %v", i, tc.mode, tc.name, r)
			}
			r = call(nil, "echo more >> "+tc.name)
			if r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") || strings.Contains(r.stderr, "created") {
				t.Fatalf("%d: the next call could change %s: %v", i, tc.name, r)
			}
			wantOK(t, call(require, "true"))
		}
	})
}

// TestHostConfigBindsRefused: a read-write volume or --persist under
// LECTIC_CONFIG, LECTIC_DATA or LECTIC_RUNTIME is refused with one line;
// read-only, it is fine.
func TestHostConfigBindsRefused(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		cfg := filepath.Join(u.home, ".config", "lectic")
		runtime := filepath.Join(wd, "runtime")
		for _, d := range []string{cfg, filepath.Join(u.data, "tools"), runtime} {
			os.MkdirAll(d, 0o755)
			chown(t, u, d)
		}
		env := []string{"LECTIC_RUNTIME=" + runtime}
		for _, args := range [][]string{
			{"--volume", cfg + ":/cfg"},
			{"--volume", filepath.Join(u.data, "tools")},
			{"--volume", runtime + ":/rt:rw"},
			{"--persist", filepath.Join(u.data, "nix-sandbox", "Assistant")},
		} {
			r := u.sandbox(t, wd, runOpts{env: env}, append(args, "true")...)
			wantSandboxError(t, r, "must stay read-only in the sandbox")
		}
		// Refused before it is made, under any of them.
		for _, dir := range []string{filepath.Join(u.data, "nix-sandbox"), filepath.Join(cfg, "persist")} {
			r := u.sandbox(t, wd, runOpts{env: env}, "--persist", dir, "true")
			wantSandboxError(t, r, "must stay read-only in the sandbox")
			if _, err := os.Lstat(dir); err == nil {
				t.Errorf("the refused --persist dir %s was created", dir)
			}
		}
		wantOK(t, u.sandbox(t, wd, runOpts{env: env}, "--volume", cfg+":/cfg:ro", "true"))
		wantOK(t, u.sandbox(t, wd, runOpts{env: env}, "--allow-host-config-writes", "--volume", cfg+":/cfg", "true"))
	})
}

// TestRecreatedWorkdir: a workdir or volume removed and made again on the
// host is seen as it is now by the next call, on both paths: the warm
// container that bound the old one is replaced.
func TestRecreatedWorkdir(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		vol := u.workdir(t)
		img := privateImage(t, u)
		settle(t, img)
		call := func(mode []string) result {
			return u.run(context.Background(), t, runOpts{dir: wd, env: mode}, "--image", img, "-v", vol+":/data",
				"sh", "-c", "echo w > result.txt && echo v > /data/result.txt && echo done")
		}
		wantOK(t, call(nil))
		wantOK(t, call(require))
		for round, mode := range [][]string{nil, require} {
			for _, d := range []string{wd, vol} {
				os.RemoveAll(d)
				os.Mkdir(d, 0o755)
				chown(t, u, d)
			}
			r := call(mode)
			if mode != nil {
				// The fast path hands over to the Go client, which replaces
				// the container.
				wantSandboxError(t, r, "the fast path was not taken")
				r = call(nil)
			}
			if r.code != 0 || r.stdout != "done\n" {
				t.Fatalf("round %d: after recreating the dirs: %v", round, r)
			}
			for _, f := range []string{filepath.Join(wd, "result.txt"), filepath.Join(vol, "result.txt")} {
				if _, err := os.Stat(f); err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
			}
			wantOK(t, call(require))
		}
		if ws := u.warmFor(t, wd); len(ws) != 1 {
			t.Fatalf("want the one replaced container, got %+v", ws)
		}
	})
}

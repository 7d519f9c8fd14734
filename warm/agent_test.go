package warm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pipeRun runs argv with stdin from input and returns stdout, stderr and
// the exit code.
func pipeRun(t *testing.T, a *testAgent, r Request, input string, spec ...Spec) (string, string, int, error) {
	t.Helper()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW := blockingPipe(t)
	errR, errW := blockingPipe(t)
	r.Stdin, r.Stdout, r.Stderr = inR, outW, errW
	go func() {
		_, _ = io.WriteString(inW, input)
		inW.Close()
	}()
	var out, serr bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = io.Copy(&out, outR) }()
	go func() { defer wg.Done(); _, _ = io.Copy(&serr, errR) }()
	var code int
	var runErr error
	if len(spec) > 0 {
		if r.Cwd == "" {
			r.Cwd = "/"
		}
		r.User.Mode = "root"
		code, runErr = Run(context.Background(), a.tempRoot, spec[0], r)
	} else {
		code, runErr = a.run(t, r)
	}
	inR.Close()
	outW.Close()
	errW.Close()
	wg.Wait()
	outR.Close()
	errR.Close()
	return out.String(), serr.String(), code, runErr
}

// blockingPipe is a pipe in blocking mode, as a caller's stdout is: a
// command that writes more than the pipe holds waits for the reader
// instead of failing with EAGAIN (os.Pipe is non-blocking, and the
// command shares its file description).
func blockingPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fds[0]), "pipe"), os.NewFile(uintptr(fds[1]), "pipe")
}

func TestExitCodes(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	env := []string{"PATH=" + tools}
	cases := []struct {
		name    string
		argv    []string
		cwd     string
		code    int
		wantErr bool
		stderr  string
	}{
		{"true", []string{"true"}, "", 0, false, ""},
		{"exit 3", []string{"sh", "-c", "exit 3"}, "", 3, false, ""},
		{"signal", []string{"sh", "-c", "kill -TERM $$"}, "", 128 + 15, false, ""},
		{"sigkill", []string{"sh", "-c", "kill -KILL $$"}, "", 128 + 9, false, ""},
		{"not found", []string{"no-such-command"}, "", 127, false, "command not found: no-such-command"},
		{"not found by path", []string{"/no/such/file"}, "", 127, false, "command not found: /no/such/file"},
		{"not executable", []string{"noexec"}, "", 126, false, "cannot execute noexec"},
		{"directory", []string{tools}, "", 126, false, "is a directory"},
		{"relative to cwd", []string{"./sh", "-c", "exit 4"}, tools, 4, false, ""},
		{"missing cwd", []string{"true"}, "/no/such/dir", 125, true, ""},
		{"cwd is a file", []string{"true"}, filepath.Join(tools, "noexec"), 125, true, ""},
		{"empty argv", []string{}, "", 125, true, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, serr, code, err := pipeRun(t, a, Request{Argv: c.argv, Env: env, Cwd: c.cwd}, "")
			if code != c.code {
				t.Errorf("code = %d, want %d (err %v, stderr %q)", code, c.code, err, serr)
			}
			if (err != nil) != c.wantErr {
				t.Errorf("err = %v, want error %v", err, c.wantErr)
			}
			if !strings.Contains(serr, c.stderr) {
				t.Errorf("stderr = %q, want it to contain %q", serr, c.stderr)
			}
		})
	}
}

func TestPathFromRequest(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	// The agent's own PATH does not name the tool dir; only the request's does.
	_, _, code, err := pipeRun(t, a, Request{Argv: []string{"true"}, Env: []string{"PATH=/nonexistent"}}, "")
	if code != 127 || err != nil {
		t.Fatalf("with a PATH that lacks true: code %d err %v, want 127", code, err)
	}
	_, _, code, err = pipeRun(t, a, Request{Argv: []string{"true"}, Env: []string{"PATH=/nonexistent:" + tools}}, "")
	if code != 0 || err != nil {
		t.Fatalf("with the tool dir in PATH: code %d err %v, want 0", code, err)
	}
}

func TestStdioPassthrough(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	env := []string{"PATH=" + tools, "GREETING=hello"}
	out, serr, code, err := pipeRun(t, a, Request{Argv: []string{"sh", "-c", `cat; echo "$GREETING" >&2; pwd`}, Env: env, Cwd: tools}, "line one\nline two\n")
	if err != nil || code != 0 {
		t.Fatalf("code %d err %v", code, err)
	}
	if want := "line one\nline two\n" + tools + "\n"; out != want {
		t.Errorf("stdout = %q, want %q", out, want)
	}
	if serr != "hello\n" {
		t.Errorf("stderr = %q, want %q", serr, "hello\n")
	}
}

// A request/response exchange over stdin/stdout, the way a stdio MCP
// server talks: each answer must arrive before the next question is sent.
func TestLineExchange(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	done := make(chan int, 1)
	go func() {
		code, err := a.run(t, Request{Argv: []string{"sh", "-c", `while read l; do echo "got $l"; done`},
			Env: []string{"PATH=" + tools}, Stdin: inR, Stdout: outW, Stderr: os.Stderr})
		if err != nil {
			t.Error(err)
		}
		done <- code
	}()
	rd := bufio.NewReader(outR)
	for i := 0; i < 20; i++ {
		fmt.Fprintf(inW, "q%d\n", i)
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("got q%d\n", i); line != want {
			t.Fatalf("answer %q, want %q", line, want)
		}
	}
	inW.Close()
	if code := <-done; code != 0 {
		t.Fatalf("exit code %d", code)
	}
	inR.Close()
	outW.Close()
	outR.Close()
}

func TestTimeout(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	start := time.Now()
	_, _, code, err := pipeRun(t, a, Request{Argv: []string{"sleep", "30"}, Env: []string{"PATH=" + tools}, Timeout: 200 * time.Millisecond}, "")
	if err != nil || code != 124 {
		t.Fatalf("code %d err %v, want 124", code, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("timeout took %s", d)
	}
}

// clientCmd starts the test binary as a client of tempRoot and spec.
func clientCmd(t *testing.T, tempRoot string, spec Spec, tools string, argv ...string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	return clientWith(t, testClientArgs{TempRoot: tempRoot, Spec: spec, Argv: argv, Env: []string{"PATH=" + tools}, Cwd: "/", User: UserSpec{Mode: "root"}})
}

// clientWith starts the test binary as a client with the given arguments.
func clientWith(t *testing.T, a testClientArgs) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	args, _ := json.Marshal(a)
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), envTestClient+"="+string(args))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, bufio.NewReader(out)
}

func readPids(t *testing.T, rd *bufio.Reader, n int) []int {
	t.Helper()
	var pids []int
	for len(pids) < n {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("read pid: %v", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(line))
		if err != nil {
			t.Fatalf("read pid from %q: %v", line, err)
		}
		pids = append(pids, pid)
	}
	return pids
}

// A client killed by SIGKILL (how Lectic ends a tool on timeout) takes the
// command's whole process group with it, grandchildren included.
func TestClientKilledKillsGroup(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	for _, user := range []UserSpec{{Mode: "root"}, {Mode: "caller", UID: 1234, GID: 1234}} {
		t.Run(user.Mode, func(t *testing.T) {
			cmd, rd := clientWith(t, testClientArgs{TempRoot: a.tempRoot, Spec: a.spec(), Env: []string{"PATH=" + tools}, Cwd: "/", User: user,
				Argv: []string{"sh", "-c", `sleep 1000 & echo $!; echo $$; sleep 1000`}})
			pids := readPids(t, rd, 2)
			for _, p := range pids {
				if !procAlive(p) {
					t.Fatalf("pid %d not running before the client was killed", p)
				}
			}
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			// kill(pid, 0) fails only once the process is dead and reaped.
			deadline := time.Now().Add(time.Second)
			for _, p := range pids {
				for syscall.Kill(p, 0) == nil && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				if err := syscall.Kill(p, 0); err == nil {
					t.Errorf("pid %d still exists 1 s after the client was killed", p)
				}
			}
		})
	}
}

func TestForwardedSignal(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	for _, user := range []UserSpec{{Mode: "root"}, {Mode: "caller", UID: 1234, GID: 1234}} {
		t.Run(user.Mode, func(t *testing.T) {
			cmd, rd := clientWith(t, testClientArgs{TempRoot: a.tempRoot, Spec: a.spec(), Env: []string{"PATH=" + tools}, Cwd: "/", User: user,
				Argv: []string{"sh", "-c", `trap 'echo 0; exit 7' TERM; echo $$; while :; do sleep 0.02; done`}})
			readPids(t, rd, 1)
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			readPids(t, rd, 1) // the trap ran
			// The call ends as the signal says, whatever the command
			// made of it.
			err := cmd.Wait()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 128+int(syscall.SIGTERM) {
				t.Fatalf("client exit: %v, want code 143", err)
			}
		})
	}
}

func TestConcurrentClients(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	const n = 16
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := fmt.Sprintf("client%02d", i)
			script := `for j in 1 2 3 4 5; do echo "$0 $j"; sleep 0.01; done; echo "$0 err" >&2; exit $1`
			out, serr, code, err := pipeRun(t, a, Request{Argv: []string{"sh", "-c", script, id, strconv.Itoa(i)}, Env: []string{"PATH=" + tools}}, "")
			var want strings.Builder
			for j := 1; j <= 5; j++ {
				fmt.Fprintf(&want, "%s %d\n", id, j)
			}
			if err != nil || code != i || out != want.String() || serr != id+" err\n" {
				t.Errorf("%s: code %d err %v stdout %q stderr %q", id, code, err, out, serr)
			}
		}(i)
	}
	wg.Wait()
}

// agentCounts returns the agent's open fds, zombie children and RSS (kB).
// The Go runtime's poller fds (epoll, eventfd) are not counted: the runtime
// creates them lazily at a moment of its choosing.
func agentCounts(t *testing.T, pid int) (fds, zombies, rssKB int) {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		l, _ := os.Readlink(dir + e.Name())
		if l != "anon_inode:[eventpoll]" && l != "anon_inode:[eventfd]" {
			fds++
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		b, err := os.ReadFile("/proc/" + p.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(pid) {
			zombies++
		}
	}
	status, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			rssKB, _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	return fds, zombies, rssKB
}

// helperOf finds the one child of the agent that is an identity helper.
func helperOf(t *testing.T, agent int) int {
	t.Helper()
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		b, err := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		if err != nil || !strings.HasPrefix(string(b), "lectic-nix-sandbox-helper") {
			continue
		}
		st, _ := os.ReadFile("/proc/" + p.Name() + "/stat")
		s := string(st)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(agent) {
			pid, _ := strconv.Atoi(p.Name())
			return pid
		}
	}
	t.Fatal("no identity helper under the agent")
	return 0
}

// Many requests leave nothing behind in the agent: fds, zombies (some
// commands leave orphans, which the agent must reap) and memory stay flat.
func TestThousandRequestsStayFlat(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	devnull, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	defer devnull.Close()
	// Half the requests go through an identity helper, which must stay
	// flat as well.
	req := func(i int) {
		argv := []string{"true"}
		if i%10 == 0 {
			argv = []string{"sh", "-c", "sleep 0.01 & sleep 0.01 & exit 0"}
		}
		user := UserSpec{Mode: "root"}
		if i%2 == 1 {
			user = UserSpec{Mode: "caller", UID: 1234, GID: 1234}
		}
		code, err := a.run(t, Request{Argv: argv, Env: []string{"PATH=" + tools}, User: user, Stdin: devnull, Stdout: devnull, Stderr: devnull})
		if err != nil || code != 0 {
			t.Fatalf("request %d: code %d err %v", i, code, err)
		}
	}
	// The first requests grow the heap to its working size; "flat" is what
	// happens after that.
	for i := 0; i < 500; i++ {
		req(i)
	}
	time.Sleep(100 * time.Millisecond)
	fds0, _, rss0 := agentCounts(t, a.proc.Pid)
	helper := helperOf(t, a.proc.Pid)
	hfds0, _, hrss0 := agentCounts(t, helper)
	for i := 0; i < 1000; i++ {
		req(i)
	}
	time.Sleep(200 * time.Millisecond)
	fds1, zombies, rss1 := agentCounts(t, a.proc.Pid)
	hfds1, hzombies, hrss1 := agentCounts(t, helper)
	t.Logf("agent fds %d -> %d, RSS %d kB -> %d kB, zombies %d", fds0, fds1, rss0, rss1, zombies)
	t.Logf("helper fds %d -> %d, RSS %d kB -> %d kB, zombies %d", hfds0, hfds1, hrss0, hrss1, hzombies)
	if hfds1 != hfds0 || hzombies != 0 || (!raceEnabled && hrss1 > hrss0+4096) {
		t.Errorf("helper not flat: fds %d -> %d, zombies %d, RSS %d -> %d kB", hfds0, hfds1, hzombies, hrss0, hrss1)
	}
	if fds1 != fds0 {
		t.Errorf("agent fd count went from %d to %d", fds0, fds1)
	}
	if zombies != 0 {
		t.Errorf("%d zombie children of the agent", zombies)
	}
	if !raceEnabled && rss1 > rss0+4096 {
		t.Errorf("agent RSS grew from %d kB to %d kB", rss0, rss1)
	}
}

func TestTTLExpiry(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{ttl: 3600})
	s := a.spec()
	s.TTL = time.Second // the request lowers the agent's TTL
	code, err := Run(context.Background(), a.tempRoot, s, Request{Argv: []string{"sleep", "1.5"}, Env: []string{"PATH=" + tools}, Cwd: "/", User: UserSpec{Mode: "root"}})
	if err != nil || code != 0 {
		t.Fatalf("code %d err %v", code, err)
	}
	// A running request kept it alive past the TTL; now idle, it must go.
	if !procAlive(a.proc.Pid) {
		t.Fatal("agent exited while a request was running")
	}
	a.waitExit(t, 3*time.Second)
}

func TestTTLZeroKeepsAgent(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{ttl: 0})
	if code, err := a.run(t, Request{Argv: []string{"true"}, Env: []string{"PATH=" + tools}}); err != nil || code != 0 {
		t.Fatalf("code %d err %v", code, err)
	}
	time.Sleep(1500 * time.Millisecond)
	if !procAlive(a.proc.Pid) {
		t.Fatal("agent with TTL 0 exited")
	}
}

func TestOneShot(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{oneShot: true})
	c, err := dial(socketPath(a.tempRoot, a.key))
	if err != nil {
		t.Fatal(err)
	}
	r := Request{Argv: []string{"sh", "-c", "exit 5"}, Env: []string{"PATH=" + tools}, Cwd: "/", User: UserSpec{Mode: "root"}}
	m, bodyFD, err := newRequest(a.spec(), r)
	if err != nil {
		t.Fatal(err)
	}
	code, err := call(c, r, m, bodyFD)
	if err != nil || code != 5 {
		t.Fatalf("code %d err %v", code, err)
	}
	a.waitExit(t, 2*time.Second)
}

func TestProtocolMismatchRejected(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	cases := []struct {
		name  string
		proto int
		build string
	}{
		{"other protocol", Proto + 1, a.build},
		{"other build", Proto, "otherbuild"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dial(socketPath(a.tempRoot, a.key))
			if err != nil {
				t.Fatal(err)
			}
			defer c.close()
			marker := filepath.Join(t.TempDir(), "ran")
			m := &message{Type: msgRun, Proto: tc.proto, Build: tc.build, Argv: []string{"touch", marker}, Env: []string{"PATH=" + tools}, Cwd: "/", User: &UserSpec{Mode: "root"}}
			if _, err := attachBody(m); err != nil {
				t.Fatal(err)
			}
			if err := c.send(m, 0, 1, 2); err != nil {
				t.Fatal(err)
			}
			reply, _, err := c.recv()
			if err != nil {
				t.Fatal(err)
			}
			if reply.Type != msgError || reply.Reason != reasonMismatch {
				t.Fatalf("reply %+v, want a mismatch error", reply)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatal("the command ran despite the mismatch")
			}
		})
	}
}

func TestStatusMessage(t *testing.T) {
	a := startTestAgent(t, agentOpts{ttl: 77})
	st, err := askStatus(socketPath(a.tempRoot, a.key))
	if err != nil {
		t.Fatal(err)
	}
	if st.TTLSeconds != 77 || st.Running != 0 || time.Since(st.Created) > time.Minute {
		t.Fatalf("status %+v", st)
	}
}

func TestSocketPathTooLong(t *testing.T) {
	long := "/tmp/" + strings.Repeat("x", 120)
	_, err := Run(context.Background(), long, Spec{Key: "0123456789abcdef", BuildID: "b"}, Request{Argv: []string{"true"}})
	if err == nil || !strings.Contains(err.Error(), "LECTIC_TEMP") {
		t.Fatalf("err = %v, want one naming LECTIC_TEMP", err)
	}
}

// A command sees its three stdio fds and nothing of the agent's.
func TestNoFDLeaks(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	for _, user := range []UserSpec{{Mode: "root"}, {Mode: "caller", UID: 1234, GID: 1234}, {Mode: "caller", UID: 0, GID: 0}} {
		out, serr, code, err := pipeRun(t, a, Request{Argv: []string{"ls", "/proc/self/fd"}, Env: []string{"PATH=" + tools}, User: user}, "")
		if err != nil || code != 0 {
			t.Fatalf("%+v: code %d err %v stderr %q", user, code, err, serr)
		}
		// fd 3 is ls's own handle on the directory it lists.
		if got := strings.Fields(out); strings.Join(got, " ") != "0 1 2 3" {
			t.Errorf("%+v: command has fds %v, want 0 1 2 (and ls's 3)", user, got)
		}
	}
}

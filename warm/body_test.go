package warm

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/execargs"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/unixfd"
)

// probeScript prints what the shell was started with, as the kernel holds
// it: its argv and environ, NUL-separated, then its working directory.
const probeScript = `cat /proc/$$/cmdline; echo ==; cat /proc/$$/environ; echo ==; pwd -P`

// latin1 are bytes that are not UTF-8, as Latin-1 file names and binary
// arguments have them.
const latin1 = "caf\xe9 \xff\xfe na\xefve \x01\x7f"

// TestExactBytes: argv, environment and working directory reach the
// command byte for byte, whoever runs it (the agent, an identity helper,
// a confined start through package spawn) and however large the request is (inline, or in a
// memfd past maxInline).
func TestExactBytes(t *testing.T) {
	tools := toolDir(t)
	cwd := filepath.Join(shortTempDir(t), "d\xe9j\xe0 vu")
	if err := os.Mkdir(cwd, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(cwd), 0o755); err != nil {
		t.Fatal(err)
	}
	a := startTestAgent(t, agentOpts{})
	bigValue := strings.Repeat("\xe9", 100<<10)
	sizes := []struct {
		name string
		argv []string
		env  []string
	}{
		{"inline", []string{"x", latin1, "", "\xc3\x28"},
			[]string{"PATH=" + tools, "V=" + latin1, "\xe9T\xe9=summer", "EMPTY="}},
		{"memfd", append([]string{"x", latin1}, words(20000, "w\xff")...),
			[]string{"PATH=" + tools, "V=" + latin1, "B1=" + bigValue, "B2=" + bigValue, "B3=" + bigValue}},
	}
	users := []UserSpec{{Mode: "root"}, {Mode: "caller", UID: 1234, GID: 1234}, {Mode: "caller", UID: 0, GID: 0}}
	for _, size := range sizes {
		for _, u := range users {
			t.Run(fmt.Sprintf("%s/%s-%d", size.name, u.Mode, u.UID), func(t *testing.T) {
				argv := append([]string{"sh", "-c", probeScript}, size.argv...)
				out, serr, code, err := pipeRun(t, a, Request{Argv: argv, Env: size.env, Cwd: cwd, User: u}, "")
				if err != nil || code != 0 {
					t.Fatalf("code %d err %v stderr %q", code, err, serr)
				}
				checkProbe(t, out, argv, size.env, cwd)
			})
		}
	}
}

// checkProbe compares probeScript's output with what was sent.
func checkProbe(t *testing.T, out string, argv, env []string, cwd string) {
	t.Helper()
	parts := strings.SplitN(out, "==\n", 3)
	if len(parts) != 3 {
		t.Fatalf("probe output %.200q", out)
	}
	want := func(list []string) string {
		var b bytes.Buffer
		for _, s := range list {
			b.WriteString(s)
			b.WriteByte(0)
		}
		return b.String()
	}
	if parts[0] != want(argv) {
		t.Errorf("argv differs: got %d bytes, want %d; got %.300q", len(parts[0]), len(want(argv)), parts[0])
	}
	if parts[1] != want(env) {
		i := firstDiff(parts[1], want(env))
		t.Errorf("environment differs at byte %d of %d (want %d): got %.100q, want %.100q", i, len(parts[1]), len(want(env)), parts[1][i:], want(env)[i:])
	}
	if parts[2] != cwd+"\n" {
		t.Errorf("working directory %q, want %q", parts[2], cwd)
	}
}

func words(n int, w string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = w + strconv.Itoa(i)
	}
	return out
}

// TestWithheldNamesInALargeBody: names of withheld variables travel in
// the body too, so a request with many of them is not one packet too
// large, and the agent reads a memfd body for them even when a helper
// runs the command.
func TestWithheldNamesInALargeBody(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	withheld := words(20000, "SOME_TOKEN_")
	withheld[0] = "\xe9_TOKEN"
	for _, u := range []UserSpec{{Mode: "root"}, {Mode: "caller", UID: 1000, GID: 1000}} {
		_, serr, code, err := pipeRun(t, a, Request{Argv: []string{"true"}, Env: []string{"PATH=" + tools}, Withheld: withheld, User: u}, "")
		if err != nil || code != 0 {
			t.Fatalf("%s: code %d err %v stderr %q", u.Mode, code, err, serr)
		}
		if u.Mode == "root" && !strings.Contains(serr, "and 19990 more") {
			t.Errorf("the first call's notice: %q", serr)
		}
	}
}

// TestTooLarge: a request past what any execve takes is E2BIG, 126, said
// by the client before anything is sent; one within it that the kernel
// still refuses (a string past MAX_ARG_STRLEN) is E2BIG from the agent.
func TestTooLarge(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	huge := strings.Repeat("x", 100<<10)
	argv := append([]string{"true"}, words(64, huge)...)
	_, serr, code, err := pipeRun(t, a, Request{Argv: argv, Env: []string{"PATH=" + tools}}, "")
	if err != nil || code != 126 || serr != "lectic-nix-sandbox: cannot execute true: argument list too long\n" {
		t.Fatalf("past execargs.MaxExec: code %d err %v stderr %q", code, err, serr)
	}
	one := strings.Repeat("y", 200<<10) // a single string over the kernel's 128 KiB
	_, serr, code, err = pipeRun(t, a, Request{Argv: []string{"true", one}, Env: []string{"PATH=" + tools}}, "")
	if err != nil || code != 126 || serr != "lectic-nix-sandbox: cannot execute true: argument list too long\n" {
		t.Fatalf("a string past MAX_ARG_STRLEN: code %d err %v stderr %q", code, err, serr)
	}
}

// TestStackLimitFollowsTheCaller: execve takes a quarter of the stack
// limit in argv and environment, so the command gets its caller's soft
// stack limit; a request the caller's limit allows but the container's
// hard limit does not is E2BIG, 126, and the agent's own limit is left as
// it was.
func TestStackLimitFollowsTheCaller(t *testing.T) {
	tools := toolDir(t)
	var orig unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_STACK, &orig); err != nil {
		t.Fatal(err)
	}
	const big = 64 << 20
	if orig.Max < big {
		skipOrFail(t, "the hard stack limit (%d) is below 64 MiB", orig.Max)
	}
	a := startTestAgent(t, agentOpts{})
	set := func(cur uint64) {
		t.Helper()
		if err := unix.Setrlimit(unix.RLIMIT_STACK, &unix.Rlimit{Cur: cur, Max: orig.Max}); err != nil {
			t.Fatal(err)
		}
	}
	defer func() { _ = unix.Setrlimit(unix.RLIMIT_STACK, &orig) }()
	// 3 MiB of arguments: more than a quarter of 8 MiB, less than of 64 MiB.
	argv := append([]string{"sh", "-c", `echo $# $(ulimit -s)`, "sh"}, words(30, strings.Repeat("z", 100<<10))...)
	for _, u := range []UserSpec{{Mode: "root"}, {Mode: "caller", UID: 1000, GID: 1000}} {
		set(8 << 20)
		_, serr, code, err := pipeRun(t, a, Request{Argv: argv, Env: []string{"PATH=" + tools}, User: u}, "")
		if code != 126 || err != nil || !strings.Contains(serr, "argument list too long") {
			t.Fatalf("%s, 8 MiB stack: code %d err %v stderr %q", u.Mode, code, err, serr)
		}
		set(big)
		out, serr, code, err := pipeRun(t, a, Request{Argv: argv, Env: []string{"PATH=" + tools}, User: u}, "")
		if code != 0 || err != nil || out != "30 65536\n" {
			t.Fatalf("%s, 64 MiB stack: code %d err %v out %q stderr %q", u.Mode, code, err, out, serr)
		}
	}
	var agentLimit unix.Rlimit
	if err := unix.Prlimit(a.proc.Pid, unix.RLIMIT_STACK, nil, &agentLimit); err != nil {
		t.Fatal(err)
	}
	if agentLimit != orig {
		t.Errorf("the agent's own stack limit is %+v, was %+v", agentLimit, orig)
	}
	// The container's hard limit bounds what a caller gets.
	if err := unix.Prlimit(a.proc.Pid, unix.RLIMIT_STACK, &unix.Rlimit{Cur: 8 << 20, Max: 8 << 20}, nil); err != nil {
		t.Fatal(err)
	}
	set(big)
	_, serr, code, err := pipeRun(t, a, Request{Argv: argv, Env: []string{"PATH=" + tools}, User: UserSpec{Mode: "root"}}, "")
	if code != 126 || err != nil || serr != "lectic-nix-sandbox: cannot execute sh: argument list too long\n" {
		t.Fatalf("past the agent's hard limit: code %d err %v stderr %q", code, err, serr)
	}
}

// TestMalformedBodies: a run request whose body does not match its header
// is refused with 125, and never hangs the agent or runs anything.
func TestMalformedBodies(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	good := func() *message {
		m := &message{Type: msgRun, Proto: Proto, Build: a.build, Argv: []string{"sh", "-c", "echo ran"},
			Env: []string{"PATH=" + tools}, Cwd: "/", User: &UserSpec{Mode: "root"}}
		if _, err := attachBody(m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	cases := []struct {
		name  string
		edit  func(m *message)
		extra []int
		want  string
	}{
		{"size differs", func(m *message) { m.Body++ }, nil, "header says"},
		{"counts differ", func(m *message) { m.Argc++ }, nil, "ends before its last string"},
		{"too large", func(m *message) { m.Body = execargs.MaxBody + 1 }, nil, "more than"},
		{"memfd announced, none sent", func(m *message) { m.BodyFD, m.inline = true, nil }, nil, "want 4"},
		{"body fd is a pipe", func(m *message) { m.BodyFD, m.inline = true, nil }, []int{int(pr.Fd())}, "not a memfd"},
		{"both inline and fd", func(m *message) { m.BodyFD = true }, []int{int(pr.Fd())}, "both inline and in a memfd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dial(socketPath(a.tempRoot, a.key))
			if err != nil {
				t.Fatal(err)
			}
			defer c.close()
			if err := c.setTimeout(10e9); err != nil {
				t.Fatal(err)
			}
			m := good()
			tc.edit(m)
			devnull, _ := os.Open(os.DevNull)
			defer devnull.Close()
			fd := int(devnull.Fd())
			if err := c.send(m, append([]int{fd, fd, fd}, tc.extra...)...); err != nil {
				t.Fatal(err)
			}
			reply, _, err := c.recv()
			if err != nil {
				t.Fatal(err)
			}
			if reply.Type != msgError || reply.Code != 125 || !strings.Contains(reply.Message, tc.want) {
				t.Fatalf("reply %+v, want a 125 error containing %q", reply, tc.want)
			}
		})
	}
}

func firstDiff(a, b string) int {
	for i := 0; i < min(len(a), len(b)); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// FuzzRunMessageRoundTrip: whatever cwd, argv, environment and withheld
// names a client sends (inline or, past maxInline, in a memfd), the agent
// reads back exactly those bytes.
//
//	go test ./warm -run '^$' -fuzz FuzzRunMessageRoundTrip -fuzztime 5m
func FuzzRunMessageRoundTrip(f *testing.F) {
	f.Add("/w", "ls\x00-la", "PATH=/bin\x00V=\xe9", "GH_TOKEN", uint16(0))
	f.Add("/caf\xe9", "\xff\xfe\x00\x00", "\xc0=x", "", uint16(40))
	f.Add("", "", "", "", uint16(0))
	f.Fuzz(func(t *testing.T, cwd, argv, env, withheld string, pad uint16) {
		split := func(s string) []string {
			if s == "" {
				return nil
			}
			return strings.Split(s, "\x00")
		}
		m := &message{Type: msgRun, Proto: Proto, Cwd: strings.ReplaceAll(cwd, "\x00", ""),
			Argv: split(argv), Env: split(env), Withheld: split(withheld)}
		if pad > 0 {
			// pad KiB more: past maxInline from 32 on
			m.Env = append(m.Env, "PAD="+strings.Repeat("\xe9", int(pad%64)<<10))
		}
		want := execargs.Args{Cwd: m.Cwd, Argv: m.Argv, Env: m.Env, Withheld: m.Withheld}
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		a, b := conn{fd: fds[0]}, conn{fd: fds[1]}
		defer a.close()
		defer b.close()
		bodyFD, err := attachBody(m)
		if err != nil {
			t.Fatal(err)
		}
		var pass []int
		if bodyFD >= 0 {
			defer unix.Close(bodyFD)
			pass = []int{bodyFD}
		}
		if (bodyFD >= 0) != (m.Body > maxInline) {
			t.Fatalf("a body of %d bytes sent with memfd %v", m.Body, bodyFD >= 0)
		}
		if err := a.send(m, pass...); err != nil {
			t.Fatal(err)
		}
		got, gotFDs, err := b.recv()
		if err != nil {
			t.Fatal(err)
		}
		defer unixfd.CloseAll(gotFDs)
		if err := got.loadBody(gotFDs); err != nil {
			t.Fatal(err)
		}
		norm := func(l []string) []string {
			if len(l) == 0 {
				return nil
			}
			return l
		}
		if got.Cwd != want.Cwd || !reflect.DeepEqual(norm(got.Argv), norm(want.Argv)) ||
			!reflect.DeepEqual(norm(got.Env), norm(want.Env)) || !reflect.DeepEqual(norm(got.Withheld), norm(want.Withheld)) {
			t.Fatalf("round trip changed the request:\n got %q %q %q %q\nwant %q", got.Cwd, got.Argv, got.Env, got.Withheld, want)
		}
	})
}

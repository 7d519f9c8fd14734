package warm

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netfwd"
)

func TestLoPackets(t *testing.T) {
	l := &callLog{}
	if _, ok := l.loPackets(); ok {
		t.Fatal("without the file, the count must be unknown (and a flush made)")
	}
	f, err := os.Open("/sys/class/net/lo/statistics/rx_packets")
	if err != nil {
		t.Skip("no sysfs here:", err)
	}
	defer f.Close()
	l.lo = f
	before, ok := l.loPackets()
	if !ok || before == "" {
		t.Fatalf("count %q %v", before, ok)
	}
	// A packet on lo moves it.
	c, err := net.Dial("udp4", "127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("x"))
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if after, _ := l.loPackets(); after != before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lo's count stayed %s after a packet", before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// heldSocket is one end of a loopback connection, with its addresses as a
// refusal names them (client: this end).
type heldSocket struct {
	file           *os.File
	client, server netip.AddrPort
}

func holdSocket(t *testing.T) heldSocket {
	t.Helper()
	l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.DialTCP("tcp4", nil, l.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	t.Cleanup(func() { f.Close() })
	return heldSocket{file: f, client: netip.MustParseAddrPort(c.LocalAddr().String()), server: netip.MustParseAddrPort(c.RemoteAddr().String())}
}

// fakeCall is a call in a callLog: a command running under sh, and the
// stderr the log writes to.
type fakeCall struct {
	rec    *callRec
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan struct{}
}

func startFakeCall(t *testing.T, l *callLog, tools, script string, extra ...*os.File) *fakeCall {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tools+"/sh", "-c", script)
	cmd.Env = []string{"PATH=" + tools}
	cmd.ExtraFiles = extra
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c := &fakeCall{rec: l.add(int(w.Fd())), cmd: cmd, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	w.Close()
	c.rec.setPid(cmd.Process.Pid)
	go func() {
		_, _ = io.Copy(c.stderr, r)
		r.Close()
		close(c.done)
	}()
	return c
}

// end removes the call and returns what its stderr got.
func (c *fakeCall) end(l *callLog) string {
	l.mu.Lock()
	delete(l.calls, c.rec)
	l.mu.Unlock()
	c.rec.stderr.Close()
	<-c.done
	return c.stderr.String()
}

func TestRefusalReachesTheRightCall(t *testing.T) {
	tools := toolDir(t)
	l := &callLog{calls: map[*callRec]struct{}{}, netDir: "/proc/thread-self/net", proc: "/proc"}
	sock := holdSocket(t)
	// The socket is held only by a grandchild of call A's command, in a
	// process group of its own: the walk up its parents finds A.
	a := startFakeCall(t, l, tools, "sleep 30 & exec 3>&-; wait", sock.file)
	b := startFakeCall(t, l, tools, "sleep 30")
	sock.file.Close()
	waitOwners(t, l, sock, 1)
	line := "blocked connection to evil.example:443 (not in --allow-domain)"
	ref := netfwd.Refusal{Line: line, Key: "evil.example:443", Proto: "tcp", Client: sock.client.String(), Server: sock.server.String()}
	l.report(ref)
	l.report(ref) // at most once per host and port
	// A socket nobody holds any more: every running call is told.
	l.report(netfwd.Refusal{Line: "blocked UDP to x.example:443 (y)", Key: "x.example:443", Proto: "udp",
		Client: "127.0.0.1:9", Server: "127.0.0.1:10"})
	gotA, gotB := a.end(l), b.end(l)
	wantA := "lectic-nix-sandbox: " + line + "\nlectic-nix-sandbox: blocked UDP to x.example:443 (y)\n"
	if gotA != wantA {
		t.Errorf("call A's stderr = %q, want %q", gotA, wantA)
	}
	if gotB != "lectic-nix-sandbox: blocked UDP to x.example:443 (y)\n" {
		t.Errorf("call B's stderr = %q: it must hear only of what cannot be attributed", gotB)
	}
}

// waitOwners waits until the socket has n owners (the shell closed its copy).
func waitOwners(t *testing.T, l *callLog, s heldSocket, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := netfwd.SocketOwners(l.netDir, l.proc, "tcp", s.client, s.server)
		if len(got) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket owners %v, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAgentReportsToTheCall runs a real agent with a report channel: the
// refusal line reaches the call's stderr, never its stdout, and a refusal
// that waits for its line is answered.
func TestAgentReportsToTheCall(t *testing.T) {
	tools := toolDir(t)
	var sender *netfwd.ReportSender
	a := startTestAgent(t, agentOpts{reports: func(s *netfwd.ReportSender) { sender = s }})
	sock := holdSocket(t)
	started := make(chan struct{})
	var out, serr string
	var code int
	go func() {
		defer close(started)
		out, serr, code, _ = pipeRunStdin(t, a, Request{Argv: []string{"sh", "-c", "echo out; sleep 1; echo done"}, Env: []string{"PATH=" + tools}}, sock.file)
	}()
	// The command holds the socket as its stdin; wait until it runs.
	l := &callLog{netDir: "/proc/thread-self/net", proc: "/proc"}
	deadline := time.Now().Add(10 * time.Second)
	for len(netfwd.SocketOwners(l.netDir, l.proc, "tcp", sock.client, sock.server)) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	sock.file.Close()
	line := "blocked connection to evil.example:443 (not in --allow-domain)"
	sender.Report(t.Context(), netfwd.Refusal{Line: line, Key: "evil.example:443", Proto: "tcp",
		Client: sock.client.String(), Server: sock.server.String(), Open: true})
	<-started
	if code != 0 || out != "out\ndone\n" {
		t.Fatalf("call: code %d, stdout %q", code, out)
	}
	if strings.Count(serr, line) != 1 || strings.Contains(out, "lectic-nix-sandbox") {
		t.Fatalf("stderr %q, stdout %q: want the line once, on stderr", serr, out)
	}
}

// pipeRunStdin is pipeRun with a file of the test's as the command's stdin.
func pipeRunStdin(t *testing.T, a *testAgent, r Request, stdin *os.File) (string, string, int, error) {
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	r.Stdin, r.Stdout, r.Stderr = stdin, outW, errW
	var out, serr bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = io.Copy(&out, outR) }()
	go func() { defer wg.Done(); _, _ = io.Copy(&serr, errR) }()
	code, err := a.run(t, r)
	outW.Close()
	errW.Close()
	wg.Wait()
	return out.String(), serr.String(), code, err
}

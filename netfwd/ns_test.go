package netfwd

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/testenv"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netpolicy"
)

// The namespace tests need a process that may create network namespaces:
// root, or a process alone in a user namespace (the supervisor's case).
// The test binary re-executes itself for the second, as the unprivileged
// test user when it runs as root.
const stageEnv = "_NETFWD_TEST_STAGE"

func TestMain(m *testing.M) {
	if os.Getenv(stageEnv) == "user" {
		os.Exit(reexecInUserns())
	}
	os.Exit(m.Run())
}

// reexecInUserns runs the same test binary and arguments alone in a new
// user namespace where uid 0 is the caller, as the supervisor runs.
func reexecInUserns() int {
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Env = append(os.Environ(), stageEnv+"=userns")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "re-exec in a user namespace:", err)
		return 1
	}
	return 0
}

// TestNamespace runs the scenarios here when this process may make
// network namespaces, and again unprivileged in a user namespace.
func TestNamespace(t *testing.T) {
	stage := os.Getenv(stageEnv)
	if stage == "userns" || (stage == "" && os.Geteuid() == 0) {
		t.Run("direct", testScenarios)
	}
	if stage != "" {
		return
	}
	t.Run("userns", func(t *testing.T) {
		var cred *syscall.Credential
		bin, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		if os.Geteuid() == 0 {
			uid, gid := testenv.Unprivileged()
			cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
			// t.TempDir's parent is private to root.
			dir, err := os.MkdirTemp("", "netfwd-test-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			bin = filepath.Join(dir, "netfwd.test")
			if err := testenv.CopyFile(bin, os.Args[0], 0o755); err != nil {
				t.Fatal(err)
			}
		}
		args := []string{"-test.run", "^TestNamespace$/^direct$", "-test.count=1"}
		if testing.Verbose() {
			args = append(args, "-test.v")
		}
		cmd := exec.Command(bin, args...)
		cmd.Dir = "/"
		cmd.Env = append(os.Environ(), stageEnv+"=user")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.CombinedOutput()
		t.Logf("%s", out)
		if err != nil {
			if strings.Contains(string(out), "operation not permitted") && !testenv.InCI() {
				t.Skip("unprivileged user namespaces are not available here")
			}
			t.Fatalf("the scenarios failed in a user namespace: %v", err)
		}
		if !strings.Contains(string(out), "PASS") {
			t.Fatal("the scenarios did not run in the user namespace")
		}
	})
}

// recorder is the agent's stand-in: it keeps each refusal and, for an
// open connection, who held the socket when the line was due.
type recorder struct {
	ns   func() *os.File
	mu   sync.Mutex
	got  []recorded
	more chan struct{}
}

type recorded struct {
	Refusal
	owners []int
}

func (r *recorder) Report(_ context.Context, ref Refusal) {
	rec := recorded{Refusal: ref}
	if ref.Open {
		client, _ := netip.ParseAddrPort(ref.Client)
		server, _ := netip.ParseAddrPort(ref.Server)
		_ = inNamespace(r.ns(), func() error {
			rec.owners = SocketOwners("/proc/thread-self/net", "/proc", ref.Proto, client, server)
			return nil
		})
	}
	r.mu.Lock()
	r.got = append(r.got, rec)
	r.mu.Unlock()
	select {
	case r.more <- struct{}{}:
	default:
	}
}

// await returns the first refusal whose line contains want.
func (r *recorder) await(t *testing.T, want string) recorded {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		for _, g := range r.got {
			if strings.Contains(g.Line, want) {
				r.mu.Unlock()
				return g
			}
		}
		lines := fmt.Sprint(r.got)
		r.mu.Unlock()
		select {
		case <-r.more:
		case <-deadline:
			t.Fatalf("no refusal %q reported; got %s", want, lines)
		}
	}
}

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// payload is n deterministic bytes.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], uint64(i)*0x9e3779b97f4a7c15)
	}
	return b
}

// hostServer serves HTTP on the host's loopback, where no name inside can
// reach it unless --add-host maps one.
func hostServer(t *testing.T) uint16 {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.Host)
	})
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		_, _ = w.Write(payload(n))
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

type nsEnv struct {
	n    *Net
	rec  *recorder
	port uint16
}

// inside runs f in the namespace, where the sockets it makes belong.
func (e *nsEnv) dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNamespace(e.n.ns, func() error {
		var err error
		c, err = net.DialTimeout(network, addr, 10*time.Second)
		return err
	})
	return c, err
}

func (e *nsEnv) lookup(t *testing.T, name string) netip.Addr {
	t.Helper()
	var a netip.Addr
	if err := inNamespace(e.n.ns, func() error {
		var err error
		a, err = probeLookup(name)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return a
}

// get sends an HTTP/1.0 request on c and returns the body.
func get(c net.Conn, host, path string) (string, error) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func testScenarios(t *testing.T) {
	port := hostServer(t)
	var p netpolicy.Policy
	ps := strconv.Itoa(int(port))
	for _, err := range []error{
		p.Allow("allowed.test:" + ps + ",*.wild.test:" + ps + ",denied.test:" + ps + ",private.test:" + ps + ",nx.test:" + ps),
		p.Allow("192.0.2.50:" + ps),
		p.Allow("via-denied-ip.test:" + ps),
		p.Deny("denied.test"),
		p.Deny("127.0.0.2"),
		p.AddHost("via-denied-ip.test:127.0.0.2"),
		p.AddHost("allowed.test:127.0.0.1"),
		p.AddHost("a.wild.test:127.0.0.1"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	rec := &recorder{more: make(chan struct{}, 1)}
	n, err := Open(Options{Policy: &p, Hostname: "sandbox", Resolver: fakeResolver{
		"private.test": {netip.MustParseAddr("10.0.0.7"), netip.MustParseAddr("fd00::7")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	})
	rec.ns = func() *os.File { return n.ns }
	n.Start(rec)
	e := &nsEnv{n: n, rec: rec, port: port}

	t.Run("dns answers allowed and denied names alike", func(t *testing.T) {
		for _, name := range []string{"allowed.test", "denied.test", "not-listed.example"} {
			if a := e.lookup(t, name); !netpolicy.NameBlock.Contains(a) {
				t.Errorf("%s resolved to %s, outside %s", name, a, netpolicy.NameBlock)
			}
		}
		if e.lookup(t, "allowed.test") == e.lookup(t, "denied.test") {
			t.Error("two names share an address")
		}
	})
	t.Run("a resolver at any address is the sandbox's, over UDP and TCP", func(t *testing.T) {
		q, err := queryA("somewhere.example")
		if err != nil {
			t.Fatal(err)
		}
		for _, network := range []string{"udp", "tcp"} {
			// A connected UDP socket drops an answer from another source:
			// the answer must leave from the address asked, also for a
			// client whose own address is not that one.
			var c net.Conn
			err := inNamespace(e.n.ns, func() error {
				d := net.Dialer{Timeout: 10 * time.Second}
				if network == "udp" {
					d.LocalAddr = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
				}
				var err error
				c, err = d.Dial(network, "8.8.8.8:53")
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			msg := q
			if network == "tcp" {
				msg = append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)
			}
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 512)
			k, err := c.Read(buf)
			c.Close()
			if err != nil || k < 12 {
				t.Fatalf("%s: read %d bytes, %v", network, k, err)
			}
		}
	})
	t.Run("allowed name reaches the host through --add-host", func(t *testing.T) {
		for _, name := range []string{"allowed.test", "a.wild.test"} {
			a := e.lookup(t, name)
			c, err := e.dial("tcp", netip.AddrPortFrom(a, port).String())
			if err != nil {
				t.Fatal(err)
			}
			body, err := get(c, name, "/")
			if err != nil || body != "hello "+name {
				t.Fatalf("%s: body %q, %v", name, body, err)
			}
		}
	})
	t.Run("large download is byte-exact", func(t *testing.T) {
		const size = 48 << 20
		c, err := e.dial("tcp", netip.AddrPortFrom(e.lookup(t, "allowed.test"), port).String())
		if err != nil {
			t.Fatal(err)
		}
		body, err := get(c, "allowed.test", "/bytes?n="+strconv.Itoa(size))
		if err != nil {
			t.Fatal(err)
		}
		if len(body) != size || sha256.Sum256([]byte(body)) != sha256.Sum256(payload(size)) {
			t.Fatalf("got %d bytes, not the %d sent", len(body), size)
		}
	})
	t.Run("100 concurrent connections all complete", func(t *testing.T) {
		a := e.lookup(t, "allowed.test")
		want := payload(256 << 10)
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for i := 0; i < 100; i++ {
			c, err := e.dial("tcp", netip.AddrPortFrom(a, port).String())
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				body, err := get(c, "allowed.test", "/bytes?n="+strconv.Itoa(len(want)))
				if err == nil && body != string(want) {
					err = fmt.Errorf("got %d bytes, not the %d sent", len(body), len(want))
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	})
	refusedAtOnce := func(t *testing.T, addr, host, wantLine string) {
		t.Helper()
		// The kernel completes the handshake, the refusal resets it: the
		// command sees the reset in connect or in its first read.
		c, err := e.dial("tcp", addr)
		if err == nil {
			_, err = get(c, host, "/")
		}
		if !errors.Is(err, unix.ECONNRESET) {
			t.Fatalf("want connection reset, got %v", err)
		}
		r := rec.await(t, wantLine)
		if len(r.owners) != 1 || r.owners[0] != os.Getpid() {
			t.Errorf("the refused socket's owner was %v, want this process %d", r.owners, os.Getpid())
		}
	}
	t.Run("denied name is reset and reported", func(t *testing.T) {
		refusedAtOnce(t, netip.AddrPortFrom(e.lookup(t, "denied.test"), port).String(), "denied.test",
			"blocked connection to denied.test:"+ps+" (matches --deny-domain denied.test)")
	})
	t.Run("name not in the list", func(t *testing.T) {
		refusedAtOnce(t, netip.AddrPortFrom(e.lookup(t, "evil.example"), port).String(), "evil.example",
			"blocked connection to evil.example:"+ps+" (not in --allow-domain)")
	})
	t.Run("the sandbox's loopback on an allowed port is not the host's", func(t *testing.T) {
		refusedAtOnce(t, "127.0.0.1:"+ps, "127.0.0.1",
			"blocked connection to 127.0.0.1:"+ps+" (the sandbox's own loopback; to reach the host's, name it: --add-host NAME:127.0.0.1 --allow-domain NAME:"+ps+")")
	})
	t.Run("a name that resolves to a private address", func(t *testing.T) {
		refusedAtOnce(t, netip.AddrPortFrom(e.lookup(t, "private.test"), port).String(), "private.test",
			"blocked connection to private.test:"+ps+" (private.test resolves to 10.0.0.7, a private address; to allow it, map the name explicitly with --add-host private.test:10.0.0.7)")
	})
	t.Run("a name that leads to a denied address", func(t *testing.T) {
		refusedAtOnce(t, netip.AddrPortFrom(e.lookup(t, "via-denied-ip.test"), port).String(), "via-denied-ip.test",
			"blocked connection to via-denied-ip.test:"+ps+" (via-denied-ip.test resolves to 127.0.0.2, which matches --deny-domain 127.0.0.2)")
	})
	t.Run("a name that does not exist", func(t *testing.T) {
		refusedAtOnce(t, netip.AddrPortFrom(e.lookup(t, "nx.test"), port).String(), "nx.test",
			"could not connect to nx.test:"+ps+" (no such host)")
	})
	t.Run("a raw address is allowed only as IP:PORT", func(t *testing.T) {
		refusedAtOnce(t, "192.0.2.51:"+ps, "192.0.2.51", "blocked connection to 192.0.2.51:"+ps+" (not in --allow-domain; a raw IP address")
	})
	t.Run("another port of an allowed name is refused at once and reported", func(t *testing.T) {
		other := port + 1
		if other == netpolicy.ProxyBasePort || other == netpolicy.DNSPort {
			other += 2
		}
		_, err := e.dial("tcp", netip.AddrPortFrom(e.lookup(t, "allowed.test"), other).String())
		if !errors.Is(err, unix.ECONNREFUSED) {
			t.Fatalf("want connection refused, got %v", err)
		}
		rec.await(t, fmt.Sprintf("blocked connection to allowed.test:%d (port %d is not allowed for allowed.test; allowed: %d)", other, other, port))
	})
	t.Run("UDP other than DNS is refused and reported", func(t *testing.T) {
		c, err := e.dial("udp", netip.AddrPortFrom(e.lookup(t, "allowed.test"), 443).String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write([]byte("quic?"))
		rec.await(t, "blocked UDP to allowed.test:443 (only TCP and DNS leave the sandbox")
	})
	if n.IPv6() {
		t.Run("IPv6 goes the same way", func(t *testing.T) {
			refusedAtOnce(t, "[2001:db8::5]:"+ps, "x", "blocked connection to [2001:db8::5]:"+ps+" (not in --allow-domain")
		})
	}
	e.proxyScenarios(t)
}

func (e *nsEnv) proxyScenarios(t *testing.T) {
	proxyAddr := "127.0.0.1:" + strconv.Itoa(int(e.n.policy.ProxyPort()))
	ps := strconv.Itoa(int(e.port))
	t.Run("proxy CONNECT", func(t *testing.T) {
		c, err := e.dial("tcp", proxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "CONNECT allowed.test:%s HTTP/1.1\r\nHost: allowed.test:%s\r\n\r\n", ps, ps)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %v %v", resp, err)
		}
		fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: allowed.test\r\n\r\n")
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "hello allowed.test" {
			t.Fatalf("through the tunnel: %q", b)
		}
	})
	t.Run("proxy absolute-form GET", func(t *testing.T) {
		c, err := e.dial("tcp", proxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		body, err := get(c, "allowed.test:"+ps, "http://allowed.test:"+ps+"/")
		if err != nil || body != "hello allowed.test:"+ps {
			t.Fatalf("body %q, %v", body, err)
		}
	})
	t.Run("proxy SOCKS5 by name", func(t *testing.T) {
		c, err := e.dial("tcp", proxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		name := "allowed.test"
		req := append([]byte{5, 1, 0, 5, 1, 0, 3, byte(len(name))}, name...)
		req = binary.BigEndian.AppendUint16(req, e.port)
		_, _ = c.Write(req)
		var reply [12]byte
		if _, err := io.ReadFull(c, reply[:]); err != nil || reply[2+1] != socksOK {
			t.Fatalf("SOCKS5 reply %v %v", reply, err)
		}
		body, err := get(c, name, "/")
		if err != nil || body != "hello "+name {
			t.Fatalf("body %q, %v", body, err)
		}
	})
	t.Run("proxy refuses a denied name with 403 and reports it", func(t *testing.T) {
		c, err := e.dial("tcp", proxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "CONNECT denied.test:%s HTTP/1.1\r\n\r\n", ps)
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "CONNECT"})
		if err != nil || resp.StatusCode != 403 {
			t.Fatalf("want 403, got %v %v", resp, err)
		}
		b, _ := io.ReadAll(resp.Body)
		want := "blocked connection to denied.test:" + ps + " (matches --deny-domain denied.test)"
		if !strings.Contains(string(b), want) {
			t.Fatalf("403 body %q lacks %q", b, want)
		}
		if r := e.rec.await(t, want); len(r.owners) != 1 || r.owners[0] != os.Getpid() {
			t.Errorf("owner %v", r.owners)
		}
	})
	t.Run("proxy SOCKS5 refusal code", func(t *testing.T) {
		c, err := e.dial("tcp", proxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write(binary.BigEndian.AppendUint16([]byte{5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 99}, 443))
		var reply [12]byte
		if _, err := io.ReadFull(c, reply[:]); err != nil || reply[3] != socksNotAllowed {
			t.Fatalf("want reply code %d, got %v %v", socksNotAllowed, reply, err)
		}
	})
	t.Run("proxy reaches the sandbox's own loopback", func(t *testing.T) {
		var l net.Listener
		if err := inNamespace(e.n.ns, func() error {
			var err error
			l, err = net.Listen("tcp4", "127.0.0.1:0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			c, err := l.Accept()
			if err == nil {
				_, _ = http.ReadRequest(bufio.NewReader(c))
				_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\ninside")
				c.Close()
			}
		}()
		lport := l.Addr().(*net.TCPAddr).Port
		c, err := e.dial("tcp", proxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		body, err := get(c, "localhost", fmt.Sprintf("http://localhost:%d/", lport))
		if err != nil || body != "inside" {
			t.Fatalf("body %q, %v", body, err)
		}
	})
}

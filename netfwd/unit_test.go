package netfwd

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"
)

func TestNameTable(t *testing.T) {
	tab := newNameTable(netip.MustParsePrefix("198.18.0.0/29")) // offsets 1..7
	a := tab.addrFor("a.example")
	if a.String() != "198.18.0.1" || tab.addrFor("a.example") != a {
		t.Fatalf("first name got %s, again %s", a, tab.addrFor("a.example"))
	}
	if n, ok := tab.nameOf(a); !ok || n != "a.example" {
		t.Fatalf("nameOf(%s) = %q %v", a, n, ok)
	}
	for i := 0; i < 6; i++ {
		tab.addrFor(string(rune('b'+i)) + ".example")
	}
	// The block is used up: the next name takes the oldest address.
	h := tab.addrFor("h.example")
	if h != a {
		t.Fatalf("wrapped to %s, want %s", h, a)
	}
	if n, _ := tab.nameOf(a); n != "h.example" {
		t.Fatalf("the reused address maps to %q", n)
	}
	if _, ok := tab.byName["a.example"]; ok {
		t.Fatal("the evicted name kept its address")
	}
	for _, s := range []string{"198.18.0.0", "198.18.0.9", "10.0.0.1", "::1"} {
		if n, ok := tab.nameOf(netip.MustParseAddr(s)); ok {
			t.Errorf("nameOf(%s) = %q, want nothing", s, n)
		}
	}
	if _, ok := newNameTable(netip.MustParsePrefix("198.18.0.0/29")).hostOf(netip.MustParseAddr("198.18.0.6")); ok {
		t.Error("an address of the block never handed out must not be known")
	}
	if h, ok := tab.hostOf(netip.MustParseAddr("::ffff:192.0.2.1")); !ok || !h.IsAddr() || h.Addr.String() != "192.0.2.1" {
		t.Errorf("an address outside the block is itself: %v %v", h, ok)
	}
}

// ask sends h one query and parses the answer: the rcode and each answer's
// text (an address, or a PTR name).
func ask(t *testing.T, h *dnsHandler, name string, qtype dnsmessage.Type) (dnsmessage.RCode, []string) {
	t.Helper()
	n, err := dnsmessage.NewName(name)
	if err != nil {
		t.Fatal(err)
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 77, RecursionDesired: true})
	_ = b.StartQuestions()
	_ = b.Question(dnsmessage.Question{Name: n, Type: qtype, Class: dnsmessage.ClassINET})
	q, _ := b.Finish()
	var m dnsmessage.Message
	if err := m.Unpack(h.answer(q)); err != nil {
		t.Fatalf("%s %v: %v", name, qtype, err)
	}
	if m.ID != 77 || !m.Response || len(m.Questions) != 1 {
		t.Fatalf("%s %v: header %+v, %d questions", name, qtype, m.Header, len(m.Questions))
	}
	var out []string
	for _, rr := range m.Answers {
		switch r := rr.Body.(type) {
		case *dnsmessage.AResource:
			out = append(out, netip.AddrFrom4(r.A).String())
		case *dnsmessage.AAAAResource:
			out = append(out, netip.AddrFrom16(r.AAAA).String())
		case *dnsmessage.PTRResource:
			out = append(out, r.PTR.String())
		}
	}
	return m.RCode, out
}

func TestDNSAnswers(t *testing.T) {
	h := newDNSHandler(newNameTable(netip.MustParsePrefix("198.18.0.0/15")), "sandbox")
	rc, a := ask(t, h, "Example.COM.", dnsmessage.TypeA)
	if rc != dnsmessage.RCodeSuccess || len(a) != 1 {
		t.Fatalf("A example.com: %v %v", rc, a)
	}
	addr := netip.MustParseAddr(a[0])
	if !netip.MustParsePrefix("198.18.0.0/15").Contains(addr) {
		t.Fatalf("A example.com = %s, outside the name block", addr)
	}
	if _, again := ask(t, h, "example.com.", dnsmessage.TypeA); len(again) != 1 || again[0] != a[0] {
		t.Fatal("the same name got two addresses")
	}
	for _, name := range []string{"localhost.", "foo.localhost.", "sandbox."} {
		if _, got := ask(t, h, name, dnsmessage.TypeA); len(got) != 1 || got[0] != "127.0.0.1" {
			t.Errorf("A %s: %v", name, got)
		}
		if _, got := ask(t, h, name, dnsmessage.TypeAAAA); len(got) != 1 || got[0] != "::1" {
			t.Errorf("AAAA %s: %v", name, got)
		}
	}
	for _, qt := range []dnsmessage.Type{dnsmessage.TypeAAAA, dnsmessage.TypeMX, dnsmessage.TypeTXT, dnsmessage.TypeSRV} {
		if rc, got := ask(t, h, "example.com.", qt); len(got) != 0 || rc != dnsmessage.RCodeSuccess {
			t.Errorf("type %v: want an empty NOERROR answer, got %v %v", qt, rc, got)
		}
	}
	b := addr.As4()
	rev := fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa.", b[3], b[2], b[1], b[0])
	if _, got := ask(t, h, rev, dnsmessage.TypePTR); len(got) != 1 || got[0] != "example.com." {
		t.Errorf("PTR %s: %v", rev, got)
	}
	if rc, _ := ask(t, h, "9.9.18.198.in-addr.arpa.", dnsmessage.TypePTR); rc != dnsmessage.RCodeNameError {
		t.Errorf("PTR of an address never handed out: %v", rc)
	}
	if rc, _ := ask(t, h, "bad name.", dnsmessage.TypeA); rc != dnsmessage.RCodeNameError {
		t.Errorf("a name that is not a host name: %v", rc)
	}
	if h.answer([]byte("garbage")) != nil {
		t.Error("garbage got an answer")
	}
}

// packet4 builds an IPv4 packet around l4.
func packet4(proto byte, src, dst string, l4 []byte) []byte {
	b := make([]byte, 20, 20+len(l4))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(20+len(l4)))
	b[8] = 64
	b[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	return append(b, l4...)
}

func packet6(next byte, src, dst string, l4 []byte) []byte {
	b := make([]byte, 40, 40+len(l4))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(l4)))
	b[6] = next
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	return append(b, l4...)
}

func tcpSeg(sport, dport uint16, seq uint32, flags byte) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], seq)
	b[12] = 5 << 4
	b[13] = flags
	return b
}

func udpDgram(sport, dport uint16) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	return b
}

func TestObserverFilterAndParse(t *testing.T) {
	const rst, ack, syn = 0x04, 0x10, 0x02
	quoted4 := packet4(unix.IPPROTO_UDP, "198.18.0.7", "198.18.0.7", udpDgram(40000, 443))
	quoted6 := packet6(unix.IPPROTO_UDP, "2001:db8::1", "2001:db8::2", udpDgram(40001, 443))
	tests := []struct {
		name   string
		pkt    []byte
		filter []bpf.Instruction
		want   *observed
	}{
		{"refusing reset", packet4(unix.IPPROTO_TCP, "198.18.0.7", "198.18.0.7", tcpSeg(8080, 41000, 0, rst|ack)), filter4,
			&observed{"tcp", netip.MustParseAddrPort("198.18.0.7:41000"), netip.MustParseAddrPort("198.18.0.7:8080")}},
		{"reset of a connection", packet4(unix.IPPROTO_TCP, "198.18.0.7", "198.18.0.7", tcpSeg(443, 41000, 12345, rst|ack)), filter4, nil},
		{"syn", packet4(unix.IPPROTO_TCP, "198.18.0.7", "198.18.0.7", tcpSeg(41000, 443, 0, syn)), filter4, nil},
		{"data", packet4(unix.IPPROTO_TCP, "198.18.0.7", "198.18.0.7", append(tcpSeg(443, 41000, 0, ack), "payload"...)), filter4, nil},
		{"udp", packet4(unix.IPPROTO_UDP, "198.18.0.7", "198.18.0.7", udpDgram(1, 2)), filter4, nil},
		{"port unreachable", packet4(unix.IPPROTO_ICMP, "198.18.0.7", "198.18.0.7", append([]byte{3, 3, 0, 0, 0, 0, 0, 0}, quoted4...)), filter4,
			&observed{"udp", netip.MustParseAddrPort("198.18.0.7:40000"), netip.MustParseAddrPort("198.18.0.7:443")}},
		{"echo reply", packet4(unix.IPPROTO_ICMP, "198.18.0.7", "198.18.0.7", []byte{0, 0, 0, 0, 0, 0, 0, 0}), filter4, nil},
		{"v6 refusing reset", packet6(unix.IPPROTO_TCP, "2001:db8::2", "2001:db8::1", tcpSeg(22, 41001, 0, rst|ack)), filter6,
			&observed{"tcp", netip.MustParseAddrPort("[2001:db8::1]:41001"), netip.MustParseAddrPort("[2001:db8::2]:22")}},
		{"v6 data", packet6(unix.IPPROTO_TCP, "2001:db8::2", "2001:db8::1", tcpSeg(22, 41001, 0, ack)), filter6, nil},
		{"v6 port unreachable", packet6(unix.IPPROTO_ICMPV6, "2001:db8::2", "2001:db8::1", append([]byte{1, 4, 0, 0, 0, 0, 0, 0}, quoted6...)), filter6,
			&observed{"udp", netip.MustParseAddrPort("[2001:db8::1]:40001"), netip.MustParseAddrPort("[2001:db8::2]:443")}},
	}
	for _, tt := range tests {
		vm, err := bpf.NewVM(tt.filter)
		if err != nil {
			t.Fatal(err)
		}
		n, err := vm.Run(tt.pkt)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if (n > 0) != (tt.want != nil) {
			t.Errorf("%s: filter kept %d bytes, want kept=%v", tt.name, n, tt.want != nil)
		}
		got, ok := parseRefusal(tt.pkt)
		if tt.want == nil {
			if ok {
				t.Errorf("%s: parsed %+v from a packet that is no refusal", tt.name, got)
			}
			continue
		}
		if !ok || got != *tt.want {
			t.Errorf("%s: parsed %+v %v, want %+v", tt.name, got, ok, *tt.want)
		}
	}
	for _, short := range [][]byte{nil, {0x45}, {0x60, 0, 0}, packet4(unix.IPPROTO_ICMP, "1.1.1.1", "1.1.1.1", []byte{3, 3, 0, 0, 0, 0, 0, 0})} {
		if got, ok := parseRefusal(short); ok {
			t.Errorf("parsed %+v from a truncated packet %x", got, short)
		}
	}
}

func TestParseProcAddr(t *testing.T) {
	tests := []struct{ in, want string }{
		{"0100007F:1F90", "127.0.0.1:8080"},
		{"050012C6:A02C", "198.18.0.5:41004"},
		{"0000000000000000FFFF0000050012C6:01BB", "198.18.0.5:443"},
		{"00000000000000000000000001000000:0016", "[::1]:22"},
	}
	for _, tt := range tests {
		got, ok := parseProcAddr(tt.in)
		if !ok || got.String() != tt.want {
			t.Errorf("parseProcAddr(%s) = %s %v, want %s", tt.in, got, ok, tt.want)
		}
	}
	if _, ok := parseProcAddr("zz:1"); ok {
		t.Error("accepted garbage")
	}
}

func TestSocketOwnersFindsThisProcess(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	client := netip.MustParseAddrPort(c.LocalAddr().String())
	server := netip.MustParseAddrPort(c.RemoteAddr().String())
	if got := SocketOwners("/proc/thread-self/net", "/proc", "tcp", client, server); !slices.Equal(got, []int{os.Getpid()}) {
		t.Fatalf("SocketOwners = %v, want [%d]", got, os.Getpid())
	}
	if got := SocketOwners("/proc/thread-self/net", "/proc", "tcp", server, netip.MustParseAddrPort("127.0.0.1:1")); got != nil {
		t.Fatalf("a socket that does not exist has owners %v", got)
	}
	ppid, pgid, ok := Parent("/proc", os.Getpid())
	if !ok || ppid != os.Getppid() || pgid != unix.Getpgrp() {
		t.Fatalf("Parent = %d %d %v, want %d %d", ppid, pgid, ok, os.Getppid(), unix.Getpgrp())
	}
}

// tcpPair returns both ends of a loopback connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
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
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

func TestReadHTTPProxy(t *testing.T) {
	tests := []struct {
		name, req    string
		kind         proxyKind
		host         string
		port         uint16
		prelude      string // substrings, in order
		notInPrelude []string
		reply        string // what the client got, for a refused request
	}{
		{name: "connect", req: "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n",
			kind: httpConnect, host: "api.example.com", port: 443},
		{name: "connect v6", req: "CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n", kind: httpConnect, host: "2001:db8::1", port: 8443},
		{name: "absolute", req: "GET http://files.example/a/b?c=d HTTP/1.1\r\nHost: files.example\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\nUser-Agent: wget\r\n\r\n",
			kind: httpForward, host: "files.example", port: 80,
			prelude:      "GET /a/b?c=d HTTP/1.1\r\n|Host: files.example\r\n|User-Agent: wget\r\n|Connection: close\r\n\r\n",
			notInPrelude: []string{"Proxy-", "http://"}},
		{name: "absolute with port, no host header", req: "POST http://files.example:8080/up HTTP/1.0\r\nContent-Length: 3\r\n\r\n",
			kind: httpForward, host: "files.example", port: 8080, prelude: "POST /up HTTP/1.0\r\n|Host: files.example:8080\r\n|Content-Length: 3\r\n"},
		{name: "websocket", req: "GET http://ws.example/chat HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
			kind: httpForward, host: "ws.example", port: 80, prelude: "Upgrade: websocket\r\n|Connection: Upgrade\r\n\r\n"},
		{name: "origin form", req: "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", reply: "HTTP/1.1 400"},
		{name: "https absolute", req: "GET https://a.example/ HTTP/1.1\r\n\r\n", reply: "use CONNECT for https"},
		{name: "connect without port", req: "CONNECT a.example HTTP/1.1\r\n\r\n", reply: "HTTP/1.1 400"},
		{name: "not http", req: "HELLO\r\n\r\n", reply: "HTTP/1.1 400"},
		{name: "bad host", req: "CONNECT a_b c:443 HTTP/1.1\r\n\r\n", reply: "HTTP/1.1 400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := tcpPair(t)
			go func() { _, _ = io.WriteString(client, tt.req) }()
			req, err := readHTTPProxy(server, bufio.NewReader(server))
			if tt.reply != "" {
				if err == nil {
					t.Fatalf("accepted %q as %+v", tt.req, req)
				}
				server.CloseWrite()
				got, _ := io.ReadAll(client)
				if !strings.Contains(string(got), tt.reply) {
					t.Fatalf("client got %q, want %q", got, tt.reply)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req.proxy != tt.kind || req.host.String() != tt.host || req.port != tt.port {
				t.Fatalf("got %v %s:%d, want %v %s:%d", req.proxy, req.host, req.port, tt.kind, tt.host, tt.port)
			}
			p := string(req.prelude)
			at := 0
			for _, want := range strings.Split(tt.prelude, "|") {
				i := strings.Index(p[at:], want)
				if i < 0 {
					t.Fatalf("prelude %q lacks %q after byte %d", p, want, at)
				}
				at += i + len(want)
			}
			for _, bad := range tt.notInPrelude {
				if strings.Contains(p, bad) {
					t.Fatalf("prelude %q contains %q", p, bad)
				}
			}
		})
	}
}

func TestReadSOCKS5(t *testing.T) {
	name := "api.example.com"
	tests := []struct {
		name  string
		req   []byte
		host  string
		port  uint16
		reply []byte // the last reply bytes for a refused request
	}{
		{name: "domain", req: append(append([]byte{5, 1, 0, 5, 1, 0, 3, byte(len(name))}, name...), 1, 187), host: name, port: 443},
		{name: "ipv4", req: []byte{5, 2, 2, 0, 5, 1, 0, 1, 198, 18, 0, 5, 0, 80}, host: "198.18.0.5", port: 80},
		{name: "ipv6", req: append(append([]byte{5, 1, 0, 5, 1, 0, 4}, netip.MustParseAddr("2001:db8::9").AsSlice()...), 0, 22), host: "2001:db8::9", port: 22},
		{name: "auth only", req: []byte{5, 1, 2}, reply: []byte{5, 0xff}},
		{name: "udp associate", req: []byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0}, reply: []byte{5, socksNoCommand}},
		{name: "bad address type", req: []byte{5, 1, 0, 5, 1, 0, 9}, reply: []byte{5, socksNoAddressType}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := tcpPair(t)
			go func() { _, _ = client.Write(tt.req) }()
			req, err := readSOCKS5(server, bufio.NewReader(server))
			if tt.reply != nil {
				if err == nil {
					t.Fatalf("accepted %v", tt.req)
				}
				server.Close()
				got, _ := io.ReadAll(client)
				if !bytes.Contains(got, tt.reply) {
					t.Fatalf("client got %v, want %v in it", got, tt.reply)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req.proxy != socks5 || req.host.String() != tt.host || req.port != tt.port {
				t.Fatalf("got %s:%d", req.host, req.port)
			}
			var greet [2]byte
			if _, err := io.ReadFull(client, greet[:]); err != nil || greet != [2]byte{5, 0} {
				t.Fatalf("greeting reply %v %v", greet, err)
			}
		})
	}
}

func TestForwardHeadKeepsOrderIndependentHeaders(t *testing.T) {
	u, _ := url.Parse("http://h.example/p")
	hdr := textproto.MIMEHeader{"X-B": {"2"}, "X-A": {"1", "3"}, "Keep-Alive": {"300"}}
	got := string(forwardHead("GET", u, "HTTP/1.1", hdr))
	want := "GET /p HTTP/1.1\r\nHost: h.example\r\nX-A: 1\r\nX-A: 3\r\nX-B: 2\r\nConnection: close\r\n\r\n"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func TestReportChannel(t *testing.T) {
	sender, agentEnd, err := ReportPair()
	if err != nil {
		t.Fatal(err)
	}
	flushed := make(chan struct{}, 1)
	var pending []Refusal
	var pmu sync.Mutex
	sender.SetFlusher(func() {
		// What a flush finds pending is reported before the answer.
		pmu.Lock()
		defer pmu.Unlock()
		for _, p := range pending {
			sender.Report(t.Context(), p)
		}
		pending = nil
		flushed <- struct{}{}
	})
	recv, err := NewReportReceiver(agentEnd)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan Refusal, 4)
	release := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- recv.Serve(func(r Refusal) {
			if r.Open {
				t.Error("Open must not cross the channel")
			}
			if r.ID != 0 {
				<-release
			}
			if r.Key == "slow:1" {
				time.Sleep(50 * time.Millisecond)
			}
			got <- r
		})
	}()
	// A report about a closed connection does not wait.
	sender.Report(t.Context(), Refusal{Line: "blocked UDP to x:443 (y)", Key: "x:443", Proto: "udp"})
	if r := <-got; r.Line != "blocked UDP to x:443 (y)" || r.ID != 0 {
		t.Fatalf("got %+v", r)
	}
	// One about an open connection waits for the agent's answer.
	done := make(chan struct{})
	go func() {
		sender.Report(t.Context(), Refusal{Line: "blocked connection to x:443 (z)", Key: "x:443", Proto: "tcp", Client: "198.18.0.1:4000", Open: true})
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("Report returned before the agent answered")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-done
	if r := <-got; r.ID == 0 || r.Client != "198.18.0.1:4000" {
		t.Fatalf("got %+v", r)
	}
	// A flush returns once what was pending has been handled.
	pmu.Lock()
	pending = []Refusal{{Line: "slow", Key: "slow:1", Proto: "tcp"}}
	pmu.Unlock()
	recv.Flush(5 * time.Second)
	select {
	case r := <-got:
		if r.Key != "slow:1" {
			t.Fatalf("got %+v", r)
		}
	default:
		t.Fatal("Flush returned before the pending report was handled")
	}
	<-flushed
	sender.Close()
	if err := <-served; err != nil {
		t.Fatalf("Serve after the sender closed: %v", err)
	}
	// With the supervisor gone, a flush does not hang.
	recv.Flush(5 * time.Second)
}

// TestRelayHalfCloseAndReset: a client that shuts its sending side still
// gets the whole answer, and a reset on one side resets the other.
func TestRelayHalfCloseAndReset(t *testing.T) {
	clientA, relayA := tcpPair(t)
	relayB, serverB := tcpPair(t)
	done := make(chan struct{})
	go func() { relay(relayA, relayB); close(done) }()
	want := payload(3<<20 + 17)
	go func() {
		_, _ = clientA.Write([]byte("question"))
		_ = clientA.CloseWrite()
	}()
	q, err := io.ReadAll(serverB)
	if err != nil || string(q) != "question" {
		t.Fatalf("server read %q, %v", q, err)
	}
	go func() {
		_, _ = serverB.Write(want)
		_ = serverB.CloseWrite()
	}()
	got, err := io.ReadAll(clientA)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("client read %d bytes (%v), want %d", len(got), err, len(want))
	}
	<-done

	clientC, relayC := tcpPair(t)
	relayD, serverD := tcpPair(t)
	go relay(relayC, relayD)
	_, _ = clientC.Write([]byte("x"))
	var one [1]byte
	if _, err := io.ReadFull(serverD, one[:]); err != nil {
		t.Fatal(err)
	}
	reset(serverD)
	_ = clientC.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := clientC.Read(one[:]); !errors.Is(err, unix.ECONNRESET) {
		t.Fatalf("after the server's reset the client read %v, want connection reset", err)
	}
}

// TestReportWaitsAreBounded: with maxWaiting refusals waiting for an
// answer that never comes, the next is sent as one that does not wait.
func TestReportWaitsAreBounded(t *testing.T) {
	sender, agentEnd, err := ReportPair()
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	agent, err := seqConn(agentEnd) // an agent that reads but never answers
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	for i := 0; i < maxWaiting; i++ {
		go sender.Report(t.Context(), Refusal{Line: "x", Key: "x:1", Open: true})
	}
	buf := make([]byte, maxReport)
	read := func() Refusal {
		_ = agent.SetReadDeadline(time.Now().Add(10 * time.Second))
		k, err := agent.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		var m wireMsg
		if err := json.Unmarshal(buf[:k], &m); err != nil || m.Refusal == nil {
			t.Fatalf("message %q: %v", buf[:k], err)
		}
		return *m.Refusal
	}
	for i := 0; i < maxWaiting; i++ {
		if r := read(); r.ID == 0 {
			t.Fatalf("refusal %d within the bound does not wait: %+v", i, r)
		}
	}
	done := make(chan struct{})
	go func() {
		sender.Report(t.Context(), Refusal{Line: "y", Key: "y:1", Open: true})
		close(done)
	}()
	if r := read(); r.Line != "y" || r.ID != 0 {
		t.Fatalf("the refusal past the bound: %+v, want one that does not wait", r)
	}
	<-done
}

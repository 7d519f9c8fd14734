package netfwd

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseSockaddr(t *testing.T) {
	in4 := func(a [4]byte, port uint16) []byte {
		b := make([]byte, unix.SizeofSockaddrInet4)
		binary.NativeEndian.PutUint16(b, unix.AF_INET)
		binary.BigEndian.PutUint16(b[2:], port)
		copy(b[4:], a[:])
		return b
	}
	in6 := func(a netip.Addr, port uint16, scope uint32) []byte {
		b := make([]byte, unix.SizeofSockaddrInet6)
		binary.NativeEndian.PutUint16(b, unix.AF_INET6)
		binary.BigEndian.PutUint16(b[2:], port)
		s := a.As16()
		copy(b[8:], s[:])
		binary.NativeEndian.PutUint32(b[24:], scope)
		return b
	}
	unixAddr := make([]byte, 110)
	binary.NativeEndian.PutUint16(unixAddr, unix.AF_UNIX)
	for _, tt := range []struct {
		name string
		b    []byte
		want string // "" for not an internet destination
	}{
		{"IPv4", in4([4]byte{198, 18, 0, 7}, 443), "198.18.0.7:443"},
		{"IPv6", in6(netip.MustParseAddr("2001:db8::1"), 80, 0), "[2001:db8::1]:80"},
		{"IPv4-mapped IPv6 is the IPv4 address", in6(netip.MustParseAddr("::ffff:198.18.0.7"), 443, 0), "198.18.0.7:443"},
		{"scoped IPv6", in6(netip.MustParseAddr("fe80::1"), 80, 2), ""},
		{"short IPv4", in4([4]byte{198, 18, 0, 7}, 443)[:8], ""},
		{"short IPv6", in6(netip.MustParseAddr("2001:db8::1"), 80, 0)[:24], ""},
		{"unix", unixAddr, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ap, ok := parseSockaddr(tt.b)
			got := ""
			if ok {
				got = ap.String()
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestInspectSocket: only a TCP socket that is neither bound, listening
// nor connected is stood in for, and its flags and options are read.
func TestInspectSocket(t *testing.T) {
	pidfd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Skip("pidfd_open:", err)
	}
	defer unix.Close(pidfd)
	sock := func(t *testing.T, domain, typ int, setup func(fd int) error) int {
		fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		if setup != nil {
			if err := setup(fd); err != nil {
				t.Fatal(err)
			}
		}
		return fd
	}
	bind := func(fd int) error { return unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}) }
	for _, tt := range []struct {
		name   string
		domain int
		typ    int
		setup  func(fd int) error
		ok     bool
		check  func(t *testing.T, cs *callerSocket)
	}{
		{"blocking TCP with options", unix.AF_INET, unix.SOCK_STREAM, func(fd int) error {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
				return err
			}
			return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 77)
		}, true, func(t *testing.T, cs *callerSocket) {
			if cs.nonblock || cs.domain != unix.AF_INET {
				t.Errorf("%+v", cs)
			}
			want := map[[2]int]int{{unix.IPPROTO_TCP, unix.TCP_NODELAY}: 1, {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE}: 77}
			for _, o := range cs.opts {
				if v, ok := want[[2]int{o.level, o.name}]; ok && v != o.value {
					t.Errorf("option %d/%d = %d, want %d", o.level, o.name, o.value, v)
				}
				delete(want, [2]int{o.level, o.name})
			}
			if len(want) > 0 {
				t.Errorf("options not read: %v", want)
			}
		}},
		{"non-blocking IPv6-only", unix.AF_INET6, unix.SOCK_STREAM | unix.SOCK_NONBLOCK, func(fd int) error {
			return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
		}, true, func(t *testing.T, cs *callerSocket) {
			if !cs.nonblock || !cs.v6only || cs.domain != unix.AF_INET6 {
				t.Errorf("%+v", cs)
			}
		}},
		{"UDP", unix.AF_INET, unix.SOCK_DGRAM, nil, false, nil},
		{"unix stream", unix.AF_UNIX, unix.SOCK_STREAM, nil, false, nil},
		{"bound to a port", unix.AF_INET, unix.SOCK_STREAM, bind, false, nil},
		{"listening", unix.AF_INET, unix.SOCK_STREAM, func(fd int) error {
			if err := bind(fd); err != nil {
				return err
			}
			return unix.Listen(fd, 1)
		}, false, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fd := sock(t, tt.domain, tt.typ, tt.setup)
			cs, err := inspectSocket(pidfd, fd)
			if (err == nil) != tt.ok {
				t.Fatalf("inspectSocket: %v, want ok=%v", err, tt.ok)
			}
			if tt.check != nil {
				tt.check(t, cs)
			}
		})
	}
	if _, err := inspectSocket(pidfd, 1<<20); err == nil {
		t.Error("a closed fd was inspected")
	}
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	if _, err := inspectSocket(pidfd, int(r.Fd())); err == nil {
		t.Error("a pipe was taken for a socket")
	}
}

// TestDialLike: the host side's socket has the caller's family and
// options, is connected when it is returned, and a failure carries the
// errno the caller's connect gets. Many rounds, since a connect that ends
// before the wait starts must not be waited for until the deadline.
func TestDialLike(t *testing.T) {
	l4, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l4.Close()
	go func() {
		for {
			c, err := l4.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := uint16(l4.Addr().(*net.TCPAddr).Port)
	closed := func() uint16 {
		l, _ := net.Listen("tcp4", "127.0.0.1:0")
		p := uint16(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		return p
	}()
	lo := netip.MustParseAddr("127.0.0.1")
	nodelay := []sockOpt{{level: unix.IPPROTO_TCP, name: unix.TCP_NODELAY, value: 1}, {level: unix.SOL_SOCKET, name: unix.SO_KEEPALIVE, value: 0}}
	for _, tt := range []struct {
		name   string
		cs     callerSocket
		port   uint16
		rounds int
		errno  unix.Errno // 0: connects
	}{
		{"IPv4", callerSocket{domain: unix.AF_INET, opts: nodelay}, port, 300, 0},
		{"IPv4 to an IPv6 socket, mapped", callerSocket{domain: unix.AF_INET6, opts: nodelay}, port, 20, 0},
		{"IPv4 to an IPv6-only socket", callerSocket{domain: unix.AF_INET6, v6only: true}, port, 1, unix.EAFNOSUPPORT},
		{"nobody listens", callerSocket{domain: unix.AF_INET}, closed, 5, unix.ECONNREFUSED},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for i := 0; i < tt.rounds; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				start := time.Now()
				f, err := dialLike(ctx, &tt.cs, []netip.Addr{lo}, tt.port)
				cancel()
				if time.Since(start) > 4*time.Second {
					t.Fatalf("round %d waited for the deadline", i)
				}
				if tt.errno != 0 {
					if f := dialFailure(err); f.errno() != tt.errno {
						t.Fatalf("error %v gives errno %v, want %v", err, f.errno(), tt.errno)
					}
					continue
				}
				if err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
				fd := int(f.Fd())
				if d, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); d != tt.cs.domain {
					t.Errorf("domain %d, want %d", d, tt.cs.domain)
				}
				if _, err := unix.Getpeername(fd); err != nil {
					t.Errorf("not connected: %v", err)
				}
				if v, _ := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); v != 1 {
					t.Errorf("TCP_NODELAY %d, want the caller's 1", v)
				}
				f.Close()
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := dialLike(ctx, &callerSocket{domain: unix.AF_INET}, []netip.Addr{netip.MustParseAddr("192.0.2.1")}, 9); err == nil {
		t.Error("a cancelled dial connected")
	}
}

// TestThreadPidfd: a call made by a thread that does not lead its process
// (any thread of a Go program) still gets a pidfd the supervisor can use.
func TestThreadPidfd(t *testing.T) {
	// Two locked goroutines run on two threads: at most one of them is
	// the main thread.
	tid := make(chan int)
	release := make(chan struct{})
	defer close(release)
	for range 2 {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tid <- unix.Gettid()
			<-release
		}()
	}
	id := <-tid
	if id == os.Getpid() {
		id = <-tid
	}
	fd, err := threadPidfd(id)
	if err != nil {
		t.Fatalf("threadPidfd(%d) of pid %d: %v", id, os.Getpid(), err)
	}
	defer unix.Close(fd)
	pid, err := pidOfPidfd(fd)
	if err != nil || (pid != id && pid != os.Getpid()) {
		t.Fatalf("the pidfd names %d (%v), want thread %d or process %d", pid, err, id, os.Getpid())
	}
	if _, err := inspectSocket(fd, 1<<20); err == nil {
		t.Error("a closed fd was inspected")
	}
}

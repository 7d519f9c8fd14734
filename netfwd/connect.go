package netfwd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/unixfd"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netpolicy"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/seccomp"
)

// Connections made in the command's place.
//
// Relaying costs a copy of every byte in the supervisor, and on a small
// machine that halves a download's throughput. So when the agent has a
// seccomp filter, it intercepts connect(2) (seccomp.Filter.Intercept) and
// hands each call to the supervisor over the connect channel, with the
// listener and a pidfd of the caller. The supervisor reads the address
// from the caller's memory and decides:
//
//   - a TCP socket, not bound or connected, going to a forwarded port of
//     an address the relay would serve (a name of the block, or an address
//     an IP pattern may allow): the supervisor applies the policy, connects
//     on the host, puts its socket in place of the caller's
//     (SECCOMP_IOCTL_NOTIF_ADDFD) and answers 0. The bytes then go straight
//     between the command and the server, as with --allow-net, but only to
//     where the policy allows. A refusal is reported to the caller's call
//     and answered ECONNREFUSED at once.
//   - anything else continues as made, in the container's namespace, where
//     every address leads to the sandbox's own sockets: what the caller
//     changes in its memory after the supervisor read it can only reach
//     the relay, which decides again. So a continued call is never the
//     thing that keeps the sandbox safe.
//
// The socket given to the command lives in the host's network namespace,
// already connected; nothing the command can do with a connected TCP
// socket reaches another destination.

// connectMsg is one intercepted connect(2), agent -> supervisor, with
// SCM_RIGHTS carrying the filter's listener and a pidfd of the caller.
type connectMsg struct {
	ID      uint64 // the notification's id
	Pid     uint32 // the caller in the agent's pid namespace, for reports
	FD      uint32 // connect's first argument
	Addr    uint64 // its second: the sockaddr in the caller's memory
	AddrLen uint32 // its third
	_       uint32
}

const connectMsgSize = 32

// ConnectChannel makes the channel the agent hands intercepted connects
// on and returns the agent's end (for the container's extra files; the
// caller closes its copy once the agent has it). Start serves the other
// end.
func (n *Net) ConnectChannel() (*os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("connect channel: socketpair: %w", err)
	}
	c, err := net.FileConn(os.NewFile(uintptr(fds[0]), "connects"))
	unix.Close(fds[0])
	if err != nil {
		unix.Close(fds[1])
		return nil, fmt.Errorf("connect channel: %w", err)
	}
	n.connects = c.(*net.UnixConn)
	return os.NewFile(uintptr(fds[1]), "agent-connects"), nil
}

// serveConnects takes intercepted connects until the agent's end closes.
func (n *Net) serveConnects(c *net.UnixConn) {
	buf := make([]byte, connectMsgSize+1)
	oob := make([]byte, unix.CmsgSpace(2*4))
	for {
		k, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil || (k == 0 && oobn == 0) {
			return
		}
		fds, err := unixfd.Rights(oob[:oobn])
		var m connectMsg
		if err != nil || k != connectMsgSize || len(fds) != 2 || binary.Read(bytes.NewReader(buf[:k]), binary.NativeEndian, &m) != nil {
			unixfd.CloseAll(fds)
			continue
		}
		n.goServe(func() {
			defer unixfd.CloseAll(fds)
			n.connectFor(m, fds[0], fds[1])
		})
	}
}

// callerSocket is what the supervisor learned of an intercepted call.
type callerSocket struct {
	dst      netip.AddrPort
	domain   int
	nonblock bool
	cloexec  bool
	v6only   bool
	opts     []sockOpt
}

// connectFor answers one intercepted connect.
func (n *Net) connectFor(m connectMsg, listener, pidfd int) {
	cs, host, ok := n.inspect(m, listener, pidfd)
	if !ok {
		// Answering a call that is gone fails harmlessly; one that still
		// waits must be answered whatever went wrong.
		_ = seccomp.Continue(listener, m.ID)
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
	defer cancel()
	port := cs.dst.Port()
	addrs, f := n.decide(ctx, host, port)
	var sock *os.File
	if f == nil {
		var err error
		if sock, err = dialLike(ctx, cs, addrs, port); err != nil {
			f = dialFailure(err)
		}
	}
	if f != nil {
		r := f.refusal(host, port)
		r.Pid = int(m.Pid)
		n.report(r)
		_ = seccomp.Return(listener, m.ID, 0, f.errno())
		return
	}
	defer sock.Close()
	rc, err := sock.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) {
			if err = unix.SetNonblock(int(fd), cs.nonblock); err == nil {
				err = seccomp.PlaceFD(listener, m.ID, int(fd), int(m.FD), cs.cloexec)
			}
		})
		if err == nil {
			err = cerr
		}
	}
	switch {
	case err == nil:
		_ = seccomp.Return(listener, m.ID, 0, 0)
	case errors.Is(err, unix.ENOENT):
		// The caller died or its call was interrupted; a restarted call
		// comes as a new notification.
	default:
		// The kernel cannot place it: let the relay serve the call.
		fmt.Fprintln(n.log, "lectic-nix-sandbox network:", err)
		_ = seccomp.Continue(listener, m.ID)
	}
}

// errno is what a connect refused for f returns.
func (f *failure) errno() unix.Errno {
	if f.sysErr != 0 {
		return f.sysErr
	}
	return unix.ECONNREFUSED
}

// inspect reads the intercepted call: ok is false when it should continue
// as made, or cannot be read (its caller may be gone).
func (n *Net) inspect(m connectMsg, listener, pidfd int) (cs *callerSocket, host netpolicy.Host, ok bool) {
	pid, err := pidOfPidfd(pidfd)
	if err != nil {
		return nil, host, false
	}
	sa, err := readMem(pid, m.Addr, m.AddrLen)
	if err != nil {
		return nil, host, false
	}
	dst, ok := parseSockaddr(sa)
	if !ok || !n.forwarded[dst.Port()] {
		return nil, host, false
	}
	host, f := n.destination(dst)
	if f != nil {
		return nil, host, false // the relay refuses and reports it
	}
	cs, err = inspectSocket(pidfd, int(m.FD))
	if err != nil {
		return nil, host, false
	}
	cs.dst = dst
	cs.cloexec = fdCloexec(pid, int(m.FD))
	// Everything above was read while the call waited; if it does not
	// still wait, pid may be someone else's by now.
	if !seccomp.Valid(listener, m.ID) {
		return nil, host, false
	}
	return cs, host, true
}

// pidOfPidfd is the pid a pidfd names in this process's /proc.
func pidOfPidfd(pidfd int) (int, error) {
	b, err := readSmall("/proc/self/fdinfo/" + strconv.Itoa(pidfd))
	if err != nil {
		return 0, err
	}
	v, ok := fdinfoField(b, "Pid:")
	if !ok {
		return 0, errors.New("no Pid in the pidfd's fdinfo")
	}
	pid, err := strconv.Atoi(v)
	if err != nil || pid <= 0 {
		return 0, errors.New("the process has exited")
	}
	return pid, nil
}

// readSmall reads a small /proc file in three system calls (os.ReadFile
// takes five): every connect pays for two of these.
func readSmall(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	b := make([]byte, 1024)
	k, err := unix.Read(fd, b)
	if err != nil {
		return nil, err
	}
	return b[:k], nil
}

func fdinfoField(b []byte, name string) (string, bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte(name)); ok {
			return string(bytes.TrimSpace(v)), true
		}
	}
	return "", false
}

// fdCloexec reads whether fd of pid is close-on-exec, which the socket
// put in its place keeps.
func fdCloexec(pid, fd int) bool {
	b, err := readSmall("/proc/" + strconv.Itoa(pid) + "/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return false
	}
	v, ok := fdinfoField(b, "flags:")
	if !ok {
		return false
	}
	flags, err := strconv.ParseUint(v, 8, 64)
	return err == nil && flags&unix.O_CLOEXEC != 0
}

// maxSockaddr is the most of a sockaddr that is read: sockaddr_in6 is 28.
const maxSockaddr = 128

// readMem reads a caller's sockaddr.
func readMem(pid int, addr uint64, size uint32) ([]byte, error) {
	if size < 2 {
		return nil, errors.New("short sockaddr")
	}
	b := make([]byte, min(size, maxSockaddr))
	local := []unix.Iovec{{Base: &b[0], Len: uint64(len(b))}}
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}
	k, err := unix.ProcessVMReadv(pid, local, remote, 0)
	if err != nil {
		return nil, fmt.Errorf("read the sockaddr: %w", err)
	}
	if k < len(b) {
		return nil, errors.New("read the sockaddr: short read")
	}
	return b, nil
}

// parseSockaddr reads an AF_INET or AF_INET6 destination.
func parseSockaddr(b []byte) (netip.AddrPort, bool) {
	family := binary.NativeEndian.Uint16(b)
	switch {
	case family == unix.AF_INET && len(b) >= unix.SizeofSockaddrInet4:
		port := binary.BigEndian.Uint16(b[2:])
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), true
	case family == unix.AF_INET6 && len(b) >= unix.SizeofSockaddrInet6:
		port := binary.BigEndian.Uint16(b[2:])
		a := netip.AddrFrom16([16]byte(b[8:24]))
		if binary.NativeEndian.Uint32(b[24:]) != 0 {
			return netip.AddrPort{}, false // a scoped (link-local) address
		}
		return netip.AddrPortFrom(a.Unmap(), port), true
	}
	return netip.AddrPort{}, false
}

// destination is where a captured connection to dst is meant to go, or
// why it cannot go anywhere.
func (n *Net) destination(dst netip.AddrPort) (netpolicy.Host, *failure) {
	host, known := n.names.hostOf(dst.Addr())
	switch {
	case dst.Addr().Unmap().IsLoopback():
		return host, blocked(fmt.Sprintf("the sandbox's own loopback; to reach the host's, name it: --add-host NAME:%s --allow-domain NAME:%d", dst.Addr().Unmap(), dst.Port()))
	case !known:
		return host, blocked("an address the sandbox's DNS did not hand out; connect by name")
	case dst.Addr().IsUnspecified():
		return host, blocked("the unspecified address")
	}
	return host, nil
}

// sockOpt is one socket option the caller set that its replacement keeps.
type sockOpt struct {
	level, name int
	value       int
	linger      *unix.Linger
}

// copiedOpts are the options that matter once a socket is connected.
var copiedOpts = [][2]int{
	{unix.IPPROTO_TCP, unix.TCP_NODELAY},
	{unix.SOL_SOCKET, unix.SO_KEEPALIVE},
	{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
	{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL},
	{unix.IPPROTO_TCP, unix.TCP_KEEPCNT},
	{unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT},
	{unix.SOL_SOCKET, unix.SO_OOBINLINE},
}

// inspectSocket takes a copy of the caller's fd and checks that it is a
// TCP socket the supervisor can stand in for: not bound to a port, not
// listening, not connected.
func inspectSocket(pidfd, fd int) (*callerSocket, error) {
	s, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(s)
	cs := &callerSocket{}
	typ, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_STREAM {
		return nil, errors.New("not a stream socket")
	}
	if p, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || p != unix.IPPROTO_TCP {
		return nil, errors.New("not TCP")
	}
	if cs.domain, err = unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
		return nil, err
	}
	if _, err := unix.Getpeername(s); err == nil {
		return nil, errors.New("connected") // connect says EISCONN itself
	}
	// A listening socket has a port too (listen binds one).
	if local, err := unix.Getsockname(s); err != nil || sockPort(local) != 0 {
		return nil, errors.New("bound to a port")
	}
	switch cs.domain {
	case unix.AF_INET:
	case unix.AF_INET6:
		v, err := unix.GetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		cs.v6only = err == nil && v != 0
	default:
		return nil, errors.New("not an internet socket")
	}
	flags, err := unix.FcntlInt(uintptr(s), unix.F_GETFL, 0)
	if err != nil {
		return nil, err
	}
	cs.nonblock = flags&unix.O_NONBLOCK != 0
	for _, o := range copiedOpts {
		if v, err := unix.GetsockoptInt(s, o[0], o[1]); err == nil {
			cs.opts = append(cs.opts, sockOpt{level: o[0], name: o[1], value: v})
		}
	}
	if l, err := unix.GetsockoptLinger(s, unix.SOL_SOCKET, unix.SO_LINGER); err == nil && l.Onoff != 0 {
		cs.opts = append(cs.opts, sockOpt{level: unix.SOL_SOCKET, name: unix.SO_LINGER, linger: l})
	}
	return cs, nil
}

func sockPort(sa unix.Sockaddr) int {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return 0
}

// dialLike connects, on the host, a socket like the caller's (same family
// and options) to the first of addrs that answers.
func dialLike(ctx context.Context, cs *callerSocket, addrs []netip.Addr, port uint16) (*os.File, error) {
	var first error
	tried := false
	for _, a := range addrs {
		sa, ok := sockaddrFor(cs, a, port)
		if !ok {
			continue
		}
		tried = true
		f, err := dialOne(ctx, cs, sa)
		if err == nil {
			return f, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if !tried {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: unix.EAFNOSUPPORT}
	}
	return nil, first
}

// sockaddrFor is a in the caller's family: IPv4 goes to an IPv6 socket as
// a mapped address unless the socket is IPv6-only.
func sockaddrFor(cs *callerSocket, a netip.Addr, port uint16) (unix.Sockaddr, bool) {
	switch {
	case cs.domain == unix.AF_INET && a.Is4():
		return &unix.SockaddrInet4{Port: int(port), Addr: a.As4()}, true
	case cs.domain == unix.AF_INET6 && (a.Is6() || !cs.v6only):
		return &unix.SockaddrInet6{Port: int(port), Addr: a.As16()}, true
	}
	return nil, false
}

// dialOne connects one socket, waiting in the runtime's poller.
func dialOne(ctx context.Context, cs *callerSocket, sa unix.Sockaddr) (*os.File, error) {
	fd, err := unix.Socket(cs.domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	for _, o := range cs.opts {
		if o.linger != nil {
			_ = unix.SetsockoptLinger(fd, o.level, o.name, o.linger)
		} else {
			_ = unix.SetsockoptInt(fd, o.level, o.name, o.value)
		}
	}
	err = unix.Connect(fd, sa)
	f := os.NewFile(uintptr(fd), "connection")
	if err != nil && err != unix.EINPROGRESS {
		f.Close()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: err}
	}
	if err == unix.EINPROGRESS {
		if err := waitConnected(ctx, f); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// waitConnected waits until a non-blocking connect ends.
func waitConnected(ctx context.Context, f *os.File) error {
	if d, ok := ctx.Deadline(); ok {
		_ = f.SetWriteDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var soErr int
	// The state is checked before every wait, the first included: Write
	// forgets a readiness the poller saw before it was called, so a
	// connect that ended by then would otherwise wait for the deadline.
	werr := rc.Write(func(fd uintptr) bool {
		soErr, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return true
		}
		if soErr == int(unix.EINPROGRESS) || soErr == int(unix.EALREADY) {
			return false
		}
		if soErr == 0 {
			// No error yet is not connected yet: connected means a peer.
			if _, perr := unix.Getpeername(int(fd)); perr != nil {
				return false
			}
		}
		return true
	})
	switch {
	case werr != nil:
		if errors.Is(werr, os.ErrDeadlineExceeded) {
			return &net.OpError{Op: "dial", Net: "tcp", Err: unix.ETIMEDOUT}
		}
		return werr
	case err != nil:
		return err
	case soErr != 0:
		return &net.OpError{Op: "dial", Net: "tcp", Err: unix.Errno(soErr)}
	}
	return nil
}

// Connects is the agent's end of the connect channel.
type Connects struct {
	c *net.UnixConn
}

// NewConnects uses the agent's end of the channel (ConnectChannel); f
// stays open, for handing on to other processes.
func NewConnects(f *os.File) (*Connects, error) {
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("connect channel: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, errors.New("connect channel: not a unix socket")
	}
	return &Connects{c: uc}, nil
}

// Hand gives an intercepted connect(2) to the supervisor, which answers
// it. On an error nothing was handed and the caller must answer.
func (c *Connects) Hand(listener int, n *seccomp.Notification) error {
	if n.Pid == 0 {
		return errors.New("the caller is not visible here")
	}
	pidfd, err := threadPidfd(int(n.Pid))
	if err != nil {
		return err
	}
	defer unix.Close(pidfd)
	m := connectMsg{ID: n.ID, Pid: n.Pid, FD: uint32(n.Data.Args[0]), Addr: n.Data.Args[1], AddrLen: uint32(n.Data.Args[2])}
	var b bytes.Buffer
	_ = binary.Write(&b, binary.NativeEndian, &m)
	_, _, err = c.c.WriteMsgUnix(b.Bytes(), unix.UnixRights(listener, pidfd), nil)
	if err != nil {
		return fmt.Errorf("connect channel: %w", err)
	}
	return nil
}

// pidfdThread is PIDFD_THREAD (linux/pidfd.h, Linux 6.9): a pidfd of
// one thread rather than of its thread group.
const pidfdThread = unix.O_EXCL

// threadPidfd opens a pidfd of the thread that made a call: the caller is
// often not its process's first thread (a Go program connects from any
// of its threads), and the supervisor reads that thread's fds. Before
// Linux 6.9 only whole processes have pidfds; a thread's memory is its
// process's, and unless it unshared its fd table so are its fds, so the
// process's pidfd stands in.
func threadPidfd(tid int) (int, error) {
	fd, err := unix.PidfdOpen(tid, pidfdThread)
	if err == nil {
		return fd, nil
	}
	tgid, terr := threadGroup(tid)
	if terr != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", tid, err)
	}
	fd, err = unix.PidfdOpen(tgid, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", tgid, err)
	}
	return fd, nil
}

// threadGroup is the process a thread belongs to.
func threadGroup(tid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return 0, err
	}
	v, ok := fdinfoField(b, "Tgid:")
	if !ok {
		return 0, errors.New("no Tgid")
	}
	return strconv.Atoi(v)
}

// Close closes the agent's end.
func (c *Connects) Close() error { return c.c.Close() }

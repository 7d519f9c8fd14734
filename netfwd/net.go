package netfwd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netpolicy"
)

// Resolver looks names up on the host side.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Options describe a container's network.
type Options struct {
	Policy *netpolicy.Policy
	// Hostname is the container's host name, answered with loopback.
	Hostname string
	// Resolver looks names up on the host; nil is the system's resolver.
	Resolver Resolver
	// Log receives what no caller asked for (the container's log).
	Log io.Writer
}

// Net is a container's network namespace and everything that serves it:
// the DNS, the forwarded ports, the proxy endpoint and the observers. Its
// sockets live in the namespace; the process that holds them does not, so
// nothing in the container can reach what decides.
type Net struct {
	policy   *netpolicy.Policy
	resolver Resolver
	log      io.Writer
	ns       *os.File
	names    *nameTable
	dns      *dnsHandler
	ipv6     bool

	forwarded map[uint16]bool
	fwd       []*net.TCPListener
	proxy     *net.TCPListener
	dnsUDP    []*net.UDPConn
	dnsTCP    []*net.TCPListener
	observers []*os.File
	// connects is the supervisor's end of the connect channel, if the
	// agent intercepts connect(2) (see connect.go).
	connects *net.UnixConn
	// observeErr is why an observer could not be opened, if one could not.
	observeErr error

	ctx    context.Context
	cancel context.CancelFunc
	rep    Reporter
	wg     sync.WaitGroup

	obsMu sync.Mutex // see drain

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// Open creates the network namespace with its sockets. Nothing is served
// until Start.
func Open(o Options) (*Net, error) {
	if o.Policy == nil {
		return nil, errors.New("network: no policy")
	}
	if err := o.Policy.Validate(); err != nil {
		return nil, err
	}
	n := &Net{
		policy:    o.Policy,
		resolver:  o.Resolver,
		log:       o.Log,
		names:     newNameTable(netpolicy.NameBlock),
		forwarded: map[uint16]bool{},
		conns:     map[net.Conn]struct{}{},
	}
	if n.resolver == nil {
		n.resolver = net.DefaultResolver
	}
	if n.log == nil {
		n.log = io.Discard
	}
	n.dns = newDNSHandler(n.names, o.Hostname)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	ns, err := inNewNamespace(n.setup)
	if err != nil {
		n.closeSockets()
		return nil, err
	}
	n.ns = ns
	return n, nil
}

// setup runs in the new namespace: routes, then every socket.
func (n *Net) setup() error {
	ipv6, err := routeEverythingToLo()
	if err != nil {
		return err
	}
	n.ipv6 = ipv6
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	any := netip.IPv4Unspecified()
	if ipv6 {
		any = netip.IPv6Unspecified()
	}
	for _, port := range n.policy.Ports() {
		l, err := listenTCP(netip.AddrPortFrom(any, port), true)
		if err != nil {
			return err
		}
		n.fwd = append(n.fwd, l)
		n.forwarded[port] = true
	}
	if n.proxy, err = listenTCP(netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), n.policy.ProxyPort()), false); err != nil {
		return err
	}
	dnsAddrs := []netip.Addr{netip.IPv4Unspecified()}
	if ipv6 {
		dnsAddrs = append(dnsAddrs, netip.IPv6Unspecified())
	}
	for _, a := range dnsAddrs {
		u, err := listenUDP(netip.AddrPortFrom(a, netpolicy.DNSPort))
		if err != nil {
			return err
		}
		n.dnsUDP = append(n.dnsUDP, u)
		t, err := listenTCP(netip.AddrPortFrom(a, netpolicy.DNSPort), false)
		if err != nil {
			return err
		}
		n.dnsTCP = append(n.dnsTCP, t)
	}
	// Without observers everything works but the report of a port that
	// is not allowed (or of UDP): that is logged, and --doctor says so,
	// rather than costing the whole network.
	if err := n.observe(lo.Attrs().Index, ethPIP, filter4); err != nil {
		n.observeErr = err
		fmt.Fprintln(n.log, "lectic-nix-sandbox network: refusals of ports that are not allowed will not be reported:", err)
		return nil
	}
	if ipv6 {
		if err := n.observe(lo.Attrs().Index, ethPIPv6, filter6); err != nil {
			n.observeErr = err
			fmt.Fprintln(n.log, "lectic-nix-sandbox network: refusals over IPv6 of ports that are not allowed will not be reported:", err)
		}
	}
	return nil
}

func (n *Net) observe(loIndex int, etherType uint16, filter []bpf.Instruction) error {
	f, err := openObserver(loIndex, etherType, filter)
	if err != nil {
		return err
	}
	n.observers = append(n.observers, f)
	return nil
}

// NSPath is a path of the namespace that a process of ours may open while
// n is open: what libcontainer joins.
func (n *Net) NSPath() string {
	return "/proc/" + strconv.Itoa(os.Getpid()) + "/fd/" + strconv.Itoa(int(n.ns.Fd()))
}

// IPv6 reports whether the namespace routes IPv6.
func (n *Net) IPv6() bool { return n.ipv6 }

// Start serves the namespace; refusals go to rep.
func (n *Net) Start(rep Reporter) {
	n.rep = rep
	for _, l := range n.fwd {
		n.goServe(func() { n.acceptLoop(l, n.forwardConn) })
	}
	n.goServe(func() { n.acceptLoop(n.proxy, n.proxyConn) })
	for i, u := range n.dnsUDP {
		n.goServe(func() { n.serveDNSUDP(u, i == 1) }) // [0] IPv4, [1] IPv6
	}
	for _, t := range n.dnsTCP {
		n.goServe(func() { n.serveDNSTCP(t) })
	}
	for _, f := range n.observers {
		n.goServe(func() { n.observeLoop(f) })
	}
	if n.connects != nil {
		n.goServe(func() { n.serveConnects(n.connects) })
	}
}

func (n *Net) goServe(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// acceptLoop hands each connection of l to handle until l is closed.
func (n *Net) acceptLoop(l *net.TCPListener, handle func(*net.TCPConn)) {
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if n.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				fmt.Fprintln(n.log, "lectic-nix-sandbox network: accept:", err)
				continue
			}
			return
		}
		if !n.track(c) {
			c.Close()
			return
		}
		n.goServe(func() {
			defer n.untrack(c)
			handle(c)
		})
	}
}

// track records an open connection so Close can end it; false once n is
// closed.
func (n *Net) track(c net.Conn) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.conns[c] = struct{}{}
	return true
}

func (n *Net) untrack(c net.Conn) {
	n.mu.Lock()
	delete(n.conns, c)
	n.mu.Unlock()
	c.Close()
}

// observeLoop reports each refusal an observer sees, until f is closed.
func (n *Net) observeLoop(f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		fmt.Fprintln(n.log, "lectic-nix-sandbox network: observe:", err)
		return
	}
	buf := make([]byte, snapLen)
	// The callback runs each time the socket is readable; it never says
	// it is done, so Read returns only when f is closed.
	_ = rc.Read(func(fd uintptr) bool {
		n.drain(int(fd), buf)
		return false
	})
}

// drain reports every packet queued on an observer. obsMu is held from the
// read to the report, so a Flush that holds it next knows that everything
// read before it has been reported.
func (n *Net) drain(fd int, buf []byte) {
	n.obsMu.Lock()
	defer n.obsMu.Unlock()
	for {
		k, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		if ev, ok := parseRefusal(buf[:k]); ok {
			n.observed(ev)
		}
	}
}

// Flush reports every refusal the kernel has made so far. The kernel
// queues the reset on the observer while it processes the SYN, so by the
// time a command has seen "connection refused", Flush reports it.
func (n *Net) Flush() {
	buf := make([]byte, snapLen)
	for _, f := range n.observers {
		rc, err := f.SyscallConn()
		if err != nil {
			continue
		}
		_ = rc.Control(func(fd uintptr) { n.drain(int(fd), buf) })
	}
}

// Close stops serving, ends every forwarded connection and closes the
// namespace. It waits for everything it started.
func (n *Net) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	for c := range n.conns {
		c.Close()
	}
	n.mu.Unlock()
	n.cancel()
	n.closeSockets()
	n.wg.Wait()
	if n.ns != nil {
		return n.ns.Close()
	}
	return nil
}

func (n *Net) closeSockets() {
	for _, l := range n.fwd {
		l.Close()
	}
	if n.proxy != nil {
		n.proxy.Close()
	}
	for _, u := range n.dnsUDP {
		u.Close()
	}
	for _, t := range n.dnsTCP {
		t.Close()
	}
	for _, f := range n.observers {
		f.Close()
	}
	if n.connects != nil {
		n.connects.Close()
	}
}

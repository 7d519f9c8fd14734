package netfwd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netpolicy"
)

// dialTimeout bounds connecting to a server on the host side, all of its
// addresses together.
const dialTimeout = 30 * time.Second

// Words that start a refusal line.
const (
	verbBlocked = "blocked connection to"
	verbFailed  = "could not connect to"
	verbUDP     = "blocked UDP to"
)

// failure is a connection that is not made: the words for the caller's
// line, and how a proxy client is told (see request.fail).
type failure struct {
	verb   string
	reason string
	socks  byte       // SOCKS5 reply code
	sysErr unix.Errno // what a connect made in the command's place returns; 0 is ECONNREFUSED
}

func blocked(reason string) *failure {
	return &failure{verb: verbBlocked, reason: reason, socks: socksNotAllowed}
}

// request is one connection a command wants made.
type request struct {
	client *net.TCPConn
	host   netpolicy.Host
	port   uint16
	proxy  proxyKind
	// prelude goes to the server first (a proxied HTTP request's head);
	// pending are bytes the client sent after its proxy request.
	prelude, pending []byte
}

// forwardConn serves a connection the routes captured: its destination is
// the address it was accepted on.
func (n *Net) forwardConn(c *net.TCPConn) {
	dst := addrPortOf(c.LocalAddr())
	host, f := n.destination(dst)
	req := &request{client: c, host: host, port: dst.Port()}
	if f != nil {
		n.refuse(req, f)
		return
	}
	n.connect(req)
}

// connect applies the policy to req, makes the connection on the host side
// and joins the two.
func (n *Net) connect(req *request) {
	ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
	defer cancel()
	addrs, f := n.decide(ctx, req.host, req.port)
	if f != nil {
		n.refuse(req, f)
		return
	}
	server, err := dialAny(ctx, addrs, req.port)
	if err != nil {
		n.refuse(req, dialFailure(err))
		return
	}
	n.join(req, server)
}

// decide applies the policy to a connection to host:port and returns the
// host-side addresses it may go to, in order.
func (n *Net) decide(ctx context.Context, host netpolicy.Host, port uint16) ([]netip.Addr, *failure) {
	if v := n.policy.Check(host, port); !v.Allowed {
		return nil, blocked(v.Reason)
	}
	addrs, f := n.resolve(ctx, host)
	if f == nil {
		addrs, f = n.notDenied(host, addrs, port)
	}
	return addrs, f
}

// join completes the proxy handshake, if any, and relays the connection.
func (n *Net) join(req *request, server *net.TCPConn) {
	if !n.track(server) {
		server.Close()
		return
	}
	defer n.untrack(server)
	if err := req.established(server); err != nil {
		return
	}
	relay(req.client, server)
}

// resolve returns the addresses to try for h: an address as it is, the
// --add-host address of a name, or the name's public addresses on the host.
func (n *Net) resolve(ctx context.Context, h netpolicy.Host) ([]netip.Addr, *failure) {
	if h.IsAddr() {
		return []netip.Addr{h.Addr}, nil
	}
	if a, ok := n.policy.HostAddr(h.Name); ok {
		return []netip.Addr{a}, nil
	}
	all, err := n.resolver.LookupNetIP(ctx, "ip", h.Name)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, &failure{verb: verbFailed, reason: "no such host", socks: socksHostUnreachable}
		}
		return nil, &failure{verb: verbFailed, reason: "host lookup failed: " + shortErr(err), socks: socksHostUnreachable}
	}
	var public []netip.Addr
	var bad netip.Addr
	var kind string
	for _, a := range all {
		a = a.Unmap()
		k := netpolicy.Classify(a)
		switch {
		case k == "":
			public = append(public, a)
		case !bad.IsValid():
			bad, kind = a, k
		}
	}
	if len(public) == 0 {
		if !bad.IsValid() {
			return nil, &failure{verb: verbFailed, reason: "no such host", socks: socksHostUnreachable}
		}
		return nil, blocked(fmt.Sprintf("%s resolves to %s, a %s address; to allow it, map the name explicitly with --add-host %s:%s", h.Name, bad, kind, h.Name, bad))
	}
	return public, nil
}

// notDenied drops the addresses a --deny-domain IP pattern denies.
func (n *Net) notDenied(h netpolicy.Host, addrs []netip.Addr, port uint16) ([]netip.Addr, *failure) {
	var ok []netip.Addr
	var pattern string
	for _, a := range addrs {
		if p, denied := n.policy.DeniedAddr(a, port); denied {
			pattern = p
			continue
		}
		ok = append(ok, a)
	}
	if len(ok) == 0 {
		return nil, blocked(fmt.Sprintf("%s resolves to %s, which matches --deny-domain %s", h, addrs[0], pattern))
	}
	return ok, nil
}

// dialAny connects to the first address that answers.
func dialAny(ctx context.Context, addrs []netip.Addr, port uint16) (*net.TCPConn, error) {
	var d net.Dialer
	var first error
	for _, a := range addrs {
		c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(a, port).String())
		if err == nil {
			return c.(*net.TCPConn), nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}

// dialFailure words a failed connect for the caller.
func dialFailure(err error) *failure {
	f := &failure{verb: verbFailed, reason: shortErr(err), socks: socksFailure}
	var errno unix.Errno
	if errors.As(err, &errno) {
		f.sysErr = errno
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		f.reason, f.socks = "connection refused", socksRefused
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, os.ErrDeadlineExceeded):
		f.reason, f.socks, f.sysErr = "timed out", socksTTLExpired, unix.ETIMEDOUT
	case errors.Is(err, syscall.ENETUNREACH):
		f.reason, f.socks = "network unreachable", socksNetUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH):
		f.reason, f.socks = "host unreachable", socksHostUnreachable
	}
	return f
}

// shortErr is the innermost words of an error.
func shortErr(err error) string {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err.Error()
		}
		err = u
	}
}

// refuse tells the caller, then ends the client's connection: a transparent
// one with a reset, a proxied one with the proxy protocol's refusal.
func (n *Net) refuse(req *request, f *failure) {
	r := f.refusal(req.host, req.port)
	r.Client = addrPortOf(req.client.RemoteAddr()).String()
	r.Server = addrPortOf(req.client.LocalAddr()).String()
	n.report(r)
	req.fail(f, r.Key)
}

// refusal is the report of f for a TCP connection to host:port that waits
// for its line.
func (f *failure) refusal(host netpolicy.Host, port uint16) Refusal {
	key := netpolicy.HostPort(host, port)
	return Refusal{Line: fmt.Sprintf("%s %s (%s)", f.verb, key, f.reason), Key: key, Proto: "tcp", Open: true}
}

func (n *Net) report(r Refusal) {
	if n.rep != nil {
		n.rep.Report(n.ctx, r)
	}
}

// observed reports a refusal the kernel made.
func (n *Net) observed(ev observed) {
	server := ev.server.Addr().Unmap()
	if server.IsLoopback() {
		return // the sandbox's own loopback: nothing of ours refused it
	}
	host, known := n.names.hostOf(server)
	port := ev.server.Port()
	verb, reason := verbBlocked, ""
	switch {
	case ev.proto == "udp":
		verb, reason = verbUDP, "only TCP and DNS leave the sandbox; QUIC and other UDP do not"
	case !known:
		reason = "an address the sandbox's DNS did not hand out; connect by name"
	default:
		v := n.policy.Check(host, port)
		if v.Allowed {
			return // a port that is forwarded never answers with a reset
		}
		reason = v.Reason
	}
	key := netpolicy.HostPort(host, port)
	n.report(Refusal{
		Line:   fmt.Sprintf("%s %s (%s)", verb, key, reason),
		Key:    key,
		Proto:  ev.proto,
		Client: unmapAP(ev.client).String(),
		Server: unmapAP(ev.server).String(),
	})
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return unmapAP(t.AddrPort())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return unmapAP(ap)
}

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// isLocal reports whether a proxy destination is the sandbox itself.
func (n *Net) isLocal(h netpolicy.Host) bool {
	if h.IsAddr() {
		return h.Addr.IsLoopback()
	}
	return n.dns.isLocal(h.Name)
}

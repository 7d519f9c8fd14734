package netfwd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netpolicy"
)

// The proxy endpoint serves clients that honour HTTP_PROXY, HTTPS_PROXY
// and ALL_PROXY: HTTP CONNECT, plain HTTP requests in absolute form, and
// SOCKS5 (CONNECT only, no authentication), told apart by the first byte.
// A request names its destination; from there it is a connection like any
// other, under the same policy, with the refusal in the proxy protocol's
// own words besides the caller's stderr.

// proxyKind says how a request reached us.
type proxyKind uint8

const (
	transparent proxyKind = iota
	httpConnect
	httpForward
	socks5
)

const (
	// proxyHeadTimeout bounds reading a proxy request; a client that
	// connects and says nothing does not keep a goroutine forever.
	proxyHeadTimeout = 30 * time.Second
	// maxProxyHead bounds a proxy request's head.
	maxProxyHead = 64 << 10
)

// SOCKS5 reply codes (RFC 1928).
const (
	socksOK              = 0x00
	socksFailure         = 0x01
	socksNotAllowed      = 0x02
	socksNetUnreachable  = 0x03
	socksHostUnreachable = 0x04
	socksRefused         = 0x05
	socksTTLExpired      = 0x06
	socksNoCommand       = 0x07
	socksNoAddressType   = 0x08
)

// errProxyRequest is a request we answered with an error already.
var errProxyRequest = errors.New("bad proxy request")

// proxyConn reads one proxy request and serves it.
func (n *Net) proxyConn(c *net.TCPConn) {
	_ = c.SetReadDeadline(time.Now().Add(proxyHeadTimeout))
	br := bufio.NewReader(io.LimitReader(c, maxProxyHead))
	first, err := br.Peek(1)
	if err != nil {
		return
	}
	var req *request
	if first[0] == 5 {
		req, err = readSOCKS5(c, br)
	} else {
		req, err = readHTTPProxy(c, br)
	}
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if k := br.Buffered(); k > 0 {
		b, _ := br.Peek(k)
		req.pending = append([]byte(nil), b...)
	}
	if n.isLocal(req.host) {
		n.connectInside(req)
		return
	}
	// An address the sandbox's DNS handed out stands for its name.
	if req.host.IsAddr() && netpolicy.NameBlock.Contains(req.host.Addr) {
		host, known := n.names.hostOf(req.host.Addr)
		if !known {
			n.refuse(req, blocked("an address the sandbox's DNS did not hand out; connect by name"))
			return
		}
		req.host = host
	}
	n.connect(req)
}

// connectInside serves a proxy request for the sandbox's own loopback: the
// connection is made inside its network, where the command could have made
// it itself, so no policy applies.
func (n *Net) connectInside(req *request) {
	addr := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	if req.host.IsAddr() {
		addr = req.host.Addr
	}
	var server *net.TCPConn
	err := inNamespace(n.ns, func() error {
		ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
		defer cancel()
		var err error
		server, err = dialAny(ctx, []netip.Addr{addr}, req.port)
		return err
	})
	if err != nil {
		// The command's own service is down: nothing the policy did, so
		// only the client is told.
		req.fail(dialFailure(err), netpolicy.HostPort(req.host, req.port))
		return
	}
	n.join(req, server)
}

// readHTTPProxy reads a CONNECT or absolute-form request head.
func readHTTPProxy(c *net.TCPConn, br *bufio.Reader) (*request, error) {
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		return nil, err
	}
	method, rest, ok1 := strings.Cut(line, " ")
	target, version, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || !strings.HasPrefix(version, "HTTP/1.") {
		httpError(c, 400, "Bad Request", "not an HTTP/1 request line: "+strconv.Quote(line))
		return nil, errProxyRequest
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		httpError(c, 431, "Request Header Fields Too Large", "the request head could not be read: "+err.Error())
		return nil, errProxyRequest
	}
	req := &request{client: c}
	if method == "CONNECT" {
		req.proxy = httpConnect
		if req.host, req.port, err = splitTarget(target, 0); err != nil {
			httpError(c, 400, "Bad Request", "CONNECT wants HOST:PORT: "+err.Error())
			return nil, errProxyRequest
		}
		return req, nil
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		httpError(c, 400, "Bad Request", "this is a proxy: send the absolute URL (http://host/path) or CONNECT")
		return nil, errProxyRequest
	}
	if u.Scheme != "http" {
		httpError(c, 400, "Bad Request", "the proxy forwards plain http:// requests; use CONNECT for "+u.Scheme)
		return nil, errProxyRequest
	}
	req.proxy = httpForward
	if req.host, req.port, err = splitTarget(u.Host, 80); err != nil {
		httpError(c, 400, "Bad Request", err.Error())
		return nil, errProxyRequest
	}
	req.prelude = forwardHead(method, u, version, hdr)
	return req, nil
}

// splitTarget reads HOST[:PORT]; def is the port when there is none (0:
// the port is required).
func splitTarget(s string, def uint16) (netpolicy.Host, uint16, error) {
	hostS, portS, err := net.SplitHostPort(s)
	if err != nil {
		if def == 0 {
			return netpolicy.Host{}, 0, err
		}
		hostS, portS = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), strconv.Itoa(int(def))
	}
	port, err := strconv.ParseUint(portS, 10, 16)
	if err != nil || port == 0 {
		return netpolicy.Host{}, 0, fmt.Errorf("bad port %q", portS)
	}
	h, err := netpolicy.ParseHost(hostS)
	if err != nil {
		return netpolicy.Host{}, 0, err
	}
	return h, uint16(port), nil
}

// hopHeaders are the proxy's own, never forwarded.
var hopHeaders = map[string]bool{
	"Proxy-Connection": true, "Proxy-Authorization": true, "Proxy-Authenticate": true,
	"Connection": true, "Keep-Alive": true,
}

// forwardHead is the request as the origin server wants it: origin-form,
// the proxy's headers dropped, one request per connection (the next may be
// for another host), upgrades (WebSocket) kept.
func forwardHead(method string, u *url.URL, version string, hdr textproto.MIMEHeader) []byte {
	var b strings.Builder
	b.WriteString(method + " " + u.RequestURI() + " " + version + "\r\n")
	if hdr.Get("Host") == "" {
		b.WriteString("Host: " + u.Host + "\r\n")
	}
	keys := make([]string, 0, len(hdr))
	for k := range hdr {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if hopHeaders[k] {
			continue
		}
		for _, v := range hdr[k] {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	conn := "close"
	for _, v := range hdr.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				conn = "Upgrade"
			}
		}
	}
	b.WriteString("Connection: " + conn + "\r\n\r\n")
	return []byte(b.String())
}

// readSOCKS5 negotiates "no authentication" and reads a CONNECT request.
func readSOCKS5(c *net.TCPConn, br *bufio.Reader) (*request, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, err
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(br, methods); err != nil {
		return nil, err
	}
	noAuth := false
	for _, m := range methods {
		noAuth = noAuth || m == 0
	}
	if !noAuth {
		_, _ = c.Write([]byte{5, 0xff})
		return nil, errProxyRequest
	}
	if _, err := c.Write([]byte{5, 0}); err != nil {
		return nil, err
	}
	var rq [4]byte
	if _, err := io.ReadFull(br, rq[:]); err != nil {
		return nil, err
	}
	if rq[0] != 5 {
		return nil, errProxyRequest
	}
	host, err := readSOCKSAddr(br, rq[3])
	if err != nil {
		socksReply(c, socksNoAddressType)
		return nil, errProxyRequest
	}
	var port [2]byte
	if _, err := io.ReadFull(br, port[:]); err != nil {
		return nil, err
	}
	if rq[1] != 1 { // only CONNECT; BIND and UDP ASSOCIATE are not offered
		socksReply(c, socksNoCommand)
		return nil, errProxyRequest
	}
	return &request{client: c, proxy: socks5, host: host, port: binary.BigEndian.Uint16(port[:])}, nil
}

func readSOCKSAddr(br *bufio.Reader, atyp byte) (netpolicy.Host, error) {
	switch atyp {
	case 1:
		var a [4]byte
		if _, err := io.ReadFull(br, a[:]); err != nil {
			return netpolicy.Host{}, err
		}
		return netpolicy.AddrHost(netip.AddrFrom4(a)), nil
	case 4:
		var a [16]byte
		if _, err := io.ReadFull(br, a[:]); err != nil {
			return netpolicy.Host{}, err
		}
		return netpolicy.AddrHost(netip.AddrFrom16(a)), nil
	case 3:
		l, err := br.ReadByte()
		if err != nil {
			return netpolicy.Host{}, err
		}
		name := make([]byte, l)
		if _, err := io.ReadFull(br, name); err != nil {
			return netpolicy.Host{}, err
		}
		return netpolicy.ParseHost(string(name))
	}
	return netpolicy.Host{}, fmt.Errorf("address type %d", atyp)
}

// socksReply answers a SOCKS5 request with code and a zero bound address.
func socksReply(c *net.TCPConn, code byte) error {
	_, err := c.Write([]byte{5, code, 0, 1, 0, 0, 0, 0, 0, 0})
	return err
}

func httpError(c *net.TCPConn, code int, status, msg string) {
	body := "lectic-nix-sandbox: " + msg + "\n"
	_, _ = fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, status, len(body), body)
}

// established tells a proxy client the connection is made and sends the
// server what it is owed first.
func (r *request) established(server *net.TCPConn) error {
	switch r.proxy {
	case httpConnect:
		if _, err := io.WriteString(r.client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
			return err
		}
	case socks5:
		if err := socksReply(r.client, socksOK); err != nil {
			return err
		}
	}
	for _, b := range [][]byte{r.prelude, r.pending} {
		if len(b) == 0 {
			continue
		}
		if _, err := server.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// fail ends the client's connection after a refusal, in the words of the
// protocol it spoke.
func (r *request) fail(f *failure, hostPort string) {
	switch r.proxy {
	case transparent:
		reset(r.client)
		return
	case httpConnect, httpForward:
		code, status := 403, "Forbidden"
		if f.verb != verbBlocked {
			code, status = 502, "Bad Gateway"
		}
		httpError(r.client, code, status, f.verb+" "+hostPort+" ("+f.reason+")")
	case socks5:
		_ = socksReply(r.client, f.socks)
	}
	_ = r.client.CloseWrite()
}

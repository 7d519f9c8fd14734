package netfwd

import (
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netpolicy"
)

// nameTTL is the TTL of the answers. A name keeps its address for the
// container's life (see nameTable), so clients may cache it.
const nameTTL = 60

// ResolvConf is the container's /etc/resolv.conf: the sandbox's own DNS.
// Queries sent to any other address on port 53 reach it too.
const ResolvConf = "nameserver 127.0.0.1\n"

// dnsHandler answers every name with an address of the name block, policy
// or not: the policy is applied when the command connects, where a refusal
// can be reported with the port, and a denied name then fails the way an
// unreachable one does instead of looking like a typo.
//
// Messages are parsed and built with golang.org/x/net/dns/dnsmessage, the
// Go team's DNS message package that the standard resolver is built on:
// it does no work at program start, which matters in a binary that every
// call starts (miekg/dns, tried first, spent ~0.4 ms initialising its
// tables in each process here and added 1.8 MB).
type dnsHandler struct {
	names *nameTable
	// local are names answered with loopback: localhost and the
	// container's own host name.
	local map[string]bool
}

func newDNSHandler(names *nameTable, hostname string) *dnsHandler {
	local := map[string]bool{"localhost": true, "localhost.localdomain": true}
	if n, err := netpolicy.NormalizeName(hostname); err == nil {
		local[n] = true
	}
	return &dnsHandler{names: names, local: local}
}

func (h *dnsHandler) isLocal(name string) bool {
	return h.local[name] || strings.HasSuffix(name, ".localhost")
}

// answer returns the response to one query message, or nil for a message
// that is not a query worth an answer (garbage, a response).
func (h *dnsHandler) answer(query []byte) []byte {
	var p dnsmessage.Parser
	qh, err := p.Start(query)
	if err != nil || qh.Response {
		return nil
	}
	rh := dnsmessage.Header{ID: qh.ID, Response: true, OpCode: qh.OpCode, Authoritative: true,
		RecursionDesired: qh.RecursionDesired, RecursionAvailable: true}
	q, err := p.Question()
	if err != nil {
		rh.RCode = dnsmessage.RCodeFormatError
		return build(rh, nil, nil)
	}
	if _, err := p.Question(); err != dnsmessage.ErrSectionDone || qh.OpCode != 0 || q.Class != dnsmessage.ClassINET {
		rh.RCode = dnsmessage.RCodeNotImplemented
		return build(rh, &q, nil)
	}
	if q.Type == dnsmessage.TypePTR {
		return h.reverse(rh, q)
	}
	name, err := netpolicy.NormalizeName(q.Name.String())
	if err != nil {
		rh.RCode = dnsmessage.RCodeNameError
		return build(rh, &q, nil)
	}
	rr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: nameTTL}
	switch {
	case q.Type == dnsmessage.TypeA || q.Type == dnsmessage.TypeALL:
		addr := netip.AddrFrom4([4]byte{127, 0, 0, 1})
		if !h.isLocal(name) {
			addr = h.names.addrFor(name)
		}
		return build(rh, &q, func(b *dnsmessage.Builder) error {
			return b.AResource(rr, dnsmessage.AResource{A: addr.As4()})
		})
	case q.Type == dnsmessage.TypeAAAA && h.isLocal(name):
		return build(rh, &q, func(b *dnsmessage.Builder) error {
			return b.AAAAResource(rr, dnsmessage.AAAAResource{AAAA: netip.IPv6Loopback().As16()})
		})
	}
	// Every other type (AAAA of other names, MX, TXT, HTTPS...) gets an
	// empty answer: the name exists, connections go to its A address.
	return build(rh, &q, nil)
}

// reverse answers PTR queries for the name block and loopback.
func (h *dnsHandler) reverse(rh dnsmessage.Header, q dnsmessage.Question) []byte {
	a, ok := reverseAddr(q.Name.String())
	var name string
	switch {
	case ok && a.IsLoopback():
		name = "localhost"
	case ok:
		name, ok = h.names.nameOf(a)
	}
	ptr, err := dnsmessage.NewName(name + ".")
	if !ok || err != nil {
		rh.RCode = dnsmessage.RCodeNameError
		return build(rh, &q, nil)
	}
	return build(rh, &q, func(b *dnsmessage.Builder) error {
		return b.PTRResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: nameTTL},
			dnsmessage.PTRResource{PTR: ptr})
	})
}

// build writes a response: the question, if any, and what answers adds.
func build(h dnsmessage.Header, q *dnsmessage.Question, answers func(*dnsmessage.Builder) error) []byte {
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), h)
	b.EnableCompression()
	if q != nil {
		if b.StartQuestions() != nil || b.Question(*q) != nil {
			return nil
		}
	}
	if answers != nil {
		if b.StartAnswers() != nil || answers(&b) != nil {
			return nil
		}
	}
	msg, err := b.Finish()
	if err != nil {
		return nil
	}
	return msg
}

// reverseAddr reads an IPv4 in-addr.arpa name.
func reverseAddr(name string) (netip.Addr, bool) {
	rest, ok := strings.CutSuffix(strings.ToLower(strings.TrimSuffix(name, ".")), ".in-addr.arpa")
	if !ok {
		return netip.Addr{}, false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 4 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(parts[3] + "." + parts[2] + "." + parts[1] + "." + parts[0])
	if err != nil {
		return netip.Addr{}, false
	}
	return a, true
}

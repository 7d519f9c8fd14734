package netfwd

import (
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netpolicy"
)

// nameTTL is the TTL of the answers. A name keeps its address for the
// container's life (see nameTable), so clients may cache it.
const nameTTL = 60

// ResolvConf is the container's /etc/resolv.conf: the sandbox's own DNS.
// Queries sent to any other address on port 53 reach it too.
const ResolvConf = "nameserver 127.0.0.1\noptions edns0\n"

// dnsHandler answers every name with an address of the name block, policy
// or not: the policy is applied when the command connects, where a refusal
// can be reported with the port, and a denied name then fails the way an
// unreachable one does instead of looking like a typo.
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

// ServeDNS answers one query.
func (h *dnsHandler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	_ = w.WriteMsg(h.answer(req))
}

func (h *dnsHandler) answer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	q := req.Question[0]
	if q.Qclass != dns.ClassINET {
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	if q.Qtype == dns.TypePTR {
		return h.reverse(m, q)
	}
	name, err := netpolicy.NormalizeName(q.Name)
	if err != nil {
		m.Rcode = dns.RcodeNameError
		return m
	}
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: nameTTL}
	switch {
	case q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY:
		hdr.Rrtype = dns.TypeA
		addr := netip.AddrFrom4([4]byte{127, 0, 0, 1})
		if !h.isLocal(name) {
			addr = h.names.addrFor(name)
		}
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: addr.AsSlice()})
	case q.Qtype == dns.TypeAAAA && h.isLocal(name):
		hdr.Rrtype = dns.TypeAAAA
		m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: netip.IPv6Loopback().AsSlice()})
	}
	// Every other type (AAAA of other names, MX, TXT, HTTPS...) gets an
	// empty answer: the name exists, connections go to its A address.
	return m
}

// reverse answers PTR queries for the name block and loopback.
func (h *dnsHandler) reverse(m *dns.Msg, q dns.Question) *dns.Msg {
	a, ok := reverseAddr(q.Name)
	var name string
	switch {
	case ok && a.IsLoopback():
		name = "localhost"
	case ok:
		name, ok = h.names.nameOf(a)
	}
	if !ok {
		m.Rcode = dns.RcodeNameError
		return m
	}
	m.Answer = append(m.Answer, &dns.PTR{
		Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: nameTTL},
		Ptr: dns.Fqdn(name),
	})
	return m
}

// reverseAddr reads an IPv4 in-addr.arpa name.
func reverseAddr(name string) (netip.Addr, bool) {
	rest, ok := strings.CutSuffix(strings.ToLower(dns.Fqdn(name)), ".in-addr.arpa.")
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

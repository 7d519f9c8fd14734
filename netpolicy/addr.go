package netpolicy

import (
	"net/netip"
	"sync"
)

// NameBlock is the address block the sandbox's DNS answers from: each name
// a command looks up gets one address here, which maps back to the name
// when the command connects to it. RFC 2544 reserves it for benchmarking,
// so no public host has it.
var NameBlock = netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, 0, 0}), 15)

type kindedPrefix struct {
	prefix netip.Prefix
	kind   string
}

// nonPublic are blocks that are not the public internet, in the order they
// are checked, with the word a refusal uses for them. Cloud metadata comes
// before link-local so the more telling word wins. Built on first use: the
// binary that holds it starts on every call, and most never classify.
var nonPublic = sync.OnceValue(func() []kindedPrefix {
	return []kindedPrefix{
		{netip.MustParsePrefix("169.254.169.254/32"), "cloud metadata"},
		{netip.MustParsePrefix("169.254.170.2/32"), "cloud metadata"},
		{netip.MustParsePrefix("100.100.100.200/32"), "cloud metadata"},
		{netip.MustParsePrefix("fd00:ec2::254/128"), "cloud metadata"},
		{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
		{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
		{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
		{netip.MustParsePrefix("10.0.0.0/8"), "private"},
		{netip.MustParsePrefix("172.16.0.0/12"), "private"},
		{netip.MustParsePrefix("192.168.0.0/16"), "private"},
		{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT"},
		{netip.MustParsePrefix("192.0.0.0/24"), "reserved"},
		{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},
		{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},
		{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},
		{NameBlock, "benchmarking (the sandbox's own name block)"},
		{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
		{netip.MustParsePrefix("240.0.0.0/4"), "reserved"}, // and the broadcast address
		{netip.MustParsePrefix("::/128"), "unspecified"},
		{netip.MustParsePrefix("::1/128"), "loopback"},
		{netip.MustParsePrefix("::/96"), "reserved"}, // IPv4-compatible, deprecated
		{netip.MustParsePrefix("100::/64"), "reserved"},
		{netip.MustParsePrefix("2001::/32"), "reserved"}, // Teredo hides its IPv4 address
		{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
		{netip.MustParsePrefix("fc00::/7"), "private"},
		{netip.MustParsePrefix("fe80::/10"), "link-local"},
		{netip.MustParsePrefix("fec0::/10"), "private"},
		{netip.MustParsePrefix("ff00::/8"), "multicast"},
	}
})

type embedding struct {
	prefix netip.Prefix
	at     int
}

// embeddedIPv4 are IPv6 blocks that carry an IPv4 address, with the bit
// offset at which it sits; the address is judged by the IPv4 it reaches.
var embeddedIPv4 = sync.OnceValue(func() []embedding {
	return []embedding{
		{netip.MustParsePrefix("64:ff9b::/96"), 96},   // NAT64
		{netip.MustParsePrefix("64:ff9b:1::/48"), 96}, // local NAT64
		{netip.MustParsePrefix("2002::/16"), 16},      // 6to4
	}
})

// Classify returns "" for a public address, else the kind of address it is
// ("loopback", "private", "link-local", "cloud metadata", ...). IPv4-mapped
// and IPv4-embedding IPv6 addresses are judged by their IPv4 address.
func Classify(a netip.Addr) string {
	if !a.IsValid() {
		return "invalid"
	}
	a = a.Unmap()
	if a.Is6() {
		for _, e := range embeddedIPv4() {
			if e.prefix.Contains(a) {
				b := a.As16()
				var v4 [4]byte
				copy(v4[:], b[e.at/8:e.at/8+4])
				if kind := Classify(netip.AddrFrom4(v4)); kind != "" {
					return kind
				}
				return ""
			}
		}
	}
	for _, n := range nonPublic() {
		if n.prefix.Contains(a) {
			return n.kind
		}
	}
	return ""
}

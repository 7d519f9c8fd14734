package netpolicy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// DNSPort is answered by the sandbox itself for every name, so no pattern
// may claim it.
const DNSPort = 53

// hostKind says what a pattern's host part matches.
type hostKind uint8

const (
	kindName       hostKind = iota // exactly name
	kindSubdomains                 // every name ending in "."+name
	kindAnyName                    // every name, no address
	kindAddr                       // exactly addr
)

// Pattern is one host part with one port range. An --allow-domain value
// without a port becomes two patterns (80 and 443).
type Pattern struct {
	kind hostKind
	name string
	addr netip.Addr
	// lo..hi is the inclusive port range; 0..0 means every port (only a
	// --deny-domain pattern without a port has it).
	lo, hi uint16
}

// Host is where a connection is meant to go: a name or an address.
type Host struct {
	Name string     // normalised: lower case, no final dot; "" when Addr is set
	Addr netip.Addr // unmapped; invalid when Name is set
}

// IsAddr reports whether the host is a raw address.
func (h Host) IsAddr() bool { return h.Name == "" }

// String is the host as a user writes it (IPv6 without brackets).
func (h Host) String() string {
	if h.IsAddr() {
		return h.Addr.String()
	}
	return h.Name
}

// HostPort is host:port with IPv6 in brackets.
func HostPort(h Host, port uint16) string {
	host := h.String()
	if h.IsAddr() && h.Addr.Is6() {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(int(port))
}

// NameHost is the Host for a name that is already normalised (the DNS
// table's own names).
func NameHost(name string) Host { return Host{Name: name} }

// AddrHost is the Host for an address; IPv4-mapped IPv6 becomes IPv4.
func AddrHost(a netip.Addr) Host { return Host{Addr: a.Unmap()} }

// ParseHost reads a destination as a client names it: an address (IPv6
// with or without brackets) or a host name.
func ParseHost(s string) (Host, error) {
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil && a.Zone() == "" {
		return AddrHost(a), nil
	}
	name, err := NormalizeName(s)
	if err != nil {
		return Host{}, err
	}
	return Host{Name: name}, nil
}

// NormalizeName lower-cases a host name, drops one final dot and checks
// that it is a DNS name made of letters, digits, '-' and '_' (an
// internationalised name must be given in its xn-- form).
func NormalizeName(s string) (string, error) {
	n := strings.ToLower(strings.TrimSuffix(s, "."))
	if n == "" {
		return "", errors.New("empty host name")
	}
	if len(n) > 253 {
		return "", fmt.Errorf("host name %q is longer than 253 characters", s)
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("host name %q has an empty or over-long (>63) label", s)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			case c >= 0x80:
				return "", fmt.Errorf("host name %q is not ASCII; write it in its xn-- (punycode) form", s)
			default:
				return "", fmt.Errorf("host name %q contains %q; a name is letters, digits, '-', '_' and dots", s, string(c))
			}
		}
	}
	return n, nil
}

const patternHelp = "want NAME, *.NAME, * or an IP address, with an optional :PORT or :PORT-PORT"

// parsePattern reads one pattern; defaultPorts are used when it has no
// port part (nil: every port).
func parsePattern(s string, defaultPorts [][2]uint16) ([]Pattern, error) {
	if s == "" {
		return nil, fmt.Errorf("empty pattern; %s", patternHelp)
	}
	if strings.Contains(s, "://") || strings.ContainsAny(s, "/@?# \t\n\x00") {
		return nil, fmt.Errorf("%q: %s (no scheme, path or user)", s, patternHelp)
	}
	hostPart, portPart, err := splitHostPort(s)
	if err != nil {
		return nil, err
	}
	base, err := parseHostPattern(s, hostPart)
	if err != nil {
		return nil, err
	}
	ranges := defaultPorts
	if portPart != "" {
		r, err := parsePortRange(s, portPart)
		if err != nil {
			return nil, err
		}
		ranges = [][2]uint16{r}
	}
	if ranges == nil {
		return []Pattern{base}, nil
	}
	out := make([]Pattern, 0, len(ranges))
	for _, r := range ranges {
		p := base
		p.lo, p.hi = r[0], r[1]
		out = append(out, p)
	}
	return out, nil
}

// splitHostPort separates "host[:ports]"; an IPv6 address needs brackets
// to carry a port, and a bare one is taken whole.
func splitHostPort(s string) (host, ports string, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 {
			return "", "", fmt.Errorf("%q: missing ']' after the IPv6 address", s)
		}
		host, rest := s[1:end], s[end+1:]
		if rest == "" {
			return "[" + host + "]", "", nil
		}
		if !strings.HasPrefix(rest, ":") || rest == ":" {
			return "", "", fmt.Errorf("%q: want [IPv6]:PORT", s)
		}
		return "[" + host + "]", rest[1:], nil
	}
	if strings.Count(s, ":") > 1 {
		return s, "", nil // a bare IPv6 address
	}
	host, ports, found := strings.Cut(s, ":")
	if found && ports == "" {
		return "", "", fmt.Errorf("%q: empty port after ':'", s)
	}
	return host, ports, nil
}

func parseHostPattern(s, host string) (Pattern, error) {
	switch {
	case host == "*":
		return Pattern{kind: kindAnyName}, nil
	case strings.HasPrefix(host, "[") || strings.Count(host, ":") > 1:
		a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
		if err != nil || a.Zone() != "" || !a.Is6() {
			return Pattern{}, fmt.Errorf("%q: %q is not an IPv6 address", s, host)
		}
		return Pattern{kind: kindAddr, addr: a.Unmap()}, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return Pattern{kind: kindAddr, addr: a.Unmap()}, nil
	}
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		if strings.Contains(rest, "*") {
			return Pattern{}, fmt.Errorf("%q: only a leading \"*.\" may be a wildcard", s)
		}
		name, err := NormalizeName(rest)
		if err != nil {
			return Pattern{}, fmt.Errorf("%q: %w", s, err)
		}
		return Pattern{kind: kindSubdomains, name: name}, nil
	}
	if strings.Contains(host, "*") {
		return Pattern{}, fmt.Errorf("%q: a wildcard is \"*\" alone or a leading \"*.\"", s)
	}
	name, err := NormalizeName(host)
	if err != nil {
		return Pattern{}, fmt.Errorf("%q: %w", s, err)
	}
	return Pattern{kind: kindName, name: name}, nil
}

func parsePortRange(s, ports string) ([2]uint16, error) {
	loS, hiS, isRange := strings.Cut(ports, "-")
	lo, err := parsePort(s, loS)
	if err != nil {
		return [2]uint16{}, err
	}
	hi := lo
	if isRange {
		if hi, err = parsePort(s, hiS); err != nil {
			return [2]uint16{}, err
		}
		if hi < lo {
			return [2]uint16{}, fmt.Errorf("%q: port range %s runs backwards", s, ports)
		}
	}
	return [2]uint16{lo, hi}, nil
}

func parsePort(s, p string) (uint16, error) {
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 || p[0] == '+' {
		return 0, fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, p)
	}
	return uint16(n), nil
}

// String is the pattern in the syntax it was given in, with its port
// range made explicit (none for every port).
func (p Pattern) String() string {
	var host string
	switch p.kind {
	case kindName:
		host = p.name
	case kindSubdomains:
		host = "*." + p.name
	case kindAnyName:
		host = "*"
	case kindAddr:
		host = p.addr.String()
		if p.addr.Is6() {
			host = "[" + host + "]"
		}
	}
	switch {
	case p.lo == 0:
		return host
	case p.lo == p.hi:
		return host + ":" + strconv.Itoa(int(p.lo))
	default:
		return host + ":" + strconv.Itoa(int(p.lo)) + "-" + strconv.Itoa(int(p.hi))
	}
}

// hostString is the host part alone, for messages.
func (p Pattern) hostString() string {
	q := p
	q.lo, q.hi = 0, 0
	return q.String()
}

func (p Pattern) matchHost(h Host) bool {
	switch p.kind {
	case kindName:
		return !h.IsAddr() && h.Name == p.name
	case kindSubdomains:
		return !h.IsAddr() && strings.HasSuffix(h.Name, "."+p.name)
	case kindAnyName:
		return !h.IsAddr()
	case kindAddr:
		return h.IsAddr() && h.Addr == p.addr
	}
	return false
}

func (p Pattern) matchPort(port uint16) bool {
	return p.lo == 0 || (port >= p.lo && port <= p.hi)
}

func (p Pattern) matches(h Host, port uint16) bool { return p.matchHost(h) && p.matchPort(port) }

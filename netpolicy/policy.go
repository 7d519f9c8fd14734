package netpolicy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// DefaultPorts are what an --allow-domain pattern without a port allows.
var DefaultPorts = [][2]uint16{{80, 80}, {443, 443}}

// MaxPorts bounds the distinct ports an allow-list may name: each one is a
// listening socket in the sandbox's network.
const MaxPorts = 1024

// ProxyBasePort is where the HTTP CONNECT and SOCKS5 endpoint listens on
// the sandbox's loopback, unless the allow-list claims that port (the next
// free one is taken then).
const ProxyBasePort = 3128

// Policy is a sandbox's network policy. The zero value allows nothing.
type Policy struct {
	allow []Pattern
	deny  []Pattern
	hosts map[string]netip.Addr
}

// Verdict is the policy's answer for one destination.
type Verdict struct {
	Allowed bool
	Reason  string // why not, in words for the refusal line
}

// Allow adds one --allow-domain value: patterns separated by commas.
func (p *Policy) Allow(value string) error {
	for _, s := range strings.Split(value, ",") {
		pats, err := parsePattern(strings.TrimSpace(s), DefaultPorts)
		if err != nil {
			return err
		}
		for _, pat := range pats {
			if err := checkAllow(s, pat); err != nil {
				return err
			}
		}
		p.allow = append(p.allow, pats...)
	}
	return nil
}

// checkAllow refuses allow patterns that could only mislead.
func checkAllow(s string, pat Pattern) error {
	if pat.lo <= DNSPort && DNSPort <= pat.hi {
		return fmt.Errorf("%q: port 53 is the sandbox's own DNS, which already answers every name; leave it out", s)
	}
	if pat.kind != kindAddr {
		return nil
	}
	switch kind := Classify(pat.addr); kind {
	case "loopback", "unspecified":
		return fmt.Errorf("%q: inside the sandbox a %s address is the sandbox's own; to reach a service on the host's loopback, name it: --add-host NAME:%s --allow-domain NAME:PORT", s, kind, pat.addr)
	case "benchmarking (the sandbox's own name block)":
		return fmt.Errorf("%q: %s is in %s, the block the sandbox's DNS answers from; allow the name instead", s, pat.addr, NameBlock)
	}
	return nil
}

// Deny adds one --deny-domain value: patterns separated by commas, each
// without a port denying every port.
func (p *Policy) Deny(value string) error {
	for _, s := range strings.Split(value, ",") {
		pats, err := parsePattern(strings.TrimSpace(s), nil)
		if err != nil {
			return err
		}
		p.deny = append(p.deny, pats...)
	}
	return nil
}

// AddHost adds one --add-host NAME:IP (an IPv6 address may be bracketed).
func (p *Policy) AddHost(value string) error {
	nameS, ipS, ok := strings.Cut(value, ":")
	if !ok || nameS == "" || ipS == "" {
		return fmt.Errorf("%q: want NAME:IP", value)
	}
	name, err := NormalizeName(nameS)
	if err != nil {
		return fmt.Errorf("%q: %w", value, err)
	}
	ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(ipS, "["), "]"))
	if err != nil || ip.Zone() != "" {
		return fmt.Errorf("%q: %q is not an IP address", value, ipS)
	}
	ip = ip.Unmap()
	if old, dup := p.hosts[name]; dup && old != ip {
		return fmt.Errorf("%q: %s is already mapped to %s", value, name, old)
	}
	if p.hosts == nil {
		p.hosts = map[string]netip.Addr{}
	}
	p.hosts[name] = ip
	return nil
}

// Validate checks the policy as a whole: something is allowed, and the
// ports fit.
func (p *Policy) Validate() error {
	if len(p.allow) == 0 {
		return errors.New("no --allow-domain pattern: --deny-domain and --add-host only refine an allow-list")
	}
	if n := p.portCount(); n > MaxPorts {
		return fmt.Errorf("the allowed ports number %d; at most %d are supported (each is a listening socket)", n, MaxPorts)
	}
	return nil
}

// portCount is how many distinct ports the allow patterns name.
func (p *Policy) portCount() int {
	ranges := make([][2]int, 0, len(p.allow))
	for _, a := range p.allow {
		ranges = append(ranges, [2]int{int(a.lo), int(a.hi)})
	}
	sort.Slice(ranges, func(i, j int) bool { return ranges[i][0] < ranges[j][0] })
	n, last := 0, -1
	for _, r := range ranges {
		lo := max(r[0], last+1)
		if r[1] >= lo {
			n += r[1] - lo + 1
			last = r[1]
		}
	}
	return n
}

// Ports are the distinct allowed ports, ascending: where the sandbox
// listens for connections to forward.
func (p *Policy) Ports() []uint16 {
	set := map[uint16]bool{}
	for _, a := range p.allow {
		for port := int(a.lo); port <= int(a.hi); port++ {
			set[uint16(port)] = true
			if len(set) > MaxPorts {
				break
			}
		}
	}
	ports := make([]uint16, 0, len(set))
	for port := range set {
		ports = append(ports, port)
	}
	slices.Sort(ports)
	return ports
}

// ProxyPort is the loopback port of the proxy endpoint: ProxyBasePort, or
// the next port no allow pattern claims.
func (p *Policy) ProxyPort() uint16 {
	port := uint16(ProxyBasePort)
	for p.allowsPort(port) {
		port++
	}
	return port
}

func (p *Policy) allowsPort(port uint16) bool {
	for _, a := range p.allow {
		if a.matchPort(port) {
			return true
		}
	}
	return false
}

// ProxyEnv are the variables that point proxy-aware clients at the proxy
// endpoint: HTTP(S) through CONNECT, everything else through SOCKS5 with
// names resolved by the proxy. NO_PROXY is empty: a direct connection
// meets the same policy, so nothing gains by bypassing the proxy, and the
// proxy connects names such as localhost inside the sandbox itself.
func (p *Policy) ProxyEnv() []string {
	port := strconv.Itoa(int(p.ProxyPort()))
	httpProxy := "http://127.0.0.1:" + port
	socks := "socks5h://127.0.0.1:" + port
	return []string{
		"HTTP_PROXY=" + httpProxy, "HTTPS_PROXY=" + httpProxy, "ALL_PROXY=" + socks, "NO_PROXY=",
		"http_proxy=" + httpProxy, "https_proxy=" + httpProxy, "all_proxy=" + socks, "no_proxy=",
	}
}

// HostAddr is the --add-host address of a name.
func (p *Policy) HostAddr(name string) (netip.Addr, bool) {
	a, ok := p.hosts[name]
	return a, ok
}

// Check decides whether a connection to h:port is allowed by the patterns.
// Addresses are judged separately (Classify), once a name is resolved.
func (p *Policy) Check(h Host, port uint16) Verdict {
	for _, d := range p.deny {
		if d.matches(h, port) {
			return Verdict{Reason: "matches --deny-domain " + d.String()}
		}
	}
	var ports []Pattern
	for _, a := range p.allow {
		if !a.matchHost(h) {
			continue
		}
		if a.matchPort(port) {
			return Verdict{Allowed: true}
		}
		ports = append(ports, a)
	}
	switch {
	case len(ports) > 0:
		return Verdict{Reason: fmt.Sprintf("port %d is not allowed for %s; allowed: %s", port, h, portList(ports))}
	case h.IsAddr():
		return Verdict{Reason: "not in --allow-domain; a raw IP address is reached only when allowed as --allow-domain IP:PORT"}
	}
	return Verdict{Reason: "not in --allow-domain"}
}

// DeniedAddr returns the --deny-domain pattern that denies a resolved
// address on port, if any: a denied IP stays denied when a name leads to
// it.
func (p *Policy) DeniedAddr(a netip.Addr, port uint16) (string, bool) {
	h := AddrHost(a)
	for _, d := range p.deny {
		if d.kind == kindAddr && d.matches(h, port) {
			return d.String(), true
		}
	}
	return "", false
}

// portList writes the port ranges of pats, merged and sorted.
func portList(pats []Pattern) string {
	sort.Slice(pats, func(i, j int) bool { return pats[i].lo < pats[j].lo })
	var parts []string
	lastHi := -1
	for _, a := range pats {
		if int(a.hi) <= lastHi {
			continue
		}
		lo := max(int(a.lo), lastHi+1)
		if lo == int(a.hi) {
			parts = append(parts, strconv.Itoa(lo))
		} else {
			parts = append(parts, strconv.Itoa(lo)+"-"+strconv.Itoa(int(a.hi)))
		}
		lastHi = int(a.hi)
	}
	return strings.Join(parts, ", ")
}

// String is the policy in a canonical form: the same policy, however its
// flags were ordered or repeated, gives the same string (the warm key).
func (p *Policy) String() string {
	j := p.wire()
	hosts := make([]string, 0, len(j.Hosts))
	for name, ip := range j.Hosts {
		hosts = append(hosts, name+"="+ip)
	}
	sort.Strings(hosts)
	return "allow=" + strings.Join(j.Allow, ",") + ";deny=" + strings.Join(j.Deny, ",") + ";hosts=" + strings.Join(hosts, ",")
}

// policyJSON is the policy as the supervisor receives it.
type policyJSON struct {
	Allow []string          `json:"allow"`
	Deny  []string          `json:"deny,omitempty"`
	Hosts map[string]string `json:"hosts,omitempty"`
}

func (p *Policy) wire() policyJSON {
	j := policyJSON{Allow: canonical(p.allow), Deny: canonical(p.deny)}
	for name, ip := range p.hosts {
		if j.Hosts == nil {
			j.Hosts = map[string]string{}
		}
		j.Hosts[name] = ip.String()
	}
	return j
}

func canonical(pats []Pattern) []string {
	out := make([]string, 0, len(pats))
	for _, pat := range pats {
		out = append(out, pat.String())
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// MarshalJSON writes the canonical patterns.
func (p *Policy) MarshalJSON() ([]byte, error) { return json.Marshal(p.wire()) }

// UnmarshalJSON reads what MarshalJSON wrote, checking it as the flags
// are checked.
func (p *Policy) UnmarshalJSON(b []byte) error {
	var j policyJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	var q Policy
	for _, s := range j.Allow {
		if strings.Contains(s, ",") {
			return fmt.Errorf("network policy: allow pattern %q holds a comma", s)
		}
		if err := q.Allow(s); err != nil {
			return fmt.Errorf("network policy: %w", err)
		}
	}
	for _, s := range j.Deny {
		if strings.Contains(s, ",") {
			return fmt.Errorf("network policy: deny pattern %q holds a comma", s)
		}
		if err := q.Deny(s); err != nil {
			return fmt.Errorf("network policy: %w", err)
		}
	}
	for name, ip := range j.Hosts {
		if err := q.AddHost(name + ":" + ip); err != nil {
			return fmt.Errorf("network policy: %w", err)
		}
	}
	*p = q
	return nil
}

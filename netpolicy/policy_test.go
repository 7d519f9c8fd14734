package netpolicy

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestAllowParse(t *testing.T) {
	tests := []struct {
		in   string
		want []string // canonical patterns
		err  string   // substring of the error
	}{
		{in: "example.com", want: []string{"example.com:443", "example.com:80"}},
		{in: "Example.COM.", want: []string{"example.com:443", "example.com:80"}},
		{in: "*.example.com", want: []string{"*.example.com:443", "*.example.com:80"}},
		{in: "*", want: []string{"*:443", "*:80"}},
		{in: "*:22", want: []string{"*:22"}},
		{in: "github.com:22", want: []string{"github.com:22"}},
		{in: "api.example.com:8000-8100", want: []string{"api.example.com:8000-8100"}},
		{in: "a.example, b.example:8080", want: []string{"a.example:443", "a.example:80", "b.example:8080"}},
		{in: "192.0.2.7:443", want: []string{"192.0.2.7:443"}},
		{in: "[2001:db8::7]:443", want: []string{"[2001:db8::7]:443"}},
		{in: "2001:db8::7", want: []string{"[2001:db8::7]:443", "[2001:db8::7]:80"}},
		{in: "[::ffff:192.0.2.7]:443", want: []string{"192.0.2.7:443"}},
		{in: "10.1.2.3:5432", want: []string{"10.1.2.3:5432"}},
		{in: "under_score.example", want: []string{"under_score.example:443", "under_score.example:80"}},
		{in: "", err: "empty pattern"},
		{in: "a.example,", err: "empty pattern"},
		{in: "https://example.com", err: "no scheme"},
		{in: "example.com/path", err: "no scheme"},
		{in: "user@example.com", err: "no scheme"},
		{in: "exa mple.com", err: "no scheme"},
		{in: "ex*ample.com", err: "a wildcard is"},
		{in: "*.*.example.com", err: "only a leading"},
		{in: "**", err: "a wildcard is"},
		{in: "*.", err: "empty host name"},
		{in: "example..com", err: "empty or over-long"},
		{in: "bücher.example", err: "xn--"},
		{in: "example.com:", err: "empty port"},
		{in: "example.com:0", err: "from 1 to 65535"},
		{in: "example.com:65536", err: "from 1 to 65535"},
		{in: "example.com:+80", err: "from 1 to 65535"},
		{in: "example.com:http", err: "from 1 to 65535"},
		{in: "example.com:90-80", err: "backwards"},
		{in: "example.com:53", err: "port 53"},
		{in: "example.com:1-100", err: "port 53"},
		{in: "127.0.0.1:8080", err: "--add-host NAME:127.0.0.1"},
		{in: "[::1]:8080", err: "loopback"},
		{in: "0.0.0.0:80", err: "unspecified"},
		{in: "198.18.0.5:443", err: "198.18.0.0/15"},
		{in: "[2001:db8::7", err: "missing ']'"},
		{in: "[2001:db8::7]443", err: "want [IPv6]:PORT"},
		{in: "[fe80::1%eth0]:443", err: "not an IPv6 address"},
		{in: "[192.0.2.7]:443", err: "not an IPv6 address"},
		{in: strings.Repeat("a", 64) + ".example", err: "over-long"},
	}
	for _, tt := range tests {
		var p Policy
		err := p.Allow(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Allow(%q) = %v, want an error containing %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Allow(%q): %v", tt.in, err)
			continue
		}
		if got := canonical(p.allow); !slices.Equal(got, tt.want) {
			t.Errorf("Allow(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDenyDefaultsToEveryPort(t *testing.T) {
	var p Policy
	mustDo(t, p.Allow("*"), p.Allow("*:8080"), p.Deny("evil.example"), p.Deny("*.bad.example:443"))
	for _, port := range []uint16{80, 443, 8080} {
		if v := p.Check(NameHost("evil.example"), port); v.Allowed || !strings.Contains(v.Reason, "--deny-domain evil.example") {
			t.Errorf("evil.example:%d: %+v", port, v)
		}
	}
	if v := p.Check(NameHost("x.bad.example"), 80); !v.Allowed {
		t.Errorf("x.bad.example:80 is only denied on 443: %+v", v)
	}
	if v := p.Check(NameHost("x.bad.example"), 443); v.Allowed {
		t.Errorf("x.bad.example:443 is denied: %+v", v)
	}
}

func TestCheck(t *testing.T) {
	var p Policy
	mustDo(t,
		p.Allow("example.com,*.example.org"),
		p.Allow("api.example.net:8000-8100"),
		p.Allow("192.0.2.7:443"),
		p.Allow("[2001:db8::7]:22"),
		p.Deny("secret.example.org"),
	)
	addr := func(s string) Host { return AddrHost(netip.MustParseAddr(s)) }
	tests := []struct {
		host    Host
		port    uint16
		allowed bool
		reason  string
	}{
		{NameHost("example.com"), 443, true, ""},
		{NameHost("example.com"), 80, true, ""},
		{NameHost("example.com"), 8080, false, "port 8080 is not allowed for example.com; allowed: 80, 443"},
		{NameHost("www.example.com"), 443, false, "not in --allow-domain"},
		{NameHost("a.example.org"), 443, true, ""},
		{NameHost("a.b.example.org"), 80, true, ""},
		{NameHost("example.org"), 443, false, "not in --allow-domain"},
		{NameHost("badexample.org"), 443, false, "not in --allow-domain"},
		{NameHost("secret.example.org"), 443, false, "matches --deny-domain secret.example.org"},
		{NameHost("api.example.net"), 8050, true, ""},
		{NameHost("api.example.net"), 8101, false, "allowed: 8000-8100"},
		{addr("192.0.2.7"), 443, true, ""},
		{addr("::ffff:192.0.2.7"), 443, true, ""},
		{addr("192.0.2.7"), 80, false, "allowed: 443"},
		{addr("192.0.2.8"), 443, false, "allowed as --allow-domain IP:PORT"},
		{addr("2001:db8::7"), 22, true, ""},
		{NameHost("192-0-2-7.example"), 443, false, "not in --allow-domain"},
	}
	for _, tt := range tests {
		v := p.Check(tt.host, tt.port)
		if v.Allowed != tt.allowed || !strings.Contains(v.Reason, tt.reason) {
			t.Errorf("Check(%s, %d) = %+v, want allowed=%v reason containing %q", tt.host, tt.port, v, tt.allowed, tt.reason)
		}
	}
	var any Policy
	mustDo(t, any.Allow("*"))
	if v := any.Check(addr("192.0.2.7"), 443); v.Allowed {
		t.Errorf("* must not allow raw addresses: %+v", v)
	}
	if v := any.Check(NameHost("anything.example"), 443); !v.Allowed {
		t.Errorf("* must allow any name on 443: %+v", v)
	}
}

func TestDeniedAddr(t *testing.T) {
	var p Policy
	mustDo(t, p.Allow("*"), p.Deny("192.0.2.9,[2001:db8::9]:443,bad.example"))
	for _, tt := range []struct {
		addr string
		port uint16
		want string
	}{
		{"192.0.2.9", 443, "192.0.2.9"},
		{"::ffff:192.0.2.9", 80, "192.0.2.9"},
		{"2001:db8::9", 443, "[2001:db8::9]:443"},
		{"2001:db8::9", 80, ""},
		{"192.0.2.10", 443, ""},
	} {
		got, ok := p.DeniedAddr(netip.MustParseAddr(tt.addr), tt.port)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("DeniedAddr(%s, %d) = %q %v, want %q", tt.addr, tt.port, got, ok, tt.want)
		}
	}
}

func TestAddHost(t *testing.T) {
	tests := []struct {
		in, name, ip, err string
	}{
		{in: "db.local:10.0.0.5", name: "db.local", ip: "10.0.0.5"},
		{in: "Host.Example.:127.0.0.1", name: "host.example", ip: "127.0.0.1"},
		{in: "v6.example:2001:db8::1", name: "v6.example", ip: "2001:db8::1"},
		{in: "v6b.example:[2001:db8::2]", name: "v6b.example", ip: "2001:db8::2"},
		{in: "nocolon", err: "want NAME:IP"},
		{in: ":1.2.3.4", err: "want NAME:IP"},
		{in: "name:", err: "want NAME:IP"},
		{in: "name:not-an-ip", err: "not an IP address"},
		{in: "*.x:1.2.3.4", err: "contains"},
	}
	for _, tt := range tests {
		var p Policy
		err := p.AddHost(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("AddHost(%q) = %v, want error containing %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("AddHost(%q): %v", tt.in, err)
		}
		if a, ok := p.HostAddr(tt.name); !ok || a.String() != tt.ip {
			t.Errorf("AddHost(%q): HostAddr(%q) = %v %v, want %s", tt.in, tt.name, a, ok, tt.ip)
		}
	}
	var p Policy
	mustDo(t, p.AddHost("a.example:192.0.2.1"), p.AddHost("a.example:192.0.2.1"))
	if err := p.AddHost("a.example:192.0.2.2"); err == nil || !strings.Contains(err.Error(), "already mapped") {
		t.Errorf("a second, different address for a name: %v", err)
	}
}

func TestValidate(t *testing.T) {
	var none Policy
	mustDo(t, none.Deny("x.example"))
	if err := none.Validate(); err == nil || !strings.Contains(err.Error(), "no --allow-domain") {
		t.Errorf("deny without allow: %v", err)
	}
	var wide Policy
	mustDo(t, wide.Allow("*:1000-3000"))
	if err := wide.Validate(); err == nil || !strings.Contains(err.Error(), "at most 1024") {
		t.Errorf("2001 ports: %v", err)
	}
	var ok Policy
	mustDo(t, ok.Allow("*:1000-2021"), ok.Allow("*"))
	if err := ok.Validate(); err != nil {
		t.Errorf("1024 ports: %v", err)
	}
}

func TestPortsAndProxy(t *testing.T) {
	var p Policy
	mustDo(t, p.Allow("a.example,b.example:8080,c.example:3128-3130"))
	if got, want := p.Ports(), []uint16{80, 443, 3128, 3129, 3130, 8080}; !slices.Equal(got, want) {
		t.Errorf("Ports() = %v, want %v", got, want)
	}
	if got := p.ProxyPort(); got != 3131 {
		t.Errorf("ProxyPort() = %d, want 3131 (3128-3130 are allowed ports)", got)
	}
	var q Policy
	mustDo(t, q.Allow("*"))
	env := q.ProxyEnv()
	for _, want := range []string{"HTTP_PROXY=http://127.0.0.1:3128", "https_proxy=http://127.0.0.1:3128",
		"ALL_PROXY=socks5h://127.0.0.1:3128", "NO_PROXY=", "no_proxy="} {
		if !slices.Contains(env, want) {
			t.Errorf("ProxyEnv() lacks %q: %q", want, env)
		}
	}
}

func TestStringIsCanonical(t *testing.T) {
	var a, b Policy
	mustDo(t,
		a.Allow("x.example,*.y.example:8080"), a.Deny("bad.example"), a.AddHost("x.example:192.0.2.1"), a.AddHost("z.example:10.0.0.1"),
		b.AddHost("z.example:10.0.0.1"), b.Deny("BAD.example."), b.Allow("*.y.example:8080"), b.Allow("X.example"), b.Allow("x.example:443"), b.AddHost("x.example:192.0.2.1"),
	)
	if a.String() != b.String() {
		t.Errorf("same policy, different strings:\n%s\n%s", a.String(), b.String())
	}
	var c Policy
	mustDo(t, c.Allow("x.example,*.y.example:8080"), c.Deny("bad.example"), c.AddHost("x.example:192.0.2.2"), c.AddHost("z.example:10.0.0.1"))
	if a.String() == c.String() {
		t.Errorf("different --add-host, same string %s", a.String())
	}
}

func TestJSONRoundTrip(t *testing.T) {
	var p Policy
	mustDo(t, p.Allow("*.example.com,api.example.net:8000-8100,[2001:db8::7]:22"), p.Deny("bad.example.com,*.worse.example.com:443"),
		p.AddHost("api.example.net:192.0.2.9"), p.AddHost("v6.example:2001:db8::9"))
	b, err := json.Marshal(&p)
	if err != nil {
		t.Fatal(err)
	}
	var q Policy
	if err := json.Unmarshal(b, &q); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if p.String() != q.String() {
		t.Errorf("round trip changed the policy:\n%s\n%s", p.String(), q.String())
	}
	for _, bad := range []string{`{"allow":["127.0.0.1:80"]}`, `{"allow":["a.example:80,b.example:80"]}`, `{"allow":["x"],"hosts":{"y":"nope"}}`} {
		var r Policy
		if err := json.Unmarshal([]byte(bad), &r); err == nil {
			t.Errorf("Unmarshal(%s) accepted a policy the flags refuse", bad)
		}
	}
}

func TestParseHost(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{in: "Example.COM", want: "example.com"},
		{in: "192.0.2.1", want: "192.0.2.1"},
		{in: "[2001:db8::1]", want: "2001:db8::1"},
		{in: "::ffff:10.0.0.1", want: "10.0.0.1"},
		{in: "bad host", err: "contains"},
		{in: "", err: "empty"},
	}
	for _, tt := range tests {
		h, err := ParseHost(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseHost(%q) = %v, %v; want error %q", tt.in, h, err, tt.err)
			}
			continue
		}
		if err != nil || h.String() != tt.want {
			t.Errorf("ParseHost(%q) = %v, %v; want %s", tt.in, h, err, tt.want)
		}
	}
	if got := HostPort(AddrHost(netip.MustParseAddr("2001:db8::1")), 443); got != "[2001:db8::1]:443" {
		t.Errorf("HostPort = %s", got)
	}
}

func mustDo(t *testing.T, errs ...error) {
	t.Helper()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

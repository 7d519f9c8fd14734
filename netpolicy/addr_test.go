package netpolicy

import (
	"net/netip"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct{ addr, kind string }{
		{"93.184.215.14", ""},
		{"2606:2800:21f:cb07:6820:80da:af6b:8b2c", ""},
		{"127.0.0.1", "loopback"},
		{"127.255.0.9", "loopback"},
		{"::1", "loopback"},
		{"::ffff:127.0.0.1", "loopback"},
		{"0.0.0.0", "unspecified"},
		{"::", "unspecified"},
		{"10.1.2.3", "private"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"172.32.0.1", ""},
		{"192.168.1.1", "private"},
		{"fd12:3456::1", "private"},
		{"169.254.1.1", "link-local"},
		{"fe80::1", "link-local"},
		{"169.254.169.254", "cloud metadata"},
		{"fd00:ec2::254", "cloud metadata"},
		{"100.100.100.200", "cloud metadata"},
		{"100.64.0.1", "carrier-grade NAT"},
		{"198.18.0.1", "benchmarking (the sandbox's own name block)"},
		{"198.19.255.255", "benchmarking (the sandbox's own name block)"},
		{"198.20.0.1", ""},
		{"224.0.0.1", "multicast"},
		{"ff02::1", "multicast"},
		{"255.255.255.255", "reserved"},
		{"240.0.0.1", "reserved"},
		{"192.0.2.1", "documentation"},
		{"2001:db8::1", "documentation"},
		{"64:ff9b::10.0.0.1", "private"},
		{"64:ff9b::93.184.215.14", ""},
		{"2002:7f00:1::", "loopback"}, // 6to4 of 127.0.0.1
		{"2001:0:4136:e378::1", "reserved"},
		{"::10.0.0.1", "reserved"},
	}
	for _, tt := range tests {
		if got := Classify(netip.MustParseAddr(tt.addr)); got != tt.kind {
			t.Errorf("Classify(%s) = %q, want %q", tt.addr, got, tt.kind)
		}
	}
	if got := Classify(netip.Addr{}); got != "invalid" {
		t.Errorf("Classify(zero) = %q", got)
	}
}

package oci

import (
	"strings"
	"testing"
)

func TestParseVolume(t *testing.T) {
	tests := []struct {
		in   string
		want Volume
	}{
		{"/data", Volume{Source: "/data", Target: "/data"}},
		{"/data:ro", Volume{Source: "/data", Target: "/data", ReadOnly: true}},
		{"/data:rw", Volume{Source: "/data", Target: "/data"}},
		{"/data:/mnt", Volume{Source: "/data", Target: "/mnt"}},
		{"/data:/mnt:ro", Volume{Source: "/data", Target: "/mnt", ReadOnly: true}},
		{"/data/:/mnt/x/:rw", Volume{Source: "/data", Target: "/mnt/x"}},
		{"/data:/mnt//x", Volume{Source: "/data", Target: "/mnt/x"}},
		{"/proc-like:/procfs", Volume{Source: "/proc-like", Target: "/procfs"}},
	}
	for _, tt := range tests {
		got, err := ParseVolume(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseVolume(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseVolumeErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"", "HOST is empty"},
		{"data", "is not absolute"},
		{"data:/mnt", "is not absolute"},
		{"/data:mnt", "not an absolute path"},
		{"/data:", "TARGET is empty"},
		{"/data:/mnt:rx", `option "rx" is not ro or rw`},
		{"/data:/mnt:ro:x", "too many ':'"},
		{"/data:/", `target is "/"`},
		{"/data:/proc", "is under /proc; choose another target"},
		{"/data:/proc/x", "is under /proc; choose another target"},
		{"/data:/dev/shm/x", "is under /dev; choose another target"},
		{"/data:/sys", "is under /sys; choose another target"},
		{"/data:/.lectic-nix-sandbox/agent", "is under /.lectic-nix-sandbox"},
		{"/data/../etc:/mnt", `contains ".."`},
		{"/data:/mnt/../proc", `contains ".."`},
		{"/sys", "is under /sys"},
	}
	for _, tt := range tests {
		_, err := ParseVolume(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseVolume(%q) error = %v, want it to contain %q", tt.in, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseVolume(%q) error spans lines: %q", tt.in, err)
		}
	}
}

package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteTable(&buf, sampleReport()); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	rows := map[string][]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 9 {
			rows[f[0]] = f
		}
	}
	tests := []struct {
		row  string
		want []string
	}{
		{"warm_exec", []string{"warm_exec", "10", "2.000", "3.000", "4.000", "2.200", "1.00x", "podman_exec", "150x"}},
		{"cold_start", []string{"cold_start", "10", "20.00", "30.00", "40.00", "22.00", "10.0x", "podman_run", "20.0x"}},
		{"first_start", []string{"first_start", "10", "500.0", "750.0", "1000", "550.0", "250x", "podman_load+podman_run", "2.80x"}},
		{"bwrap", []string{"bwrap", "10", "4.000", "6.000", "8.000", "4.400", "2.00x", "-", "-"}},
		{"nix_fast_path", []string{"nix_fast_path", "-", "-", "-", "-", "-", "-", "-", "-"}},
	}
	for _, tt := range tests {
		got := rows[tt.row]
		if strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("row %s = %v, want %v", tt.row, got, tt.want)
		}
	}
	for _, want := range []string{
		"missing nix_fast_path: nix is not installed",
		"[ met ] warm_exec >= 50x faster than podman_exec: 150x",
		"[ met ] first_start faster than podman_load + podman_run: 2.80x",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestFormatMS(t *testing.T) {
	tests := []struct {
		v    float64
		want string
	}{{0.5071, "0.507"}, {3.14159, "3.142"}, {42.123, "42.12"}, {306.44, "306.4"}, {2500.4, "2500"}}
	for _, tt := range tests {
		if got := formatMS(tt.v); got != tt.want {
			t.Errorf("formatMS(%v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

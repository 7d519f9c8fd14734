package main

import (
	"io"
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    options
		wantErr bool
	}{
		{"defaults", nil, options{out: "/bench-results", n: 100, imageMB: 96, budget: 25 * time.Second}, false},
		{"quick clamps n and image", []string{"-quick", "-n", "50"}, options{out: "/bench-results", n: 5, quick: true, imageMB: 16, budget: 25 * time.Second}, false},
		{"quick keeps a smaller n", []string{"-quick", "-n", "3"}, options{out: "/bench-results", n: 3, quick: true, imageMB: 16, budget: 25 * time.Second}, false},
		{"relative paths made absolute", []string{"-bin", "bin/x", "-out", "o", "-image", "/i.tar"}, options{bin: "/bin/x", out: "/o", image: "/i.tar", n: 100, imageMB: 96, budget: 25 * time.Second}, false},
		{"only and netprobe", []string{"-only", "warm_exec, net_connect,", "-netprobe", "np"}, options{out: "/bench-results", n: 100, imageMB: 96, budget: 25 * time.Second,
			only: []string{"warm_exec", "net_connect"}, netprobe: "/np"}, false},
		{"zero n rejected", []string{"-n", "0"}, options{}, true},
		{"stray argument rejected", []string{"warm_exec"}, options{}, true},
	}
	// Relative paths resolve against the working directory.
	t.Chdir("/")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseFlags(%q) succeeded, want an error", tt.args)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseFlags(%q) = %+v, want %+v", tt.args, got, tt.want)
			}
		})
	}
}

// TestChildArgsRoundTrip checks the dropped child parses back exactly the
// options the root parent resolved.
func TestChildArgsRoundTrip(t *testing.T) {
	for _, o := range []options{
		{bin: "/b", out: "/o", n: 7, imageMB: 32, budget: 3 * time.Second},
		{bin: "/b", out: "/o", image: "/i.tar", n: 5, quick: true, imageMB: 16, budget: time.Minute},
		{bin: "/b", netprobe: "/np", out: "/o", n: 9, imageMB: 8, budget: time.Second, only: []string{"warm_exec", "net_download_256m"}},
	} {
		got, err := parseFlags(childArgs(o), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, o) {
			t.Errorf("round trip of %+v gave %+v", o, got)
		}
	}
}

func TestWants(t *testing.T) {
	all := &bench{}
	some := &bench{o: options{only: []string{"warm_exec", "net_connect"}}}
	for _, tt := range []struct {
		b    *bench
		name string
		want bool
	}{{all, "podman_run", true}, {some, "warm_exec", true}, {some, "net_connect", true}, {some, "warm_exec_sh", false}, {some, "net", false}} {
		if got := tt.b.wants(tt.name); got != tt.want {
			t.Errorf("wants(%q) with -only %v = %v", tt.name, tt.b.o.only, got)
		}
	}
}

func TestPlan(t *testing.T) {
	tests := []struct {
		n     int
		quick bool
		want  plan
	}{
		{100, false, plan{Fast: 100, Slow: 20, Slowest: 5, PerClient: 12}},
		{10, false, plan{Fast: 10, Slow: 3, Slowest: 3, PerClient: 2}},
		{5, true, plan{Fast: 5, Slow: 2, Slowest: 1, PerClient: 2}},
	}
	for _, tt := range tests {
		if got := newPlan(tt.n, tt.quick); got != tt.want {
			t.Errorf("newPlan(%d, %v) = %+v, want %+v", tt.n, tt.quick, got, tt.want)
		}
	}
}

// TestRoundOrder: over n rounds every run is measured in every position
// exactly once, starting with the first run in round 0.
func TestRoundOrder(t *testing.T) {
	for _, tc := range []struct {
		i, n int
		want []int
	}{
		{0, 1, []int{0}},
		{0, 2, []int{0, 1}},
		{1, 2, []int{1, 0}},
		{2, 2, []int{0, 1}},
		{4, 3, []int{1, 2, 0}},
	} {
		if got := roundOrder(tc.i, tc.n); !slices.Equal(got, tc.want) {
			t.Errorf("roundOrder(%d, %d) = %v, want %v", tc.i, tc.n, got, tc.want)
		}
	}
	for n := 1; n <= 4; n++ {
		seen := make([]map[int]bool, n)
		for i := range n {
			for pos, k := range roundOrder(i, n) {
				if seen[pos] == nil {
					seen[pos] = map[int]bool{}
				}
				seen[pos][k] = true
			}
		}
		for pos := range n {
			if len(seen[pos]) != n {
				t.Errorf("n=%d: position %d held runs %v, want all %d", n, pos, seen[pos], n)
			}
		}
	}
}

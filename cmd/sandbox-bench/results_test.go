package main

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// sampleReport is a full run's shape with round numbers: warm 2 ms, podman
// exec 300 ms, cold 20 ms, podman run 400 ms, first 500 ms, load 1000 ms.
func sampleReport() Report {
	res := func(name, kind string, p50 float64, counterpart ...string) Result {
		return Result{Name: name, Kind: kind, Counterpart: counterpart,
			Summary: Summary{P50: p50, P90: p50 * 1.5, P99: p50 * 2, Mean: p50 * 1.1, Min: p50 * 0.9, Max: p50 * 2.5, N: 10}}
	}
	return Report{
		Machine: Machine{Hostname: "box", CPU: "Test CPU", CPUs: 2, Kernel: "6.1", Cgroup: "v2", Date: "2026-01-02T03:04:05Z"},
		Results: []Result{
			res("bare_exec", kindBare, 0.5),
			res("warm_exec", kindSandbox, 2, "podman_exec"),
			res("cold_start", kindSandbox, 20, "podman_run"),
			res("first_start", kindSandbox, 500, "podman_load", "podman_run"),
			{Name: "nix_fast_path", Kind: kindSandbox, Counterpart: []string{"podman_exec"}, Missing: "nix is not installed"},
			res("bwrap", kindBwrap, 4),
			res("podman_load", kindPodman, 1000),
			res("podman_run", kindPodman, 400),
			res("podman_exec", kindPodman, 300),
		},
	}
}

func decodeReport(t *testing.T, r Report) map[string]any {
	t.Helper()
	b, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("results.json is not JSON: %v\n%s", err, b)
	}
	return out
}

func TestJSONScenarios(t *testing.T) {
	out := decodeReport(t, sampleReport())
	scenarios := out["scenarios"].(map[string]any)
	tests := []struct {
		scenario string
		field    string
		want     any // float64 for numbers, string for text, nil for absent
	}{
		{"warm_exec", "p50_ms", 2.0},
		{"warm_exec", "p90_ms", 3.0},
		{"warm_exec", "p99_ms", 4.0},
		{"warm_exec", "mean_ms", 2.2},
		{"warm_exec", "n", 10.0},
		{"warm_exec", "vs_warm_exec", 1.0},
		{"warm_exec", "speedup_vs_podman", 150.0},
		{"warm_exec", "podman_counterpart", "podman_exec"},
		{"cold_start", "vs_warm_exec", 10.0},
		{"cold_start", "speedup_vs_podman", 20.0},
		{"first_start", "podman_counterpart", "podman_load+podman_run"},
		{"first_start", "speedup_vs_podman", 2.8},
		{"bwrap", "speedup_vs_podman", nil},
		{"nix_fast_path", "missing", "nix is not installed"},
		{"nix_fast_path", "p50_ms", nil},
		{"nix_fast_path", "n", nil},
		{"nix_fast_path", "speedup_vs_podman", nil},
	}
	for _, tt := range tests {
		t.Run(tt.scenario+"/"+tt.field, func(t *testing.T) {
			s, ok := scenarios[tt.scenario].(map[string]any)
			if !ok {
				t.Fatalf("scenario %s absent from results.json", tt.scenario)
			}
			got, present := s[tt.field]
			switch want := tt.want.(type) {
			case nil:
				if present {
					t.Errorf("%s = %v, want it absent", tt.field, got)
				}
			case float64:
				g, _ := got.(float64)
				if !present || math.Abs(g-want) > 1e-9 {
					t.Errorf("%s = %v, want %v", tt.field, got, want)
				}
			default:
				if got != want {
					t.Errorf("%s = %v, want %v", tt.field, got, want)
				}
			}
		})
	}
}

func TestJSONKeepsOrderAndMachine(t *testing.T) {
	out := decodeReport(t, sampleReport())
	order, _ := out["order"].([]any)
	if len(order) != 9 || order[0] != "bare_exec" || order[8] != "podman_exec" {
		t.Errorf("order = %v, want the run order bare_exec … podman_exec", order)
	}
	m, _ := out["machine"].(map[string]any)
	if m["hostname"] != "box" || m["cpus"] != 2.0 {
		t.Errorf("machine = %v, want hostname box and 2 cpus", m)
	}
}

func TestGoals(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Report)
		goal    int
		met     bool
		ratio   float64
		missing bool
	}{
		{"warm 150x podman exec meets 50x", nil, 0, true, 150, false},
		{"warm 30x podman exec misses 50x", func(r *Report) { setP50(r, "warm_exec", 10) }, 0, false, 30, false},
		{"cold 20x podman run meets 10x", nil, 1, true, 20, false},
		{"first below load+run", nil, 2, true, 2.8, false},
		{"first equal to load+run is not faster", func(r *Report) { setP50(r, "first_start", 1400) }, 2, false, 1, false},
		{"warm faster than bwrap", nil, 3, true, 2, false},
		{"parallel p99 4x warm p50 meets 5x", func(r *Report) { addParallel(r, 4, 8) }, 4, true, 4, false},
		{"parallel p99 10x warm p50 misses 5x", func(r *Report) { addParallel(r, 10, 20) }, 4, false, 10, false},
		{"missing parallel makes the tail goal n/a", nil, 4, false, 0, true},
		{"missing podman makes goal n/a", func(r *Report) { setMissing(r, "podman_exec") }, 0, false, 0, true},
		{"filter costs 5% of a warm call", func(r *Report) { addResult(r, "warm_exec_unconfined", 2/1.05) }, unconfinedGoal, true, 1.05, false},
		{"filter costs 20% of a warm call", func(r *Report) { addResult(r, "warm_exec_unconfined", 2/1.2) }, unconfinedGoal, false, 1.2, false},
		{"no unconfined run makes the filter goal n/a", nil, unconfinedGoal, false, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sampleReport()
			if tt.edit != nil {
				tt.edit(&r)
			}
			g := r.Goals()[tt.goal]
			if g.Met != tt.met || math.Abs(g.Ratio-tt.ratio) > 1e-9 || (g.Missing != "") != tt.missing {
				t.Errorf("goal %q = %+v, want met=%v ratio=%v missing=%v", g.Goal, g, tt.met, tt.ratio, tt.missing)
			}
		})
	}
}

func TestNetworkGoals(t *testing.T) {
	add := func(r *Report, name string, p50 float64) {
		r.Results = append(r.Results, Result{Name: name, Kind: kindSandbox,
			Summary: Summary{P50: p50, P90: p50, P99: p50, Mean: p50, Min: p50, Max: p50, N: 10}})
	}
	tests := []struct {
		name  string
		edit  func(*Report)
		goal  int
		met   bool
		ratio float64
		added float64
	}{
		{"allow-list 1.05x warm meets 1.1x", func(r *Report) { add(r, "warm_exec_alternating", 2); add(r, "warm_exec_allowlist", 2.1) }, 5, true, 1.05, 0},
		{"allow-list 1.2x warm misses", func(r *Report) { add(r, "warm_exec_alternating", 2); add(r, "warm_exec_allowlist", 2.4) }, 5, false, 1.2, 0},
		{"0.4 ms added meets 1 ms", func(r *Report) { add(r, "net_connect_direct", 0.1); add(r, "net_connect", 0.5) }, 6, true, 0, 0.4},
		{"1.5 ms added misses", func(r *Report) { add(r, "net_connect_direct", 0.1); add(r, "net_connect", 1.6) }, 6, false, 0, 1.5},
		{"80% throughput meets 70%", func(r *Report) { add(r, "net_download_256m_direct", 400); add(r, "net_download_256m", 500) }, 7, true, 0.8, 0},
		{"50% throughput misses", func(r *Report) { add(r, "net_download_256m_direct", 400); add(r, "net_download_256m", 800) }, 7, false, 0.5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sampleReport()
			tt.edit(&r)
			g := r.Goals()[tt.goal]
			added := 0.0
			if g.AddedMS != nil {
				added = *g.AddedMS
			}
			if g.Met != tt.met || math.Abs(g.Ratio-tt.ratio) > 1e-9 || math.Abs(added-tt.added) > 1e-9 || g.Missing != "" {
				t.Errorf("goal %q = %+v (added %v), want met=%v ratio=%v added=%v", g.Goal, g, added, tt.met, tt.ratio, tt.added)
			}
		})
	}
	if line := goalLine(GoalResult{Goal: "g", AddedMS: round3(0.25), Met: true}); line != "[ met ] g: +0.250 ms" {
		t.Errorf("goalLine = %q", line)
	}
}

func setP50(r *Report, name string, v float64) {
	for i := range r.Results {
		if r.Results[i].Name == name {
			r.Results[i].Summary.P50 = v
		}
	}
}

func addParallel(r *Report, p50, p99 float64) {
	r.Results = append(r.Results, Result{Name: "parallel_16", Kind: kindSandbox,
		Summary: Summary{P50: p50, P90: p99, P99: p99, Mean: p50, Min: p50, Max: p99, N: 10}})
}

// unconfinedGoal and baselineGoal are the places of the filter's goals.
var unconfinedGoal, baselineGoal = goalIndex("warm_exec_unconfined"), goalIndex("cold_start_baseline")

func goalIndex(over string) int {
	for i, g := range goals {
		if len(g.Over) == 1 && g.Over[0] == over {
			return i
		}
	}
	return -1
}

// TestBaselineGoal: cold_start may add at most 2 ms to the previous build's.
func TestBaselineGoal(t *testing.T) {
	for _, c := range []struct {
		baseline float64
		met      bool
	}{{18.5, true}, {17, false}, {21, true}} {
		r := sampleReport()
		addResult(&r, "cold_start_baseline", c.baseline)
		g := r.Goals()[baselineGoal]
		if g.Met != c.met || g.AddedMS == nil || math.Abs(*g.AddedMS-(20-c.baseline)) > 1e-9 {
			t.Errorf("baseline %v: %+v", c.baseline, g)
		}
	}
}

func addResult(r *Report, name string, p50 float64) {
	r.Results = append(r.Results, Result{Name: name, Kind: kindSandbox,
		Summary: Summary{P50: p50, P90: p50, P99: p50, Mean: p50, Min: p50, Max: p50, N: 10}})
}

func setMissing(r *Report, name string) {
	for i := range r.Results {
		if r.Results[i].Name == name {
			r.Results[i].Missing = "podman is not installed"
		}
	}
}

func TestJSONMissingWarmHasNoRatios(t *testing.T) {
	r := sampleReport()
	setMissing(&r, "warm_exec")
	out := decodeReport(t, r)
	cold := out["scenarios"].(map[string]any)["cold_start"].(map[string]any)
	if _, ok := cold["vs_warm_exec"]; ok {
		t.Errorf("cold_start has vs_warm_exec %v although warm_exec is missing", cold["vs_warm_exec"])
	}
	if !strings.Contains(string(mustJSON(t, r)), `"missing": "podman is not installed"`) {
		t.Error("missing reason not written")
	}
}

func mustJSON(t *testing.T, r Report) []byte {
	t.Helper()
	b, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCheckComplete(t *testing.T) {
	tests := []struct {
		name    string
		results []Result
		ci      bool
		wantErr string
	}{
		{"all measured", []Result{{Name: "a"}}, true, ""},
		{"missing tool outside CI is fine", []Result{{Name: "bwrap", Missing: "bwrap is not installed"}}, false, ""},
		{"missing tool in CI fails", []Result{{Name: "bwrap", Missing: "bwrap is not installed"}}, true, "bwrap"},
		{"failure fails anywhere", []Result{{Name: "a"}, {Name: "warm_exec", Missing: "failed: x", Failed: true}}, false, "1 scenario(s) did not run: warm_exec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkComplete(tt.results, tt.ci)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("checkComplete = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("checkComplete = %v, want an error naming %q", err, tt.wantErr)
			}
		})
	}
}

func TestCountJSONItems(t *testing.T) {
	tests := []struct {
		out  string
		want int
	}{
		{"", 0},
		{"null\n", 0},
		{"[]\n", 0},
		{`[{"key":"a"},{"key":"b"}]`, 2},
		{"{\"key\":\"a\"}\n{\"key\":\"b\"}\n{\"key\":\"c\"}\n", 3},
	}
	for _, tt := range tests {
		if got := countJSONItems(tt.out); got != tt.want {
			t.Errorf("countJSONItems(%q) = %d, want %d", tt.out, got, tt.want)
		}
	}
}

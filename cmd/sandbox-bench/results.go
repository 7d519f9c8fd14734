package main

import (
	"encoding/json"
	"math"
	"strings"
)

// Kinds of scenario; they decide colour in the chart and which rows the
// ratios compare.
const (
	kindSandbox = "sandbox"
	kindPodman  = "podman"
	kindBwrap   = "bwrap"
	kindBare    = "bare"
)

// Result is one scenario's outcome: a Summary, or Missing saying why there
// is none.
type Result struct {
	Name    string
	Kind    string
	Command string // what was run, as a person would type it
	Note    string
	// Counterpart names the podman scenarios this one replaces; several
	// are added up (first_start replaces podman load + podman run).
	Counterpart []string
	Summary     Summary
	Missing     string
	// Failed marks a scenario whose tool was there but did not work, as
	// opposed to one that could not run here at all.
	Failed bool
}

// Report is everything one run produced.
type Report struct {
	Machine Machine
	Results []Result
}

// Goal is a target the numbers should show: sum of Over's p50 divided by
// Under's p50 at least Threshold (strictly more when Strict). A Tail goal
// is the other way round: Under's p99 divided by the sum of Over's p50 at
// most Threshold; an AtMost goal is that with Under's p50. An Added goal
// bounds Under's p50 minus the sum of Over's p50, in milliseconds.
type Goal struct {
	Text      string
	Over      []string
	Under     string
	Threshold float64
	Strict    bool
	Tail      bool
	AtMost    bool
	Added     bool
}

// goals are the project's stated targets; reported, never asserted.
var goals = []Goal{
	{Text: "warm_exec >= 50x faster than podman_exec", Over: []string{"podman_exec"}, Under: "warm_exec", Threshold: 50},
	{Text: "cold_start >= 10x faster than podman_run", Over: []string{"podman_run"}, Under: "cold_start", Threshold: 10},
	{Text: "first_start faster than podman_load + podman_run", Over: []string{"podman_load", "podman_run"}, Under: "first_start", Threshold: 1, Strict: true},
	{Text: "warm_exec faster than bwrap", Over: []string{"bwrap"}, Under: "warm_exec", Threshold: 1, Strict: true},
	{Text: "parallel_16 p99 <= 5x warm_exec p50", Over: []string{"warm_exec"}, Under: "parallel_16", Threshold: 5, Tail: true},
	{Text: "warm_exec_allowlist <= 1.1x warm_exec (its alternating calls)", Over: []string{"warm_exec_alternating"}, Under: "warm_exec_allowlist", Threshold: 1.1, AtMost: true},
	{Text: "net_connect adds <= 1 ms per connection to net_connect_direct", Over: []string{"net_connect_direct"}, Under: "net_connect", Threshold: 1, Added: true},
	{Text: "net_download_256m >= 70% of net_download_256m_direct's throughput", Over: []string{"net_download_256m_direct"}, Under: "net_download_256m", Threshold: 0.7},
	{Text: "warm_exec (seccomp filter and limits) <= 1.1x warm_exec_unconfined", Over: []string{"warm_exec_unconfined"}, Under: "warm_exec", Threshold: 1.1, AtMost: true},
	{Text: "cold_start adds <= 2 ms to cold_start_baseline (-baseline: the previous build)", Over: []string{"cold_start_baseline"}, Under: "cold_start", Threshold: 2, Added: true},
	{Text: "unpack <= 1.0x unpack_tar (tar -x + sha256sum)", Over: []string{"unpack_tar"}, Under: "unpack", Threshold: 1, AtMost: true},
	{Text: "load_cached adds <= 1 ms to client_startup", Over: []string{"client_startup"}, Under: "load_cached", Threshold: 1, Added: true},
}

// GoalResult is a Goal evaluated against a Report.
type GoalResult struct {
	Goal    string   `json:"goal"`
	Ratio   float64  `json:"ratio,omitempty"`
	AddedMS *float64 `json:"added_ms,omitempty"`
	Met     bool     `json:"met"`
	Missing string   `json:"missing,omitempty"`
}

// Find returns the named result, if it was measured.
func (r Report) Find(name string) (Result, bool) {
	for _, res := range r.Results {
		if res.Name == name && res.Missing == "" {
			return res, true
		}
	}
	return Result{}, false
}

// sumP50 adds the p50 of the named results; ok is false if any is missing.
func (r Report) sumP50(names []string) (float64, bool) {
	total := 0.0
	for _, n := range names {
		res, ok := r.Find(n)
		if !ok {
			return 0, false
		}
		total += res.Summary.P50
	}
	return total, len(names) > 0
}

// VsWarm is res's p50 divided by warm_exec's p50.
func (r Report) VsWarm(res Result) (float64, bool) {
	w, ok := r.Find("warm_exec")
	if !ok || res.Missing != "" || w.Summary.P50 <= 0 {
		return 0, false
	}
	return res.Summary.P50 / w.Summary.P50, true
}

// Speedup is how many times faster res is than its podman counterpart, by p50.
func (r Report) Speedup(res Result) (float64, bool) {
	ref, ok := r.sumP50(res.Counterpart)
	if !ok || res.Missing != "" || res.Summary.P50 <= 0 {
		return 0, false
	}
	return ref / res.Summary.P50, true
}

// Goals evaluates every goal.
func (r Report) Goals() []GoalResult {
	var out []GoalResult
	for _, g := range goals {
		gr := GoalResult{Goal: g.Text}
		over, okOver := r.sumP50(g.Over)
		under, okUnder := r.sumP50([]string{g.Under})
		if res, ok := r.Find(g.Under); ok && g.Tail {
			under = res.Summary.P99
		}
		switch {
		case !okOver || !okUnder:
			gr.Missing = "needs " + strings.Join(append(append([]string{}, g.Over...), g.Under), ", ")
		case g.Added:
			gr.AddedMS = round3(under - over)
			gr.Met = under-over <= g.Threshold
		case (g.Tail || g.AtMost) && over <= 0:
			gr.Missing = strings.Join(g.Over, "+") + " measured as zero"
		case g.Tail || g.AtMost:
			gr.Ratio = under / over
			gr.Met = gr.Ratio <= g.Threshold
		case under <= 0:
			gr.Missing = g.Under + " measured as zero"
		default:
			gr.Ratio = over / under
			gr.Met = gr.Ratio >= g.Threshold && (!g.Strict || gr.Ratio > g.Threshold)
		}
		out = append(out, gr)
	}
	return out
}

type scenarioJSON struct {
	Missing     string   `json:"missing,omitempty"`
	P50         *float64 `json:"p50_ms,omitempty"`
	P90         *float64 `json:"p90_ms,omitempty"`
	P99         *float64 `json:"p99_ms,omitempty"`
	Mean        *float64 `json:"mean_ms,omitempty"`
	Min         *float64 `json:"min_ms,omitempty"`
	Max         *float64 `json:"max_ms,omitempty"`
	N           *int     `json:"n,omitempty"`
	Kind        string   `json:"kind"`
	Command     string   `json:"command,omitempty"`
	Note        string   `json:"note,omitempty"`
	VsWarm      *float64 `json:"vs_warm_exec,omitempty"`
	Counterpart string   `json:"podman_counterpart,omitempty"`
	Speedup     *float64 `json:"speedup_vs_podman,omitempty"`
}

type reportJSON struct {
	Machine   Machine                 `json:"machine"`
	Order     []string                `json:"order"`
	Scenarios map[string]scenarioJSON `json:"scenarios"`
	Goals     []GoalResult            `json:"goals"`
}

// JSON renders the report as results.json: a missing scenario carries only
// "missing" (plus what it would have run), never made-up numbers.
func (r Report) JSON() ([]byte, error) {
	out := reportJSON{Machine: r.Machine, Scenarios: map[string]scenarioJSON{}, Goals: r.Goals()}
	for _, res := range r.Results {
		out.Order = append(out.Order, res.Name)
		out.Scenarios[res.Name] = r.scenarioJSON(res)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func (r Report) scenarioJSON(res Result) scenarioJSON {
	s := scenarioJSON{Kind: res.Kind, Command: res.Command, Note: res.Note,
		Counterpart: strings.Join(res.Counterpart, "+")}
	if res.Missing != "" {
		s.Missing = res.Missing
		return s
	}
	sum := res.Summary
	s.P50, s.P90, s.P99 = round3(sum.P50), round3(sum.P90), round3(sum.P99)
	s.Mean, s.Min, s.Max = round3(sum.Mean), round3(sum.Min), round3(sum.Max)
	s.N = &sum.N
	if v, ok := r.VsWarm(res); ok {
		s.VsWarm = round3(v)
	}
	if v, ok := r.Speedup(res); ok {
		s.Speedup = round3(v)
	}
	return s
}

// round3 keeps microsecond resolution; more digits are noise.
func round3(v float64) *float64 {
	x := math.Round(v*1000) / 1000 // negative too: a build faster than its baseline
	return &x
}

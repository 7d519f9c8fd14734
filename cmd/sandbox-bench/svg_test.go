package main

import (
	"encoding/xml"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestLogScale(t *testing.T) {
	s := logScale{lo: 1, hi: 1000}
	width := float64(plotRight - plotLeft)
	tests := []struct {
		ms   float64
		want float64
	}{
		{1, plotLeft},
		{10, plotLeft + width/3},
		{100, plotLeft + 2*width/3},
		{1000, plotRight},
		{0.01, plotLeft}, // below the axis clamps to its start
		{1e6, plotRight}, // above clamps to its end
		{math.Sqrt(10), plotLeft + width/6},
	}
	for _, tt := range tests {
		if got := s.x(tt.ms); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("x(%v) = %v, want %v", tt.ms, got, tt.want)
		}
	}
}

func TestScaleFor(t *testing.T) {
	tests := []struct {
		name   string
		min    float64
		p99    float64
		lo, hi float64
	}{
		{"sub-ms to seconds", 0.4, 2500, 0.1, 10000},
		{"exact decades stay", 1, 100, 1, 100},
		{"one value", 3, 3, 1, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := []Result{{Name: "a", Summary: Summary{Min: tt.min, P50: tt.min, P99: tt.p99}}}
			s := scaleFor(rs)
			if math.Abs(s.lo-tt.lo) > 1e-12 || math.Abs(s.hi-tt.hi) > 1e-9 {
				t.Errorf("scale = [%v, %v], want [%v, %v]", s.lo, s.hi, tt.lo, tt.hi)
			}
		})
	}
	if s := scaleFor([]Result{{Name: "x", Missing: "gone"}}); s.lo <= 0 || s.hi <= s.lo {
		t.Errorf("scale with nothing measured = %+v, want a usable default", s)
	}
}

func TestAxisLabel(t *testing.T) {
	tests := []struct {
		ms   float64
		want string
	}{{0.1, "0.1 ms"}, {1, "1 ms"}, {20, "20 ms"}, {500, "500 ms"}, {1000, "1 s"}, {5000, "5 s"}}
	for _, tt := range tests {
		if got := axisLabel(tt.ms); got != tt.want {
			t.Errorf("axisLabel(%v) = %q, want %q", tt.ms, got, tt.want)
		}
	}
}

// svgBars parses the chart and returns each scenario bar's width, failing
// if the document is not well-formed XML.
func svgBars(t *testing.T, doc string) map[string]float64 {
	t.Helper()
	bars := map[string]float64{}
	dec := xml.NewDecoder(strings.NewReader(doc))
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return bars
		}
		if err != nil {
			t.Fatalf("results.svg is not well-formed: %v", err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok || se.Name.Local != "rect" {
			continue
		}
		var name string
		var width float64
		for _, a := range se.Attr {
			switch a.Name.Local {
			case "data-scenario":
				name = a.Value
			case "width":
				width, _ = strconv.ParseFloat(a.Value, 64)
			}
		}
		if name != "" {
			bars[name] = width
		}
	}
}

func TestSVG(t *testing.T) {
	r := sampleReport()
	r.Results[4].Missing = `nix <2.4> & "friends" missing`
	doc := SVG(r)
	bars := svgBars(t, doc)
	if _, ok := bars["nix_fast_path"]; ok {
		t.Error("missing scenario drawn as a bar")
	}
	if len(bars) != len(r.Results)-1 {
		t.Errorf("%d bars, want %d", len(bars), len(r.Results)-1)
	}
	// Wider bar means slower, strictly, for these distinct p50s.
	order := []string{"bare_exec", "warm_exec", "bwrap", "cold_start", "podman_exec", "podman_run", "first_start", "podman_load"}
	for i := 1; i < len(order); i++ {
		if bars[order[i]] <= bars[order[i-1]] {
			t.Errorf("bar %s (%.1f) not wider than %s (%.1f)", order[i], bars[order[i]], order[i-1], bars[order[i-1]])
		}
	}
	for _, want := range []string{
		"missing: nix &lt;2.4&gt; &amp; &#34;friends&#34; missing",
		"box", "Test CPU × 2", "2026-01-02 03:04 UTC",
		"150x faster than podman_exec",
		"2.80x faster than podman_load+run",
		"2.000 ms",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("chart lacks %q", want)
		}
	}
	if strings.Contains(doc, "QUICK") {
		t.Error("full run labelled as quick")
	}
	r.Machine.Quick = true
	if !strings.Contains(SVG(r), "QUICK SMOKE RUN") {
		t.Error("quick run not labelled as such")
	}
}

func TestSVGAllMissingIsStillValid(t *testing.T) {
	r := Report{Results: []Result{{Name: "warm_exec", Kind: kindSandbox, Missing: "binary failed"}}}
	if bars := svgBars(t, SVG(r)); len(bars) != 0 {
		t.Errorf("bars %v drawn with nothing measured", bars)
	}
}

func TestSVGSpeedupWording(t *testing.T) {
	tests := []struct {
		warmP50 float64
		want    string
	}{
		{2, "150x faster than podman_exec"},
		{600, "2.00x slower than podman_exec"},
	}
	for _, tt := range tests {
		r := sampleReport()
		setP50(&r, "warm_exec", tt.warmP50)
		if doc := SVG(r); !strings.Contains(doc, tt.want) {
			t.Errorf("warm p50 %v: chart lacks %q", tt.warmP50, tt.want)
		}
	}
}

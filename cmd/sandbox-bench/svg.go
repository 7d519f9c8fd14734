package main

import (
	"fmt"
	"html"
	"math"
	"strings"
	"time"
)

// Chart geometry, in SVG user units (pixels at 100%).
const (
	chartWidth  = 1240
	labelRight  = 190 // scenario names end here
	plotLeft    = 200
	plotRight   = 720
	valueLeft   = 732
	rowHeight   = 30
	barHeight   = 14
	headerSpace = 78
	footerSpace = 96
)

var kindColour = map[string]string{
	kindSandbox: "#1f77b4",
	kindPodman:  "#d62728",
	kindBwrap:   "#9467bd",
	kindBare:    "#7f7f7f",
}

// logScale maps milliseconds to x on a log axis between lo and hi.
type logScale struct{ lo, hi float64 }

func (s logScale) x(ms float64) float64 {
	ms = min(max(ms, s.lo), s.hi)
	f := (math.Log10(ms) - math.Log10(s.lo)) / (math.Log10(s.hi) - math.Log10(s.lo))
	return plotLeft + f*(plotRight-plotLeft)
}

// scaleFor spans whole decades around every measured value.
func scaleFor(results []Result) logScale {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range results {
		if r.Missing != "" {
			continue
		}
		lo = min(lo, r.Summary.Min, r.Summary.P50)
		hi = max(hi, r.Summary.P99, r.Summary.P50)
	}
	if math.IsInf(lo, 1) || lo <= 0 {
		return logScale{lo: 0.1, hi: 1000}
	}
	s := logScale{lo: math.Pow(10, math.Floor(math.Log10(lo))), hi: math.Pow(10, math.Ceil(math.Log10(hi)))}
	if s.hi <= s.lo {
		s.hi = s.lo * 10
	}
	return s
}

// ticks are the 1-2-5 values inside the scale; minor ones are drawn only
// when a decade is wide enough to label them.
func (s logScale) ticks() (major, minor []float64) {
	decades := math.Log10(s.hi) - math.Log10(s.lo)
	wide := (plotRight-plotLeft)/decades >= 160
	for d := s.lo; d <= s.hi*1.0001; d *= 10 {
		major = append(major, d)
		for _, m := range []float64{2, 5} {
			if d*m < s.hi && wide {
				minor = append(minor, d*m)
			}
		}
	}
	return major, minor
}

// axisLabel names a tick value: ms below a second, s above.
func axisLabel(ms float64) string {
	if ms >= 1000 {
		return trimFloat(ms/1000) + " s"
	}
	return trimFloat(ms) + " ms"
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3f", v)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// SVG renders the report as a horizontal bar chart: per scenario a bar to
// p50, a whisker to p90 and a tick at p99, on a log axis, with the values
// written beside it.
func SVG(r Report) string {
	var b strings.Builder
	height := headerSpace + rowHeight*len(r.Results) + footerSpace
	scale := scaleFor(r.Results)
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`+"\n",
		chartWidth, height, chartWidth, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", chartWidth, height)
	writeTitle(&b, r.Machine)
	plotBottom := headerSpace + rowHeight*len(r.Results)
	writeGrid(&b, scale, plotBottom)
	for i, res := range r.Results {
		writeRow(&b, r, res, scale, headerSpace+rowHeight*i)
	}
	writeLegend(&b, plotBottom+44)
	b.WriteString("</svg>\n")
	return b.String()
}

func writeTitle(b *strings.Builder, m Machine) {
	fmt.Fprintf(b, `<text x="20" y="30" font-size="20" font-weight="bold" fill="#222">%s</text>`+"\n",
		esc("lectic-nix-sandbox vs podman and bwrap: wall time per call (log scale, shorter is faster)"))
	parts := []string{m.Hostname, fmt.Sprintf("%s × %d", m.CPU, m.CPUs), "Linux " + m.Kernel, "cgroup " + m.Cgroup, displayDate(m.Date)}
	if m.Quick {
		parts = append(parts, "QUICK SMOKE RUN (few iterations)")
	}
	fmt.Fprintf(b, `<text x="20" y="54" font-size="13" fill="#555">%s</text>`+"\n", esc(strings.Join(nonEmpty(parts), " · ")))
}

func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if strings.TrimSpace(s) != "" {
			out = append(out, s)
		}
	}
	return out
}

func writeGrid(b *strings.Builder, s logScale, bottom int) {
	major, minor := s.ticks()
	for _, v := range minor {
		x := s.x(v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eeeeee"/>`+"\n", x, headerSpace-6, x, bottom)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" font-size="11" fill="#888" text-anchor="middle">%s</text>`+"\n", x, bottom+16, esc(axisLabel(v)))
	}
	for _, v := range major {
		x := s.x(v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#cccccc"/>`+"\n", x, headerSpace-6, x, bottom)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" font-size="12" fill="#333" text-anchor="middle">%s</text>`+"\n", x, bottom+16, esc(axisLabel(v)))
	}
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n", plotLeft, bottom, plotRight, bottom)
}

func writeRow(b *strings.Builder, r Report, res Result, s logScale, top int) {
	mid := top + rowHeight/2
	colour := kindColour[res.Kind]
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="13" fill="#222" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n",
		labelRight, mid, esc(res.Name))
	if res.Missing != "" {
		fmt.Fprintf(b, `<text x="%d" y="%d" font-size="12" font-style="italic" fill="#999" dominant-baseline="middle">%s</text>`+"\n",
			plotLeft+6, mid, esc(truncate("missing: "+res.Missing, 150)))
		return
	}
	sum := res.Summary
	x50, x90, x99 := s.x(sum.P50), s.x(sum.P90), s.x(sum.P99)
	fmt.Fprintf(b, `<rect data-scenario="%s" x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n",
		esc(res.Name), plotLeft, mid-barHeight/2, x50-plotLeft, barHeight, colour)
	fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222" stroke-width="2"/>`+"\n", x50, mid, x90, mid)
	fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222" stroke-width="2"/>`+"\n", x90, mid-5, x90, mid+5)
	fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222" stroke-dasharray="2,2"/>`+"\n", x90, mid, x99, mid)
	fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222"/>`+"\n", x99, mid-7, x99, mid+7)
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="12" dominant-baseline="middle" xml:space="preserve"><tspan font-weight="bold" fill="%s">%s</tspan><tspan fill="#555"> · p90 %s · p99 %s · n %d</tspan>%s</text>`+"\n",
		valueLeft, mid, colour, esc(formatMS(sum.P50)+" ms"), esc(formatMS(sum.P90)), esc(formatMS(sum.P99)), sum.N, speedupSpan(r, res))
}

func speedupSpan(r Report, res Result) string {
	v, ok := r.Speedup(res)
	if !ok {
		return ""
	}
	ref := esc(counterpartLabel(res.Counterpart))
	if v < 1 {
		return fmt.Sprintf(`<tspan fill="#b03030" font-weight="bold"> · %s slower than %s</tspan>`, esc(formatRatio(1/v)), ref)
	}
	return fmt.Sprintf(`<tspan fill="#2a7d2a" font-weight="bold"> · %s faster than %s</tspan>`, esc(formatRatio(v)), ref)
}

// counterpartLabel names the podman paths compactly: podman_load+run.
func counterpartLabel(names []string) string {
	short := append([]string{}, names...)
	for i := 1; i < len(short); i++ {
		short[i] = strings.TrimPrefix(short[i], "podman_")
	}
	return strings.Join(short, "+")
}

func writeLegend(b *strings.Builder, y int) {
	x := 20
	for _, item := range []struct{ kind, label string }{
		{kindSandbox, "lectic-nix-sandbox"},
		{kindPodman, "rootless podman (vfs, runc)"},
		{kindBwrap, "bubblewrap"},
		{kindBare, "no sandbox (floors)"},
	} {
		fmt.Fprintf(b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/>`+"\n", x, y-10, kindColour[item.kind])
		fmt.Fprintf(b, `<text x="%d" y="%d" font-size="12" fill="#333">%s</text>`+"\n", x+18, y, esc(item.label))
		x += 18 + 8*len(item.label) + 24
	}
	fmt.Fprintf(b, `<text x="20" y="%d" font-size="12" fill="#555">%s</text>`+"\n", y+22,
		esc("bar: median (p50) · solid whisker: p90 · dashed to tick: p99 · \"faster than\" compares p50 with the podman path each scenario replaces"))
}

func esc(s string) string { return html.EscapeString(s) }

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// displayDate turns the RFC 3339 stamp into "2006-01-02 15:04 UTC".
func displayDate(rfc3339 string) string {
	t, err := time.Parse(time.RFC3339, rfc3339)
	if err != nil {
		return rfc3339
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable prints the report for a terminal: one row per scenario, then
// the goals. Ratios use p50: "x warm" is this scenario over warm_exec,
// "podman/this" is how many times faster than the podman path it replaces.
func WriteTable(w io.Writer, r Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tn\tp50 ms\tp90 ms\tp99 ms\tmean ms\tx warm\tpodman ref\tpodman/this\t")
	for _, res := range r.Results {
		if res.Missing != "" {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\t\n", res.Name)
			continue
		}
		s := res.Summary
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", res.Name, s.N,
			formatMS(s.P50), formatMS(s.P90), formatMS(s.P99), formatMS(s.Mean),
			ratioCell(r.VsWarm(res)), counterpartCell(res), ratioCell(r.Speedup(res)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, res := range r.Results {
		if res.Missing != "" {
			fmt.Fprintf(w, "missing %s: %s\n", res.Name, res.Missing)
		}
	}
	fmt.Fprintln(w, "\ngoals (reported, not asserted; by p50 unless they name p99):")
	for _, g := range r.Goals() {
		fmt.Fprintln(w, "  "+goalLine(g))
	}
	return nil
}

func goalLine(g GoalResult) string {
	value := formatRatio(g.Ratio)
	if g.AddedMS != nil {
		value = fmt.Sprintf("%+.3f ms", *g.AddedMS)
	}
	switch {
	case g.Missing != "":
		return fmt.Sprintf("[ n/a ] %s (%s)", g.Goal, g.Missing)
	case g.Met:
		return fmt.Sprintf("[ met ] %s: %s", g.Goal, value)
	default:
		return fmt.Sprintf("[ MISS] %s: %s", g.Goal, value)
	}
}

func counterpartCell(res Result) string {
	if len(res.Counterpart) == 0 {
		return "-"
	}
	return strings.Join(res.Counterpart, "+")
}

func ratioCell(v float64, ok bool) string {
	if !ok {
		return "-"
	}
	return formatRatio(v)
}

func formatRatio(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0fx", v)
	case v >= 10:
		return fmt.Sprintf("%.1fx", v)
	default:
		return fmt.Sprintf("%.2fx", v)
	}
}

// formatMS keeps about three significant digits at every scale.
func formatMS(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 100:
		return fmt.Sprintf("%.1f", v)
	case v >= 10:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

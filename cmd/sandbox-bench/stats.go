package main

import (
	"errors"
	"math"
	"slices"
	"time"
)

// Summary is the latency distribution of one scenario, in milliseconds.
type Summary struct {
	P50  float64
	P90  float64
	P99  float64
	Mean float64
	Min  float64
	Max  float64
	N    int
}

// Summarize reduces samples to a Summary. Percentiles interpolate linearly
// between the closest ranks (numpy's default), so small samples from a
// quick run still give monotone, comparable values.
func Summarize(samples []time.Duration) (Summary, error) {
	if len(samples) == 0 {
		return Summary{}, errors.New("no samples")
	}
	ms := make([]float64, len(samples))
	sum := 0.0
	for i, d := range samples {
		ms[i] = float64(d) / float64(time.Millisecond)
		sum += ms[i]
	}
	slices.Sort(ms)
	return Summary{
		P50:  Percentile(ms, 50),
		P90:  Percentile(ms, 90),
		P99:  Percentile(ms, 99),
		Mean: sum / float64(len(ms)),
		Min:  ms[0],
		Max:  ms[len(ms)-1],
		N:    len(ms),
	}, nil
}

// Percentile returns the p-th percentile (0..100) of sorted values, or NaN
// when there are none.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	p = min(max(p, 0), 100)
	rank := p / 100 * float64(len(sorted)-1)
	lo := int(math.Floor(rank))
	hi := int(math.Ceil(rank))
	frac := rank - float64(lo)
	return sorted[lo] + (sorted[hi]-sorted[lo])*frac
}

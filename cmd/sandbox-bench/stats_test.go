package main

import (
	"math"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	tests := []struct {
		name   string
		sorted []float64
		p      float64
		want   float64
	}{
		{"single value", []float64{7}, 50, 7},
		{"single value p99", []float64{7}, 99, 7},
		{"median of odd", []float64{1, 2, 3}, 50, 2},
		{"median of even interpolates", []float64{1, 2, 3, 4}, 50, 2.5},
		{"p0 is min", []float64{1, 5, 9}, 0, 1},
		{"p100 is max", []float64{1, 5, 9}, 100, 9},
		{"p90 of 1..11", []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 90, 10},
		{"p99 of 1..101", seq(1, 101), 99, 100},
		{"p90 interpolates", []float64{0, 10}, 90, 9},
		{"p above 100 clamps", []float64{1, 2}, 150, 2},
		{"p below 0 clamps", []float64{1, 2}, -5, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Percentile(tt.sorted, tt.p)
			if math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestPercentileEmptyIsNaN(t *testing.T) {
	if got := Percentile(nil, 50); !math.IsNaN(got) {
		t.Errorf("Percentile(nil) = %v, want NaN", got)
	}
}

func seq(from, to int) []float64 {
	var s []float64
	for i := from; i <= to; i++ {
		s = append(s, float64(i))
	}
	return s
}

func TestSummarize(t *testing.T) {
	ms := func(v ...float64) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x*float64(time.Millisecond)))
		}
		return d
	}
	tests := []struct {
		name    string
		samples []time.Duration
		want    Summary
	}{
		{"unsorted input", ms(4, 1, 3, 2), Summary{P50: 2.5, P90: 3.7, P99: 3.97, Mean: 2.5, Min: 1, Max: 4, N: 4}},
		{"one sample", ms(3), Summary{P50: 3, P90: 3, P99: 3, Mean: 3, Min: 3, Max: 3, N: 1}},
		{"outlier moves mean not median", ms(1, 1, 1, 1, 96), Summary{P50: 1, P90: 58, P99: 92.2, Mean: 20, Min: 1, Max: 96, N: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Summarize(tt.samples)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []struct {
				name      string
				got, want float64
			}{
				{"p50", got.P50, tt.want.P50}, {"p90", got.P90, tt.want.P90}, {"p99", got.P99, tt.want.P99},
				{"mean", got.Mean, tt.want.Mean}, {"min", got.Min, tt.want.Min}, {"max", got.Max, tt.want.Max},
			} {
				if math.Abs(f.got-f.want) > 1e-6 {
					t.Errorf("%s = %v, want %v", f.name, f.got, f.want)
				}
			}
			if got.N != tt.want.N {
				t.Errorf("n = %d, want %d", got.N, tt.want.N)
			}
		})
	}
}

func TestSummarizeEmptyFails(t *testing.T) {
	if _, err := Summarize(nil); err == nil {
		t.Fatal("Summarize(nil) succeeded, want an error")
	}
}

package flagvalue

import (
	"strings"
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	tests := []struct {
		value string
		want  time.Duration // 0: refused
	}{
		{"30", 30 * time.Second},
		{"0.5", 500 * time.Millisecond},
		{"1.", 0},
		{"0.001", time.Millisecond},
		{"1ms", time.Millisecond},
		{"250ms", 250 * time.Millisecond},
		{"1h30m", 90 * time.Minute},
		{"8760h", Year},
		{"31536000", Year},
		{"31536000.000", Year},
		{"31536000.001", 0},
		{"8760h0m0.000000001s", 0},
		{"0.0009", 0},
		{"999us", 0},
		{"0", 0},
		{"0s", 0},
		{"", 0},
		{"NaN", 0},
		{"nan", 0},
		{"inf", 0},
		{"+Inf", 0},
		{"-inf", 0},
		{"1e300", 0},
		{"1e10", 0},
		{"1e-10", 0},
		{"1E3", 0},
		{"0x10", 0},
		{"1_000", 0},
		{"-5", 0},
		{"+5", 0},
		{"-5s", 0},
		{".5", 0},
		{".5s", 0},
		{" 5", 0},
		{"5 ", 0},
		{"5x", 0},
		{"10000000000", 0},
		{"99999999999999999999h", 0},
		{"0.0000000001", 0},
	}
	for _, tt := range tests {
		got, err := Duration("--timeout", tt.value, MinTimeout, MaxTimeout)
		if tt.want == 0 {
			if err == nil {
				t.Errorf("Duration(%q) = %v, want an error", tt.value, got)
				continue
			}
			want := `--timeout "` + tt.value + `": want a duration from 1ms to 1 year, in seconds (30, 0.5) or with a unit (250ms, 2m, 1h30m)`
			if err.Error() != want {
				t.Errorf("Duration(%q) error %q, want %q", tt.value, err, want)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Duration(%q) = %v, %v; want %v", tt.value, got, err, tt.want)
		}
	}
}

func TestInt(t *testing.T) {
	tests := []struct {
		value   string
		want    int64
		wantErr bool
	}{
		{"0", 0, false},
		{"900", 900, false},
		{"31536000", 31536000, false},
		{"007", 7, false},
		{"31536001", 0, true},
		{"-1", 0, true},
		{"+5", 0, true},
		{"5.0", 0, true},
		{"1e3", 0, true},
		{"0x10", 0, true},
		{"1_000", 0, true},
		{"NaN", 0, true},
		{"", 0, true},
		{"99999999999999999999", 0, true},
	}
	for _, tt := range tests {
		got, err := Int("--warm-ttl-seconds", tt.value, 0, 31536000, "seconds")
		if tt.wantErr {
			want := `--warm-ttl-seconds "` + tt.value + `": want a whole number of seconds from 0 to 31536000`
			if err == nil || err.Error() != want {
				t.Errorf("Int(%q) = %d, %v; want error %q", tt.value, got, err, want)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Int(%q) = %d, %v; want %d", tt.value, got, err, tt.want)
		}
	}
	if _, err := Int("--max-warm", "x", 1, 64, ""); err == nil || !strings.Contains(err.Error(), "want a whole number from 1 to 64") {
		t.Errorf("without a unit: %v", err)
	}
}

func TestSize(t *testing.T) {
	const (
		ki = int64(1) << 10
		mi = ki << 10
		gi = mi << 10
		ti = gi << 10
	)
	tests := []struct {
		value string
		want  int64 // -1: refused
	}{
		{"1048576", mi},
		{"1b", 1},
		{"4k", 4 * ki},
		{"4KB", 4 * ki},
		{"4KiB", 4 * ki},
		{"512M", 512 * mi},
		{"512mib", 512 * mi},
		{"1.5G", gi + gi/2},
		{"0.1K", 102},
		{"1T", ti},
		{"1.25", -1},
		{"8388607T", 8388607 * ti},
		{"8388608T", -1},
		{"1e9", -1},
		{"NaN", -1},
		{"inf", -1},
		{"-1G", -1},
		{"+1G", -1},
		{"1 G", -1},
		{"1GG", -1},
		{"1P", -1},
		{".5G", -1},
		{"G", -1},
		{"", -1},
		{"0x10", -1},
		{"99999999999999999999", -1},
	}
	for _, tt := range tests {
		got, err := Size("--memory", tt.value, 0, 1<<63-1)
		if tt.want < 0 {
			if err == nil {
				t.Errorf("Size(%q) = %d, want an error", tt.value, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Size(%q) = %d, %v; want %d", tt.value, got, err, tt.want)
		}
	}
	_, err := Size("--memory", "1k", 4*mi, ti)
	want := `--memory "1k": want a size from 4MiB to 1TiB, in bytes or with a unit (512M, 1.5G; K, M, G, T are powers of 1024)`
	if err == nil || err.Error() != want {
		t.Errorf("out of range: %v, want %q", err, want)
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{time.Millisecond: "1ms", Year: "1 year", 2 * Year: "2 years",
		24 * time.Hour: "1 day", 90 * time.Minute: "1h30m0s"} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%v) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0 bytes", 1000: "1000 bytes", 1024: "1KiB", 3 << 30: "3GiB", 1536: "1536 bytes"} {
		if got := HumanSize(n); got != want {
			t.Errorf("HumanSize(%d) = %q, want %q", n, got, want)
		}
	}
}

// FuzzDuration: nothing outside the range is ever accepted, whatever the
// spelling.
func FuzzDuration(f *testing.F) {
	for _, s := range []string{"30", "0.5", "1h", "NaN", "1e300", "-1s", "9223372036854775807ns"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, err := Duration("--timeout", v, MinTimeout, MaxTimeout)
		if err == nil && (d < MinTimeout || d > MaxTimeout) {
			t.Fatalf("Duration(%q) = %v, outside the range", v, d)
		}
		if err != nil && strings.Contains(err.Error(), "\n") && !strings.Contains(v, "\n") {
			t.Fatalf("error is not one line: %q", err)
		}
	})
}

func FuzzSize(f *testing.F) {
	for _, s := range []string{"1G", "1.5g", "0.1K", "8388607T"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		n, err := Size("--memory", v, 1, 1<<50)
		if err == nil && (n < 1 || n > 1<<50) {
			t.Fatalf("Size(%q) = %d, outside the range", v, n)
		}
	})
}

package flagvalue

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// Year is 365 days, the longest span a duration option takes.
const Year = 365 * 24 * time.Hour

// The range of --timeout. fastpath.c checks a ticket's timeout against the
// same bounds (MIN_TIMEOUT_NS, MAX_TIMEOUT_NS); a test ties them.
const (
	MinTimeout = time.Millisecond
	MaxTimeout = Year
)

// Duration parses a duration in [min, max], given either as plain seconds
// ("30", "0.5") or as a Go duration ("250ms", "2m", "1h30m").
func Duration(flag, value string, min, max time.Duration) (time.Duration, error) {
	d, ok := parseDuration(value)
	if !ok || d < min || d > max {
		return 0, fmt.Errorf("%s %q: want a duration from %s to %s, in seconds (30, 0.5) or with a unit (250ms, 2m, 1h30m)",
			flag, value, humanDuration(min), humanDuration(max))
	}
	return d, nil
}

func parseDuration(v string) (time.Duration, bool) {
	if isDecimal(v) {
		v += "s"
	} else if v == "" || v[0] < '0' || v[0] > '9' {
		// A sign, "NaN", "inf" or ".5s": not one of the two forms.
		return 0, false
	}
	// ParseDuration rejects overflow and takes only its own units, so
	// exponents and hex never get through.
	d, err := time.ParseDuration(v)
	return d, err == nil
}

// isDecimal reports whether v is digits with at most one decimal point
// between digits ("5", "0.5", "12.25"), the plain form of a number.
func isDecimal(v string) bool {
	whole, frac, hasPoint := strings.Cut(v, ".")
	return allDigits(whole) && (!hasPoint || allDigits(frac))
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// humanDuration writes whole years and days as such, everything else as
// Go does.
func humanDuration(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d > 0 && d%Year == 0:
		return plural(int64(d/Year), "year")
	case d > 0 && d%day == 0:
		return plural(int64(d/day), "day")
	}
	return d.String()
}

func plural(n int64, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.FormatInt(n, 10) + " " + unit + "s"
}

// Int parses a whole decimal number in [min, max]. unit, when not empty,
// names what is counted in the error ("seconds", "processes").
func Int(flag, value string, min, max int64, unit string) (int64, error) {
	n, err := strconv.ParseInt(value, 10, 64)
	if err != nil || !allDigits(strings.TrimPrefix(value, "-")) || n < min || n > max {
		what := "a whole number"
		if unit != "" {
			what += " of " + unit
		}
		return 0, fmt.Errorf("%s %q: want %s from %d to %d", flag, value, what, min, max)
	}
	return n, nil
}

// sizeUnits are the suffixes Size accepts, powers of 1024 as in
// podman's and docker's --memory; matching ignores case.
var sizeUnits = []struct {
	names []string
	shift uint
}{
	{[]string{"", "b"}, 0},
	{[]string{"k", "kb", "kib"}, 10},
	{[]string{"m", "mb", "mib"}, 20},
	{[]string{"g", "gb", "gib"}, 30},
	{[]string{"t", "tb", "tib"}, 40},
}

// Size parses a number of bytes in [min, max]: plain bytes ("1048576") or
// a decimal number with a unit ("512M", "1.5G"; K, M, G and T are powers of
// 1024, with or without "B" or "iB").
func Size(flag, value string, min, max int64) (int64, error) {
	n, ok := parseSize(value)
	if !ok || n < min || n > max {
		return 0, fmt.Errorf("%s %q: want a size from %s to %s, in bytes or with a unit (512M, 1.5G; K, M, G, T are powers of 1024)",
			flag, value, HumanSize(min), HumanSize(max))
	}
	return n, nil
}

func parseSize(v string) (int64, bool) {
	end := 0
	for end < len(v) && (v[end] >= '0' && v[end] <= '9' || v[end] == '.') {
		end++
	}
	num, suffix := v[:end], strings.ToLower(v[end:])
	if !isDecimal(num) {
		return 0, false
	}
	for _, u := range sizeUnits {
		for _, name := range u.names {
			if suffix == name {
				return scale(num, u.shift)
			}
		}
	}
	return 0, false
}

// scale is num * 2^shift, rounded down to whole bytes, computed exactly
// (no float): false on overflow.
func scale(num string, shift uint) (int64, bool) {
	whole, frac, _ := strings.Cut(num, ".")
	w, err := strconv.ParseUint(whole, 10, 63)
	if err != nil || (shift > 0 && w > (1<<63-1)>>shift) {
		return 0, false
	}
	if frac != "" && shift == 0 {
		return 0, false // no fractions of a byte
	}
	n := w << shift
	// The fraction: digits d over 10^len(d), times 2^shift. Digits past
	// what can matter (2^40 < 10^13) are dropped, which only rounds down.
	frac = frac[:min(len(frac), 18)]
	if frac != "" {
		f, err := strconv.ParseUint(frac, 10, 64)
		if err != nil {
			return 0, false
		}
		hi, lo := bits.Mul64(f, 1<<shift)
		q, _ := bits.Div64(hi, lo, pow10(len(frac)))
		if n+q < n || n+q > 1<<63-1 {
			return 0, false
		}
		n += q
	}
	return int64(n), true
}

func pow10(n int) uint64 {
	p := uint64(1)
	for range n {
		p *= 10
	}
	return p
}

// HumanSize writes n in the largest power-of-1024 unit that divides it.
func HumanSize(n int64) string {
	for i := len(sizeUnits) - 1; i > 0; i-- {
		u := sizeUnits[i]
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + strings.ToUpper(u.names[0]) + "iB"
		}
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// Package flagvalue parses the numeric values of command-line options:
// durations, whole numbers and byte sizes, each checked against a range.
//
// strconv alone takes "NaN", "inf", "1e300" and "0x10"; a limit given that
// way is silently no limit. Every parser here accepts one plain decimal
// form (plus units where they make sense), refuses anything else, and
// returns one error line that names the option, the value and what is
// accepted, ready to be shown as a usage error (exit 125).
//
// It also holds the ranges of the options whose values travel further than
// the command line (MinTimeout, MaxTimeout), so that the fast path's C
// code can be tested against the same numbers.
package flagvalue

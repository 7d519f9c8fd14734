// Package termtext makes text from elsewhere (an agent's message, a
// ticket's warning, a file name in an error) safe to print as one line on
// the caller's terminal. fastpath.c's printable does the same in C.
package termtext

import "strings"

// Printable makes s one line a terminal shows as text: line breaks and
// tabs become spaces, other control characters (escape sequences could
// retitle, recolour or rewrite the caller's terminal) become '?'.
func Printable(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\r' || r == '\t':
			return ' '
		case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0:
			return '?'
		}
		return r
	}, s)
}

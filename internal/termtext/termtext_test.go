package termtext

import "testing"

func TestPrintable(t *testing.T) {
	tests := map[string]string{
		"plain text, ünï":           "plain text, ünï",
		"a\nb\r\tc":                 "a b  c",
		"\x1b]0;title\x07\x1b[2J":   "?]0;title??[2J",
		"del\x7f c1\u009b nul\x00.": "del? c1? nul?.",
	}
	for in, want := range tests {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}

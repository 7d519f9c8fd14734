package execargs

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		args Args
	}{
		{"empty", Args{}},
		{"plain", Args{Cwd: "/w", Argv: []string{"ls", "-la"}, Env: []string{"PATH=/bin", "A="}, Withheld: []string{"GH_TOKEN"}}},
		{"latin-1 and binary", Args{Cwd: "/caf\xe9", Argv: []string{"printf", "\xff\xfe", "na\xefve", "\x01\x7f", ""},
			Env: []string{"V=\xe9t\xe9", "\xc0=bad utf-8 name", "E="}, Withheld: []string{"\xffTOKEN"}}},
		{"empty strings", Args{Argv: []string{"", "", ""}, Env: []string{""}}},
		{"large", Args{Cwd: "/", Argv: []string{"x", strings.Repeat("a", 131071)}, Env: []string{"BIG=" + strings.Repeat("\xff", 1<<20)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Encode(tt.args)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(b, len(tt.args.Argv), len(tt.args.Env), len(tt.args.Withheld))
			if err != nil {
				t.Fatal(err)
			}
			if !equal(got, tt.args) {
				t.Fatalf("round trip changed the strings:\n got %q\nwant %q", got, tt.args)
			}
		})
	}
}

// equal compares Args treating nil and empty lists alike.
func equal(a, b Args) bool {
	norm := func(l []string) []string {
		if len(l) == 0 {
			return nil
		}
		return l
	}
	return a.Cwd == b.Cwd && reflect.DeepEqual(norm(a.Argv), norm(b.Argv)) &&
		reflect.DeepEqual(norm(a.Env), norm(b.Env)) && reflect.DeepEqual(norm(a.Withheld), norm(b.Withheld))
}

func TestEncodeRefuses(t *testing.T) {
	if _, err := Encode(Args{Argv: []string{"a\x00b"}}); err == nil || !strings.Contains(err.Error(), "argument 0 holds a NUL byte") {
		t.Errorf("NUL in an argument: %v", err)
	}
	if _, err := Encode(Args{Env: []string{"A=1", "B=\x00"}}); err == nil || !strings.Contains(err.Error(), "environment entry 1") {
		t.Errorf("NUL in the environment: %v", err)
	}
	if _, err := Encode(Args{Cwd: "/a\x00"}); err == nil {
		t.Error("NUL in the working directory was taken")
	}
	// Exactly MaxExec bytes of strings is the most execve could take.
	word := strings.Repeat("w", 1023) // 1 KiB with its NUL
	argv := make([]string, MaxExec/1024)
	for i := range argv {
		argv[i] = word
	}
	if _, err := Encode(Args{Argv: argv}); err != nil {
		t.Errorf("MaxExec bytes: %v", err)
	}
	if _, err := Encode(Args{Argv: argv, Env: []string{""}}); !errors.Is(err, ErrTooLong) {
		t.Errorf("MaxExec+1 bytes: %v, want ErrTooLong", err)
	}
	if ErrTooLong.Error() != "argument list too long" {
		t.Errorf("ErrTooLong says %q, not E2BIG's message", ErrTooLong)
	}
}

func TestDecodeRefuses(t *testing.T) {
	good, _ := Encode(Args{Cwd: "/", Argv: []string{"a", "b"}, Env: []string{"X=1"}})
	tests := []struct {
		name             string
		body             []byte
		argc, envc, with int
		want             string
	}{
		{"too few strings", good, 2, 2, 0, "ends before its last string"},
		{"too many strings", good, 1, 1, 0, "past its last string"},
		{"no final NUL", good[:len(good)-1], 2, 1, 0, "ends before"},
		{"negative count", good, -1, 1, 0, "cannot hold"},
		{"counts past the size", []byte("\x00"), 5, 0, 0, "cannot hold"},
		{"empty body", nil, 0, 0, 0, "cannot hold"},
		{"too large", make([]byte, MaxBody+1), 0, 0, 0, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.body, tt.argc, tt.envc, tt.with)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// FuzzRoundTrip: any strings without NUL come back byte for byte; any
// other body either decodes to strings that encode back to it, or is
// refused.
func FuzzRoundTrip(f *testing.F) {
	f.Add("/w", "ls\x00-la", "PATH=/bin\x00V=\xe9", "GH_TOKEN", []byte("/\x00a\x00"), 1, 0, 0)
	f.Add("", "", "", "", []byte{}, 0, 0, 0)
	f.Add("/caf\xe9", "\xff\xfe\x00\x00", "\xc0=x", "", []byte("\x00\x00\x00"), 1, 1, 0)
	f.Add("", "", "", "", []byte("\x00\x00"), int(^uint(0)>>1), 1, 1)
	f.Fuzz(func(t *testing.T, cwd, argvJoined, envJoined, withheldJoined string, raw []byte, argc, envc, withheldc int) {
		split := func(s string) []string {
			if s == "" {
				return nil
			}
			return strings.Split(s, "\x00")
		}
		in := Args{Cwd: strings.ReplaceAll(cwd, "\x00", ""), Argv: split(argvJoined), Env: split(envJoined), Withheld: split(withheldJoined)}
		b, err := Encode(in)
		if err != nil {
			t.Fatalf("Encode(%q): %v", in, err)
		}
		out, err := Decode(b, len(in.Argv), len(in.Env), len(in.Withheld))
		if err != nil || !equal(out, in) {
			t.Fatalf("round trip of %q: %q, %v", in, out, err)
		}
		// Arbitrary bytes and counts: never a panic, and what decodes
		// is exactly the body.
		got, err := Decode(raw, argc, envc, withheldc)
		if err != nil {
			return
		}
		again, err := Encode(got)
		if err != nil || !bytes.Equal(again, raw) {
			t.Fatalf("Decode(%q) = %q, which encodes to %q, %v", raw, got, again, err)
		}
	})
}

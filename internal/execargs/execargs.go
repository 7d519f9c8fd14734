package execargs

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unsafe"
)

// MaxExec is the most bytes of argument and environment strings, NULs
// included, that execve takes on Linux: three quarters of the 8 MiB
// _STK_LIM, reached with a stack limit of 24 MiB or more (with the default
// 8 MiB stack limit, a quarter of that: 2 MiB). fastpath.c's MAX_EXEC is
// the same number.
const MaxExec = 6 << 20

// MaxInline is the largest body a run request carries in its own packet.
// A SOCK_SEQPACKET message must fit the sender's socket buffer
// (net.core.wmem_default, about 208 KiB), so a larger body goes in a
// sealed memfd passed with the request instead: a request may be as large
// as execve allows, never more than one packet long. fastpath.c's
// MAX_INLINE is the same number.
const MaxInline = 32 << 10

// MaxBody bounds a body a reader accepts: the strings execve can take, a
// working directory of PATH_MAX bytes, and the withheld names, which are
// names of the caller's own environment and so bounded by MaxExec too.
const MaxBody = 2*MaxExec + 4096

// Args is what a run request's body carries.
type Args struct {
	Cwd      string
	Argv     []string
	Env      []string // NAME=VALUE entries, in the order the command gets them
	Withheld []string // names only
}

// ErrTooLong is E2BIG: the strings are more than execve would ever take.
var ErrTooLong = errors.New("argument list too long")

// ExecSize is the number of bytes execve counts for a's argv and env
// strings (each with its NUL); more than MaxExec never runs.
func (a Args) ExecSize() int {
	n := 0
	for _, s := range a.Argv {
		n += len(s) + 1
	}
	for _, s := range a.Env {
		n += len(s) + 1
	}
	return n
}

// Encode lays out a's strings: Cwd, then Argv, Env and Withheld, each
// ending in NUL. A string holding a NUL byte cannot be passed to execve and
// is refused; so are strings past MaxExec (ErrTooLong).
func Encode(a Args) ([]byte, error) {
	exec := a.ExecSize()
	if exec > MaxExec {
		return nil, ErrTooLong
	}
	size := len(a.Cwd) + 1 + exec
	for _, s := range a.Withheld {
		size += len(s) + 1
	}
	if size > MaxBody {
		return nil, ErrTooLong
	}
	b := make([]byte, 0, size)
	put := func(what string, list ...string) error {
		for i, s := range list {
			if strings.IndexByte(s, 0) >= 0 {
				return fmt.Errorf("%s %d holds a NUL byte, which no command can receive", what, i)
			}
			b = append(append(b, s...), 0)
		}
		return nil
	}
	if err := put("the working directory", a.Cwd); err != nil {
		return nil, err
	}
	if err := put("argument", a.Argv...); err != nil {
		return nil, err
	}
	if err := put("environment entry", a.Env...); err != nil {
		return nil, err
	}
	if err := put("withheld name", a.Withheld...); err != nil {
		return nil, err
	}
	return b, nil
}

// Decode reads a body of 1+argc+envc+withheldc strings. The strings share
// b's memory (no copy: a body may be megabytes), so b must not be changed
// afterwards.
func Decode(b []byte, argc, envc, withheldc int) (Args, error) {
	if len(b) > MaxBody {
		return Args{}, fmt.Errorf("request body of %d bytes is larger than the %d any command can take", len(b), MaxBody)
	}
	n := len(b)
	// Each count is checked on its own first, so the sum cannot overflow.
	if argc < 0 || envc < 0 || withheldc < 0 || argc > n || envc > n || withheldc > n || argc+envc+withheldc+1 > n {
		return Args{}, fmt.Errorf("request body of %d bytes cannot hold %d, %d and %d strings", len(b), argc, envc, withheldc)
	}
	var a Args
	rest := b
	next := func() (string, bool) {
		i := bytes.IndexByte(rest, 0)
		if i < 0 {
			return "", false
		}
		s := unsafe.String(unsafe.SliceData(rest), i)
		if i == 0 {
			s = ""
		}
		rest = rest[i+1:]
		return s, true
	}
	list := func(n int) ([]string, bool) {
		if n == 0 {
			return nil, true
		}
		out := make([]string, n)
		for i := range out {
			var ok bool
			if out[i], ok = next(); !ok {
				return nil, false
			}
		}
		return out, true
	}
	var ok bool
	if a.Cwd, ok = next(); !ok {
		return Args{}, errShort
	}
	if a.Argv, ok = list(argc); !ok {
		return Args{}, errShort
	}
	if a.Env, ok = list(envc); !ok {
		return Args{}, errShort
	}
	if a.Withheld, ok = list(withheldc); !ok {
		return Args{}, errShort
	}
	if len(rest) != 0 {
		return Args{}, fmt.Errorf("request body has %d bytes past its last string", len(rest))
	}
	return a, nil
}

var errShort = errors.New("request body ends before its last string")

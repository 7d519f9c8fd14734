package seccomp

// The exec trampoline in trampoline.c is linked into every binary that
// imports this package.

// #cgo CFLAGS: -O2 -Wall -Wno-unused-function
import "C"

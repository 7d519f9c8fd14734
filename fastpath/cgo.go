package fastpath

// The constructor in fastpath.c is linked into every binary that imports
// this package.

// #cgo CFLAGS: -O2 -Wall -Wno-unused-function
import "C"

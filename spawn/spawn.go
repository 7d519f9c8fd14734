package spawn

// #cgo CFLAGS: -O2 -Wall
// #include <stdlib.h>
// #include "spawn.h"
import "C"

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MaxFiles is the most fds a child can be given.
const MaxFiles = C.LNS_SPAWN_MAX_FILES

// Identity puts the child in a new user namespace that maps UID and GID
// onto HostUID and HostGID of the parent's namespace, and makes it UID/GID
// there. setgroups is denied, as it must be without a privileged helper.
type Identity struct {
	UID, GID         uint32
	HostUID, HostGID uint32
}

// Attr is one command to start.
type Attr struct {
	Path string   // resolved executable
	Argv []string // argv[0] included
	Env  []string
	Dir  string // "" keeps the parent's
	// Files are the child's fds 0..len-1 (-1 leaves one closed); every
	// other fd is closed at exec.
	Files   []int
	Setpgid bool // a process group of its own, led by the child
	User    *Identity
	// DropCaps clears every capability set, locks the securebits that
	// would give uid 0 capabilities back at exec, and sets no_new_privs.
	DropCaps bool
	RlimitAS uint64 // > 0: RLIMIT_AS, soft and hard
	// Filter, when set, is installed (with no_new_privs) as the last step
	// before exec, with a listener that Start returns.
	Filter []unix.SockFilter
}

// Error is a failed start: the step that failed and why. Err is a
// syscall.Errno, so errors.Is(err, syscall.ENOENT) works through it.
type Error struct {
	Step string
	Err  syscall.Errno
}

func (e *Error) Error() string {
	if e.Step == "exec" {
		return e.Err.Error()
	}
	return e.Step + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

var steps = map[C.int]string{
	C.LNS_STAGE_SETUP:   "start the child",
	C.LNS_STAGE_IDMAP:   "write the user namespace's id maps",
	C.LNS_STAGE_SETPGID: "setpgid",
	C.LNS_STAGE_SETID:   "set uid and gid",
	C.LNS_STAGE_CHDIR:   "chdir",
	C.LNS_STAGE_FILES:   "place the command's fds",
	C.LNS_STAGE_RLIMIT:  "set the memory limit (RLIMIT_AS)",
	C.LNS_STAGE_CAPS:    "drop capabilities",
	C.LNS_STAGE_SECCOMP: "install the seccomp filter",
	C.LNS_STAGE_EXEC:    "exec",
}

// Start forks, confines the child as a asks and execs it. It returns once
// the child has exec'd, with its pid and, when a.Filter is set, the
// filter's listener (close-on-exec; -1 otherwise). On failure the child has
// been reaped.
//
// The caller reaps the child. Start holds syscall.ForkLock for writing,
// as Go's own fork/exec does.
func Start(a *Attr) (pid, listener int, err error) {
	if len(a.Argv) == 0 {
		return -1, -1, errors.New("start: empty argv")
	}
	if len(a.Files) > MaxFiles {
		return -1, -1, fmt.Errorf("start: %d fds, at most %d", len(a.Files), MaxFiles)
	}
	if len(a.Filter) > 0xffff {
		return -1, -1, errors.New("start: seccomp filter too long")
	}
	var b cMem
	defer b.free()
	var s C.struct_lns_spawn
	if s.path, err = b.str(a.Path); err != nil {
		return -1, -1, err
	}
	if s.argv, err = b.array(a.Argv); err != nil {
		return -1, -1, err
	}
	if s.envp, err = b.array(a.Env); err != nil {
		return -1, -1, err
	}
	if a.Dir != "" {
		if s.dir, err = b.str(a.Dir); err != nil {
			return -1, -1, err
		}
	}
	s.files = b.ints(a.Files)
	s.nfiles = C.int(len(a.Files))
	s.setpgid = cBool(a.Setpgid)
	if u := a.User; u != nil {
		s.userns = 1
		s.uid, s.gid = C.uint32_t(u.UID), C.uint32_t(u.GID)
		s.host_uid, s.host_gid = C.uint32_t(u.HostUID), C.uint32_t(u.HostGID)
	}
	s.dropcaps = cBool(a.DropCaps)
	s.rlimit_as = C.uint64_t(a.RlimitAS)
	if len(a.Filter) > 0 {
		n := C.size_t(len(a.Filter)) * C.size_t(unsafe.Sizeof(a.Filter[0]))
		p := b.alloc(n)
		copy(unsafe.Slice((*unix.SockFilter)(p), len(a.Filter)), a.Filter)
		s.filter = (*C.struct_sock_filter)(p)
		s.filter_len = C.ushort(len(a.Filter))
	}

	var res C.struct_lns_spawn_result
	syscall.ForkLock.Lock()
	C.lns_spawn(&s, &res)
	syscall.ForkLock.Unlock()
	if res.err != 0 {
		step := steps[res.stage]
		if step == "" {
			step = "start the child"
		}
		return -1, -1, &Error{Step: step, Err: syscall.Errno(res.err)}
	}
	return int(res.pid), int(res.listener), nil
}

func cBool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// cMem owns the C memory of what Start hands to C until it returns:
// the request is a C struct, which cgo's rules forbid to hold Go pointers.
type cMem struct{ ptrs []unsafe.Pointer }

func (b *cMem) alloc(n C.size_t) unsafe.Pointer {
	if n == 0 {
		n = 1
	}
	p := C.malloc(n)
	b.ptrs = append(b.ptrs, p)
	return p
}

func (b *cMem) ints(v []int) *C.int {
	p := b.alloc(C.size_t(len(v)) * C.size_t(unsafe.Sizeof(C.int(0))))
	arr := unsafe.Slice((*C.int)(p), len(v))
	for i, x := range v {
		arr[i] = C.int(x)
	}
	return (*C.int)(p)
}

func (b *cMem) str(s string) (*C.char, error) {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return nil, fmt.Errorf("start: %q contains a NUL byte", s)
		}
	}
	p := C.CString(s)
	b.ptrs = append(b.ptrs, unsafe.Pointer(p))
	return p, nil
}

func (b *cMem) array(ss []string) (**C.char, error) {
	n := len(ss) + 1
	p := b.alloc(C.size_t(n) * C.size_t(unsafe.Sizeof((*C.char)(nil))))
	arr := unsafe.Slice((**C.char)(p), n)
	for i, s := range ss {
		c, err := b.str(s)
		if err != nil {
			return nil, err
		}
		arr[i] = c
	}
	arr[len(ss)] = nil
	return (**C.char)(p), nil
}

func (b *cMem) free() {
	for _, p := range b.ptrs {
		C.free(p)
	}
}

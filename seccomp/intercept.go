package seccomp

import (
	"fmt"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Intercept returns a filter that also sends the named system calls to the
// listener when the profile allows them, so that the listener can carry
// them out in the caller's place (ServeIntercepting). A call the profile
// refuses stays refused and is reported as before; the deciding program
// is f's.
//
// The kernel program is f's with a prefix, which works because classic
// BPF jumps only forward and relative to the jumping instruction:
//
//	ld  [arch]
//	jeq #arch, 0, (to f)       another ABI: f decides (and kills)
//	ld  [nr]
//	jeq #nr, (to ret), next    one such instruction per name
//	ret #USER_NOTIF
//	f's program
//
// x32 numbers on x86-64 carry x32Bit, so they never equal a name's number
// and f refuses them as before.
func (f *Filter) Intercept(names ...string) (*Filter, error) {
	if len(names) == 0 || len(names) > 64 {
		return nil, fmt.Errorf("intercept %d system calls: want 1 to 64", len(names))
	}
	nrs := make([]uint32, 0, len(names))
	for _, name := range names {
		nr, ok := f.Arch.Syscall(name)
		if !ok {
			return nil, fmt.Errorf("intercept %s: no such system call on %s", name, f.Arch.Name)
		}
		nrs = append(nrs, nr)
	}
	k := len(nrs)
	prefix := []bpf.Instruction{
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: f.Arch.AuditArch, SkipFalse: uint8(k + 2)},
		bpf.LoadAbsolute{Off: offNr, Size: 4},
	}
	for i, nr := range nrs {
		// From the i-th comparison the ret is k-1-i instructions on; a
		// mismatch tries the next name, and after the last one, skips
		// the ret into f's program.
		var next uint8
		if i == k-1 {
			next = 1
		}
		prefix = append(prefix, bpf.JumpIf{Cond: bpf.JumpEqual, Val: nr, SkipTrue: uint8(k - 1 - i), SkipFalse: next})
	}
	prefix = append(prefix, bpf.RetConstant{Val: retUserNotif})
	raw, err := bpf.Assemble(prefix)
	if err != nil {
		return nil, fmt.Errorf("assemble the interception: %w", err)
	}
	prog := append(raw, f.notify...)
	if len(prog) > 4096 {
		return nil, fmt.Errorf("the seccomp filter has %d instructions with its interception, more than the kernel's 4096", len(prog))
	}
	out := &Filter{Arch: f.Arch, notify: prog, decideRaw: f.decideRaw, intercepted: map[int32]bool{}}
	for _, nr := range nrs {
		out.intercepted[int32(nr)] = true
	}
	return out, nil
}

// Intercepts reports whether d is a call the filter sends to its listener
// for the listener to carry out (see Intercept).
func (f *Filter) Intercepts(d *Data) bool {
	return f.intercepted[d.Nr] && d.Arch == f.Arch.AuditArch
}

// Continue lets an intercepted call go on as the caller made it
// (SECCOMP_USER_NOTIF_FLAG_CONTINUE). The kernel reads the call's
// arguments again, so whatever was decided from memory the caller can
// change must not be what keeps the call safe: use it only where running
// the call is safe whatever its arguments are.
func Continue(listener int, id uint64) error {
	return send(listener, &notifResp{ID: id, Flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE})
}

// Return answers an intercepted call: val as its result, or -errno when
// errno is set.
func Return(listener int, id uint64, val int64, errno unix.Errno) error {
	return send(listener, &notifResp{ID: id, Val: val, Error: -int32(errno)})
}

func send(listener int, r *notifResp) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(listener), unix.SECCOMP_IOCTL_NOTIF_SEND, uintptr(unsafe.Pointer(r)))
	if errno != 0 {
		return fmt.Errorf("answer seccomp notification: %w", errno)
	}
	return nil
}

// addFD is struct seccomp_notif_addfd.
type addFD struct {
	ID         uint64
	Flags      uint32
	SrcFD      uint32
	NewFD      uint32
	NewFDFlags uint32
}

// PlaceFD puts a copy of src at fd in the fd table of the process waiting
// on notification id, closing what fd held there, as dup2 would
// (SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SETFD). The call is
// still waiting afterwards; answer it with Return.
func PlaceFD(listener int, id uint64, src, fd int, cloexec bool) error {
	a := addFD{ID: id, Flags: unix.SECCOMP_ADDFD_FLAG_SETFD, SrcFD: uint32(src), NewFD: uint32(fd)}
	if cloexec {
		a.NewFDFlags = unix.O_CLOEXEC
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(listener), unix.SECCOMP_IOCTL_NOTIF_ADDFD, uintptr(unsafe.Pointer(&a)))
	if errno != 0 {
		return fmt.Errorf("place fd %d in the waiting process: %w", fd, errno)
	}
	return nil
}

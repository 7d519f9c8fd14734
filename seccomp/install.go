package seccomp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Install flags.
const (
	// AllThreads installs the filter on every thread of the process
	// (SECCOMP_FILTER_FLAG_TSYNC); without it only the calling thread,
	// and what it starts later, is filtered.
	AllThreads = unix.SECCOMP_FILTER_FLAG_TSYNC | unix.SECCOMP_FILTER_FLAG_TSYNC_ESRCH
)

// Install loads the filter and returns its listener: the fd on which the
// refusals arrive (see Serve). The caller must have no_new_privs set or
// hold CAP_SYS_ADMIN; Install sets no_new_privs on the calling thread.
func (f *Filter) Install(flags int) (listener int, err error) {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return -1, fmt.Errorf("set no_new_privs: %w", err)
	}
	prog := f.Program()
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	fd, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		uintptr(flags|unix.SECCOMP_FILTER_FLAG_NEW_LISTENER), uintptr(unsafe.Pointer(&fprog)))
	if errno != 0 {
		return -1, fmt.Errorf("install the seccomp filter: %w", errno)
	}
	unix.CloseOnExec(int(fd))
	return int(fd), nil
}

// Program is the program the kernel runs, for installing the filter in
// another process (package spawn).
func (f *Filter) Program() []unix.SockFilter {
	prog := make([]unix.SockFilter, len(f.notify))
	for i, ins := range f.notify {
		prog[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	return prog
}

// The binary form of a Filter, as the supervisor hands it to the agent and
// the agent to its identity helpers:
//
//	magic[8] "LNSBPF1\0"
//	u32 audit arch, u32 instructions of the kernel program,
//	u32 instructions of the deciding program, u32 zero
//	kernel program, then deciding program: struct sock_filter each
const magic = "LNSBPF1\x00"

// MarshalBinary encodes the filter in native byte order.
func (f *Filter) MarshalBinary() ([]byte, error) {
	if f.bin != nil {
		return f.bin, nil
	}
	if len(f.intercepted) > 0 {
		// Read back, it would refuse what it intercepts: hand on the
		// filter it was made from instead.
		return nil, errors.New("an intercepting seccomp filter has no binary form")
	}
	decide := f.decideRaw
	b := []byte(magic)
	for _, v := range []uint32{f.Arch.AuditArch, uint32(len(f.notify)), uint32(len(decide)), 0} {
		b = binary.NativeEndian.AppendUint32(b, v)
	}
	for _, p := range [][]bpf.RawInstruction{f.notify, decide} {
		for _, ins := range p {
			b = binary.NativeEndian.AppendUint16(b, ins.Op)
			b = append(b, ins.Jt, ins.Jf)
			b = binary.NativeEndian.AppendUint32(b, ins.K)
		}
	}
	return b, nil
}

// UnmarshalFilter decodes what MarshalBinary wrote, for the native
// architecture. The filter keeps b, which must not change afterwards.
func UnmarshalFilter(b []byte) (*Filter, error) {
	arch, err := Native()
	if err != nil {
		return nil, err
	}
	return unmarshalFor(arch, b)
}

func unmarshalFor(arch *Arch, b []byte) (*Filter, error) {
	if len(b) < 24 || string(b[:8]) != magic {
		return nil, errors.New("not a compiled seccomp filter")
	}
	audit := binary.NativeEndian.Uint32(b[8:])
	nk, nd := int(binary.NativeEndian.Uint32(b[12:])), int(binary.NativeEndian.Uint32(b[16:]))
	if audit != arch.AuditArch {
		return nil, errors.New("the seccomp filter is for another architecture")
	}
	if nk <= 0 || nd <= 0 || nk > 4096 || nd > 4096 || len(b) != 24+8*(nk+nd) {
		return nil, errors.New("the compiled seccomp filter is truncated")
	}
	read := func(off, n int) []bpf.RawInstruction {
		out := make([]bpf.RawInstruction, n)
		for i := range out {
			p := b[off+8*i:]
			out[i] = bpf.RawInstruction{Op: binary.NativeEndian.Uint16(p), Jt: p[2], Jf: p[3], K: binary.NativeEndian.Uint32(p[4:])}
		}
		return out
	}
	// The deciding program is checked when the first refusal needs it:
	// the binary form comes from this program's own supervisor.
	return &Filter{Arch: arch, notify: read(24, nk), decideRaw: read(24+8*nk, nd), bin: b}, nil
}

// Memfd returns the binary form in a sealed memory file, to hand to other
// processes.
func (f *Filter) Memfd() (*os.File, error) {
	b, err := f.MarshalBinary()
	if err != nil {
		return nil, err
	}
	fd, err := unix.MemfdCreate("lectic-nix-sandbox-seccomp", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("create a memory file for the seccomp filter: %w", err)
	}
	file := os.NewFile(uintptr(fd), "seccomp-filter")
	if _, err := file.Write(b); err != nil {
		file.Close()
		return nil, fmt.Errorf("write the seccomp filter: %w", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		file.Close()
		return nil, fmt.Errorf("seal the seccomp filter: %w", err)
	}
	return file, nil
}

// ReadFilter reads the binary form from a file (a memfd from Memfd).
func ReadFilter(file *os.File) (*Filter, error) {
	st, err := file.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > 24+8*2*4096 {
		return nil, errors.New("the compiled seccomp filter is too large")
	}
	b := make([]byte, st.Size())
	if _, err := file.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("read the seccomp filter: %w", err)
	}
	return UnmarshalFilter(b)
}

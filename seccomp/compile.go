package seccomp

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Return values of a filter (linux/seccomp.h).
const (
	retKillThread  = 0x00000000
	retKillProcess = 0x80000000
	retTrap        = 0x00030000
	retErrno       = 0x00050000
	retUserNotif   = 0x7fc00000
	retTrace       = 0x7ff00000
	retLog         = 0x7ffc0000
	retAllow       = 0x7fff0000
	retActionMask  = 0xffff0000
	retDataMask    = 0x0000ffff
)

// Offsets in struct seccomp_data.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

var operators = map[specs.LinuxSeccompOperator]bool{
	specs.OpNotEqual: true, specs.OpLessThan: true, specs.OpLessEqual: true, specs.OpEqualTo: true,
	specs.OpGreaterEqual: true, specs.OpGreaterThan: true, specs.OpMaskedEqual: true,
}

// Filter is a compiled profile for one architecture.
type Filter struct {
	Arch *Arch
	// notify is the program the kernel runs: refusals other than ENOSYS
	// go to a listener as SECCOMP_RET_USER_NOTIF, so they can be reported.
	notify []bpf.RawInstruction
	// decide is the same program with the refusals as errnos; a listener
	// runs it to learn which errno a notified call gets. It is assembled
	// (decideRaw) and loaded into a VM only when the first refusal needs
	// it: a container that refuses nothing never pays for it.
	decideRaw  []bpf.RawInstruction
	decideOnce sync.Once
	decide     *bpf.VM
	// bin is the binary form this filter was read from, if it was: a
	// container start hands the precompiled default on as it is.
	bin []byte
	// intercepted are the calls the kernel program sends to the listener
	// even where the profile allows them (Intercept). The binary form
	// does not keep them: a filter read back is a plain one.
	intercepted map[int32]bool
}

// rule is one alternative for a system call: all conds hold -> action.
type rule struct {
	conds  []specs.LinuxSeccompArg
	action uint32
}

// Compile builds the filter of a resolved profile for arch. Calls the
// profile names that arch does not have are skipped, as libseccomp does.
func Compile(p *specs.LinuxSeccomp, arch *Arch) (*Filter, error) {
	def, err := action(p.DefaultAction, p.DefaultErrnoRet)
	if err != nil {
		return nil, fmt.Errorf("defaultAction: %w", err)
	}
	rules := map[uint32][]rule{}
	for i, s := range p.Syscalls {
		act, err := action(s.Action, s.ErrnoRet)
		if err != nil {
			return nil, fmt.Errorf("syscalls[%d]: %w", i, err)
		}
		groups, err := argGroups(s.Args)
		if err != nil {
			return nil, fmt.Errorf("syscalls[%d]: %w", i, err)
		}
		for _, name := range s.Names {
			nr, ok := arch.Syscall(name)
			if !ok {
				continue
			}
			for _, g := range groups {
				rules[nr] = append(rules[nr], rule{conds: g, action: act})
			}
		}
	}
	f := &Filter{Arch: arch}
	kernel, err := program(arch, def, rules, true)
	if err != nil {
		return nil, err
	}
	if f.notify, err = bpf.Assemble(kernel); err != nil {
		return nil, fmt.Errorf("assemble the seccomp filter: %w", err)
	}
	if len(f.notify) > 4096 {
		return nil, fmt.Errorf("the seccomp filter has %d instructions, more than the kernel's 4096", len(f.notify))
	}
	plain, err := program(arch, def, rules, false)
	if err != nil {
		return nil, err
	}
	if f.decideRaw, err = bpf.Assemble(plain); err != nil {
		return nil, fmt.Errorf("assemble the seccomp filter: %w", err)
	}
	if _, err := bpf.NewVM(plain); err != nil {
		return nil, fmt.Errorf("check the seccomp filter: %w", err)
	}
	return f, nil
}

// vm returns the deciding program's VM, loading it the first time.
func (f *Filter) vm() *bpf.VM {
	f.decideOnce.Do(func() {
		if prog, ok := bpf.Disassemble(f.decideRaw); ok {
			f.decide, _ = bpf.NewVM(prog)
		}
	})
	return f.decide
}

// argGroups splits a rule's argument conditions into alternatives as runc
// does: all of them together, unless one argument is compared more than
// once, in which case each condition is an alternative of its own.
func argGroups(args []specs.LinuxSeccompArg) ([][]specs.LinuxSeccompArg, error) {
	seen := map[uint]bool{}
	repeated := false
	for _, a := range args {
		if a.Index > 5 {
			return nil, fmt.Errorf("argument index %d: a system call has arguments 0 to 5", a.Index)
		}
		if !operators[a.Op] {
			return nil, fmt.Errorf("unknown operator %q", a.Op)
		}
		repeated = repeated || seen[a.Index]
		seen[a.Index] = true
	}
	if !repeated {
		return [][]specs.LinuxSeccompArg{args}, nil
	}
	out := make([][]specs.LinuxSeccompArg, len(args))
	for i, a := range args {
		out[i] = []specs.LinuxSeccompArg{a}
	}
	return out, nil
}

// action encodes an action as a filter return value.
func action(a specs.LinuxSeccompAction, errnoRet *uint) (uint32, error) {
	data := uint32(unix.EPERM)
	if errnoRet != nil {
		if *errnoRet > retDataMask {
			return 0, fmt.Errorf("errnoRet %d is out of range", *errnoRet)
		}
		data = uint32(*errnoRet)
	}
	switch a {
	case specs.ActAllow:
		return retAllow, nil
	case specs.ActErrno:
		return retErrno | data, nil
	case specs.ActKill, specs.ActKillThread:
		return retKillThread, nil
	case specs.ActKillProcess:
		return retKillProcess, nil
	case specs.ActTrap:
		return retTrap, nil
	case specs.ActTrace:
		return retTrace | data, nil
	case specs.ActLog:
		return retLog, nil
	case specs.ActNotify:
		return 0, errors.New("SCMP_ACT_NOTIFY needs a listener of your own, which this sandbox has no place for; use SCMP_ACT_ERRNO")
	}
	return 0, fmt.Errorf("unknown action %q", a)
}

// reported says whether a refusal goes to the listener: every errno but
// ENOSYS, which means "not here, use something else" (clone3 -> clone,
// calls newer than the table) and is part of normal operation.
func reported(ret uint32) bool {
	return ret&retActionMask == retErrno && ret&retDataMask != uint32(unix.ENOSYS)
}

// program lays out the filter:
//
//	arch check (another ABI: kill the process)
//	number check (x32 and numbers newer than the table: ENOSYS)
//	binary search over the numbers that have rules
//	per number: its rules in order, then the default
func program(arch *Arch, def uint32, rules map[uint32][]rule, notify bool) ([]bpf.Instruction, error) {
	ret := func(r uint32) uint32 {
		if notify && reported(r) {
			return retUserNotif
		}
		return r
	}
	a := &assembler{}
	native, badArch, defLabel := a.newLabel(), a.newLabel(), a.newLabel()
	a.loadWord(offArch)
	a.jump(bpf.JumpEqual, arch.AuditArch, native, badArch)
	a.mark(native)
	a.loadWord(offNr)
	known := a.newLabel()
	nosys := a.newLabel()
	// Covers the x32 bit too: every x32 number is above the table.
	a.jump(bpf.JumpGreaterOrEqual, arch.maxSyscall(), nosys, known)
	a.mark(known)

	nrs := make([]uint32, 0, len(rules))
	for nr := range rules {
		nrs = append(nrs, nr)
	}
	slices.Sort(nrs)
	// Numbers whose only rule is unconditional share one return.
	shared := map[uint32]label{}
	leaf := map[uint32]label{}
	for _, nr := range nrs {
		rs := rules[nr]
		if len(rs[0].conds) == 0 {
			r := ret(rs[0].action)
			if _, ok := shared[r]; !ok {
				shared[r] = a.newLabel()
			}
			leaf[nr] = shared[r]
			continue
		}
		leaf[nr] = a.newLabel()
	}
	search(a, nrs, leaf, defLabel)
	for _, nr := range nrs {
		if len(rules[nr][0].conds) == 0 {
			continue
		}
		a.mark(leaf[nr])
		for _, r := range rules[nr] {
			if len(r.conds) == 0 {
				a.ret(ret(r.action)) // later rules can never match
				break
			}
			nextRule := a.newLabel()
			argChecks(a, r.conds, nextRule)
			a.ret(ret(r.action))
			a.mark(nextRule)
			// The last failed rule falls through to the default below.
		}
		a.ja(defLabel)
	}
	rets := make([]uint32, 0, len(shared))
	for r := range shared {
		rets = append(rets, r)
	}
	slices.Sort(rets)
	for _, r := range rets {
		a.mark(shared[r])
		a.ret(r)
	}
	a.mark(defLabel)
	a.ret(ret(def))
	a.mark(nosys)
	a.ret(retErrno | uint32(unix.ENOSYS))
	a.mark(badArch)
	a.ret(retKillProcess)
	return a.assemble()
}

// search emits a binary search of the sorted numbers in A, jumping to
// each number's leaf, or to def when none matches.
func search(a *assembler, nrs []uint32, leaf map[uint32]label, def label) {
	if len(nrs) <= 3 {
		for _, nr := range nrs {
			a.jump(bpf.JumpEqual, nr, leaf[nr], next)
		}
		a.ja(def)
		return
	}
	mid := len(nrs) / 2
	right := a.newLabel()
	a.jump(bpf.JumpGreaterOrEqual, nrs[mid], right, next)
	search(a, nrs[:mid], leaf, def)
	a.mark(right)
	search(a, nrs[mid:], leaf, def)
}

// argChecks emits code that falls through when every condition holds and
// goes to fail otherwise. Arguments are 64 bits, compared as libseccomp
// does: high word first, then low word (both architectures are little
// endian, so the low word comes first in memory). A is clobbered; the
// number is not needed again.
func argChecks(a *assembler, conds []specs.LinuxSeccompArg, fail label) {
	for _, c := range conds {
		lo, hi := offArgs+8*uint32(c.Index), offArgs+8*uint32(c.Index)+4
		vHi, vLo := uint32(c.Value>>32), uint32(c.Value)
		ok := a.newLabel()
		switch c.Op {
		case specs.OpEqualTo:
			a.loadWord(hi)
			a.jump(bpf.JumpEqual, vHi, next, fail)
			a.loadWord(lo)
			a.jump(bpf.JumpEqual, vLo, ok, fail)
		case specs.OpNotEqual:
			a.loadWord(hi)
			a.jump(bpf.JumpEqual, vHi, next, ok)
			a.loadWord(lo)
			a.jump(bpf.JumpEqual, vLo, fail, ok)
		case specs.OpGreaterThan, specs.OpGreaterEqual, specs.OpLessThan, specs.OpLessEqual:
			// a > v and a >= v compare as they read; a < v is !(a >= v)
			// and a <= v is !(a > v): the same test, ok and fail swapped.
			lowTest, yes, no := bpf.JumpGreaterThan, ok, fail
			switch c.Op {
			case specs.OpGreaterEqual:
				lowTest = bpf.JumpGreaterOrEqual
			case specs.OpLessThan:
				lowTest, yes, no = bpf.JumpGreaterOrEqual, fail, ok
			case specs.OpLessEqual:
				yes, no = fail, ok
			}
			a.loadWord(hi)
			a.jump(bpf.JumpGreaterThan, vHi, yes, next)
			a.jump(bpf.JumpEqual, vHi, next, no)
			a.loadWord(lo)
			a.jump(lowTest, vLo, yes, no)
		case specs.OpMaskedEqual:
			mHi, mLo := vHi, vLo
			wHi, wLo := uint32(c.ValueTwo>>32), uint32(c.ValueTwo)
			a.loadWord(hi)
			a.and(mHi)
			a.jump(bpf.JumpEqual, wHi, next, fail)
			a.loadWord(lo)
			a.and(mLo)
			a.jump(bpf.JumpEqual, wLo, ok, fail)
		}
		a.mark(ok)
	}
}

// Decision is what the filter does with one system call.
type Decision struct {
	Allowed bool
	Errno   unix.Errno // set when the call is refused with an errno
	Ret     uint32     // the raw return value
}

// Decide runs the filter (with errnos in place of notifications) on one
// system call, as the kernel would.
func (f *Filter) Decide(d *Data) Decision {
	vm := f.vm()
	if vm == nil {
		return Decision{Errno: unix.EPERM, Ret: retErrno | uint32(unix.EPERM)}
	}
	v, err := vm.Run(d.bigEndian())
	if err != nil {
		return Decision{Errno: unix.EPERM, Ret: retErrno | uint32(unix.EPERM)}
	}
	r := uint32(v)
	switch r & retActionMask {
	case retAllow, retLog:
		return Decision{Allowed: true, Ret: r}
	case retErrno:
		return Decision{Errno: unix.Errno(r & retDataMask), Ret: r}
	}
	return Decision{Ret: r}
}

// Data is struct seccomp_data: what a filter sees of a system call.
type Data struct {
	Nr   int32
	Arch uint32
	IP   uint64
	Args [6]uint64
}

// bigEndian lays d out for golang.org/x/net/bpf's VM, whose loads are
// big endian: every 32-bit word the kernel would load natively (little
// endian) is stored so that the VM reads the same value.
func (d *Data) bigEndian() []byte {
	b := make([]byte, 64)
	put := func(off int, v uint32) {
		b[off], b[off+1], b[off+2], b[off+3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	}
	put(0, uint32(d.Nr))
	put(4, d.Arch)
	put(8, uint32(d.IP))
	put(12, uint32(d.IP>>32))
	for i, a := range d.Args {
		put(16+8*i, uint32(a))
		put(20+8*i, uint32(a>>32))
	}
	return b
}

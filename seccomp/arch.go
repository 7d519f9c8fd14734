package seccomp

import (
	"fmt"
	"runtime"
	"sync"
)

// Audit architecture values (linux/audit.h) that a filter compares with
// seccomp_data.arch.
const (
	auditArchX86_64  = 0xc000003e
	auditArchAArch64 = 0xc00000b7
)

// x32Bit marks a system call made through the x32 ABI on x86-64: same
// audit arch, different numbers. The filter refuses it.
const x32Bit = 0x40000000

// Arch is one architecture a filter can be built for: its audit value and
// its system call table.
type Arch struct {
	Name      string // GOARCH
	AuditArch uint32
	names     []string // system call number -> name; "" for a hole
	// numbers is names inverted, built when first needed (compiling a
	// profile): an agent that only installs a filter never needs it.
	numbersOnce sync.Once
	numbers     map[string]uint32
}

// Syscall returns the number of a system call by name.
func (a *Arch) Syscall(name string) (uint32, bool) {
	a.numbersOnce.Do(func() {
		a.numbers = make(map[string]uint32, len(a.names))
		for nr, n := range a.names {
			if n != "" {
				a.numbers[n] = uint32(nr)
			}
		}
	})
	nr, ok := a.numbers[name]
	return nr, ok
}

// SyscallName returns the name of a system call number, or "syscall_N".
func (a *Arch) SyscallName(nr int32) string {
	if nr >= 0 && int(nr) < len(a.names) && a.names[nr] != "" {
		return a.names[nr]
	}
	return fmt.Sprintf("syscall_%d", nr)
}

// maxSyscall is one above the highest system call number the table knows;
// anything at or above it is newer than this build and answered ENOSYS.
func (a *Arch) maxSyscall() uint32 { return uint32(len(a.names)) }

func newArch(name string, audit uint32, names []string) *Arch {
	return &Arch{Name: name, AuditArch: audit, names: names}
}

// ArchFor returns the architecture of a GOARCH name (amd64 or arm64).
func ArchFor(goarch string) (*Arch, error) {
	switch goarch {
	case "amd64":
		return newArch("amd64", auditArchX86_64, syscallsAMD64[:]), nil
	case "arm64":
		return newArch("arm64", auditArchAArch64, syscallsARM64[:]), nil
	}
	return nil, fmt.Errorf("seccomp filters are built for amd64 and arm64, not %s; run with --seccomp off", goarch)
}

// Native returns the architecture this binary runs on.
func Native() (*Arch, error) { return ArchFor(runtime.GOARCH) }

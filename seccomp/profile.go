package seccomp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	moby "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Profile is a seccomp profile in the OCI/Docker JSON format: the format
// podman's --security-opt seccomp=FILE takes, with Docker's conditional
// rules (includes/excludes by capability, architecture and kernel).
type Profile = moby.Seccomp

// Host describes what a profile's conditional rules are resolved against.
type Host struct {
	Arch   *Arch
	Caps   []string  // the container's bounding set
	Kernel [2]uint64 // kernel version and major revision; zero = newest
}

// Namespace flags: with any of them clone or unshare makes a namespace.
// CLONE_NEWTIME (0x80) only means that for unshare; for clone it is part
// of the exit signal.
const (
	cloneNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
		unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP
	unshareNamespaces = cloneNamespaces | unix.CLONE_NEWTIME
)

// allowedFamilies are the socket families a command may create.
var allowedFamilies = []uint64{unix.AF_UNIX, unix.AF_INET, unix.AF_INET6, unix.AF_NETLINK}

// blockedIoctls are terminal ioctls that push input into, or reconfigure,
// a terminal the command shares with the caller.
var blockedIoctls = []uint64{unix.TIOCSTI, unix.TIOCLINUX}

// refusedAlways are calls the default profile never allows, whatever the
// capabilities: they reach other processes' memory and descriptors
// (ptrace, process_vm_*, pidfd_getfd, kcmp, process_madvise).
var refusedAlways = []string{"ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "process_madvise"}

// Default returns the sandbox's default profile: Docker's default (as
// moby/profiles keeps it, the base of podman's too), made stricter where
// this sandbox's threat model asks (see doc.go). Calls Docker's profile
// does not allow stay refused: nested user namespaces, io_uring, bpf,
// userfaultfd, perf_event_open, the keyring and the mount family.
func Default() *Profile {
	p := moby.DefaultProfile()
	var out []*moby.Syscall
	for _, r := range p.Syscalls {
		r.Names = slices.DeleteFunc(slices.Clone(r.Names), func(n string) bool {
			return slices.Contains(refusedAlways, n) || n == "ioctl" || n == "socket"
		})
		if len(r.Names) > 0 {
			out = append(out, r)
		}
	}
	p.Syscalls = append(out, sandboxRules()...)
	return p
}

// sandboxRules are the rules Default adds to Docker's.
func sandboxRules() []*moby.Syscall {
	eperm := uint(unix.EPERM)
	var rules []*moby.Syscall
	for _, req := range blockedIoctls {
		rules = append(rules, &moby.Syscall{LinuxSyscall: specs.LinuxSyscall{
			Names: []string{"ioctl"}, Action: specs.ActErrno, ErrnoRet: &eperm,
			// The kernel reads the request as 32 bits: compare only those,
			// so a request with high bits set cannot slip past.
			Args: []specs.LinuxSeccompArg{{Index: 1, Value: 0xffffffff, ValueTwo: req, Op: specs.OpMaskedEqual}},
		}})
	}
	rules = append(rules, &moby.Syscall{LinuxSyscall: specs.LinuxSyscall{Names: []string{"ioctl"}, Action: specs.ActAllow}})
	for _, af := range allowedFamilies {
		rules = append(rules, &moby.Syscall{LinuxSyscall: specs.LinuxSyscall{
			Names: []string{"socket"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: 0xffffffff, ValueTwo: af, Op: specs.OpMaskedEqual}},
		}})
	}
	// ADDR_NO_RANDOMIZE (alone, or with PER_LINUX32 or UNAME26): Nix turns address
	// space randomization off in every build for determinism, as
	// `setarch -R` does; Docker allows only the plain personalities.
	for _, v := range []uint64{0x0040000, 0x0040008, 0x0060000, 0x0060008} {
		rules = append(rules, &moby.Syscall{LinuxSyscall: specs.LinuxSyscall{
			Names: []string{"personality"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: v, Op: specs.OpEqualTo}},
		}})
	}
	// get_mempolicy only reads the caller's own NUMA policy; ps and top
	// ask for it on every run (Docker refuses it without CAP_SYS_NICE).
	rules = append(rules, &moby.Syscall{LinuxSyscall: specs.LinuxSyscall{Names: []string{"get_mempolicy"}, Action: specs.ActAllow}})
	rules = append(rules, &moby.Syscall{LinuxSyscall: specs.LinuxSyscall{
		Names: []string{"unshare"}, Action: specs.ActAllow,
		Args: []specs.LinuxSeccompArg{{Index: 0, Value: unshareNamespaces, ValueTwo: 0, Op: specs.OpMaskedEqual}},
	}})
	return rules
}

// Parse reads a profile in the OCI/Docker JSON format and checks it.
func Parse(data []byte) (*Profile, error) {
	// Unknown fields are ignored, as podman ignores them.
	dec := json.NewDecoder(bytes.NewReader(data))
	var p Profile
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("not a seccomp profile in the OCI/Docker JSON format: %v", err)
	}
	if dec.More() {
		return nil, errors.New("not a seccomp profile: text after the JSON object")
	}
	if p.DefaultAction == "" {
		return nil, errors.New("the profile has no defaultAction")
	}
	if len(p.Architectures) > 0 && len(p.ArchMap) > 0 {
		return nil, errors.New("the profile has both architectures and archMap; use one")
	}
	if p.ListenerPath != "" {
		return nil, errors.New("listenerPath: this sandbox answers notifications itself; remove it")
	}
	if err := checkAction(p.DefaultAction); err != nil {
		return nil, fmt.Errorf("defaultAction: %w", err)
	}
	for i, r := range p.Syscalls {
		if err := checkRule(r); err != nil {
			return nil, fmt.Errorf("syscalls[%d]: %w", i, err)
		}
	}
	return &p, nil
}

func checkRule(r *moby.Syscall) error {
	if r.Name != "" && len(r.Names) > 0 {
		return errors.New("has both name and names; use names")
	}
	if r.Name == "" && len(r.Names) == 0 {
		return errors.New("names no system call")
	}
	if err := checkAction(r.Action); err != nil {
		return err
	}
	for _, a := range r.Args {
		if a.Index > 5 {
			return fmt.Errorf("argument index %d: a system call has arguments 0 to 5", a.Index)
		}
		if _, ok := operators[a.Op]; !ok {
			return fmt.Errorf("unknown operator %q", a.Op)
		}
	}
	_, err := argGroups(r.Args)
	return err
}

func checkAction(a specs.LinuxSeccompAction) error {
	switch a {
	case specs.ActAllow, specs.ActErrno, specs.ActKill, specs.ActKillThread, specs.ActKillProcess,
		specs.ActTrap, specs.ActTrace, specs.ActLog:
		return nil
	case specs.ActNotify:
		return errors.New("SCMP_ACT_NOTIFY needs a listener of your own, which this sandbox has no place for; use SCMP_ACT_ERRNO")
	}
	return fmt.Errorf("unknown action %q", a)
}

// Resolve applies a profile's conditional rules for h and returns the
// rules that hold, in order.
func Resolve(p *Profile, h Host) (*specs.LinuxSeccomp, error) {
	out := specs.LinuxSeccomp{
		DefaultAction:   p.DefaultAction,
		DefaultErrnoRet: p.DefaultErrnoRet,
	}
	for _, r := range p.Syscalls {
		if !applies(r, h) {
			continue
		}
		s := r.LinuxSyscall
		if r.Name != "" {
			s.Names = []string{r.Name}
		}
		out.Syscalls = append(out.Syscalls, s)
	}
	return &out, nil
}

// applies follows moby/profiles: a rule holds when every include matches
// and no exclude does. Architectures are named as libseccomp names them.
func applies(r *moby.Syscall, h Host) bool {
	arch := map[string]string{"amd64": "amd64", "arm64": "arm64"}[h.Arch.Name]
	if ex := r.Excludes; ex != nil {
		if slices.Contains(ex.Arches, arch) {
			return false
		}
		for _, c := range ex.Caps {
			if slices.Contains(h.Caps, c) {
				return false
			}
		}
		if ex.MinKernel != nil && kernelAtLeast(h.Kernel, *ex.MinKernel) {
			return false
		}
	}
	if in := r.Includes; in != nil {
		if len(in.Arches) > 0 && !slices.Contains(in.Arches, arch) {
			return false
		}
		for _, c := range in.Caps {
			if !slices.Contains(h.Caps, c) {
				return false
			}
		}
		if in.MinKernel != nil && !kernelAtLeast(h.Kernel, *in.MinKernel) {
			return false
		}
	}
	return true
}

func kernelAtLeast(k [2]uint64, min moby.KernelVersion) bool {
	if k == [2]uint64{} {
		return true
	}
	return k[0] > min.Kernel || (k[0] == min.Kernel && k[1] >= min.Major)
}

// KernelVersion returns the running kernel's version and major revision.
func KernelVersion() [2]uint64 {
	var uts unix.Utsname
	if unix.Uname(&uts) != nil {
		return [2]uint64{}
	}
	var k [2]uint64
	if _, err := fmt.Sscanf(unix.ByteSliceToString(uts.Release[:]), "%d.%d", &k[0], &k[1]); err != nil {
		return [2]uint64{}
	}
	return k
}

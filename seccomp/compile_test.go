package seccomp

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// containerCaps is podman's default set, which the sandbox's root mode holds.
var containerCaps = ContainerCaps()

func defaultFilter(t testing.TB, goarch string) *Filter {
	t.Helper()
	arch, err := ArchFor(goarch)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Resolve(Default(), Host{Arch: arch, Caps: containerCaps, Kernel: [2]uint64{6, 1}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := Compile(p, arch)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func call(t *testing.T, f *Filter, name string, args ...uint64) *Data {
	t.Helper()
	nr, ok := f.Arch.Syscall(name)
	if !ok {
		t.Fatalf("%s has no %s", f.Arch.Name, name)
	}
	d := &Data{Nr: int32(nr), Arch: f.Arch.AuditArch}
	copy(d.Args[:], args)
	return d
}

const (
	allowed = "allowed"
	eperm   = "EPERM"
	enosys  = "ENOSYS"
)

func verdict(d Decision) string {
	switch {
	case d.Allowed:
		return allowed
	case d.Errno == unix.EPERM:
		return eperm
	case d.Errno == unix.ENOSYS:
		return enosys
	case d.Ret == retKillProcess:
		return "kill"
	}
	return "other"
}

// TestDefaultProfile checks the default filter's decisions on both
// architectures, with the filter run as the kernel would run it.
func TestDefaultProfile(t *testing.T) {
	threads := uint64(unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
		unix.CLONE_THREAD | unix.CLONE_SYSVSEM | unix.CLONE_SETTLS | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID)
	cases := []struct {
		name string
		args []uint64
		want string
	}{
		{"read", nil, allowed},
		{"execve", nil, allowed},
		{"clone", []uint64{threads}, allowed},
		{"clone", []uint64{unix.CLONE_VM | unix.CLONE_VFORK | uint64(unix.SIGCHLD)}, allowed},
		{"clone", []uint64{unix.CLONE_NEWUSER | uint64(unix.SIGCHLD)}, eperm},
		{"clone", []uint64{unix.CLONE_NEWNET}, eperm},
		{"clone3", nil, enosys},
		{"unshare", []uint64{unix.CLONE_NEWUSER}, eperm},
		{"unshare", []uint64{unix.CLONE_NEWNS}, eperm},
		{"unshare", []uint64{unix.CLONE_NEWTIME}, eperm},
		{"unshare", []uint64{unix.CLONE_FILES | unix.CLONE_FS}, allowed},
		{"setns", nil, eperm},
		{"socket", []uint64{unix.AF_UNIX}, allowed},
		{"socket", []uint64{unix.AF_INET}, allowed},
		{"socket", []uint64{unix.AF_INET6}, allowed},
		{"socket", []uint64{unix.AF_NETLINK}, allowed},
		{"socket", []uint64{unix.AF_INET | 1<<32}, allowed},
		{"socket", []uint64{unix.AF_VSOCK}, eperm},
		{"socket", []uint64{unix.AF_PACKET}, eperm},
		{"socket", []uint64{unix.AF_ALG}, eperm},
		{"socket", []uint64{unix.AF_BLUETOOTH}, eperm},
		{"ioctl", []uint64{0, unix.TCGETS}, allowed},
		{"ioctl", []uint64{0, unix.TIOCSTI}, eperm},
		{"ioctl", []uint64{0, unix.TIOCSTI | 1<<40}, eperm},
		{"ioctl", []uint64{0, unix.TIOCLINUX}, eperm},
		{"io_uring_setup", nil, eperm},
		{"io_uring_enter", nil, eperm},
		{"io_uring_register", nil, eperm},
		{"bpf", nil, eperm},
		{"userfaultfd", nil, eperm},
		{"perf_event_open", nil, eperm},
		{"keyctl", nil, eperm},
		{"add_key", nil, eperm},
		{"request_key", nil, eperm},
		{"ptrace", nil, eperm},
		{"process_vm_readv", nil, eperm},
		{"process_vm_writev", nil, eperm},
		{"pidfd_getfd", nil, eperm},
		{"pidfd_open", nil, allowed},
		{"kcmp", nil, eperm},
		{"mount", nil, eperm},
		{"umount2", nil, eperm},
		{"pivot_root", nil, eperm},
		{"fsopen", nil, eperm},
		{"fsconfig", nil, eperm},
		{"fsmount", nil, eperm},
		{"fspick", nil, eperm},
		{"open_tree", nil, eperm},
		{"move_mount", nil, eperm},
		{"mount_setattr", nil, eperm},
		{"chroot", nil, allowed}, // CAP_SYS_CHROOT is in root mode's set
		{"personality", []uint64{0}, allowed},
		{"personality", []uint64{0xffffffff}, allowed},
		{"personality", []uint64{0x0040000}, allowed}, // ADDR_NO_RANDOMIZE: Nix builds
		{"personality", []uint64{0x0020000 | 0x0040000}, allowed},
		{"personality", []uint64{0x0400000}, eperm}, // READ_IMPLIES_EXEC
		{"seccomp", nil, allowed},
		{"landlock_create_ruleset", nil, allowed},
	}
	for _, goarch := range []string{"amd64", "arm64"} {
		t.Run(goarch, func(t *testing.T) {
			f := defaultFilter(t, goarch)
			for _, c := range cases {
				d := call(t, f, c.name, c.args...)
				if got := verdict(f.Decide(d)); got != c.want {
					t.Errorf("%s(%#x) = %s, want %s", c.name, c.args, got, c.want)
				}
			}
			// Other ABIs and numbers newer than the table.
			for _, c := range []struct {
				d    Data
				want string
			}{
				{Data{Nr: 0, Arch: 0x40000003}, "kill"}, // i386
				{Data{Nr: 0, Arch: 0x40000028}, "kill"}, // arm
				{Data{Nr: 5000, Arch: f.Arch.AuditArch}, enosys},
				{Data{Nr: x32Bit | 1, Arch: f.Arch.AuditArch}, enosys},
				{Data{Nr: -1, Arch: f.Arch.AuditArch}, enosys},
			} {
				if got := verdict(f.Decide(&c.d)); got != c.want {
					t.Errorf("%+v = %s, want %s", c.d, got, c.want)
				}
			}
		})
	}
}

func TestArchSpecificCalls(t *testing.T) {
	f := defaultFilter(t, "amd64")
	if got := verdict(f.Decide(call(t, f, "arch_prctl"))); got != allowed {
		t.Errorf("arch_prctl on amd64: %s", got)
	}
	if _, ok := defaultFilter(t, "arm64").Arch.Syscall("arch_prctl"); ok {
		t.Error("arm64 has no arch_prctl")
	}
}

// TestNotifiedRefusals: the kernel's program sends refusals to the
// listener, except ENOSYS, which is normal operation (clone3).
func TestNotifiedRefusals(t *testing.T) {
	f := defaultFilter(t, "amd64")
	notified := map[string]bool{}
	for _, ins := range f.notify {
		if ins.Op == 0x06 { // BPF_RET|BPF_K
			notified[map[bool]string{true: "notif", false: "other"}[ins.K == retUserNotif]] = true
		}
	}
	if !notified["notif"] {
		t.Fatal("the kernel program never notifies")
	}
	if !reported(retErrno|uint32(unix.EPERM)) || reported(retErrno|uint32(unix.ENOSYS)) || reported(retAllow) {
		t.Fatal("reported() is wrong")
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	f := defaultFilter(t, "amd64")
	if f.Arch.Name != "amd64" {
		t.Skip("native only")
	}
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	g, err := UnmarshalFilter(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"read", "keyctl", "clone3"} {
		d := call(t, f, name)
		if f.Decide(d) != g.Decide(d) {
			t.Errorf("%s decided differently after a round trip", name)
		}
	}
	if _, err := UnmarshalFilter(b[:len(b)-1]); err == nil {
		t.Error("a truncated filter was accepted")
	}
}

func TestDescribe(t *testing.T) {
	f := defaultFilter(t, "amd64")
	for _, c := range []struct {
		d    *Data
		want string
	}{
		{call(t, f, "unshare", unix.CLONE_NEWUSER), "unshare(CLONE_NEWUSER)"},
		{call(t, f, "clone", unix.CLONE_NEWUSER|unix.CLONE_NEWNS|uint64(unix.SIGCHLD)), "clone(CLONE_NEWUSER|CLONE_NEWNS)"},
		{call(t, f, "socket", unix.AF_VSOCK), "socket(AF_VSOCK)"},
		{call(t, f, "socket", 200), "socket"},
		{call(t, f, "ioctl", 0, unix.TIOCSTI), "ioctl(TIOCSTI)"},
		{call(t, f, "keyctl", 1), "keyctl"},
		{&Data{Nr: 9999}, "syscall_9999"},
	} {
		if got := f.Describe(c.d); got != c.want {
			t.Errorf("Describe = %q, want %q", got, c.want)
		}
	}
}

// TestOperators compiles one rule per operator and checks 64-bit edges.
func TestOperators(t *testing.T) {
	arch, _ := ArchFor("amd64")
	cases := []struct {
		op       specs.LinuxSeccompOperator
		v, v2    uint64
		in       uint64
		wantPass bool
	}{
		{specs.OpEqualTo, 5, 0, 5, true},
		{specs.OpEqualTo, 5, 0, 5 | 1<<32, false},
		{specs.OpNotEqual, 5, 0, 5, false},
		{specs.OpNotEqual, 5, 0, 5 | 1<<32, true},
		{specs.OpGreaterThan, 1 << 32, 0, 1<<32 + 1, true},
		{specs.OpGreaterThan, 1 << 32, 0, 1 << 32, false},
		{specs.OpGreaterThan, 1 << 32, 0, 0xffffffff, false},
		{specs.OpGreaterEqual, 1 << 32, 0, 1 << 32, true},
		{specs.OpGreaterEqual, 7, 0, 6, false},
		{specs.OpLessThan, 1 << 32, 0, 0xffffffff, true},
		{specs.OpLessThan, 1 << 32, 0, 1 << 32, false},
		{specs.OpLessThan, 7, 0, 1<<32 + 1, false},
		{specs.OpLessEqual, 7, 0, 7, true},
		{specs.OpLessEqual, 7, 0, 8, false},
		{specs.OpMaskedEqual, 0xf0, 0x10, 0x1f, true},
		{specs.OpMaskedEqual, 0xf0, 0x10, 0x2f, false},
		{specs.OpMaskedEqual, 0xff << 32, 0x1 << 32, 0x1<<32 | 0xff, true},
	}
	for _, c := range cases {
		p := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{
			Names: []string{"read"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: 2, Value: c.v, ValueTwo: c.v2, Op: c.op}},
		}}}
		f, err := Compile(p, arch)
		if err != nil {
			t.Fatal(err)
		}
		d := &Data{Nr: 0, Arch: arch.AuditArch}
		d.Args[2] = c.in
		if got := f.Decide(d).Allowed; got != c.wantPass {
			t.Errorf("%s %#x/%#x on %#x: allowed=%v, want %v", c.op, c.v, c.v2, c.in, got, c.wantPass)
		}
	}
}

// TestRepeatedArgumentIsOr follows runc: two comparisons of one argument
// in one rule are alternatives.
func TestRepeatedArgumentIsOr(t *testing.T) {
	arch, _ := ArchFor("amd64")
	p := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{
		Names: []string{"read"}, Action: specs.ActAllow,
		Args: []specs.LinuxSeccompArg{{Index: 0, Value: 1, Op: specs.OpEqualTo}, {Index: 0, Value: 2, Op: specs.OpEqualTo}},
	}}}
	f, err := Compile(p, arch)
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[uint64]bool{1: true, 2: true, 3: false} {
		d := &Data{Nr: 0, Arch: arch.AuditArch, Args: [6]uint64{in}}
		if f.Decide(d).Allowed != want {
			t.Errorf("read(%d): allowed=%v", in, !want)
		}
	}
}

func TestParse(t *testing.T) {
	cases := []struct {
		json, wantErr string
	}{
		{`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["keyctl"],"action":"SCMP_ACT_ERRNO"}]}`, ""},
		{`{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]}],"syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4.8"}}]}`, ""},
		{`{"syscalls":[]}`, "no defaultAction"},
		{`{"defaultAction":"SCMP_ACT_DANCE"}`, "unknown action"},
		{`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}`, "SCMP_ACT_NOTIFY"},
		{`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}`, "index 6"},
		{`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_ABOUT"}]}]}`, "unknown operator"},
		{`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"action":"SCMP_ACT_ERRNO"}]}`, "names no system call"},
		{`{"defaultAction":"SCMP_ACT_ALLOW"} {}`, "after the JSON"},
		{`not json`, "OCI/Docker JSON"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.json))
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: %v", c.json, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s: error %v, want one containing %q", c.json, err, c.wantErr)
		}
	}
}

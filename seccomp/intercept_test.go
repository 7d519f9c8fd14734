package seccomp

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// runKernel runs a filter's kernel program on d, as the kernel would.
func runKernel(t *testing.T, f *Filter, d *Data) uint32 {
	t.Helper()
	prog, ok := bpf.Disassemble(f.notify)
	if !ok {
		t.Fatal("kernel program does not disassemble")
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	v, err := vm.Run(d.bigEndian())
	if err != nil {
		t.Fatal(err)
	}
	return uint32(v)
}

// TestInterceptProgram: the intercepting program notifies exactly the
// named calls of the filter's own architecture and leaves every other
// decision to the filter it was made from.
func TestInterceptProgram(t *testing.T) {
	for _, goarch := range []string{"amd64", "arm64"} {
		arch, _ := ArchFor(goarch)
		f, err := DefaultFilter(arch)
		if err != nil {
			t.Fatal(err)
		}
		for _, names := range [][]string{{"connect"}, {"connect", "bind", "getpid"}} {
			g, err := f.Intercept(names...)
			if err != nil {
				t.Fatal(err)
			}
			nr := func(name string) int32 { n, _ := arch.Syscall(name); return int32(n) }
			other := uint32(0x40000003) // i386
			if goarch == "arm64" {
				other = 0x40000028 // arm32
			}
			for _, tt := range []struct {
				name   string
				d      Data
				notify bool // the intercepting program notifies where f need not
			}{
				{"connect", Data{Nr: nr("connect"), Arch: arch.AuditArch}, true},
				{"bind", Data{Nr: nr("bind"), Arch: arch.AuditArch}, len(names) > 1},
				{"getpid", Data{Nr: nr("getpid"), Arch: arch.AuditArch}, len(names) > 1},
				{"unshare user ns", Data{Nr: nr("unshare"), Arch: arch.AuditArch, Args: [6]uint64{unix.CLONE_NEWUSER}}, false},
				{"x32 connect", Data{Nr: nr("connect") | x32Bit, Arch: arch.AuditArch}, false},
				{"other ABI, same number", Data{Nr: nr("connect"), Arch: other}, false},
				{"keyctl", Data{Nr: nr("keyctl"), Arch: arch.AuditArch}, false},
			} {
				t.Run(fmt.Sprintf("%s/%d/%s", goarch, len(names), tt.name), func(t *testing.T) {
					want := runKernel(t, f, &tt.d)
					if tt.notify {
						want = retUserNotif
					}
					if got := runKernel(t, g, &tt.d); got != want {
						t.Errorf("returns %#x, want %#x", got, want)
					}
					if got := g.Intercepts(&tt.d); got != tt.notify {
						t.Errorf("Intercepts = %v, want %v", got, tt.notify)
					}
					if g.Decide(&tt.d) != f.Decide(&tt.d) {
						t.Errorf("the decision changed: %+v, was %+v", g.Decide(&tt.d), f.Decide(&tt.d))
					}
				})
			}
		}
		if _, err := f.Intercept("nosuchcall"); err == nil || !strings.Contains(err.Error(), "no such system call") {
			t.Errorf("Intercept(nosuchcall): %v", err)
		}
		g, _ := f.Intercept("connect")
		if _, err := g.MarshalBinary(); err == nil {
			t.Error("an intercepting filter has a binary form, which would read back refusing connect")
		}
	}
}

// interceptChild installs the default filter intercepting connect(2),
// answers each connect in its own way, and prints what the calls got.
func interceptChild() int {
	arch, err := Native()
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	f, err := DefaultFilter(arch)
	if err == nil {
		f, err = f.Intercept("connect")
	}
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	placed, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	refused, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	continued, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	listener, err := f.Install(AllThreads)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	var mu sync.Mutex
	var reports []string
	go f.ServeIntercepting(listener, func(n *Notification, d Decision) {
		mu.Lock()
		reports = append(reports, f.Describe(&n.Data))
		mu.Unlock()
	}, func(listener int, n *Notification) {
		switch int(n.Data.Args[0]) {
		case placed:
			if err := PlaceFD(listener, n.ID, pair[0], placed, true); err != nil {
				fmt.Println("error", err)
			}
			_ = Return(listener, n.ID, 0, 0)
		case refused:
			_ = Return(listener, n.ID, 0, unix.EHOSTDOWN)
		default:
			_ = Continue(listener, n.ID)
		}
	})
	runtime.LockOSThread()
	sa4 := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte{192, 0, 2, 1}, Port: 0x0900}
	try := func(name string, fd int, sa unsafe.Pointer, size uintptr) {
		_, _, errno := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(sa), size)
		fmt.Printf("%s %v\n", name, errnoName(errno))
	}
	try("placed", placed, unsafe.Pointer(&sa4), unsafe.Sizeof(sa4))
	try("refused", refused, unsafe.Pointer(&sa4), unsafe.Sizeof(sa4))
	su := unix.RawSockaddrUnix{Family: unix.AF_UNIX}
	copy(su.Path[:], []int8{'/', 'n', 'o', '-', 's', 'u', 'c', 'h'})
	try("continued", continued, unsafe.Pointer(&su), unsafe.Sizeof(su))
	if _, err := unix.Write(placed, []byte("through")); err != nil {
		fmt.Println("write", err)
	}
	buf := make([]byte, 16)
	k, _ := unix.Read(pair[1], buf)
	fmt.Printf("pair read %s\n", buf[:k])
	if fl, err := unix.FcntlInt(uintptr(placed), unix.F_GETFD, 0); err == nil {
		fmt.Printf("placed cloexec %v\n", fl&unix.FD_CLOEXEC != 0)
	}
	_, _, errno := unix.Syscall(unix.SYS_UNSHARE, unix.CLONE_NEWUSER, 0, 0)
	fmt.Printf("unshare-user %v\n", errnoName(errno))
	mu.Lock()
	for _, r := range reports {
		fmt.Println("report", r)
	}
	mu.Unlock()
	return 0
}

// TestInterceptKernel: an intercepted connect gets the listener's answer:
// a socket put in place of the caller's, an errno, or the kernel's own
// result; refusals are still refused and reported.
func TestInterceptKernel(t *testing.T) {
	if _, err := Native(); err != nil {
		t.Skip(err)
	}
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=intercept")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	got := string(out)
	for _, want := range []string{
		"placed ok", "refused " + unix.EHOSTDOWN.Error(), "continued " + unix.ENOENT.Error(),
		"pair read through", "placed cloexec true", "unshare-user EPERM", "report unshare(CLONE_NEWUSER)",
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if err != nil || strings.Contains(got, "error") {
		t.Errorf("child: %v\n%s", err, got)
	}
}

package seccomp

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const envChild = "_LNS_SECCOMP_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(envChild) {
	case "":
	case "intercept":
		os.Exit(interceptChild())
	default:
		os.Exit(kernelChild())
	}
	os.Exit(m.Run())
}

// kernelChild installs the default filter on itself, answers its own
// refusals, and reports what a few calls returned.
func kernelChild() int {
	arch, err := Native()
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	p, _ := Resolve(Default(), Host{Arch: arch, Caps: containerCaps, Kernel: KernelVersion()})
	f, err := Compile(p, arch)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	listener, err := f.Install(AllThreads)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	var mu sync.Mutex
	var reports []string
	go f.Serve(listener, func(n *Notification, d Decision) {
		mu.Lock()
		reports = append(reports, fmt.Sprintf("%s pid=%t", f.Describe(&n.Data), n.Pid == uint32(os.Getpid()) || n.Pid != 0))
		mu.Unlock()
	})
	try := func(name string, nr uintptr, a ...uintptr) {
		var args [6]uintptr
		copy(args[:], a)
		_, _, errno := unix.Syscall6(nr, args[0], args[1], args[2], args[3], args[4], args[5])
		fmt.Printf("%s %v\n", name, errnoName(errno))
	}
	runtime.LockOSThread()
	try("unshare-user", unix.SYS_UNSHARE, unix.CLONE_NEWUSER)
	try("keyctl", unix.SYS_KEYCTL, 0)
	try("io_uring_setup", unix.SYS_IO_URING_SETUP, 1, 0)
	try("clone3", unix.SYS_CLONE3, 0, 0)
	try("socket-vsock", unix.SYS_SOCKET, unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	try("ioctl-tiocsti", unix.SYS_IOCTL, 0, unix.TIOCSTI, 0)
	try("getpid", unix.SYS_GETPID)
	if out, err := exec.Command("/bin/sh", "-c", "echo forked").Output(); err != nil {
		fmt.Println("exec", err)
	} else {
		fmt.Printf("exec %s", out)
	}
	time.Sleep(10 * time.Millisecond) // reports run before the answers, but on goroutines
	mu.Lock()
	for _, r := range reports {
		fmt.Println("report", r)
	}
	mu.Unlock()
	return 0
}

func errnoName(e syscall.Errno) string {
	switch e {
	case 0:
		return "ok"
	case unix.EPERM:
		return "EPERM"
	case unix.ENOSYS:
		return "ENOSYS"
	}
	return e.Error()
}

// TestKernelEnforces installs the default filter in a child process and
// checks what the kernel does with it, the listener's answers included.
func TestKernelEnforces(t *testing.T) {
	if _, err := Native(); err != nil {
		t.Skip(err)
	}
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	got := string(out)
	for _, want := range []string{
		"unshare-user EPERM", "keyctl EPERM", "io_uring_setup EPERM", "clone3 ENOSYS",
		"socket-vsock EPERM", "ioctl-tiocsti EPERM", "getpid ok", "exec forked",
		"report unshare(CLONE_NEWUSER) pid=true", "report keyctl", "report io_uring_setup",
		"report socket(AF_VSOCK)", "report ioctl(TIOCSTI)",
	} {
		if !strings.Contains(got, want+"\n") && !strings.Contains(got, want+" ") {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "report clone3") {
		t.Errorf("clone3's ENOSYS was reported:\n%s", got)
	}
}

func BenchmarkCompileDefault(b *testing.B) {
	arch, err := Native()
	if err != nil {
		b.Skip(err)
	}
	for i := 0; i < b.N; i++ {
		p, _ := Resolve(Default(), Host{Arch: arch, Caps: containerCaps})
		if _, err := Compile(p, arch); err != nil {
			b.Fatal(err)
		}
	}
}

// Command probe makes one system call, or a few, the way an attacker or an
// ordinary program would, and prints what the kernel answered. The
// integration tests put it into their fixture image and run it inside the
// sandbox (and, for host-key, on the host). Every line is "what: result",
// with result "ok" or the errno's name.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe MODE [ARGS]")
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "ptrace": // PID
		pid := atoi(args[0])
		report("ptrace", unix.PtraceAttach(pid))
	case "pidfd_getfd": // PID FD
		pidfd, err := unix.PidfdOpen(atoi(args[0]), 0)
		if err != nil {
			report("pidfd_open", err)
			return
		}
		_, err = unix.PidfdGetfd(pidfd, atoi(args[1]), 0)
		report("pidfd_getfd", err)
	case "process_vm_readv": // PID
		var buf [8]byte
		local := []unix.Iovec{{Base: &buf[0], Len: 8}}
		remote := []unix.RemoteIovec{{Base: 0x400000, Len: 8}}
		_, err := unix.ProcessVMReadv(atoi(args[0]), local, remote, 0)
		report("process_vm_readv", err)
	case "io_uring":
		var params [120]byte
		_, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&params)), 0)
		report("io_uring_setup", errno(e))
	case "keyctl-read": // KEY-ID
		var buf [256]byte
		_, err := unix.KeyctlBuffer(unix.KEYCTL_READ, atoi(args[0]), buf[:], 0)
		report("keyctl_read", err)
	case "add_key":
		_, err := unix.AddKey("user", "probe", []byte("x"), unix.KEY_SPEC_SESSION_KEYRING)
		report("add_key", err)
	case "socket": // FAMILY
		fam := map[string]int{"unix": unix.AF_UNIX, "inet": unix.AF_INET, "inet6": unix.AF_INET6,
			"netlink": unix.AF_NETLINK, "vsock": unix.AF_VSOCK, "packet": unix.AF_PACKET}[args[0]]
		typ := unix.SOCK_STREAM
		if args[0] == "netlink" || args[0] == "packet" {
			typ = unix.SOCK_RAW
		}
		fd, err := unix.Socket(fam, typ, 0)
		if err == nil {
			unix.Close(fd)
		}
		report("socket_"+args[0], err)
	case "tiocsti":
		c := byte('x')
		_, _, e := unix.Syscall(unix.SYS_IOCTL, 0, unix.TIOCSTI, uintptr(unsafe.Pointer(&c)))
		report("tiocsti", errno(e))
	case "bpf":
		_, _, e := unix.Syscall(unix.SYS_BPF, 0, 0, 0)
		report("bpf", errno(e))
	case "userfaultfd":
		_, _, e := unix.Syscall(unix.SYS_USERFAULTFD, 0, 0, 0)
		report("userfaultfd", errno(e))
	case "perf_event_open":
		_, _, e := unix.Syscall6(unix.SYS_PERF_EVENT_OPEN, 0, 0, ^uintptr(0), ^uintptr(0), 0, 0)
		report("perf_event_open", errno(e))
	case "fsopen":
		_, err := unix.Fsopen("tmpfs", 0)
		report("fsopen", err)
	case "threads":
		done := make(chan int)
		for i := 0; i < 8; i++ {
			go func(i int) { done <- i }(i)
		}
		for i := 0; i < 8; i++ {
			<-done
		}
		report("threads", nil)
	case "fill": // FILE: write until the file system is full
		fill(args[0])
	case "forkloop": // N HOLD-SECONDS: fork N sleepers, say how many started
		forkloop(atoi(args[0]), atoi(args[1]))
	case "host-key": // COMMAND...: on the host, add a session key, then run COMMAND with {key} replaced
		hostKey(args)
	case "hold-conn": // HOST:PORT PATH: see holdConn
		holdConn(args[0], args[1])
	default:
		fmt.Fprintln(os.Stderr, "probe: unknown mode", os.Args[1])
		os.Exit(2)
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe: not a number:", s)
		os.Exit(2)
	}
	return n
}

func errno(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func report(what string, err error) {
	var e syscall.Errno
	switch {
	case err == nil:
		fmt.Printf("%s: ok\n", what)
	case errors.As(err, &e):
		fmt.Printf("%s: %s\n", what, unix.ErrnoName(e))
	default:
		fmt.Printf("%s: %v\n", what, err)
	}
}

func fill(path string) {
	f, err := os.Create(path)
	if err != nil {
		report("create", err)
		return
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		w, err := f.Write(buf)
		n += int64(w)
		if err != nil {
			fmt.Printf("wrote %d MiB\n", n>>20)
			report("fill", err)
			return
		}
		if n > 64<<30 {
			report("fill", errors.New("no limit after 64 GiB"))
			return
		}
	}
}

func forkloop(n, hold int) {
	started := 0
	var last error
	var procs []*os.Process
	for i := 0; i < n; i++ {
		p, err := os.StartProcess("/proc/self/exe", []string{"probe-sleeper"}, &os.ProcAttr{
			Env: []string{"PROBE_SLEEP=" + strconv.Itoa(hold)}})
		if err != nil {
			last = err
			break
		}
		procs = append(procs, p)
		started++
	}
	fmt.Printf("started %d\n", started)
	report("fork", last)
	// The sleepers stay while the caller counts them.
	time.Sleep(time.Duration(hold) * time.Second / 2)
	for _, p := range procs {
		p.Kill()
		p.Wait()
	}
}

func init() {
	// The sleepers of forkloop: the same binary, so the loop needs
	// nothing else in the image.
	if v := os.Getenv("PROBE_SLEEP"); v != "" {
		s, _ := strconv.Atoi(v)
		time.Sleep(time.Duration(s) * time.Second)
		os.Exit(0)
	}
}

func hostKey(args []string) {
	// A new anonymous session keyring, as a login shell has one.
	if _, _, e := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0); e != 0 {
		err := error(e)
		fmt.Fprintln(os.Stderr, "probe: join a session keyring:", err)
		os.Exit(2)
	}
	id, err := unix.AddKey("user", "probe-host-secret", []byte("host secret"), unix.KEY_SPEC_SESSION_KEYRING)
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe: add_key:", err)
		os.Exit(2)
	}
	var buf [64]byte
	if n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, id, buf[:], 0); err != nil || string(buf[:n]) != "host secret" {
		fmt.Fprintln(os.Stderr, "probe: the host cannot read its own key:", err)
		os.Exit(2)
	}
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "{key}", strconv.Itoa(id))
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		os.Exit(ee.ExitCode())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(2)
	}
}

// holdConn connects the way a Go program does (a non-blocking socket,
// from a thread that is not the process's first: the main goroutine holds
// that one), sends an HTTP/1.0 GET, and once the first line of the answer
// is in, while the connection is still open, counts the connections to
// the port that this network namespace holds: a connection made on the
// host holds none here, a relayed one holds its two ends.
func holdConn(addr, path string) {
	runtime.LockOSThread()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Println("dial:", err)
			return
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path)
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				fmt.Println("read:", err)
				return
			}
			if strings.TrimSpace(line) == "first" {
				break
			}
		}
		fmt.Println("first: ok")
		_, port, _ := net.SplitHostPort(addr)
		fmt.Printf("here: %d\n", establishedTo(atoi(port)))
	}()
	<-done
}

// establishedTo counts the established TCP connections of this network
// namespace with port at either end.
func establishedTo(port int) int {
	n := 0
	suffix := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) > 3 && fields[3] == "01" && (strings.HasSuffix(fields[1], suffix) || strings.HasSuffix(fields[2], suffix)) {
				n++
			}
		}
	}
	return n
}

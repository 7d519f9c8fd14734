package seccomp

import (
	"errors"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Notification is one refused system call waiting for its answer
// (struct seccomp_notif). The calling thread stays blocked until Serve
// answers it.
type Notification struct {
	ID    uint64
	Pid   uint32 // in the listener's pid namespace; 0 when not visible there
	Flags uint32
	Data  Data
}

type notifResp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

// Serve answers the refusals of the filter f arriving on listener until
// no process uses the filter any more. Each refused call gets the errno
// the profile gives it; report runs first (on its own goroutine, so a
// slow report delays only that call) and may look at the process while
// it waits. Serve closes listener when it returns.
func (f *Filter) Serve(listener int, report func(n *Notification, d Decision)) {
	f.ServeIntercepting(listener, report, nil)
}

// ServeIntercepting is Serve for a filter from Intercept: an intercepted
// call the profile allows goes to intercept (on its own goroutine), which
// must answer it (Continue, PlaceFD and Return) or leave it to the caller's
// death; without intercept such a call continues as made. An intercepted
// call the profile refuses is refused and reported like any other.
func (f *Filter) ServeIntercepting(listener int, report func(n *Notification, d Decision), intercept func(listener int, n *Notification)) {
	var answering sync.WaitGroup
	defer unix.Close(listener)
	defer answering.Wait()
	for {
		n, err := receive(listener)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOENT) {
			continue // the caller died before we read it
		}
		if err != nil {
			return
		}
		d := f.Decide(&n.Data)
		answering.Add(1)
		go func() {
			defer answering.Done()
			if d.Allowed && f.Intercepts(&n.Data) {
				// The profile allows it: only the interceptor's answer
				// can differ from running it.
				if intercept == nil {
					_ = Continue(listener, n.ID)
					return
				}
				intercept(listener, n)
				return
			}
			if report != nil {
				report(n, d)
			}
			errno := d.Errno
			if errno == 0 {
				// Anything notified and not intercepted is refused: no
				// answer lets through a call the profile does not allow.
				errno = unix.EPERM
			}
			_ = Return(listener, n.ID, 0, errno)
		}()
	}
}

// receive waits for the next notification; it fails (not EINTR) once the
// filter has no users left.
func receive(fd int) (*Notification, error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if fds[0].Revents&unix.POLLIN == 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			return nil, errors.New("no process uses the filter any more")
		}
		break
	}
	var n Notification // must be zeroed: the kernel checks
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(&n)))
	if errno != 0 {
		return nil, errno
	}
	return &n, nil
}

// Valid reports whether notification id is still waiting: the process
// that made it has neither died nor been answered. Check it after reading
// anything about n.Pid, since the pid may belong to someone else once the
// call is gone.
func Valid(listener int, id uint64) bool {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(listener), unix.SECCOMP_IOCTL_NOTIF_ID_VALID, uintptr(unsafe.Pointer(&id)))
	return errno == 0
}

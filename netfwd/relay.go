package netfwd

import (
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// relayBuf is the size of the buffer one direction of a relay copies
// through while data flows.
const relayBuf = 256 << 10

// relayBufs holds the buffers between bursts: a connection that waits for
// data holds none, so a thousand idle connections cost their sockets only.
var relayBufs = sync.Pool{New: func() any {
	b := make([]byte, relayBuf)
	return &b
}}

// relay copies both ways between a and b until both directions end. A
// direction that ends cleanly half-closes the other side; one that fails
// resets both.
//
// Why read and write rather than splice(2): both move the bytes in the
// kernel, never through Go code, but on the development VM (kernel 6.18)
// splicing socket -> pipe -> socket cost 146-176 ms of CPU per 64 MiB
// against 108-125 ms for read/write through a 256 KiB buffer, and the
// direct transfer itself 63-70 ms (go test ./netfwd -bench Download,
// cpu-ms/op, several runs each): moving page references through a pipe
// costs more than copying them.
func relay(a, b *net.TCPConn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(b, a)
	}()
	pipe(a, b)
	<-done
}

// pipe copies src to dst until src ends.
func pipe(dst, src *net.TCPConn) {
	rc, err := src.SyscallConn()
	if err == nil {
		err = copyStream(dst, rc)
	}
	if err != nil {
		reset(dst)
		reset(src)
		return
	}
	_ = dst.CloseWrite()
}

// copyStream waits for data without a buffer, then copies bursts until the
// stream ends.
func copyStream(dst *net.TCPConn, src syscall.RawConn) error {
	for {
		if err := waitReadable(src); err != nil {
			return err
		}
		end, err := drain(dst, src)
		if end || err != nil {
			return err
		}
	}
}

// waitReadable returns once src has data or its end, or with its error.
// A socket's error is read once (a peek clears it too), so it is returned
// here rather than left for a read that would then see a clean end.
func waitReadable(src syscall.RawConn) error {
	var one [1]byte
	var perr error
	if err := src.Read(func(fd uintptr) bool {
		_, _, perr = unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return perr != unix.EAGAIN && perr != unix.EINTR
	}); err != nil {
		return err
	}
	return perr
}

// drain copies what src holds to dst through a pooled buffer, until src
// has nothing more for now (end false) or its stream ended (end true).
func drain(dst *net.TCPConn, src syscall.RawConn) (end bool, err error) {
	bp := relayBufs.Get().(*[]byte)
	defer relayBufs.Put(bp)
	buf := *bp
	for {
		var n int
		var rerr error
		if err := src.Read(func(fd uintptr) bool {
			n, rerr = unix.Read(int(fd), buf)
			return rerr != unix.EINTR
		}); err != nil {
			return false, err
		}
		switch {
		case rerr == unix.EAGAIN:
			return false, nil
		case rerr != nil:
			return false, rerr
		case n == 0:
			return true, nil
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return false, err
		}
	}
}

// reset ends c with a RST, so a peer learns at once that it is over.
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

package unixfd

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestRights(t *testing.T) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer CloseAll(pair[:])
	r, w, err := osPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer CloseAll([]int{r, w})
	for _, tt := range []struct {
		name string
		send []int
		want int
	}{
		{"none", nil, 0},
		{"two", []int{r, w}, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var oob []byte
			if tt.send != nil {
				oob = unix.UnixRights(tt.send...)
			}
			if err := unix.Sendmsg(pair[0], []byte("m"), oob, nil, 0); err != nil {
				t.Fatal(err)
			}
			buf, rb := make([]byte, 8), make([]byte, unix.CmsgSpace(8*4))
			_, oobn, _, _, err := unix.Recvmsg(pair[1], buf, rb, unix.MSG_CMSG_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			fds, err := Rights(rb[:oobn])
			if err != nil || len(fds) != tt.want {
				t.Fatalf("Rights = %v, %v; want %d fds", fds, err, tt.want)
			}
			for _, fd := range fds {
				if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
					t.Errorf("fd %d is not open: %v", fd, err)
				}
			}
			CloseAll(fds)
			for _, fd := range fds {
				if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
					t.Errorf("fd %d is still open after CloseAll", fd)
				}
			}
		})
	}
	// Credentials are a control message too, but carry no fds.
	if fds, err := Rights(unix.UnixCredentials(&unix.Ucred{Pid: 1})); err == nil {
		t.Errorf("credentials were taken for fds: %v", fds)
	}
}

func osPipe() (int, int, error) {
	var p [2]int
	err := unix.Pipe2(p[:], unix.O_CLOEXEC)
	return p[0], p[1], err
}

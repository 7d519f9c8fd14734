package unixfd

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Rights returns the fds the control messages oob carried. On an error
// the fds already taken from it are closed.
func Rights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			CloseAll(fds)
			return nil, fmt.Errorf("parse passed fds: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// CloseAll closes every fd of fds.
func CloseAll(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

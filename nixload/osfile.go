package nixload

import "os"

// newDirFile wraps a directory fd so its names can be read; the *os.File
// owns and closes the fd.
func newDirFile(fd int) *os.File { return os.NewFile(uintptr(fd), "dir") }

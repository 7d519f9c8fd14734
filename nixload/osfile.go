package nixload

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// newDirFile wraps a directory fd so its names can be read; the *os.File
// owns and closes the fd.
func newDirFile(fd int) *os.File { return os.NewFile(uintptr(fd), "dir") }

// removeAllForce removes a tree of the store's own, whatever modes the
// image gave its directories: an assembled tree shows the image's modes
// (0555 directories, even 0000 ones), which keep its owner from removing
// entries until the directories are made writable again.
func removeAllForce(path string) error {
	err := os.RemoveAll(path)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	makeRemovable(path)
	return os.RemoveAll(path)
}

// makeRemovable gives every directory under path u+rwx, top down so each
// can then be read. Directories are opened without following symlinks, so
// nothing outside the tree is changed.
func makeRemovable(path string) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		// Unreadable: chmod through the path, still never through a
		// symlink (only a directory is opened above; here the final
		// component is checked first).
		var st unix.Stat_t
		if unix.Lstat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return
		}
		if unix.Chmod(path, 0o700) != nil {
			return
		}
		if fd, err = unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
			return
		}
	}
	unix.Fchmod(fd, 0o700)
	f := newDirFile(fd)
	ents, _ := f.ReadDir(-1)
	f.Close()
	for _, e := range ents {
		if e.IsDir() {
			makeRemovable(filepath.Join(path, e.Name()))
		}
	}
}

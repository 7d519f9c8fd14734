package namespace

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// openInRoot opens path inside root with every symlink resolved as if root
// were "/", so an image's absolute or ".." symlinks cannot leave it.
func openInRoot(root *os.File, path string, flags int) (int, error) {
	rel := strings.TrimLeft(filepath.Clean("/"+path), "/")
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(int(root.Fd()), rel, &how)
		if !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EAGAIN) {
			return fd, err
		}
	}
}

// mkdirAllInRoot creates path and its missing parents inside root (mode
// 0755) and returns an O_PATH descriptor of it. Each step resolves from
// root, so a symlink met on the way is followed inside root only.
func mkdirAllInRoot(root *os.File, path string) (int, error) {
	clean := filepath.Clean("/" + path)
	fd, err := openInRoot(root, clean, unix.O_PATH|unix.O_DIRECTORY)
	if err == nil || !errors.Is(err, unix.ENOENT) || clean == "/" {
		return fd, err
	}
	parent, err := mkdirAllInRoot(root, filepath.Dir(clean))
	if err != nil {
		return -1, err
	}
	err = unix.Mkdirat(parent, filepath.Base(clean), 0o755)
	unix.Close(parent)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("mkdir %s: %w", clean, err)
	}
	return openInRoot(root, clean, unix.O_PATH|unix.O_DIRECTORY)
}

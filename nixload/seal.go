package nixload

import (
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// sealTree takes the owner's write permission off the directories and
// regular files of a finished image tree, so that the owner's own tools
// (and anything that reaches the cache by a path the sandbox did not
// foresee) cannot plant a file such as etc/ld.so.preload in an image that
// every container of it runs. Only the owner's bit goes: the owner is the
// store's user, which a container maps to its root, who writes through
// the overlay regardless; the group and other bits, which decide what the
// container's other users may do, stay as the image has them. The store
// removes a sealed tree with removeAllForce.
func sealTree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if mode := st.Mode & 0o7777; mode&0o200 != 0 {
			return unix.Chmod(p, mode&^0o200)
		}
		return nil
	})
}

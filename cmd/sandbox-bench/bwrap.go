package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// bwrapArgv is a fresh bubblewrap sandbox running `true` over rootfs, with
// every namespace unshared. When the tree has the mount points bwrap needs
// it is bound read-only as /; Nix-built images often lack /proc, /dev and
// /tmp, and a read-only root cannot grow them, so then each top-level entry
// is bound into bwrap's own tmpfs root instead.
func bwrapArgv(bwrap, rootfs string) ([]string, error) {
	argv := []string{bwrap, "--unshare-all", "--die-with-parent"}
	if hasMountPoints(rootfs) {
		argv = append(argv, "--ro-bind", rootfs, "/")
	} else {
		binds, err := entryBinds(rootfs)
		if err != nil {
			return nil, err
		}
		argv = append(argv, binds...)
	}
	return append(argv, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
		"--setenv", "PATH", "/bin:/usr/bin", "--", "true"), nil
}

func hasMountPoints(rootfs string) bool {
	for _, d := range []string{"proc", "dev", "tmp"} {
		fi, err := os.Lstat(filepath.Join(rootfs, d))
		if err != nil || !fi.IsDir() {
			return false
		}
	}
	return true
}

// entryBinds recreates rootfs's top level: symlinks as symlinks, the rest
// bound read-only.
func entryBinds(rootfs string) ([]string, error) {
	entries, err := os.ReadDir(rootfs)
	if err != nil {
		return nil, fmt.Errorf("read rootfs %s: %w", rootfs, err)
	}
	var args []string
	for _, e := range entries {
		name := e.Name()
		if name == "proc" || name == "dev" || name == "tmp" {
			continue
		}
		src := filepath.Join(rootfs, name)
		if e.Type()&os.ModeSymlink != 0 {
			target, err := os.Readlink(src)
			if err != nil {
				return nil, fmt.Errorf("read rootfs link %s: %w", src, err)
			}
			args = append(args, "--symlink", target, "/"+name)
			continue
		}
		args = append(args, "--ro-bind", src, "/"+name)
	}
	return args, nil
}

package nixload

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

const opaqueMarker = whiteoutPrefix + whiteoutPrefix + ".opq"

// assemble builds rootfs/<hex(chain)>/ from published layers, unless it is
// already there. Files are hardlinks into the layers: no data is copied, and
// the tree must therefore never be written to.
func (s *Store) assemble(tmp *tempDir, chain string, diffIDs []string, meta imageFile) (*Image, error) {
	name := hexPart(chain)
	lock, err := flockFile(s.lockPath("rootfs-"+name), unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if img, err := s.readImage(name); err == nil {
		return img, s.refreshConfig(name, img, meta)
	}
	build := filepath.Join(tmp.path, "rootfs-"+name)
	root := filepath.Join(build, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("assemble rootfs: %w", err)
	}
	for i, d := range diffIDs {
		if err := applyLayer(s.layerDir(d), root); err != nil {
			return nil, fmt.Errorf("assemble rootfs: layer %d (%s): %w", i+1, short(d), err)
		}
	}
	if err := publishTree(build, s.rootfsDir(name), meta); err != nil {
		return nil, err
	}
	return s.readImage(name)
}

// refreshConfig rewrites image.json when an image with the same layers but
// another config (a changed Env or Cmd) is loaded: the tree is shared, the
// latest config wins, and the caller gets the config it loaded.
func (s *Store) refreshConfig(name string, img *Image, meta imageFile) error {
	old, err1 := json.Marshal(img.Config)
	cur, err2 := json.Marshal(meta.Config)
	if err1 == nil && err2 == nil && string(old) == string(cur) {
		return nil
	}
	meta.HostBinds = img.HostBinds
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return fmt.Errorf("encode image.json: %w", err)
	}
	if err := atomicWrite(filepath.Join(s.rootfsDir(name), "image.json"), b); err != nil {
		return fmt.Errorf("update image.json: %w", err)
	}
	img.Config = meta.Config
	return nil
}

// publishTree writes image.json beside root/ and renames the finished tree
// into place: a reader sees either nothing or the whole image.
func publishTree(build, final string, meta imageFile) error {
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return fmt.Errorf("encode image.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(build, "image.json"), b, 0o600); err != nil {
		return fmt.Errorf("write image.json: %w", err)
	}
	if err := os.Rename(build, final); err != nil {
		return fmt.Errorf("publish rootfs: %w", err)
	}
	return nil
}

// applyLayer merges one unpacked layer into dst with overlay semantics.
// The paths are plain joins because both trees are ours: every directory
// descended into in dst was checked (or made) a real directory first.
func applyLayer(src, dst string) error {
	ents, err := readDir(src)
	if err != nil {
		return err
	}
	if err := applyWhiteouts(ents, dst); err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), whiteoutPrefix) {
			continue
		}
		if err := applyEntry(e, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func readDir(dir string) ([]fs.DirEntry, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.ReadDir(-1)
}

// applyWhiteouts hides lower layers' content before this layer's own
// entries of the directory are added, wherever the markers were in the tar.
func applyWhiteouts(ents []fs.DirEntry, dst string) error {
	for _, e := range ents {
		name := e.Name()
		switch {
		case name == opaqueMarker:
			if err := clearDir(dst); err != nil {
				return fmt.Errorf("opaque directory %s: %w", dst, err)
			}
		case strings.HasPrefix(name, whiteoutPrefix):
			if err := os.RemoveAll(filepath.Join(dst, name[len(whiteoutPrefix):])); err != nil {
				return fmt.Errorf("whiteout: %w", err)
			}
		}
	}
	return nil
}

func clearDir(dir string) error {
	ents, err := readDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func applyEntry(e fs.DirEntry, src, dst string) error {
	switch e.Type() & fs.ModeType {
	case fs.ModeDir:
		info, err := e.Info()
		if err != nil {
			return err
		}
		if err := ensureDir(dst, info.Mode()); err != nil {
			return err
		}
		if err := applyLayer(src, dst); err != nil {
			return err
		}
		return copyMtime(dst, info)
	case fs.ModeSymlink:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := replacing(dst, func() error { return os.Symlink(target, dst) }); err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		return copyMtime(dst, info)
	case 0:
		return replacing(dst, func() error { return os.Link(src, dst) })
	}
	return nil // the extractor creates nothing else
}

// copyMtime gives a recreated directory or symlink its layer's mtime.
func copyMtime(dst string, src fs.FileInfo) error {
	ts := unix.NsecToTimespec(src.ModTime().UnixNano())
	return unix.UtimesNanoAt(unix.AT_FDCWD, dst, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// ensureDir makes dst a real directory with mode; an upper directory
// replaces a lower non-directory, and its mode wins over a lower one's.
func ensureDir(dst string, mode fs.FileMode) error {
	err := os.Mkdir(dst, 0o700)
	if errors.Is(err, fs.ErrExist) {
		st, lerr := os.Lstat(dst)
		if lerr != nil {
			return lerr
		}
		if !st.IsDir() {
			if err := os.Remove(dst); err != nil {
				return err
			}
			err = os.Mkdir(dst, 0o700)
		} else {
			err = nil
		}
	}
	if err != nil {
		return err
	}
	return os.Chmod(dst, mode&(fs.ModePerm|fs.ModeSticky)|0o700)
}

// replacing runs mk; if dst exists (from a lower layer) it is removed and
// mk retried.
func replacing(dst string, mk func() error) error {
	err := mk()
	if !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	return mk()
}

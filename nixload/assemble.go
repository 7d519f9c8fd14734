package nixload

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

const opaqueMarker = whiteoutPrefix + whiteoutPrefix + ".opq"

// layerRecord is layers/sha256-<hex>.json: what the layer's tree does not
// say itself. The store keeps every directory of a layer u+rwx, so that
// it can always add to, read and remove its own copy; the image's mode of
// each directory where that differs is kept here, and applied to the
// assembled tree, which then shows exactly the image's modes.
type layerRecord struct {
	// Modes are the image's modes (permission and sticky bits) of the
	// directories whose stored mode differs; "." is the layer's root.
	Modes map[string]uint32 `json:"modes,omitempty"`
	// Implicit are directories the layer's tar did not list, made only
	// as parents of its entries: a lower layer's mode of them stands.
	Implicit []string `json:"implicit,omitempty"`

	implicit map[string]bool
}

func (s *Store) readLayerRecord(diffID string) (*layerRecord, error) {
	b, err := os.ReadFile(s.layerRecordPath(diffID))
	if err != nil {
		return nil, err
	}
	var r layerRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("layer record %s is damaged: %w", short(diffID), err)
	}
	r.implicit = make(map[string]bool, len(r.Implicit))
	for _, p := range r.Implicit {
		r.implicit[p] = true
	}
	return &r, nil
}

// hasLayer reports whether the store holds the layer, record included. A
// layer dir without a record predates records; it is unpacked again.
func (s *Store) hasLayer(diffID string) bool {
	return exists(s.layerRecordPath(diffID)) && exists(s.layerDir(diffID))
}

// assemble builds trees/<hex(chain)>/ from published layers, unless it is
// already there, and returns the tree's name. Files are hardlinks into the
// layers: no data is copied, and the tree must therefore never be written
// to.
func (s *Store) assemble(tmp *tempDir, chain string, diffIDs []string) (string, error) {
	name := hexPart(chain)
	lock, err := flockFile(s.lockPath("tree-"+name), unix.LOCK_EX)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if exists(s.treeDir(name)) {
		return name, nil
	}
	build := filepath.Join(tmp.path, "tree-"+name)
	root := filepath.Join(build, "root")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", fmt.Errorf("assemble rootfs: %w", err)
	}
	a := &assembly{modes: map[string]uint32{"": 0o755}}
	for i, d := range diffIDs {
		rec, err := s.readLayerRecord(d)
		if err == nil {
			err = a.layer(s.layerDir(d), root, "", rec)
		}
		if err != nil {
			return "", fmt.Errorf("assemble rootfs: layer %d (%s): %w", i+1, short(d), err)
		}
	}
	// Sealed before the directories get their image modes: a directory
	// the image makes unreadable could not be walked afterwards.
	if err := sealTree(root); err != nil {
		return "", fmt.Errorf("make the image tree read-only: %w", err)
	}
	if err := a.applyModes(root); err != nil {
		return "", fmt.Errorf("assemble rootfs: %w", err)
	}
	meta := treeFile{ChainID: chain, Layers: diffIDs}
	if err := publishTree(build, s.treeDir(name), meta); err != nil {
		return "", err
	}
	return name, nil
}

// publishTree writes tree.json beside root/ and renames the finished tree
// into place: a reader sees either nothing or the whole tree.
func publishTree(build, final string, meta treeFile) error {
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return fmt.Errorf("encode tree.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(build, "tree.json"), b, 0o600); err != nil {
		return fmt.Errorf("write tree.json: %w", err)
	}
	if err := os.Rename(build, final); err != nil {
		return fmt.Errorf("publish rootfs: %w", err)
	}
	return nil
}

// assembly merges layers into one tree. Directories stay 0700 while
// layers are merged into them; modes holds each one's final mode, set by
// applyModes once every layer is in.
type assembly struct {
	modes map[string]uint32 // by path relative to the root ("" is the root)
}

// layer merges one unpacked layer (directory src, at rel in the tree)
// into dst with overlay semantics. The paths are plain joins because both
// trees are ours: every directory descended into in dst was checked (or
// made) a real directory first.
func (a *assembly) layer(src, dst, rel string, rec *layerRecord) error {
	if rel == "" {
		if m, ok := rec.Modes["."]; ok {
			a.modes[""] = m
		}
	}
	ents, err := readDir(src)
	if err != nil {
		return err
	}
	if err := a.whiteouts(ents, dst, rel); err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), whiteoutPrefix) {
			continue
		}
		if err := a.entry(e, rec, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()), join(rel, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func join(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}

func readDir(dir string) ([]fs.DirEntry, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.ReadDir(-1)
}

// whiteouts hide lower layers' content before this layer's own entries of
// the directory are added, wherever the markers were in the tar.
func (a *assembly) whiteouts(ents []fs.DirEntry, dst, rel string) error {
	for _, e := range ents {
		name := e.Name()
		target := strings.TrimPrefix(name, whiteoutPrefix)
		switch {
		case name == opaqueMarker:
			if err := clearDir(dst); err != nil {
				return fmt.Errorf("opaque directory %s: %w", dst, err)
			}
			a.forgetBelow(rel, true)
		case !strings.HasPrefix(name, whiteoutPrefix) || strings.HasPrefix(name, whiteoutPrefix+whiteoutPrefix):
		case validWhiteoutTarget(target):
			if err := os.RemoveAll(filepath.Join(dst, target)); err != nil {
				return fmt.Errorf("whiteout: %w", err)
			}
			a.forgetBelow(join(rel, target), false)
		}
	}
	return nil
}

// forgetBelow drops the recorded modes of a removed subtree (only of what
// is inside it when inside is true), so that a later layer making the same
// path again starts afresh.
func (a *assembly) forgetBelow(rel string, inside bool) {
	if !inside {
		delete(a.modes, rel)
	}
	prefix := rel + "/"
	if rel == "" {
		prefix = ""
	}
	for p := range a.modes {
		if p != "" && strings.HasPrefix(p, prefix) {
			delete(a.modes, p)
		}
	}
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

func (a *assembly) entry(e fs.DirEntry, rec *layerRecord, src, dst, rel string) error {
	switch e.Type() & fs.ModeType {
	case fs.ModeDir:
		info, err := e.Info()
		if err != nil {
			return err
		}
		created, err := ensureDir(dst)
		if err != nil {
			return err
		}
		implicit := rec.implicit[rel]
		if created {
			a.forgetBelow(rel, true)
		}
		if !implicit || created {
			a.modes[rel] = imageDirMode(rec, rel, info.Mode())
		}
		if err := a.layer(src, dst, rel, rec); err != nil {
			return err
		}
		if implicit && !created {
			return nil // the lower layer's directory, mtime included, stands
		}
		return copyMtime(dst, info)
	case fs.ModeSymlink:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := a.replacing(dst, rel, func() error { return os.Symlink(target, dst) }); err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		return copyMtime(dst, info)
	case 0, fs.ModeNamedPipe:
		// Regular files and FIFOs are the layer's own inodes.
		return a.replacing(dst, rel, func() error { return os.Link(src, dst) })
	}
	return nil // the extractor creates nothing else
}

// imageDirMode is the mode the image gives a directory: its record's, or
// else the stored one, which then is the image's.
func imageDirMode(rec *layerRecord, rel string, stored fs.FileMode) uint32 {
	if m, ok := rec.Modes[rel]; ok {
		return m
	}
	return uint32(stored.Perm()) | stickyBit(stored)
}

func stickyBit(m fs.FileMode) uint32 {
	if m&fs.ModeSticky != 0 {
		return unix.S_ISVTX
	}
	return 0
}

// applyModes gives every directory of the tree its image mode without the
// owner's write bit (the tree is sealed, sealTree), deepest first: a parent that the image makes unreadable or unsearchable is
// changed only after everything below it. Every path in modes is a
// directory this assembly made (replacing one forgets it), in a private
// temp dir, so a plain chmod cannot be led astray by a symlink.
func (a *assembly) applyModes(root string) error {
	paths := make([]string, 0, len(a.modes))
	for p := range a.modes {
		paths = append(paths, p)
	}
	depth := func(p string) int {
		if p == "" {
			return -1
		}
		return strings.Count(p, "/")
	}
	sort.Slice(paths, func(i, j int) bool {
		if di, dj := depth(paths[i]), depth(paths[j]); di != dj {
			return di > dj
		}
		return paths[i] < paths[j]
	})
	for _, p := range paths {
		if err := unix.Chmod(filepath.Join(root, p), a.modes[p]&^0o200); err != nil {
			return fmt.Errorf("set the mode of /%s: %w", p, err)
		}
	}
	return nil
}

// copyMtime gives a recreated directory or symlink its layer's mtime.
func copyMtime(dst string, src fs.FileInfo) error {
	ts := unix.NsecToTimespec(src.ModTime().UnixNano())
	return unix.UtimesNanoAt(unix.AT_FDCWD, dst, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// ensureDir makes dst a real directory (0700 until applyModes); an upper
// directory replaces a lower non-directory. created reports whether it
// was made here.
func ensureDir(dst string) (created bool, err error) {
	err = os.Mkdir(dst, 0o700)
	if !errors.Is(err, fs.ErrExist) {
		return err == nil, err
	}
	st, err := os.Lstat(dst)
	if err != nil {
		return false, err
	}
	if st.IsDir() {
		return false, nil
	}
	if err := os.Remove(dst); err != nil {
		return false, err
	}
	return true, os.Mkdir(dst, 0o700)
}

// replacing runs mk; if dst exists (from a lower layer) it is removed and
// mk retried.
func (a *assembly) replacing(dst, rel string, mk func() error) error {
	err := mk()
	if !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	a.forgetBelow(rel, false)
	return mk()
}

package nixload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// fileEntry is sources/file-<hash(path)>.json: the stat of an image file
// when it was loaded, and what it loaded to.
type fileEntry struct {
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	MtimeNS int64  `json:"mtime_ns"`
	Inode   uint64 `json:"inode"`
	Dev     uint64 `json:"dev"`
	ChainID string `json:"chain_id"`
}

// LoadFileCached returns the image loaded earlier from the same unchanged
// file (same path, size, mtime, inode) without reading it, else LoadFile.
func (s *Store) LoadFileCached(ctx context.Context, file string, progress io.Writer) (*Image, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", file, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("load %s: cannot read the image: %w", file, err)
	}
	want := statEntry(abs, st)
	entryPath := s.fileEntryPath(abs)
	if got, ok := readFileEntry(entryPath); ok && sameStat(got, want) {
		if img, err := s.Lookup(got.ChainID); err == nil {
			return img, nil
		}
	}
	img, err := s.LoadFile(ctx, abs, progress)
	if err != nil {
		return nil, err
	}
	want.ChainID = img.ChainID
	if b, err := json.Marshal(want); err == nil {
		// A failed cache write only costs a re-read next time.
		_ = atomicWrite(entryPath, b)
	}
	return img, nil
}

func (s *Store) fileEntryPath(abs string) string {
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join(s.root, "sources", "file-"+hex.EncodeToString(sum[:16])+".json")
}

func statEntry(abs string, st os.FileInfo) fileEntry {
	e := fileEntry{Path: abs, Size: st.Size(), MtimeNS: st.ModTime().UnixNano()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		e.Inode, e.Dev = sys.Ino, sys.Dev
	}
	return e
}

func sameStat(a, b fileEntry) bool {
	return a.Path == b.Path && a.Size == b.Size && a.MtimeNS == b.MtimeNS && a.Inode == b.Inode && a.Dev == b.Dev
}

func readFileEntry(p string) (fileEntry, bool) {
	var e fileEntry
	b, err := os.ReadFile(p)
	if err != nil || json.Unmarshal(b, &e) != nil || e.ChainID == "" {
		return e, false
	}
	return e, true
}

// atomicWrite replaces path so readers see the old or the new content.
func atomicWrite(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		os.Remove(f.Name())
	}
	return werr
}

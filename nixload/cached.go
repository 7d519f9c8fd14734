package nixload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// FileSource is an --image value: an image file, or FILE:REF naming one
// image of an archive that holds several.
type FileSource struct {
	Path string // absolute
	Ref  string
	// absent are the longer readings of the value as a path, which must
	// stay absent for the split to mean the same (see ParseFileSource).
	absent []string
}

// ParseFileSource reads an --image value. The whole value is a path when
// such a path exists; otherwise the value is FILE:REF at the last ":"
// whose left side exists (a REF may hold ":" itself, "busybox:latest",
// and so may a FILE). A value that names nothing is returned whole, for
// the load to report.
func ParseFileSource(value string) (FileSource, error) {
	whole, err := filepath.Abs(value)
	if err != nil {
		return FileSource{}, fmt.Errorf("image %s: %w", value, err)
	}
	if exists(value) {
		return FileSource{Path: whole}, nil
	}
	absent := []string{whole}
	for i := strings.LastIndexByte(value, ':'); i > 0; i = strings.LastIndexByte(value[:i], ':') {
		file, ref := value[:i], value[i+1:]
		if ref == "" {
			continue
		}
		abs, err := filepath.Abs(file)
		if err != nil {
			return FileSource{}, fmt.Errorf("image %s: %w", value, err)
		}
		if exists(file) {
			return FileSource{Path: abs, Ref: ref, absent: absent}, nil
		}
		absent = append(absent, abs)
	}
	return FileSource{Path: whole}, nil
}

// String is the value back, as the user could write it.
func (f FileSource) String() string {
	if f.Ref == "" {
		return f.Path
	}
	return f.Path + ":" + f.Ref
}

// fileEntry is sources/file-<hash(path, ref)>.json: the identity of an
// image file when it was loaded, and the image it loaded to.
type fileEntry struct {
	Path string `json:"path"`
	Ref  string `json:"ref,omitempty"`
	// Real is what Path resolves to: a `result` symlink that nix points
	// at a new build is a new image even when the stat data agree.
	Real string `json:"real"`
	// Store: Real is in the Nix store, where a path never changes
	// content; the path is the identity, and the stat data are not kept.
	Store   bool   `json:"store,omitempty"`
	Size    int64  `json:"size,omitempty"`
	MtimeNS int64  `json:"mtime_ns,omitempty"`
	CtimeNS int64  `json:"ctime_ns,omitempty"`
	Inode   uint64 `json:"inode,omitempty"`
	Dev     uint64 `json:"dev,omitempty"`
	// SeenNS is when the identity was taken. A file changed less than
	// racyWindow before may change again within the same timestamp tick,
	// unseen: such an entry only keeps its image from GC, it never hits.
	SeenNS  int64  `json:"seen_ns"`
	ImageID string `json:"image_id"`
}

// sameIdentity compares two identities of a file (not the image or the time).
func sameIdentity(a, b fileEntry) bool {
	return a.Path == b.Path && a.Ref == b.Ref && a.Real == b.Real && a.Store == b.Store &&
		a.Size == b.Size && a.MtimeNS == b.MtimeNS && a.CtimeNS == b.CtimeNS && a.Inode == b.Inode && a.Dev == b.Dev
}

// racy reports whether the file had changed too shortly before its
// identity was taken for the identity to prove it unchanged.
func (e fileEntry) racy() bool {
	return !e.Store && e.SeenNS-max(e.MtimeNS, e.CtimeNS) < int64(racyWindow)
}

// storeDir is where Nix keeps its immutable store paths.
const storeDir = "/nix/store/"

// fileIdentity says what a rebuild of the file at path always changes:
// what path resolves to and, outside the Nix store, its size, mtime,
// ctime (to the nanosecond: a rewrite at the same path, with the same
// size, mtime 1 and even the same inode, still gets a new ctime), inode
// and device. A Nix store path is immutable: there the resolved path is
// the identity, as long as the file looks as Nix leaves store files.
func fileIdentity(src FileSource, now time.Time) (fileEntry, error) {
	e := fileEntry{Path: src.Path, Ref: src.Ref, SeenNS: now.UnixNano()}
	real, err := filepath.EvalSymlinks(src.Path)
	if err != nil {
		return e, err
	}
	e.Real = real
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		return e, err
	}
	if strings.HasPrefix(real, storeDir) && st.Mode&0o222 == 0 && st.Mtim.Sec <= 1 {
		e.Store = true
		return e, nil
	}
	e.Size, e.MtimeNS, e.CtimeNS = st.Size, st.Mtim.Nano(), st.Ctim.Nano()
	e.Inode, e.Dev = st.Ino, st.Dev
	return e, nil
}

// LoadFileCached returns the image loaded earlier from the same unchanged
// file (same identity, see fileIdentity) without reading it, else loads
// it with LoadFile and records it for next time.
func (s *Store) LoadFileCached(ctx context.Context, src FileSource, o LoadOptions) (*Image, error) {
	o.Ref = src.Ref
	want, err := fileIdentity(src, s.now())
	if err != nil {
		return nil, fmt.Errorf("load %s: cannot read the image: %w", src.Path, err)
	}
	entryPath := s.fileEntryPath(src)
	if got, ok := readFileEntry(entryPath); ok && !o.Refresh && sameIdentity(got, want) && !got.racy() {
		if img, err := s.Lookup(got.ImageID); err == nil {
			return img, nil
		}
	}
	img, err := s.LoadFile(ctx, src.Path, o)
	if err != nil {
		return nil, err
	}
	want.ImageID = img.ID
	if b, err := json.Marshal(want); err == nil {
		// A failed cache write only costs a re-read next time.
		_ = atomicWrite(entryPath, b)
	}
	return img, nil
}

func (s *Store) fileEntryPath(src FileSource) string {
	sum := sha256.Sum256([]byte(src.Path + "\x00" + src.Ref))
	return filepath.Join(s.root, "sources", "file-"+hex.EncodeToString(sum[:16])+".json")
}

func readFileEntry(p string) (fileEntry, bool) {
	var e fileEntry
	b, err := os.ReadFile(p)
	if err != nil || json.Unmarshal(b, &e) != nil || e.ImageID == "" {
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

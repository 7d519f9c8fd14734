package nixload

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/flagvalue"
)

// Limits caps what one load may unpack. A header claiming more than
// what is left is rejected before anything of it is written.
type Limits struct {
	// MaxTotalBytes caps the sum of the regular files' sizes (holes
	// included) that one load unpacks, over all layers.
	MaxTotalBytes int64
	MaxEntries    int64 // tar entries over all layers of one load
}

// DefaultMaxImageBytes is the default cap on what one image unpacks to:
// above the largest images in common use, below what fills a disk.
const DefaultMaxImageBytes = 32 << 30

// DefaultLimits are generous for real images and still stop bombs.
func DefaultLimits() Limits {
	return Limits{MaxTotalBytes: DefaultMaxImageBytes, MaxEntries: 4 << 20}
}

// budget is what remains of the Limits during one load.
type budget struct {
	lim     Limits
	bytes   int64
	entries int64
	devices []string // device nodes skipped, which a rootless loader cannot make
}

const whiteoutPrefix = ".wh."

// entryError is an extraction failure attributed to one tar entry.
type entryError struct {
	name string
	err  error
}

func (e *entryError) Error() string { return fmt.Sprintf("entry %q: %v", e.name, e.err) }
func (e *entryError) Unwrap() error { return e.err }

var (
	errEscape  = errors.New("path escapes the image root")
	errNUL     = errors.New("name contains a NUL byte")
	errEntries = errors.New("image has more entries than the limit")
)

// LimitError is a load stopped by Limits.MaxTotalBytes.
type LimitError struct{ Limit int64 }

func (e *LimitError) Error() string {
	return fmt.Sprintf("the image unpacks to more than %s, the limit for one image; if you trust it, raise the limit with --max-image-size", flagvalue.HumanSize(e.Limit))
}

// cleanName turns a member name into in-root path components: a leading "/"
// or "./" is dropped, "." components vanish, ".." and NUL are rejected.
func cleanName(name string) ([]string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return nil, errNUL
	}
	var out []string
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return nil, errEscape
		}
		out = append(out, c)
	}
	return out, nil
}

// extractor writes one layer's entries below a directory it holds open.
// Every path is resolved from that fd with RESOLVE_IN_ROOT, so neither
// "..", nor symlinks (absolute or relative) in the layer can reach outside.
type extractor struct {
	ctx    context.Context // checked per entry, so a cancelled load stops mid-layer
	rootFd int
	b      *budget
	buf    []byte
	dirs   map[string]int // open parent directories, by in-root path
	// dirTimes are applied after the layer is written, since adding
	// entries changes a directory's mtime.
	dirTimes []dirTime
	rec      layerRecord // the directory modes the stored tree does not show
}

type dirTime struct {
	parent []string
	base   string
	mtime  time.Time
}

func newExtractor(ctx context.Context, dir string, b *budget, buf []byte) (*extractor, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open layer dir: %w", err)
	}
	return &extractor{ctx: ctx, rootFd: fd, b: b, buf: buf, dirs: map[string]int{},
		rec: layerRecord{Modes: map[string]uint32{}, implicit: map[string]bool{}}}, nil
}

func (x *extractor) close() {
	x.forgetDirs()
	unix.Close(x.rootFd)
}

// forgetDirs drops cached parent fds; called whenever something is removed,
// since a cached fd could then name a directory no longer in the tree.
func (x *extractor) forgetDirs() {
	for k, fd := range x.dirs {
		unix.Close(fd)
		delete(x.dirs, k)
	}
}

// extract reads a whole layer tar from r.
func (x *extractor) extract(r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return x.applyDirTimes()
		}
		if err != nil {
			return fmt.Errorf("read layer: %w", err)
		}
		if err := x.ctx.Err(); err != nil {
			return err
		}
		if err := x.entry(h, tr); err != nil {
			return &entryError{name: h.Name, err: err}
		}
	}
}

// record is the layer's record once it is extracted.
func (x *extractor) record() *layerRecord {
	r := x.rec
	r.Implicit = make([]string, 0, len(r.implicit))
	for p := range r.implicit {
		r.Implicit = append(r.Implicit, p)
	}
	sort.Strings(r.Implicit)
	return &r
}

func (x *extractor) entry(h *tar.Header, r io.Reader) error {
	comps, err := cleanName(h.Name)
	if err != nil {
		return err
	}
	x.b.entries++
	if x.b.entries > x.b.lim.MaxEntries {
		return errEntries
	}
	if len(comps) == 0 {
		if h.Typeflag == tar.TypeDir {
			x.recordMode(".", h.Mode)
		}
		return nil // the layer root itself
	}
	parent, base := comps[:len(comps)-1], comps[len(comps)-1]
	if strings.HasPrefix(base, whiteoutPrefix) {
		return x.whiteout(parent, base)
	}
	switch h.Typeflag {
	case tar.TypeDir:
		return x.dir(parent, base, h)
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		return x.file(parent, base, h, r)
	case tar.TypeSymlink:
		return x.symlink(parent, base, h)
	case tar.TypeLink:
		return x.hardlink(parent, base, h.Linkname)
	case tar.TypeFifo:
		return x.fifo(parent, base, h)
	case tar.TypeChar, tar.TypeBlock:
		x.b.devices = append(x.b.devices, strings.Join(comps, "/"))
		return nil
	default:
		return nil // metadata-only types (PAX/GNU headers are consumed by the reader)
	}
}

// whiteout checks a whiteout entry's name and records it as a marker. The
// marker's own type and content do not matter (as for containerd); a name
// that would delete the directory itself or its parent is refused.
func (x *extractor) whiteout(parent []string, base string) error {
	switch target := strings.TrimPrefix(base, whiteoutPrefix); {
	case base == opaqueMarker:
	case strings.HasPrefix(base, whiteoutPrefix+whiteoutPrefix):
		return nil // other ".wh..wh." names are aufs metadata, ignored as containerd does
	case !validWhiteoutTarget(target):
		return fmt.Errorf("invalid whiteout: %q would delete no entry of its directory (only .wh.NAME and %s are whiteouts)", base, opaqueMarker)
	}
	return x.marker(parent, base)
}

// validWhiteoutTarget is a name a ".wh." whiteout may delete: never the
// directory itself or its parent.
func validWhiteoutTarget(name string) bool { return name != "" && name != "." && name != ".." }

// applyDirTimes sets directory mtimes, deepest last-seen first.
func (x *extractor) applyDirTimes() error {
	for i := len(x.dirTimes) - 1; i >= 0; i-- {
		d := x.dirTimes[i]
		pfd, err := x.parentFd(d.parent)
		if err != nil {
			return fmt.Errorf("directory %q: %w", d.base, err)
		}
		if err := setMtime(pfd, d.base, d.mtime); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("directory %q: set mtime: %w", d.base, err)
		}
	}
	return nil
}

// setMtime keeps the image's timestamps: Nix trees carry mtime 1, and
// Python's bytecode caches are only valid when the source mtime matches.
func setMtime(pfd int, name string, mtime time.Time) error {
	ts := unix.NsecToTimespec(mtime.UnixNano())
	return unix.UtimesNanoAt(pfd, name, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// parentFd returns an fd for the in-root directory comps, creating missing
// directories (tars often omit parents).
func (x *extractor) parentFd(comps []string) (int, error) {
	if len(comps) == 0 {
		return x.rootFd, nil
	}
	key := strings.Join(comps, "/")
	if fd, ok := x.dirs[key]; ok {
		return fd, nil
	}
	fd, err := x.resolve(key)
	if errors.Is(err, unix.ENOENT) {
		fd, err = x.mkdirParent(comps)
	}
	if err != nil {
		return -1, fmt.Errorf("parent %q is %w", key, err)
	}
	if len(x.dirs) >= 256 {
		x.forgetDirs()
	}
	x.dirs[key] = fd
	return fd, nil
}

func (x *extractor) mkdirParent(comps []string) (int, error) {
	up, err := x.parentFd(comps[:len(comps)-1])
	if err != nil {
		return -1, err
	}
	last := comps[len(comps)-1]
	err = unix.Mkdirat(up, last, 0o755)
	if err == nil {
		x.rec.implicit[strings.Join(comps, "/")] = true
	} else if !errors.Is(err, unix.EEXIST) {
		return -1, err
	}
	fd, err := unix.Openat(up, last, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
		var st unix.Stat_t
		if unix.Fstatat(up, last, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return -1, errors.New("a symlink to a directory that is not in this layer")
		}
		return -1, errors.New("not a directory")
	}
	return fd, err
}

// resolve opens an existing directory, following symlinks only within the root.
func (x *extractor) resolve(rel string) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	for {
		fd, err := unix.Openat2(x.rootFd, rel, &how)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		return fd, err
	}
}

// imageMode is what the image may set: permissions and the sticky bit.
// setuid and setgid are never kept.
func imageMode(m int64) uint32 { return uint32(m) & 0o1777 }

// storedDirMode is how the store keeps a directory of a layer: the
// image's mode plus u+rwx, so the store can always add to, read and
// remove its own copy. The image's mode goes to the layer's record when
// it differs, and is what the assembled tree shows.
func storedDirMode(m int64) uint32 { return imageMode(m) | 0o700 }

// fileMode strips setuid, setgid and sticky.
func fileMode(m int64) uint32 { return uint32(m) & 0o777 }

// recordMode notes a directory's image mode where the stored one differs.
func (x *extractor) recordMode(rel string, mode int64) {
	if imageMode(mode) != storedDirMode(mode) {
		x.rec.Modes[rel] = imageMode(mode)
	} else {
		delete(x.rec.Modes, rel)
	}
}

// forgetBelow drops the record of a directory removed from the layer.
func (x *extractor) forgetBelow(rel string) {
	delete(x.rec.implicit, rel)
	delete(x.rec.Modes, rel)
	prefix := rel + "/"
	for p := range x.rec.Modes {
		if strings.HasPrefix(p, prefix) {
			delete(x.rec.Modes, p)
		}
	}
	for p := range x.rec.implicit {
		if strings.HasPrefix(p, prefix) {
			delete(x.rec.implicit, p)
		}
	}
}

func (x *extractor) dir(parent []string, base string, h *tar.Header) error {
	pfd, err := x.parentFd(parent)
	if err != nil {
		return err
	}
	rel := strings.Join(append(parent[:len(parent):len(parent)], base), "/")
	var st unix.Stat_t
	err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
	case err == nil:
		if err := x.removeAt(pfd, base, rel, &st); err != nil {
			return err
		}
		fallthrough
	case errors.Is(err, unix.ENOENT):
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
	default:
		return fmt.Errorf("stat: %w", err)
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, storedDirMode(h.Mode)); err != nil {
		return fmt.Errorf("chmod directory: %w", err)
	}
	delete(x.rec.implicit, rel)
	x.recordMode(rel, h.Mode)
	x.dirTimes = append(x.dirTimes, dirTime{parent: parent, base: base, mtime: h.ModTime})
	return setXattrs(fd, h)
}

// removeAt deletes an existing entry that a later entry replaces.
func (x *extractor) removeAt(pfd int, name, rel string, st *unix.Stat_t) error {
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlinkat(pfd, name, 0); err != nil {
			return fmt.Errorf("replace: %w", err)
		}
		return nil
	}
	x.forgetDirs()
	x.forgetBelow(rel)
	if err := removeTreeAt(pfd, name); err != nil {
		return fmt.Errorf("replace directory: %w", err)
	}
	return nil
}

// removeTreeAt removes a directory tree relative to a directory fd, never
// following symlinks.
func removeTreeAt(pfd int, name string) error {
	fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	names, err := readDirNames(fd)
	if err == nil {
		for _, n := range names {
			var st unix.Stat_t
			if err = unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				break
			}
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				err = removeTreeAt(fd, n)
			} else {
				err = unix.Unlinkat(fd, n, 0)
			}
			if err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	return unix.Unlinkat(pfd, name, unix.AT_REMOVEDIR)
}

func readDirNames(fd int) ([]string, error) {
	dup, err := unix.Dup(fd)
	if err != nil {
		return nil, err
	}
	f := newDirFile(dup)
	defer f.Close()
	return f.Readdirnames(-1)
}

// create runs mk, and when the name is taken, removes the old entry once
// and retries: a later tar entry replaces an earlier one.
func (x *extractor) create(pfd int, parent []string, base string, mk func() error) error {
	err := mk()
	if !errors.Is(err, unix.EEXIST) {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	rel := strings.Join(append(parent[:len(parent):len(parent)], base), "/")
	if err := x.removeAt(pfd, base, rel, &st); err != nil {
		return err
	}
	return mk()
}

func (x *extractor) file(parent []string, base string, h *tar.Header, r io.Reader) error {
	if h.Size < 0 {
		return fmt.Errorf("invalid size %d", h.Size)
	}
	if h.Size > x.b.lim.MaxTotalBytes-x.b.bytes {
		return &LimitError{Limit: x.b.lim.MaxTotalBytes}
	}
	x.b.bytes += h.Size
	pfd, err := x.parentFd(parent)
	if err != nil {
		return err
	}
	fd := -1
	err = x.create(pfd, parent, base, func() error {
		var e error
		fd, e = unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		return e
	})
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	defer unix.Close(fd)
	if err := x.copyBody(fd, r, h.Size); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, fileMode(h.Mode)); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if err := setXattrs(fd, h); err != nil {
		return err
	}
	if err := setMtime(pfd, base, h.ModTime); err != nil {
		return fmt.Errorf("set mtime: %w", err)
	}
	return nil
}

// holeBlock is the granularity at which runs of zeros become holes: a
// file system block.
const holeBlock = 4096

var zeroBlock [holeBlock]byte

// copyBody writes size bytes of r to fd, skipping (not writing) every
// block-aligned run of zeros, so a sparse file, or a run of zeros a
// compressor made tiny, stays a hole on disk instead of filling it.
func (x *extractor) copyBody(fd int, r io.Reader, size int64) error {
	var off, end int64 // end: just past the last byte written
	for off < size {
		want := int64(len(x.buf))
		if rest := size - off; rest < want {
			want = rest
		}
		n, err := io.ReadFull(r, x.buf[:want])
		if n > 0 {
			last, werr := writeSparse(fd, x.buf[:n], off)
			if werr != nil {
				return fmt.Errorf("write: %w", werr)
			}
			end = max(end, last)
			off += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
	}
	if off != size {
		return fmt.Errorf("read: %w", io.ErrUnexpectedEOF)
	}
	if end < size {
		// A file ending in a hole gets its length from the truncate.
		if err := unix.Ftruncate(fd, size); err != nil {
			return fmt.Errorf("set size: %w", err)
		}
	}
	return nil
}

// writeSparse writes b at file offset off, leaving out the blocks (aligned
// to holeBlock in the file) that are all zeros. last is the file offset
// just past the last byte it wrote (0 if none).
func writeSparse(fd int, b []byte, off int64) (last int64, err error) {
	for len(b) > 0 {
		// The piece up to the next block boundary of the file.
		n := holeBlock - int(off%holeBlock)
		if n > len(b) {
			n = len(b)
		}
		if bytes.Equal(b[:n], zeroBlock[:n]) {
			b, off = b[n:], off+int64(n)
			continue
		}
		// Extend the write over following non-zero blocks.
		end := n
		for end < len(b) {
			m := min(holeBlock, len(b)-end)
			if bytes.Equal(b[end:end+m], zeroBlock[:m]) {
				break
			}
			end += m
		}
		if err := pwriteFull(fd, b[:end], off); err != nil {
			return last, err
		}
		b, off = b[end:], off+int64(end)
		last = off
	}
	return last, nil
}

func pwriteFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// marker records a whiteout as an empty file, applied when the rootfs is
// assembled; it never deletes anything in the layer itself.
func (x *extractor) marker(parent []string, base string) error {
	pfd, err := x.parentFd(parent)
	if err != nil {
		return err
	}
	fd := -1
	err = x.create(pfd, parent, base, func() error {
		var e error
		fd, e = unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		return e
	})
	if err != nil {
		return fmt.Errorf("whiteout: %w", err)
	}
	return unix.Close(fd)
}

func (x *extractor) symlink(parent []string, base string, h *tar.Header) error {
	target := h.Linkname
	if strings.IndexByte(target, 0) >= 0 {
		return errNUL
	}
	pfd, err := x.parentFd(parent)
	if err != nil {
		return err
	}
	if err := x.create(pfd, parent, base, func() error { return unix.Symlinkat(target, pfd, base) }); err != nil {
		return fmt.Errorf("symlink: %w", err)
	}
	if err := setMtime(pfd, base, h.ModTime); err != nil {
		return fmt.Errorf("set mtime: %w", err)
	}
	return nil
}

// fifo makes a named pipe; mkfifo needs no privilege.
func (x *extractor) fifo(parent []string, base string, h *tar.Header) error {
	pfd, err := x.parentFd(parent)
	if err != nil {
		return err
	}
	if err := x.create(pfd, parent, base, func() error { return unix.Mkfifoat(pfd, base, fileMode(h.Mode)) }); err != nil {
		return fmt.Errorf("mkfifo: %w", err)
	}
	// mkfifo's mode is masked by the umask; the image's mode stands.
	if err := unix.Fchmodat(pfd, base, fileMode(h.Mode), 0); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if err := setMtime(pfd, base, h.ModTime); err != nil {
		return fmt.Errorf("set mtime: %w", err)
	}
	return nil
}

// hardlink links to an entry (of any kind but a directory) this layer
// already holds: a regular file, a symlink or a FIFO, as podman and
// docker accept. The target's parent is resolved in the root, and the
// target itself is linked, never followed.
func (x *extractor) hardlink(parent []string, base, target string) error {
	tcomps, err := cleanName(target)
	if err != nil {
		return fmt.Errorf("hardlink target %q: %w", target, err)
	}
	if len(tcomps) == 0 {
		return fmt.Errorf("hardlink target %q: not a file", target)
	}
	notHere := fmt.Errorf("hardlink target %q is not an entry already in this layer (or is a directory)", target)
	var tfd int
	if len(tcomps) == 1 {
		tfd, err = unix.Dup(x.rootFd)
	} else {
		tfd, err = x.resolve(strings.Join(tcomps[:len(tcomps)-1], "/"))
	}
	if err != nil {
		return notHere
	}
	defer unix.Close(tfd)
	tbase := tcomps[len(tcomps)-1]
	var st unix.Stat_t
	if err := unix.Fstatat(tfd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return notHere
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFLNK, unix.S_IFIFO:
	default:
		return notHere
	}
	if strings.HasPrefix(tbase, whiteoutPrefix) {
		return notHere // a whiteout marker is no entry of the image
	}
	pfd, err := x.parentFd(parent)
	if err != nil {
		return err
	}
	// linkat without AT_SYMLINK_FOLLOW links a symlink itself.
	if err := x.create(pfd, parent, base, func() error { return unix.Linkat(tfd, tbase, pfd, base, 0) }); err != nil {
		return fmt.Errorf("hardlink: %w", err)
	}
	return nil
}

// setXattrs applies only user.* attributes; others could change security
// labels or capabilities. Filesystems without user xattrs are tolerated.
func setXattrs(fd int, h *tar.Header) error {
	for k, v := range h.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || !strings.HasPrefix(name, "user.") {
			continue
		}
		err := unix.Fsetxattr(fd, name, []byte(v), 0)
		if err != nil && !errors.Is(err, unix.ENOTSUP) && !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("xattr %s: %w", name, err)
		}
	}
	return nil
}

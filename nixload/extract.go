package nixload

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Limits caps what one image may put on disk. A header claiming more than
// MaxFileBytes is rejected before anything of it is written.
type Limits struct {
	MaxTotalBytes int64 // sum of regular file sizes over all layers of one image
	MaxEntries    int64 // tar entries over all layers of one image
	MaxFileBytes  int64 // one regular file
}

// DefaultLimits are generous for real images and still stop bombs.
func DefaultLimits() Limits {
	return Limits{MaxTotalBytes: 64 << 30, MaxEntries: 4 << 20, MaxFileBytes: 16 << 30}
}

// budget is what remains of the Limits during one load.
type budget struct {
	lim     Limits
	bytes   int64
	entries int64
	skipped int64 // devices and fifos, which are never created
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
	errTooBig  = errors.New("file is larger than the per-file limit")
	errTotal   = errors.New("image is larger than the total size limit")
	errEntries = errors.New("image has more entries than the limit")
)

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
	return &extractor{ctx: ctx, rootFd: fd, b: b, buf: buf, dirs: map[string]int{}}, nil
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
		return nil // the layer root itself
	}
	parent, base := comps[:len(comps)-1], comps[len(comps)-1]
	switch h.Typeflag {
	case tar.TypeDir:
		return x.dir(parent, base, h)
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		if strings.HasPrefix(base, whiteoutPrefix) {
			return x.marker(parent, base)
		}
		return x.file(parent, base, h, r)
	case tar.TypeSymlink:
		return x.symlink(parent, base, h)
	case tar.TypeLink:
		return x.hardlink(parent, base, h.Linkname)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		x.b.skipped++
		return nil
	default:
		return nil // metadata-only types (PAX/GNU headers are consumed by the reader)
	}
}

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
	if err := unix.Mkdirat(up, last, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
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

// dirMode keeps the image's mode but always u+rwx, so the cache stays
// removable and renamable, and never setuid/setgid.
func dirMode(m int64) uint32 { return uint32(m)&0o1777 | 0o700 }

// fileMode strips setuid, setgid and sticky.
func fileMode(m int64) uint32 { return uint32(m) & 0o777 }

func (x *extractor) dir(parent []string, base string, h *tar.Header) error {
	pfd, err := x.parentFd(parent)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
	case err == nil:
		if err := x.removeAt(pfd, base, &st); err != nil {
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
	if err := unix.Fchmod(fd, dirMode(h.Mode)); err != nil {
		return fmt.Errorf("chmod directory: %w", err)
	}
	x.dirTimes = append(x.dirTimes, dirTime{parent: parent, base: base, mtime: h.ModTime})
	return setXattrs(fd, h)
}

// removeAt deletes an existing entry that a later entry replaces.
func (x *extractor) removeAt(pfd int, name string, st *unix.Stat_t) error {
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlinkat(pfd, name, 0); err != nil {
			return fmt.Errorf("replace: %w", err)
		}
		return nil
	}
	x.forgetDirs()
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
func (x *extractor) create(pfd int, base string, mk func() error) error {
	err := mk()
	if !errors.Is(err, unix.EEXIST) {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	if err := x.removeAt(pfd, base, &st); err != nil {
		return err
	}
	return mk()
}

func (x *extractor) file(parent []string, base string, h *tar.Header, r io.Reader) error {
	if h.Size < 0 || h.Size > x.b.lim.MaxFileBytes {
		return fmt.Errorf("%w (%d bytes claimed)", errTooBig, h.Size)
	}
	if x.b.bytes+h.Size > x.b.lim.MaxTotalBytes {
		return errTotal
	}
	x.b.bytes += h.Size
	pfd, err := x.parentFd(parent)
	if err != nil {
		return err
	}
	fd := -1
	err = x.create(pfd, base, func() error {
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

func (x *extractor) copyBody(fd int, r io.Reader, size int64) error {
	var done int64
	for done < size {
		n, err := r.Read(x.buf)
		if n > 0 {
			if werr := writeFull(fd, x.buf[:n]); werr != nil {
				return fmt.Errorf("write: %w", werr)
			}
			done += int64(n)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
	}
	if done != size {
		return fmt.Errorf("read: %w", io.ErrUnexpectedEOF)
	}
	return nil
}

func writeFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
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
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
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
	if err := x.create(pfd, base, func() error { return unix.Symlinkat(target, pfd, base) }); err != nil {
		return fmt.Errorf("symlink: %w", err)
	}
	if err := setMtime(pfd, base, h.ModTime); err != nil {
		return fmt.Errorf("set mtime: %w", err)
	}
	return nil
}

// hardlink links to a regular file this layer already holds; the target's
// parent is resolved in the root and the target itself is never followed.
func (x *extractor) hardlink(parent []string, base, target string) error {
	tcomps, err := cleanName(target)
	if err != nil {
		return fmt.Errorf("hardlink target %q: %w", target, err)
	}
	if len(tcomps) == 0 {
		return fmt.Errorf("hardlink target %q: not a file", target)
	}
	var tfd int
	if len(tcomps) == 1 {
		tfd, err = unix.Dup(x.rootFd)
	} else {
		tfd, err = x.resolve(strings.Join(tcomps[:len(tcomps)-1], "/"))
	}
	if err != nil {
		return fmt.Errorf("hardlink target %q is not a regular file already in this layer", target)
	}
	defer unix.Close(tfd)
	tbase := tcomps[len(tcomps)-1]
	var st unix.Stat_t
	if err := unix.Fstatat(tfd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("hardlink target %q is not a regular file already in this layer", target)
	}
	pfd, err := x.parentFd(parent)
	if err != nil {
		return err
	}
	if err := x.create(pfd, base, func() error { return unix.Linkat(tfd, tbase, pfd, base, 0) }); err != nil {
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

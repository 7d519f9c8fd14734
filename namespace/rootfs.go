package namespace

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

// rootLayout is where the overlay's pieces live.
type rootLayout struct {
	scratch string // tmpfs holding lower, upper and work; "" when on disk
	// mounts holds the dirs bound at /tmp, /run, /var/tmp and /dev/shm
	// (oci.Config.Scratch), on the scratch tmpfs, or on a tmpfs
	// of its own (volatileTmpfs) when the upper layer is on disk.
	mounts        string
	volatileTmpfs bool
	lower         string // mountpoint of the read-only bind of the cached rootfs
	upper         string
	work          string
	merged        string
	state         string   // libcontainer's state root
	staged        []string // binds staged with their covers (stageCovers)
}

// stagingDir is where stageCovers binds the sources that hold covers:
// on the scratch tmpfs, else beside the merged dir.
func (l rootLayout) stagingDir() string {
	if l.scratch != "" {
		return filepath.Join(l.scratch, "binds")
	}
	return filepath.Join(filepath.Dir(filepath.Clean(l.merged)), "binds")
}

// diskLayout keeps the upper and work dirs the caller chose; the lower
// bind goes beside the merged dir, so each container has its own.
func diskLayout(o CreateOptions) rootLayout {
	return rootLayout{
		lower:         filepath.Join(filepath.Dir(filepath.Clean(o.MergedDir)), "lower"),
		upper:         o.UpperDir,
		work:          o.WorkDir,
		merged:        o.MergedDir,
		state:         o.StateDir,
		mounts:        filepath.Join(filepath.Dir(filepath.Clean(o.MergedDir)), "mounts"),
		volatileTmpfs: true,
	}
}

// tmpfsLayout puts everything but the merged dir on a tmpfs mounted at
// UpperDir, visible only in the supervisor's mount namespace: libcontainer's
// state too, which nothing outside the supervisor reads.
func tmpfsLayout(o CreateOptions) rootLayout {
	return rootLayout{
		scratch: o.UpperDir,
		lower:   filepath.Join(o.UpperDir, "lower"),
		upper:   filepath.Join(o.UpperDir, "upper"),
		work:    filepath.Join(o.UpperDir, "work"),
		merged:  o.MergedDir,
		state:   filepath.Join(o.UpperDir, "state"),
		mounts:  filepath.Join(o.UpperDir, "mounts"),
	}
}

// mountRoot mounts the container's overlay root. A throwaway (volatile)
// upper goes on a tmpfs: creating the upper's directories and mountpoints
// on disk costs a journaled metadata write each (about 1 ms apiece on
// slow disks), which dominated a cold start. If the kernel cannot put an
// overlay upper on tmpfs (user xattrs on tmpfs need Linux 6.6), the upper
// stays on disk with the "volatile" option.
func mountRoot(o CreateOptions) (rootLayout, error) {
	if o.Volatile {
		l := tmpfsLayout(o)
		err := mountLayout(o.Config.Image.Rootfs, l, true, o.StorageSize)
		if err == nil {
			return l, nil
		}
	}
	l := diskLayout(o)
	return l, mountLayout(o.Config.Image.Rootfs, l, o.Volatile, o.StorageSize)
}

func mountLayout(rootfs string, l rootLayout, volatile bool, size int64) (err error) {
	for _, t := range []string{l.scratch, l.mounts} {
		if t == "" || (t == l.mounts && !l.volatileTmpfs) {
			continue
		}
		if err := mountScratch(t, size); err != nil {
			return err
		}
		defer func() {
			if err != nil {
				_ = unix.Unmount(t, unix.MNT_DETACH)
			}
		}()
	}
	if err := makeScratchDirs(l.mounts); err != nil {
		return err
	}
	for _, d := range []string{l.lower, l.upper, l.work, l.merged} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create overlay directory %s: %w", d, err)
		}
	}
	if err := bindReadOnly(rootfs, l.lower); err != nil {
		return err
	}
	if err := mountOverlay(l, volatile); err != nil {
		_ = unix.Unmount(l.lower, unix.MNT_DETACH)
		return err
	}
	return nil
}

// mountScratch mounts a tmpfs of size bytes (0: the kernel's default) at
// dir.
func mountScratch(dir string, size int64) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	opts := "mode=0700"
	if size > 0 {
		opts += ",size=" + strconv.FormatInt(size, 10)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount tmpfs for the container's writable layer at %s: %w", dir, err)
	}
	return nil
}

// makeScratchDirs creates the dirs bound at /tmp, /run, /var/tmp and
// /dev/shm, with the modes those mounts have in any container.
func makeScratchDirs(dir string) error {
	for _, d := range oci.ScratchDirs {
		p := filepath.Join(dir, d.Dir)
		if err := os.MkdirAll(p, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", p, err)
		}
		if err := unix.Chmod(p, d.Mode&0o1777); err != nil { // permissions and the sticky bit
			return fmt.Errorf("create %s: %w", p, err)
		}
	}
	return os.Chmod(dir, 0o755)
}

func bindReadOnly(src, dst string) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind image root %s: %w", src, err)
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV)
	if err := unix.Mount("", dst, "", flags, ""); err != nil {
		_ = unix.Unmount(dst, unix.MNT_DETACH)
		return fmt.Errorf("make image root %s read-only: %w", src, err)
	}
	return nil
}

// mountOverlay needs userxattr: in a user namespace overlay cannot use
// trusted.* xattrs, and without it mkdir over a whiteout fails with EIO.
func mountOverlay(l rootLayout, volatile bool) error {
	for _, p := range []string{l.lower, l.upper, l.work} {
		if strings.ContainsAny(p, ",:\\") {
			return fmt.Errorf("overlay path %s contains ',' ':' or '\\'; use a cache/temp directory without them", p)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,userxattr", l.lower, l.upper, l.work)
	if volatile {
		opts += ",volatile"
	}
	if err := unix.Mount("overlay", l.merged, "overlay", unix.MS_NODEV|unix.MS_NOSUID, opts); err != nil {
		return fmt.Errorf("mount overlay root at %s (%s): %w; run --doctor to check overlay in user namespaces", l.merged, opts, err)
	}
	return nil
}

// unmountRoot detaches the overlay, the lower bind and the tmpfs; missing
// mounts are not an error so it can run twice.
func unmountRoot(l rootLayout) error {
	var errs []error
	var mounts string
	if l.volatileTmpfs {
		mounts = l.mounts
	}
	for _, p := range append(append([]string(nil), l.staged...), l.merged, l.lower, mounts, l.scratch) {
		if p == "" {
			continue
		}
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	if len(errs) == 0 && l.scratch == "" {
		errs = append(errs, removeOverlayWork(l.work))
	}
	return errors.Join(errs...)
}

// removeOverlayWork removes what overlay keeps in its work dir: a mode 000
// directory holding whiteout devices, which the caller, outside our user
// namespace and without CAP_DAC_OVERRIDE, could not delete.
func removeOverlayWork(work string) error {
	for _, d := range []string{"work", "index"} {
		if err := os.RemoveAll(filepath.Join(work, d)); err != nil {
			return fmt.Errorf("remove overlay work files: %w", err)
		}
	}
	return nil
}

// makeMountpoints creates, in the merged root (so in the upper layer), the
// target of every mount in the spec: an empty file when the source is a
// file, a directory otherwise. Paths resolve inside the root, so an image
// symlink can never point a mountpoint at the host.
func makeMountpoints(root *os.File, mounts []specs.Mount) error {
	for _, m := range mounts {
		if err := makeMountpoint(root, m); err != nil {
			return fmt.Errorf("create mountpoint %s: %w", m.Destination, err)
		}
	}
	return nil
}

func makeMountpoint(root *os.File, m specs.Mount) error {
	if !isBind(m) || !isFile(m.Source) {
		d, err := mkdirAllInRoot(root, m.Destination)
		if err != nil {
			return err
		}
		return unix.Close(d)
	}
	dir, err := mkdirAllInRoot(root, filepath.Dir(m.Destination))
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	fd, err := unix.Openat(dir, filepath.Base(m.Destination), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if errors.Is(err, unix.EEXIST) {
		// An existing file or symlink is left to libcontainer, which
		// resolves it inside the root the same way.
		return nil
	}
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}

func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}

// writeRootFiles writes files into the merged root, replacing whatever is
// there (a symlink into /nix/store, say) with a regular 0644 file. The
// replaced file only disappears from the upper layer, never from the cache.
func writeRootFiles(root *os.File, files map[string][]byte) error {
	for name, data := range files {
		if err := writeRootFile(root, name, data); err != nil {
			return fmt.Errorf("write %s into the container root: %w", name, err)
		}
	}
	return nil
}

func writeRootFile(root *os.File, name string, data []byte) error {
	clean := filepath.Clean("/" + name)
	if clean == "/" {
		return errors.New("not a file path")
	}
	dir, err := mkdirAllInRoot(root, filepath.Dir(clean))
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	base := filepath.Base(clean)
	if err := unix.Unlinkat(dir, base, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	fd, err := unix.Openat(dir, base, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), clean)
	_, werr := f.Write(data)
	cerr := f.Close()
	return errors.Join(werr, cerr)
}

// ReadRootFile reads path inside root (an image rootfs) with every symlink
// resolved inside root, so an image cannot make the caller read host files.
// Callers use it to read /etc/passwd and /etc/group before merging.
func ReadRootFile(root, path string) ([]byte, error) {
	dir, err := os.OpenFile(root, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	fd, err := openInRoot(dir, path, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("open %s in %s: %w", path, root, err)
	}
	rf := os.NewFile(uintptr(fd), path)
	defer rf.Close()
	st, err := rf.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s in %s is not a regular file", path, root)
	}
	const maxSize = 16 << 20
	if st.Size() > maxSize {
		return nil, fmt.Errorf("%s in %s is larger than %d bytes", path, root, maxSize)
	}
	data := make([]byte, st.Size())
	n, err := rf.ReadAt(data, 0)
	if err != nil && n != len(data) {
		return nil, err
	}
	return data[:n], nil
}

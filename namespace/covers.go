package namespace

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

// stageCovers prepares, in the creating process's own mount namespace,
// every bind that holds covers (oci.CoverPlan): the bind's source is bound
// at a staging dir, and the plan's pins and covers are mounted inside
// that copy. The container then binds the staging dir recursively in the
// source's place, covers included. Every path is resolved from the staged
// root by file descriptor with no symlink allowed, so a command that
// swaps a directory for a symlink (in another container of the same
// workdir, say) can neither point a cover elsewhere nor have a host path
// bound in. It returns the staged source of each bind target.
func stageCovers(cfg oci.Config, dir string) (map[string]string, []string, error) {
	plans, err := oci.CoverPlan(cfg)
	if err != nil || len(plans) == 0 {
		return nil, nil, err
	}
	staged := map[string]string{}
	var mounts []string
	for i, p := range plans {
		stage := filepath.Join(dir, strconv.Itoa(i))
		if err := os.MkdirAll(stage, 0o700); err != nil {
			return nil, mounts, fmt.Errorf("create %s: %w", stage, err)
		}
		if err := unix.Mount(p.Source, stage, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return nil, mounts, fmt.Errorf("bind %s for its covers: %w", p.Source, err)
		}
		mounts = append(mounts, stage)
		if err := applySteps(stage, p); err != nil {
			return nil, mounts, err
		}
		staged[stagedKey(p.Target, p.Source)] = stage
	}
	return staged, mounts, nil
}

func applySteps(stage string, p oci.BindCovers) error {
	root, err := os.OpenFile(stage, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", stage, err)
	}
	defer root.Close()
	for _, s := range p.Steps {
		err := applyStep(root, s)
		if errors.Is(err, unix.ENOENT) {
			// Gone since the plan was made: nothing there to protect.
			continue
		}
		if err != nil {
			return fmt.Errorf("protect %s in %s: %w", filepath.Join(p.Source, s.Rel), p.Source, err)
		}
	}
	return nil
}

// openBeneath opens rel below root as O_PATH, refusing symlinks anywhere
// on the way and anything outside root.
func openBeneath(root *os.File, rel string) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(int(root.Fd()), rel, &how)
		if !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EAGAIN) {
			return fd, err
		}
	}
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

func applyStep(root *os.File, s oci.CoverStep) error {
	fd, err := openBeneath(root, s.Rel)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	switch s.Kind {
	case oci.CoverPin:
		if !isDir {
			return fmt.Errorf("%s is not a directory", s.Rel)
		}
		return unix.Mount(fdPath(fd), fdPath(fd), "", unix.MS_BIND, "")
	case oci.CoverHide:
		if !isDir {
			return fmt.Errorf("%s is not a directory", s.Rel)
		}
		return unix.Mount("tmpfs", fdPath(fd), "tmpfs",
			unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0555,size=4k")
	case oci.CoverReadOnly:
		if !isDir && st.Mode&unix.S_IFMT != unix.S_IFREG {
			return fmt.Errorf("%s is neither a directory nor a regular file", s.Rel)
		}
		if err := unix.Mount(fdPath(fd), fdPath(fd), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return err
		}
		// The new mount is what the path resolves to now.
		top, err := openBeneath(root, s.Rel)
		if err != nil {
			return err
		}
		defer unix.Close(top)
		return remountReadOnly(top)
	}
	return fmt.Errorf("unknown cover kind %d", s.Kind)
}

// remountReadOnly makes the bind mount at fd read-only, keeping the flags
// a mount copied from a more privileged namespace must keep (nosuid,
// nodev, noexec, atime), or the kernel refuses the remount.
func remountReadOnly(fd int) error {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return err
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY)
	for _, f := range []struct{ st, ms uintptr }{
		{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if uintptr(sfs.Flags)&f.st != 0 {
			flags |= f.ms
		}
	}
	return unix.Mount("", fdPath(fd), "", flags, "")
}

func stagedKey(target, source string) string {
	return filepath.Clean(target) + "\x00" + filepath.Clean(source)
}

// useStaged points the spec's user binds at their staged copies.
func useStaged(mounts []specs.Mount, staged map[string]string) {
	for i, m := range mounts {
		if src, ok := staged[stagedKey(m.Destination, m.Source)]; ok && isBind(m) {
			mounts[i].Source = src
		}
	}
}

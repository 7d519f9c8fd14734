package namespace

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netfwd"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

// The --doctor probes that need fresh namespaces run in a re-executed copy
// of this binary, chosen by environment (never argv, like IsInit). main
// calls IsProbe/RunProbe before anything else.
const (
	probeEnv    = "_LECTIC_NIX_SANDBOX_PROBE"
	probeDirEnv = "_LECTIC_NIX_SANDBOX_PROBE_DIR"
)

const (
	probeUserns       = "userns"
	probeOverlay      = "overlay"
	probeOverlayTmpfs = "overlay-tmpfs"
	probeNetwork      = "network"
)

// IsProbe reports whether this process was started as a --doctor probe.
func IsProbe() bool { return os.Getenv(probeEnv) != "" }

// RunProbe runs the probe named by the environment and returns the exit
// code: 0 when the probe passed; otherwise the reason is on stderr.
func RunProbe() int {
	if err := runProbe(os.Getenv(probeEnv), os.Getenv(probeDirEnv)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func runProbe(name, dir string) error {
	switch name {
	case probeUserns:
		// Being started was the test.
		return nil
	case probeOverlay:
		return overlayProbe(dir, false)
	case probeOverlayTmpfs:
		return overlayProbe(dir, true)
	case probeNetwork:
		_, err := netfwd.Probe()
		return err
	}
	return fmt.Errorf("unknown probe %q", name)
}

// overlayProbe mounts an overlay the way Create does and exercises the
// case that needs userxattr: a directory created over a whiteout.
func overlayProbe(dir string, tmpfs bool) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("probe directory %q is not absolute", dir)
	}
	lowerSrc := filepath.Join(dir, "image")
	if err := os.MkdirAll(filepath.Join(lowerSrc, "d"), 0o700); err != nil {
		return err
	}
	o := CreateOptions{
		Config:    oci.Config{Image: oci.Image{Rootfs: lowerSrc}},
		UpperDir:  filepath.Join(dir, "upper"),
		WorkDir:   filepath.Join(dir, "work"),
		MergedDir: filepath.Join(dir, "merged"),
		Volatile:  tmpfs,
	}
	l := diskLayout(o)
	if tmpfs {
		l = tmpfsLayout(o)
	}
	if err := mountLayout(lowerSrc, l, true, 0); err != nil {
		return err
	}
	defer unmountRoot(l)
	merged := l.merged
	if err := os.Remove(filepath.Join(merged, "d")); err != nil {
		return fmt.Errorf("remove a lower directory through overlay: %w", err)
	}
	if err := os.Mkdir(filepath.Join(merged, "d"), 0o700); err != nil {
		return fmt.Errorf("create a directory over a whiteout: %w", err)
	}
	if _, err := os.Stat(filepath.Join(lowerSrc, "d")); err != nil {
		return errors.New("overlay wrote through to its lower layer")
	}
	var st unix.Statfs_t
	if err := unix.Statfs(merged, &st); err != nil {
		return err
	}
	if st.Type != unix.OVERLAYFS_SUPER_MAGIC {
		return errors.New("overlay mount did not take effect")
	}
	return nil
}

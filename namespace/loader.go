package namespace

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// errDynamic is why a dynamically linked agent cannot start in an image
// without its loader; the fix is the static build.
var errDynamic = errors.New("this build of lectic-nix-sandbox is dynamically linked and cannot run inside images without a libc; build it with `make build` (scripts/build.sh links it statically)")

// interpreter returns the ELF interpreter (dynamic loader) the executable
// at path needs, or "" for a static executable.
func interpreter(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return "", fmt.Errorf("read the interpreter of %s: %w", path, err)
			}
			return strings.TrimRight(string(b), "\x00"), nil
		}
	}
	return "", nil
}

// RequireStatic fails when the executable at path needs a dynamic loader.
func RequireStatic(path string) error {
	interp, err := interpreter(path)
	if err != nil {
		return err
	}
	if interp != "" {
		return errDynamic
	}
	return nil
}

// CheckAgentLoader fails, before any container is made, when the agent
// binary needs a dynamic loader that the image does not provide: neither in
// its tree nor through a host bind (the host image binds the host's own).
// Without this check the agent would die as PID 1 with nothing but a closed
// socket to show for it.
func CheckAgentLoader(agent, rootfs string, hostBinds []string) error {
	interp, err := interpreter(agent)
	if err != nil || interp == "" {
		return err
	}
	for _, p := range []string{interp, hostPath(interp)} {
		for _, b := range hostBinds {
			if p == b || strings.HasPrefix(p, strings.TrimSuffix(b, "/")+"/") {
				return nil
			}
		}
	}
	root, err := os.OpenFile(rootfs, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the image root %s: %w", rootfs, err)
	}
	defer root.Close()
	if fd, err := openInRoot(root, interp, unix.O_PATH); err == nil {
		unix.Close(fd)
		return nil
	}
	return errDynamic
}

// hostPath resolves p's symlinks on the host ("" when it does not exist).
func hostPath(p string) string {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return ""
	}
	return real
}

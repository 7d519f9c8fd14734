package plugin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	lecticnixsandbox "github.com/lectic-nix-sandbox/lectic-nix-sandbox"
)

// BinaryName is the installed program's name. Lectic runs `lectic-<name>`
// for `lectic <name>`, searching $LECTIC_CONFIG and $LECTIC_DATA
// recursively before $PATH, so this name also makes `lectic nix-sandbox`
// work once the directory is under $LECTIC_DATA.
const BinaryName = "lectic-nix-sandbox"

// pluginName is the directory name Lectic's `imports: [{plugin: ...}]`
// looks for.
const pluginName = "nix-sandbox"

// tempPrefix marks install temp files, so a crashed install's leftovers can
// be recognised and removed.
const tempPrefix = ".install-"

// staleTemp is how old a leftover temp file must be before it is removed;
// younger ones may belong to an install running right now.
const staleTemp = 10 * time.Minute

// file is one file of the installed plugin.
type file struct {
	name string
	mode fs.FileMode
	open func() (io.ReadCloser, error)
}

// Install writes the plugin into dir: the binary at exe (as BinaryName) and
// the embedded plugin files. Each file is replaced atomically (temp file,
// fsync, rename), so a warm container or a Lectic run using the old files
// is never disturbed; files that are already identical are left alone, so
// a second install changes nothing. Progress goes to out.
func Install(dir, exe string, out io.Writer) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("install: plugin directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return fmt.Errorf("install: create %s: %w", abs, err)
	}
	removeStaleTemps(abs, time.Now())
	files, err := pluginFiles(exe)
	if err != nil {
		return err
	}
	changed := 0
	for _, f := range files {
		what, err := installFile(abs, f)
		if err != nil {
			return err
		}
		if what != "unchanged" {
			changed++
		}
		fmt.Fprintf(out, "  %-9s %s\n", what, filepath.Join(abs, f.name))
	}
	if changed > 0 {
		if err := syncDir(abs); err != nil {
			return fmt.Errorf("install: %w", err)
		}
		fmt.Fprintf(out, "installed the nix-sandbox plugin in %s\n", abs)
	} else {
		fmt.Fprintf(out, "the nix-sandbox plugin in %s is up to date; nothing changed\n", abs)
	}
	printUsage(out, abs)
	return nil
}

func printUsage(out io.Writer, dir string) {
	fmt.Fprintln(out, "use it from a lectic.yaml or a .lec header:")
	if filepath.Base(dir) == pluginName {
		// Lectic's plugin imports find a directory by this name under its
		// runtime, config and data directories.
		fmt.Fprintf(out, "  imports:\n    - plugin: %s\n(or, with a Lectic without plugin imports:)\n", pluginName)
	}
	fmt.Fprintf(out, "  imports:\n    - %s\n", dir)
	fmt.Fprintf(out, "check this machine with: lectic nix-sandbox --doctor  (or %s --doctor)\n", filepath.Join(dir, BinaryName))
	fmt.Fprintln(out, "(lectic finds the nix-sandbox subcommand when this directory is under $LECTIC_DATA or $LECTIC_CONFIG)")
}

// pluginFiles lists what an installed plugin holds: the binary first, then
// the embedded files.
func pluginFiles(exe string) ([]file, error) {
	st, err := os.Stat(exe)
	if err != nil {
		return nil, fmt.Errorf("install: the program to install: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("install: %s is not a regular file", exe)
	}
	files := []file{{name: BinaryName, mode: 0o700, open: func() (io.ReadCloser, error) { return os.Open(exe) }}}
	assets := lecticnixsandbox.Assets()
	for _, name := range lecticnixsandbox.PluginFiles() {
		files = append(files, file{name: name, mode: 0o600, open: func() (io.ReadCloser, error) { return assets.Open(name) }})
	}
	return files, nil
}

// installFile puts f into dir unless an identical file is there; it says
// what it did: "installed", "updated" or "unchanged".
func installFile(dir string, f file) (string, error) {
	target := filepath.Join(dir, f.name)
	st, err := os.Lstat(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "installed", writeAtomic(target, f)
	case err != nil:
		return "", fmt.Errorf("install: %w", err)
	}
	same, err := sameContent(target, st, f)
	if err != nil {
		return "", err
	}
	if same {
		return "unchanged", nil
	}
	return "updated", writeAtomic(target, f)
}

// sameContent reports whether target already is f: a regular file with
// f's permissions and bytes.
func sameContent(target string, st fs.FileInfo, f file) (bool, error) {
	if !st.Mode().IsRegular() || st.Mode().Perm() != f.mode {
		return false, nil
	}
	want, err := f.open()
	if err != nil {
		return false, fmt.Errorf("install: read %s: %w", f.name, err)
	}
	defer want.Close()
	have, err := os.Open(target)
	if err != nil {
		return false, fmt.Errorf("install: read %s: %w", target, err)
	}
	defer have.Close()
	return equalReaders(want, have)
}

func equalReaders(a, b io.Reader) (bool, error) {
	bufA := make([]byte, 64*1024)
	bufB := make([]byte, 64*1024)
	for {
		na, errA := io.ReadFull(a, bufA)
		nb, errB := io.ReadFull(b, bufB)
		if !bytes.Equal(bufA[:na], bufB[:nb]) {
			return false, nil
		}
		endA := errors.Is(errA, io.EOF) || errors.Is(errA, io.ErrUnexpectedEOF)
		endB := errors.Is(errB, io.EOF) || errors.Is(errB, io.ErrUnexpectedEOF)
		if errA != nil && !endA {
			return false, errA
		}
		if errB != nil && !endB {
			return false, errB
		}
		if endA || endB {
			return endA && endB, nil
		}
	}
}

// writeAtomic replaces target with f's content: readers (and a running
// old binary) see the old file or the new one, never a partial one.
func writeAtomic(target string, f file) error {
	src, err := f.open()
	if err != nil {
		return fmt.Errorf("install: read %s: %w", f.name, err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(target), tempPrefix+f.name+"-*.tmp")
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	name := tmp.Name()
	err = fillTemp(tmp, src, f.mode)
	if err == nil {
		err = os.Rename(name, target)
	}
	if err != nil {
		os.Remove(name)
		return fmt.Errorf("install: write %s: %w", target, err)
	}
	return nil
}

func fillTemp(tmp *os.File, src io.Reader, mode fs.FileMode) error {
	_, err := io.Copy(tmp, src)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes the renames durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// removeStaleTemps deletes temp files an interrupted install left behind.
func removeStaleTemps(dir string, now time.Time) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), tempPrefix) || !strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		if info, err := e.Info(); err == nil && now.Sub(info.ModTime()) > staleTemp {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

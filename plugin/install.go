package plugin

import (
	"bytes"
	"encoding/json"
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
//
// searched are the directories Lectic searches for plugins by name
// ($LECTIC_CONFIG and $LECTIC_DATA); the closing advice depends on whether
// dir lies in one of them.
func Install(dir, exe string, searched []string, out io.Writer) error {
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
	printUsage(out, abs, searched)
	return nil
}

// printUsage says how to import the plugin from where it was installed.
// Lectic finds `- plugin: NAME` only under $LECTIC_RUNTIME, $LECTIC_CONFIG
// and $LECTIC_DATA (any depth, a directory named NAME holding a
// lectic.yaml); searched lists the latter two. Outside them, a path import
// works, and so does naming the parent directory in LECTIC_RUNTIME.
func printUsage(out io.Writer, dir string, searched []string) {
	name := filepath.Base(dir)
	if under(dir, searched) {
		fmt.Fprintln(out, "use it from a lectic.yaml or a .lec header:")
		fmt.Fprintf(out, "  imports:\n    - plugin: %s\n(or, with a Lectic without plugin imports:)\n  imports:\n    - %s\n", name, yamlString(dir))
		fmt.Fprintf(out, "check this machine with: lectic %s --doctor  (or %s --doctor)\n", pluginName, filepath.Join(dir, BinaryName))
		return
	}
	parent := filepath.Dir(dir)
	where := "$LECTIC_CONFIG and $LECTIC_DATA"
	if len(searched) > 0 {
		where = strings.Join(searched, " and ")
	}
	fmt.Fprintln(out, "use it from a lectic.yaml or a .lec header by its path:")
	fmt.Fprintf(out, "  imports:\n    - %s\n", yamlString(dir))
	fmt.Fprintf(out, "or by name: Lectic finds plugins by name only under $LECTIC_RUNTIME and %s,\n", where)
	fmt.Fprintf(out, "so set in the environment Lectic runs in (it also lets `lectic %s` find the binary)\n", pluginName)
	fmt.Fprintf(out, "  export LECTIC_RUNTIME=%s\nand import\n  imports:\n    - plugin: %s\n", shellQuote(parent), name)
	fmt.Fprintf(out, "check this machine with: %s --doctor\n", filepath.Join(dir, BinaryName))
}

// under reports whether dir lies inside one of roots, as Lectic sees it:
// with symlinks followed.
func under(dir string, roots []string) bool {
	real := func(p string) string {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return r
		}
		return filepath.Clean(p)
	}
	d := real(dir)
	for _, r := range roots {
		if r == "" {
			continue
		}
		if rel, err := filepath.Rel(real(r), d); err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../") {
			return true
		}
	}
	return false
}

// yamlString writes s as a YAML double-quoted scalar (JSON's string form
// is one), so spaces, colons and '#' in a path survive.
func yamlString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+@%=,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
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

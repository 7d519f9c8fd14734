package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/statedir"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/termtext"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/warm"
)

// stateCovers are what no command may reach or write, wherever a bind
// exposes them (a workdir of $HOME holds the default cache, one of $TMPDIR
// the default temp root): the temp root with the agents' sockets and the
// tickets, and the cache with the images, homes and agent copies, are
// hidden; the sandbox binary and LECTIC_DATA (the installed plugin, and
// what Lectic runs from there: lectic-NAME programs, lectic.yaml files)
// are read-only. Paths are real paths, as the binds' sources are.
func stateCovers(r roots) []oci.Cover {
	covers := []oci.Cover{
		{Path: r.temp, Hide: true, Why: "the sandbox's temp dir"},
		{Path: r.cache, Hide: true, Why: "the sandbox's cache"},
	}
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			covers = append(covers, oci.Cover{Path: real, Why: "the sandbox binary"})
		}
	}
	if r.data != "" {
		if real, err := statedir.RealPath(r.data); err == nil {
			covers = append(covers, oci.Cover{Path: real, Why: "LECTIC_DATA",
				Refuse: "choose a directory outside it (keep persistent data under $LECTIC_STATE, say)"})
		}
	}
	return covers
}

// checkPersist refuses a --persist dir that a cover contains before it is
// created there.
func checkPersist(dir string, covers []oci.Cover) error {
	if dir == "" {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("--persist %s: %w", dir, err)
	}
	real, err := statedir.RealPath(abs)
	if err != nil {
		return fmt.Errorf("--persist %s: %w", dir, err)
	}
	_, err = oci.CoverPlan(oci.Config{Volumes: []oci.Volume{{Source: real, Target: "/persist"}}, Covers: covers})
	if err != nil {
		return fmt.Errorf("--persist: %w", err)
	}
	return nil
}

// coverKeyParts name the covers in the warm key: a container made with
// other covers is another container.
func coverKeyParts(covers []oci.Cover) []string {
	var parts []string
	for _, c := range covers {
		parts = append(parts, "cover="+c.Path+":"+strconv.FormatBool(c.Hide))
	}
	return parts
}

// hostConfig is what the host runs later that lies under a read-write
// bind (Lectic's config and conversation files, git's hooks and config,
// direnv's .envrc, the image's sources): covered read-only when it
// exists, watched (a command that creates one is reported) when not.
type hostConfig struct {
	covers []oci.Cover
	guards []string // absent protected paths
	// lecDirs are the bind roots whose *.lec files are watched, with
	// their mtime when lecs was read; lecs are the *.lec files there.
	lecDirs []lecDir
	lecs    []string
}

type lecDir struct {
	path  string
	mtime int64
}

// hostRefuse is how a read-write bind inside a protected path is refused.
const hostRefuse = "bind it read-only (HOST:TARGET:ro), or pass --allow-host-config-writes to let commands change what the host runs"

// homeDotfiles are what a login shell, git and ssh run or obey from a
// home directory, protected when a read-write bind is the caller's home.
var homeDotfiles = []string{".bashrc", ".bash_profile", ".bash_login", ".bash_logout", ".profile",
	".zshrc", ".zshenv", ".zprofile", ".zlogin", ".zlogout", ".gitconfig", ".config/git", ".ssh"}

// imageSource is what the image comes from, for hostConfigCovers.
type imageSource struct {
	file     string // --image FILE
	flakeDir string // a local flake
	packages string // --nix-packages-file
}

// hostConfigCovers finds what the host runs later under the read-write
// binds roots (real paths), unless --allow-host-config-writes.
func hostConfigCovers(o options, roots []string, img imageSource, getenv func(string) string) hostConfig {
	var hc hostConfig
	if o.allowHostConfig {
		return hc
	}
	seen := map[string]bool{}
	protect := func(p string) {
		if seen[p] || !underAny(p, roots) {
			return
		}
		seen[p] = true
		var st os.FileInfo
		st, err := os.Lstat(p)
		switch {
		case err != nil:
			hc.guards = append(hc.guards, p)
		case st.Mode().IsRegular() || st.IsDir():
			hc.covers = append(hc.covers, oci.Cover{Path: p, Why: "a file the host runs later", Refuse: hostRefuse})
		case st.Mode()&os.ModeSymlink != 0:
			// A link cannot be bound over; what it points to can.
			if real, err := filepath.EvalSymlinks(p); err == nil && !seen[real] && underAny(real, roots) {
				seen[real] = true
				hc.covers = append(hc.covers, oci.Cover{Path: real, Why: "a file the host runs later", Refuse: hostRefuse})
			}
		}
	}
	home := realOrEmpty(getenv("HOME"))
	for _, root := range roots {
		protect(filepath.Join(root, "lectic.yaml"))
		protect(filepath.Join(root, ".envrc"))
		git := filepath.Join(root, ".git")
		if st, err := os.Lstat(git); err == nil && st.IsDir() {
			protect(filepath.Join(git, "hooks"))
			protect(filepath.Join(git, "config"))
		} else {
			// Absent: watched. A file: the gitdir it names is git's.
			protect(git)
		}
		if root == home {
			for _, f := range homeDotfiles {
				protect(filepath.Join(root, f))
			}
		}
		hc.watchLecs(root, protect)
	}
	// The conversation in use and the lectic.yaml files Lectic reads for it.
	if f := realOrEmpty(getenv("LECTIC_FILE")); f != "" && underAny(f, roots) {
		protect(f)
		for dir := filepath.Dir(f); underAny(dir, roots); dir = filepath.Dir(dir) {
			protect(filepath.Join(dir, "lectic.yaml"))
			if dir == "/" {
				break
			}
		}
	}
	// Lectic's own directories.
	for _, d := range []string{lecticConfigDir(getenv), getenv("LECTIC_RUNTIME")} {
		if real := realOrEmpty(d); real != "" {
			hc.covers = append(hc.covers, oci.Cover{Path: real, Why: "Lectic's configuration", Refuse: hostRefuse})
		}
	}
	// The image's sources: editing them changes the image every container
	// of it runs.
	for _, p := range []string{img.file, img.packages} {
		if real := realOrEmpty(p); real != "" {
			protect(real)
		}
	}
	if dir := realOrEmpty(img.flakeDir); dir != "" && underAny(dir, roots) {
		// A flake dir inside the workdir is read-only as a whole; one that
		// is the workdir (or holds it) keeps its other files writable.
		whole := !slices.Contains(roots, dir)
		for _, r := range roots {
			whole = whole && !underAny(r, []string{dir})
		}
		if whole {
			protect(dir)
		} else {
			for _, f := range []string{"flake.nix", "flake.lock"} {
				protect(filepath.Join(dir, f))
			}
			if nix, err := filepath.Glob(filepath.Join(dir, "*.nix")); err == nil {
				for _, f := range nix {
					protect(f)
				}
			}
		}
	}
	return hc
}

// watchLecs covers the *.lec files at the top of root and watches it for
// new ones.
func (hc *hostConfig) watchLecs(root string, protect func(string)) {
	var st unix.Stat_t
	if err := unix.Lstat(root, &st); err != nil {
		return
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return
	}
	hc.lecDirs = append(hc.lecDirs, lecDir{path: root, mtime: st.Mtim.Nano()})
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".lec") {
			p := filepath.Join(root, e.Name())
			hc.lecs = append(hc.lecs, p)
			protect(p)
		}
	}
}

// created lists what the snapshot did not have and the host would run:
// guards that exist now, and *.lec files new at the top of a watched root.
func (hc hostConfig) created() []string {
	var out []string
	for _, g := range hc.guards {
		if _, err := os.Lstat(g); err == nil {
			out = append(out, g)
		}
	}
	for _, d := range hc.lecDirs {
		var st unix.Stat_t
		if unix.Lstat(d.path, &st) != nil || st.Mtim.Nano() == d.mtime {
			continue
		}
		ents, err := os.ReadDir(d.path)
		if err != nil {
			continue
		}
		for _, e := range ents {
			p := filepath.Join(d.path, e.Name())
			if strings.HasSuffix(e.Name(), ".lec") && !slices.Contains(hc.lecs, p) && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	sort.Strings(out)
	return out
}

// reportCreated tells the caller, after the call, what the command
// created that the host runs later; fastpath.c's report_created says the
// same. The next call covers it (its Mounts differ).
func reportCreated(w io.Writer, paths []string) {
	if len(paths) == 0 {
		return
	}
	fmt.Fprintln(w, "lectic-nix-sandbox: warning: "+termtext.Printable(createdLine(paths)))
}

func createdLine(paths []string) string {
	return "the command created " + strings.Join(paths, ", ") +
		", which the host may run later (Lectic, git, direnv or the shell read it); check it before you use it there"
}

// lecticConfigDir is Lectic's $LECTIC_CONFIG.
func lecticConfigDir(getenv func(string) string) string {
	if d := getenv("LECTIC_CONFIG"); d != "" {
		return d
	}
	base := getenv("XDG_CONFIG_HOME")
	if base == "" {
		if getenv("HOME") == "" {
			return ""
		}
		base = filepath.Join(getenv("HOME"), ".config")
	}
	return filepath.Join(base, "lectic")
}

func realOrEmpty(p string) string {
	if p == "" {
		return ""
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return ""
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return ""
	}
	return real
}

func underAny(p string, roots []string) bool {
	for _, r := range roots {
		if p == r || r == "/" || strings.HasPrefix(p, r+"/") {
			return true
		}
	}
	return false
}

// mountsDigest names what a container's mounts show: the identity of
// each bind's source and of each covered path, and which protected paths
// are absent, one short hash per item (warm.Spec.Mounts). Items, not one
// hash: an MCP server's call knows no LECTIC_FILE and protects less than
// an exec tool's, and is served by a container made for the exec tool,
// whose items include its own (warm.MountsCovered).
func mountsDigest(sources []string, covers []oci.Cover, hc hostConfig) string {
	var parts []string
	id := func(p string, follow bool) string {
		var st unix.Stat_t
		var err error
		if follow {
			err = unix.Stat(p, &st)
		} else {
			err = unix.Lstat(p, &st)
		}
		if err != nil {
			return "absent"
		}
		return strconv.FormatUint(st.Dev, 10) + ":" + strconv.FormatUint(st.Ino, 10)
	}
	for _, s := range sources {
		parts = append(parts, "bind="+s+"="+id(s, true))
	}
	for _, c := range append(append([]oci.Cover(nil), covers...), hc.covers...) {
		parts = append(parts, "cover="+c.Path+"="+id(c.Path, false))
	}
	for _, g := range hc.guards {
		parts = append(parts, "guard="+g)
	}
	return warm.MountItems(parts)
}

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
	for _, dir := range otherTemps(r) {
		covers = append(covers, oci.Cover{Path: dir, Hide: true, Why: "a temp dir of the sandbox's"})
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

// otherTemps are the temp roots other calls of this user may have used,
// whichever this call uses: an MCP server's command gets /tmp/lectic, and
// the fallbacks are per user. Hidden too, a command cannot plant a
// listener where a later call of another kind looks for its agent (the
// peer check cannot tell: the command runs as the caller). Only those
// that exist and are the caller's count (one of another user's holds
// nothing of ours, and could not be mounted over); they depend on the uid
// alone, so exec tools and MCP servers make the same covers and share a
// container. The fallback under the cache is hidden with the cache.
func otherTemps(r roots) []string {
	var out []string
	for _, d := range tempCandidates(r) {
		if _, err := statedir.Check(d, os.Getuid()); err == nil {
			out = append(out, d)
		}
	}
	return out
}

// tempCandidates are the real paths otherTemps chooses from, those that
// are or could become the caller's (under trusted directories); a ticket
// checks them all, so one made since its container started is noticed.
func tempCandidates(r roots) []string {
	dirs := []string{"/tmp/lectic/nix-sandbox"}
	for _, c := range statedir.TempCandidates("", r.cache, os.Getuid())[1:] {
		dirs = append(dirs, c.Dir)
	}
	var out []string
	for _, d := range dirs {
		real, err := statedir.RealPath(d)
		if err != nil || real == r.temp || underAny(real, []string{r.cache}) || slices.Contains(out, real) ||
			statedir.Inspect(real, os.Getuid()) != nil {
			continue
		}
		out = append(out, real)
	}
	return out
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

// Below the top of a read-write bind, what the host runs later is looked
// for nestedDepth directories deep (a workdir of $HOME holds repositories
// at ~/src/NAME or ~/src/github.com/NAME, notes at ~/notes/*.lec), reading
// at most scanBudget directories per call, breadth first, so a huge tree
// costs a bounded time and the shallow levels are always seen.
const (
	nestedDepth = 3
	scanBudget  = 2048
)

// scanSkip are directories never searched: package trees and caches,
// large and holding nothing a user runs Lectic or git from.
var scanSkip = map[string]bool{"node_modules": true, ".cache": true, ".npm": true, ".cargo": true,
	".rustup": true, ".venv": true, "venv": true, "__pycache__": true, ".direnv": true, ".tox": true,
	".gradle": true, ".m2": true, ".nix-defexpr": true, ".nix-profile": true}

// hostConfigCovers finds what the host runs later under the read-write
// binds roots (real paths), unless --allow-host-config-writes. state are
// the sandbox's own covers: hidden dirs are not searched.
func hostConfigCovers(o options, roots []string, img imageSource, getenv func(string) string, state []oci.Cover) hostConfig {
	var hc hostConfig
	if o.allowHostConfig {
		return hc
	}
	pr := &protector{hc: &hc, roots: roots, seen: map[string]bool{}, budget: scanBudget, getenv: getenv}
	for _, c := range state {
		if c.Hide {
			pr.skip = append(pr.skip, c.Path)
		}
	}
	home := realOrEmpty(getenv("HOME"))
	for _, root := range roots {
		pr.protect(filepath.Join(root, "lectic.yaml"))
		pr.protect(filepath.Join(root, ".envrc"))
		pr.protectRepo(root, true)
		if root == home {
			for _, f := range homeDotfiles {
				pr.protect(filepath.Join(root, f))
			}
		}
		pr.scan(root)
	}
	// The hooks dir a global git config names (core.hooksPath = ~/.githooks).
	if home != "" {
		for _, cfg := range []string{filepath.Join(home, ".gitconfig"), filepath.Join(xdgConfigHome(getenv), "git", "config")} {
			if hp := pr.hooksPath(cfg, home); hp != "" {
				pr.protect(hp)
			}
		}
	}
	// The conversation in use and the lectic.yaml files Lectic reads for it.
	if f := realOrEmpty(getenv("LECTIC_FILE")); f != "" && underAny(f, roots) {
		pr.protect(f)
		for dir := filepath.Dir(f); underAny(dir, roots); dir = filepath.Dir(dir) {
			pr.protect(filepath.Join(dir, "lectic.yaml"))
			if dir == "/" {
				break
			}
		}
	}
	// Lectic's own directories.
	hc.covers = append(hc.covers, lecticConfigCovers(o, getenv)...)
	// The image's sources: editing them changes the image every container
	// of it runs.
	for _, p := range []string{img.file, img.packages} {
		if real := realOrEmpty(p); real != "" {
			pr.protect(real)
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
			pr.protect(dir)
		} else {
			for _, f := range []string{"flake.nix", "flake.lock"} {
				pr.protect(filepath.Join(dir, f))
			}
			if nix, err := filepath.Glob(filepath.Join(dir, "*.nix")); err == nil {
				for _, f := range nix {
					pr.protect(f)
				}
			}
		}
	}
	return hc
}

// lecticConfigCovers are LECTIC_CONFIG and LECTIC_RUNTIME, read-only
// wherever a bind holds them (Lectic runs the plugins, lectic-NAME
// programs and lectic.yaml files it finds there), unless
// --allow-host-config-writes.
func lecticConfigCovers(o options, getenv func(string) string) []oci.Cover {
	if o.allowHostConfig {
		return nil
	}
	var covers []oci.Cover
	for _, d := range []string{lecticConfigDir(getenv), getenv("LECTIC_RUNTIME")} {
		if real := realOrEmpty(d); real != "" {
			covers = append(covers, oci.Cover{Path: real, Why: "Lectic's configuration", Refuse: hostRefuse})
		}
	}
	return covers
}

// protector collects a hostConfig: what to cover, what to guard.
type protector struct {
	hc     *hostConfig
	roots  []string
	skip   []string // hidden state dirs, never searched
	seen   map[string]bool
	budget int // directories scan may still read
	getenv func(string) string
}

// protect covers p read-only when it exists and watches it (a guard) when
// it does not.
func (pr *protector) protect(p string) { pr.add(p, true) }

// protectExisting covers p when it exists; an absent p is not watched.
func (pr *protector) protectExisting(p string) { pr.add(p, false) }

func (pr *protector) add(p string, guard bool) {
	if pr.seen[p] || !underAny(p, pr.roots) {
		return
	}
	st, err := os.Lstat(p)
	switch {
	case err != nil:
		if guard {
			pr.seen[p] = true
			pr.hc.guards = append(pr.hc.guards, p)
		}
	case st.Mode().IsRegular() || st.IsDir():
		pr.seen[p] = true
		pr.hc.covers = append(pr.hc.covers, oci.Cover{Path: p, Why: "a file the host runs later", Refuse: hostRefuse})
	case st.Mode()&os.ModeSymlink != 0:
		// A link cannot be bound over; what it points to can.
		pr.seen[p] = true
		if real, err := filepath.EvalSymlinks(p); err == nil && !pr.seen[real] && underAny(real, pr.roots) {
			pr.seen[real] = true
			pr.hc.covers = append(pr.hc.covers, oci.Cover{Path: real, Why: "a file the host runs later", Refuse: hostRefuse})
		}
	}
}

// protectRepo protects what git runs for the work tree dir: its git dir's
// hooks and config, the hooks dir core.hooksPath names (husky's .husky),
// and the git dirs of its submodules. The rest of .git stays writable, so
// commits work. top marks a bind's root, whose absent .git is watched.
func (pr *protector) protectRepo(dir string, top bool) {
	git := filepath.Join(dir, ".git")
	st, err := os.Lstat(git)
	switch {
	case err == nil && st.IsDir():
		pr.protectGitDir(git, git, dir)
	case err == nil && st.Mode().IsRegular():
		// A submodule's or a worktree's: "gitdir: PATH". The file itself
		// is covered, so it cannot be pointed elsewhere.
		pr.protect(git)
		if gitdir := readGitdir(git); gitdir != "" {
			common := gitdir
			if b, err := statedir.ReadRegular(filepath.Join(gitdir, "commondir"), 4096); err == nil {
				c := strings.TrimSpace(string(b))
				if !filepath.IsAbs(c) {
					c = filepath.Join(gitdir, c)
				}
				common = realOrEmpty(c)
			}
			if common != "" {
				pr.protectGitDir(gitdir, common, dir)
			}
		}
	case top:
		// Absent: watched. (Anything else there is not a repository.)
		pr.protect(git)
	}
}

// protectGitDir protects the git dir of the work tree worktree: common
// is where hooks and config live (a worktree shares its main git dir's).
func (pr *protector) protectGitDir(gitdir, common, worktree string) {
	pr.protect(filepath.Join(common, "hooks"))
	pr.protect(filepath.Join(common, "config"))
	if gitdir != common {
		pr.protectExisting(filepath.Join(gitdir, "config.worktree"))
	}
	if hp := pr.hooksPath(filepath.Join(common, "config"), worktree); hp != "" {
		pr.protect(hp)
	}
	pr.protectModules(filepath.Join(common, "modules"), 0)
}

// protectModules protects the git dirs of submodules under a git dir's
// modules/ (a submodule's name may have slashes; its own submodules are
// in its modules/).
func (pr *protector) protectModules(dir string, depth int) {
	if depth > 2*nestedDepth || pr.budget <= 0 {
		return
	}
	pr.budget--
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if _, err := os.Lstat(filepath.Join(p, "HEAD")); err == nil {
			pr.protectGitDir(p, p, "")
		} else {
			pr.protectModules(p, depth+1)
		}
	}
}

// hooksPath is the real path of the hooks dir core.hooksPath names in the
// git config file cfg, a relative one against worktree ("": none), or "".
func (pr *protector) hooksPath(cfg, worktree string) string {
	hp := gitConfigValue(cfg, "core", "hookspath")
	switch {
	case hp == "":
		return ""
	case hp == "~" || strings.HasPrefix(hp, "~/"):
		home := pr.getenv("HOME")
		if home == "" {
			return ""
		}
		hp = filepath.Join(home, hp[1:])
	case !filepath.IsAbs(hp):
		if worktree == "" {
			return ""
		}
		hp = filepath.Join(worktree, hp)
	}
	real, err := statedir.RealPath(hp)
	if err != nil {
		return ""
	}
	return real
}

// scan searches root's tree, breadth first, nestedDepth levels below its
// top, for what the host runs later: repositories (protectRepo),
// lectic.yaml, .envrc and *.lec files, covered where they exist. Where a
// .lec file is, the lectic.yaml files a Lectic run of it could read (the
// nearest one above it) are watched where absent. The *.lec files at the
// top are watched for new ones too (lecDirs).
func (pr *protector) scan(root string) {
	type dirAt struct {
		path  string
		depth int
	}
	var rootSt unix.Stat_t
	if err := unix.Lstat(root, &rootSt); err != nil {
		return
	}
	queue := []dirAt{{root, 0}}
	for len(queue) > 0 && pr.budget > 0 {
		d := queue[0]
		queue = queue[1:]
		pr.budget--
		ents, err := os.ReadDir(d.path)
		if err != nil {
			continue
		}
		if d.depth == 0 {
			pr.hc.lecDirs = append(pr.hc.lecDirs, lecDir{path: root, mtime: rootSt.Mtim.Nano()})
		}
		hasLec := false
		for _, e := range ents {
			name := e.Name()
			p := filepath.Join(d.path, name)
			switch {
			case strings.HasSuffix(name, ".lec"):
				hasLec = true
				if d.depth == 0 {
					pr.hc.lecs = append(pr.hc.lecs, p)
				}
				pr.protectExisting(p)
			case d.depth == 0:
				// The top's lectic.yaml, .envrc and .git: hostConfigCovers.
			case name == ".git":
				pr.protectRepo(d.path, false)
			case name == "lectic.yaml" || name == ".envrc":
				pr.protectExisting(p)
			}
			if e.IsDir() && name != ".git" && d.depth < nestedDepth && !scanSkip[name] && !slices.Contains(pr.skip, p) {
				queue = append(queue, dirAt{p, d.depth + 1})
			}
		}
		if hasLec {
			for dir := d.path; dir != root && underAny(dir, []string{root}); dir = filepath.Dir(dir) {
				pr.protect(filepath.Join(dir, "lectic.yaml"))
			}
		}
	}
}

// readGitdir is the real path a .git file names ("gitdir: PATH", relative
// to the file's dir), or "".
func readGitdir(file string) string {
	b, err := statedir.ReadRegular(file, 4096)
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(b), "\n")
	dir, ok := strings.CutPrefix(strings.TrimSpace(line), "gitdir:")
	if !ok {
		return ""
	}
	dir = strings.TrimSpace(dir)
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(filepath.Dir(file), dir)
	}
	return realOrEmpty(dir)
}

// gitConfigValue is the last value of section.key (both lower case) in
// the git config file path, or "": enough of git's syntax for core
// settings (sections, quoted values, comments); includes are not
// followed.
func gitConfigValue(path, section, key string) string {
	b, err := statedir.ReadRegular(path, 1<<20)
	if err != nil {
		return ""
	}
	var cur, val string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			end := strings.IndexByte(line, ']')
			if end < 0 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSpace(line[1:end]), " ")
			cur = strings.ToLower(strings.TrimSpace(name))
			line = strings.TrimSpace(line[end+1:])
		}
		if cur != section || line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.ToLower(strings.TrimSpace(k)) != key {
			continue
		}
		val = gitConfigString(strings.TrimSpace(v))
	}
	return val
}

// gitConfigString unquotes a git config value and drops a trailing
// comment.
func gitConfigString(v string) string {
	var b strings.Builder
	quoted := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"':
			quoted = !quoted
		case c == '\\' && i+1 < len(v):
			i++
			switch v[i] {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte(v[i])
			}
		case (c == '#' || c == ';') && !quoted:
			return strings.TrimSpace(b.String())
		default:
			b.WriteByte(c)
		}
	}
	return strings.TrimSpace(b.String())
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
	if base := xdgConfigHome(getenv); base != "" {
		return filepath.Join(base, "lectic")
	}
	return ""
}

// xdgConfigHome is $XDG_CONFIG_HOME, by default ~/.config ("" with no
// HOME either).
func xdgConfigHome(getenv func(string) string) string {
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return d
	}
	if getenv("HOME") == "" {
		return ""
	}
	return filepath.Join(getenv("HOME"), ".config")
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

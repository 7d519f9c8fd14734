package nixload

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// FlakeSource says which flake to build and how. The image is always the
// flake's containerImage output.
type FlakeSource struct {
	Ref          string    // flake ref, already "path:/abs" for directories
	PackagesFile string    // absolute path or ""
	NixExe       string    // default "nix"
	ExtraArgs    []string  // --nix-extra, split on whitespace
	Refresh      bool      // ignore the source cache (positive and negative)
	Progress     io.Writer // stderr; may be nil
	Terminal     bool      // stderr is a tty: draw a spinner
}

// ErrNixUnavailable is returned (wrapped) when the nix executable cannot be
// found, so callers can tell "no Nix here" from "the flake is broken".
var ErrNixUnavailable = errors.New("nix is not installed")

// BuildError is a failed `nix build`: nix's own error lines, and where the
// full log is kept.
type BuildError struct {
	Ref     string   // the flake ref that failed
	Summary []string // nix's "error:" lines (and their locations), at most a few
	LogPath string   // full nix output, under the cache's logs/
	Cached  bool     // replayed from the source cache: nix was not run this time
}

func (e *BuildError) Error() string {
	var b strings.Builder
	first := "nix build failed"
	rest := e.Summary
	if len(rest) > 0 {
		first, rest = strings.TrimPrefix(rest[0], "error: "), rest[1:]
	}
	fmt.Fprintf(&b, "cannot build the image from %s: %s", e.Ref, first)
	for _, l := range rest {
		b.WriteString("\n  " + l)
	}
	if e.LogPath != "" {
		b.WriteString("\n  full log: " + e.LogPath)
	}
	if e.Cached {
		b.WriteString("\n  (this failure is remembered until the flake or packages file changes; pass --refresh to retry now)")
	}
	return b.String()
}

const (
	// pluginDirName is where --install puts the plugin under $LECTIC_DATA.
	pluginDirName = "nix-sandbox"
	// flakeAttr is the flake output every image is built from.
	flakeAttr = "containerImage"
	// packagesEnv carries --nix-packages-file into the flake's evaluation;
	// the name is the old wrapper's, so existing flakes keep working.
	packagesEnv = "LECTIC_NIX_SANDBOX_EXTRA_PKGS_FILE"
	// smallFile is the size up to which flake files are hashed by content;
	// larger ones (a binary beside the flake) by size, mtime and inode.
	smallFile = 1 << 20
	// racyWindow: stat data younger than this cannot prove a file unchanged
	// (same size, same mtime tick), so such a stat snapshot is not saved.
	racyWindow = 2 * time.Second
	// summaryLines caps nix's error in the returned message.
	summaryLines = 6
)

// ResolveFlakeRef picks the flake the image comes from: the --flake value,
// then $LECTIC_NIX_SANDBOX_FLAKE, then the directory of the running binary
// (or its parent when the binary sits in <repo>/bin), then the installed
// plugin under dataDir. Directories become "path:<abs dir>". explicit is true
// when the user named the flake (flag or environment).
func ResolveFlakeRef(flag, envFlake, exePath, dataDir string) (ref string, explicit bool, err error) {
	if flag != "" {
		ref, err := userFlakeRef(flag)
		if err != nil {
			return "", true, fmt.Errorf("--flake %s: %w", flag, err)
		}
		return ref, true, nil
	}
	if envFlake != "" {
		ref, err := userFlakeRef(envFlake)
		if err != nil {
			return "", true, fmt.Errorf("$LECTIC_NIX_SANDBOX_FLAKE=%s: %w", envFlake, err)
		}
		return ref, true, nil
	}
	if exePath != "" {
		dir := filepath.Dir(exePath)
		candidates := []string{dir}
		if filepath.Base(dir) == "bin" {
			candidates = append(candidates, filepath.Dir(dir))
		}
		for _, d := range candidates {
			if isFile(filepath.Join(d, "flake.nix")) {
				return "path:" + d, false, nil
			}
		}
	}
	if dataDir == "" {
		return "", false, errors.New("no flake found: pass --flake DIR, or run lectic-nix-sandbox --install")
	}
	return "path:" + filepath.Join(dataDir, "plugins", pluginDirName), false, nil
}

// userFlakeRef turns a user-supplied flake into a ref: anything with a
// scheme is passed to nix as is, a directory becomes path:<abs>.
func userFlakeRef(v string) (string, error) {
	if strings.Contains(v, "#") {
		return "", errors.New("give the flake without #attribute: the image is always its containerImage output")
	}
	if strings.Contains(v, ":") {
		return v, nil
	}
	abs, err := filepath.Abs(v)
	if err != nil {
		return "", err
	}
	if !isFile(filepath.Join(abs, "flake.nix")) {
		return "", fmt.Errorf("no flake.nix in %s; give a directory holding one, or a flake ref such as github:owner/repo", abs)
	}
	return "path:" + abs, nil
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// CachedFlake is the warm fast path: it answers from the source cache and
// the rootfs store without starting any nix process. It reports false when
// the flake must be built (or cannot be cached, e.g. a github: ref).
func (s *Store) CachedFlake(src FlakeSource) (*Image, bool) {
	if src.Refresh {
		return nil, false
	}
	nixPath, err := exec.LookPath(nixExe(src))
	if err != nil {
		return nil, false
	}
	key, ok, err := s.flakeKey(src, nixPath)
	if err != nil || !ok {
		return nil, false
	}
	e, err := s.readFlakeEntry(key)
	if err != nil || e.ImageID == "" {
		return nil, false
	}
	img, err := s.Lookup(e.ImageID)
	if err != nil {
		return nil, false
	}
	return img, true
}

// LoadFlake builds src's containerImage with nix (unless the source cache
// already knows the result) and loads it into the store. A failed build is
// remembered for the same inputs, so a broken or unreachable flake costs
// one nix run, not one per call.
func (s *Store) LoadFlake(ctx context.Context, src FlakeSource) (*Image, error) {
	nixPath, err := exec.LookPath(nixExe(src))
	if err != nil {
		return nil, fmt.Errorf("%w: %q was not found; install Nix, or pass --image FILE or --image host", ErrNixUnavailable, nixExe(src))
	}
	if dir, ok := flakeDir(src.Ref); ok && !isFile(filepath.Join(dir, "flake.nix")) {
		return nil, fmt.Errorf("no flake.nix in %s: run lectic-nix-sandbox --install, or pass --flake DIR", dir)
	}
	key, cacheable, err := s.flakeKey(src, nixPath)
	if err != nil {
		return nil, err
	}
	if !cacheable {
		img, _, err := s.buildAndLoad(ctx, src, nixPath, "")
		return img, err
	}
	return s.loadCacheable(ctx, src, nixPath, key)
}

// loadCacheable is LoadFlake for inputs the source cache can key.
func (s *Store) loadCacheable(ctx context.Context, src FlakeSource, nixPath, key string) (*Image, error) {
	start := time.Now()
	if !src.Refresh {
		if c, ok := s.replay(key); ok {
			return c.img, c.err
		}
	}
	// Parallel first calls (Lectic runs tools concurrently) wait for one
	// build instead of each running nix, then use its result.
	lock, err := flockFile(s.lockPath("flake-"+key), unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if c, ok := s.replay(key); ok && (!src.Refresh || c.at.After(start)) {
		return c.img, c.err
	}
	img, out, err := s.buildAndLoad(ctx, src, nixPath, key)
	var be *BuildError
	switch {
	case err == nil:
		if err := s.writeFlakeEntry(key, flakeEntry{Ref: src.Ref, PackagesFile: src.PackagesFile, ImageID: img.ID, OutPath: out}); err != nil {
			return nil, err
		}
		s.dropSuperseded(src, key)
	case errors.As(err, &be) && ctx.Err() == nil:
		_ = s.writeFlakeEntry(key, flakeEntry{Ref: src.Ref, PackagesFile: src.PackagesFile, Failure: be.Summary, LogPath: be.LogPath})
	}
	return img, err
}

// buildAndLoad runs nix and loads what it built; out is the store path.
func (s *Store) buildAndLoad(ctx context.Context, src FlakeSource, nixPath, key string) (img *Image, out string, err error) {
	out, err = s.nixBuild(ctx, src, nixPath, key)
	if err != nil {
		return nil, "", err
	}
	img, err = s.LoadFile(ctx, out, LoadOptions{Progress: terminalOnly(src), Notices: src.Progress})
	if err != nil {
		return nil, "", fmt.Errorf("load the image nix built from %s (%s): %w", src.Ref, out, err)
	}
	return img, out, nil
}

// cachedResult is what a source cache entry says about a build.
type cachedResult struct {
	img *Image
	err error     // the remembered failure, a *BuildError
	at  time.Time // when the entry was written
}

// replay answers from key's cache entry: the image when its rootfs is
// still present, or the remembered failure. ok is false when nix has to
// run.
func (s *Store) replay(key string) (cachedResult, bool) {
	e, err := s.readFlakeEntry(key)
	if err != nil {
		return cachedResult{}, false
	}
	if len(e.Failure) > 0 {
		return cachedResult{err: &BuildError{Ref: e.Ref, Summary: e.Failure, LogPath: e.LogPath, Cached: true}, at: e.Time}, true
	}
	img, err := s.Lookup(e.ImageID)
	if err != nil {
		return cachedResult{}, false
	}
	return cachedResult{img: img, at: e.Time}, true
}

func nixExe(src FlakeSource) string {
	if src.NixExe == "" {
		return "nix"
	}
	return src.NixExe
}

func terminalOnly(src FlakeSource) io.Writer {
	if src.Terminal {
		return src.Progress
	}
	return nil
}

// flakeDir returns the local directory of a path: flake ref.
func flakeDir(ref string) (string, bool) {
	rest, ok := strings.CutPrefix(ref, "path:")
	if !ok {
		return "", false
	}
	dir, _, _ := strings.Cut(rest, "?")
	if !filepath.IsAbs(dir) {
		return "", false
	}
	return filepath.Clean(dir), true
}

// nixSystem maps the running architecture to Nix's system name.
func nixSystem() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64-linux"
	case "arm64":
		return "aarch64-linux"
	case "386":
		return "i686-linux"
	}
	return runtime.GOARCH + "-linux"
}

// ---- the source cache ----

// flakeEntry is C/sources/flake-<key>.json: what one set of inputs built
// to, or how it failed.
type flakeEntry struct {
	Ref          string    `json:"ref"`
	PackagesFile string    `json:"packages_file,omitempty"`
	ImageID      string    `json:"image_id,omitempty"`
	OutPath      string    `json:"out_path,omitempty"`
	Failure      []string  `json:"failure,omitempty"`
	LogPath      string    `json:"log,omitempty"`
	Time         time.Time `json:"time"`
}

func (s *Store) sourcesDir() string { return filepath.Join(s.Root(), "sources") }

func (s *Store) flakeEntryPath(key string) string {
	return filepath.Join(s.sourcesDir(), "flake-"+key+".json")
}

func (s *Store) gcRootPath(key string) string {
	return filepath.Join(s.Root(), "gcroots", "flake-"+key)
}

func (s *Store) logPath(key string) string {
	return filepath.Join(s.Root(), "logs", "flake-"+key+".log")
}

func (s *Store) readFlakeEntry(key string) (flakeEntry, error) {
	var e flakeEntry
	b, err := os.ReadFile(s.flakeEntryPath(key))
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("source cache %s: %w", s.flakeEntryPath(key), err)
	}
	return e, nil
}

func (s *Store) writeFlakeEntry(key string, e flakeEntry) error {
	e.Time = time.Now().UTC()
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := atomicWrite(s.flakeEntryPath(key), b); err != nil {
		return fmt.Errorf("write source cache %s: %w", s.flakeEntryPath(key), err)
	}
	return nil
}

// dropSuperseded forgets earlier builds of the same flake and packages
// file: their entries (which would keep their images from GC), logs and
// nix out-links. Warm containers of an old image keep working: GC spares
// images in use, and the rootfs does not need the nix store paths.
func (s *Store) dropSuperseded(src FlakeSource, keep string) {
	matches, _ := filepath.Glob(filepath.Join(s.sourcesDir(), "flake-*.json"))
	for _, m := range matches {
		key := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m), "flake-"), ".json")
		if key == keep {
			continue
		}
		e, err := s.readFlakeEntry(key)
		if err != nil || e.Ref != src.Ref || e.PackagesFile != src.PackagesFile {
			continue
		}
		os.Remove(s.gcRootPath(key))
		os.Remove(s.logPath(key))
		os.Remove(m)
	}
}

// flakeKey identifies everything a build depends on that we can see without
// running nix: the ref, the flake directory's files, the packages file, the
// extra nix arguments, the system and the nix executable. cacheable is false
// for refs that are not local directories (github:, git+https:, ...): their
// content is only known to nix, so they are always built.
func (s *Store) flakeKey(src FlakeSource, nixPath string) (key string, cacheable bool, err error) {
	dir, ok := flakeDir(src.Ref)
	if !ok {
		return "", false, nil
	}
	h := sha256.New()
	fmt.Fprintf(h, "lectic-nix-sandbox flake key v1\nref %q\nsystem %s\n", src.Ref, nixSystem())
	fmt.Fprintf(h, "extra %q\n", src.ExtraArgs)
	st, err := os.Stat(nixPath)
	if err != nil {
		return "", false, fmt.Errorf("nix executable %s: %w", nixPath, err)
	}
	fmt.Fprintf(h, "nix %s %d %d\n", nixPath, st.Size(), st.ModTime().UnixNano())
	if src.PackagesFile != "" {
		sum, err := fileSHA256(src.PackagesFile)
		if err != nil {
			return "", false, fmt.Errorf("--nix-packages-file %s: %w", src.PackagesFile, err)
		}
		fmt.Fprintf(h, "packages %s %s\n", src.PackagesFile, sum)
	}
	tree, err := s.treeHash(dir)
	if err != nil {
		return "", false, err
	}
	fmt.Fprintf(h, "tree %s\n", tree)
	return hex.EncodeToString(h.Sum(nil))[:32], true, nil
}

func inode(info fs.FileInfo) uint64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// treeEntry is one file of the flake directory as lstat sees it.
type treeEntry struct {
	rel   string
	mode  fs.FileMode
	size  int64
	mtime int64
	ino   uint64
}

// treeSnapshot is C/sources/flaketree-<dir hash>.json: the stat fingerprint
// of a flake directory and the content hash it had, so an unchanged
// directory costs a walk of lstat calls and no reads.
type treeSnapshot struct {
	Dir     string `json:"dir"`
	Stat    string `json:"stat"`
	Content string `json:"content"`
}

// treeHash hashes the flake directory's files (path, type, executable bit,
// content of files up to smallFile; size, mtime and inode of larger ones),
// leaving out .git and result* out-links, which nix's evaluation of the
// image does not depend on.
func (s *Store) treeHash(dir string) (string, error) {
	entries, err := walkFlake(dir)
	if err != nil {
		return "", fmt.Errorf("read flake directory %s: %w", dir, err)
	}
	statSum := statFingerprint(entries)
	snapPath := filepath.Join(s.sourcesDir(), "flaketree-"+shortHash(dir)+".json")
	var snap treeSnapshot
	if b, err := os.ReadFile(snapPath); err == nil && json.Unmarshal(b, &snap) == nil &&
		snap.Dir == dir && snap.Stat == statSum && snap.Content != "" {
		return snap.Content, nil
	}
	content, err := contentHash(dir, entries)
	if err != nil {
		return "", fmt.Errorf("read flake directory %s: %w", dir, err)
	}
	if !anyRecent(entries, time.Now()) {
		b, _ := json.Marshal(treeSnapshot{Dir: dir, Stat: statSum, Content: content})
		_ = atomicWrite(snapPath, b)
	}
	return content, nil
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:32]
}

// skipInFlake says which directory entries do not belong to the flake's
// inputs: version-control data and nix build out-links.
func skipInFlake(d fs.DirEntry) bool {
	name := d.Name()
	if name == ".git" {
		return true
	}
	return strings.HasPrefix(name, "result") && d.Type()&fs.ModeSymlink != 0
}

func walkFlake(dir string) ([]treeEntry, error) {
	var out []treeEntry
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir && skipInFlake(d) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, treeEntry{rel: rel, mode: info.Mode(), size: info.Size(),
			mtime: info.ModTime().UnixNano(), ino: inode(info)})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].rel < out[j].rel })
	return out, err
}

func statFingerprint(entries []treeEntry) string {
	h := sha256.New()
	for _, e := range entries {
		fmt.Fprintf(h, "%q %o %d %d %d\n", e.rel, uint32(e.mode), e.size, e.mtime, e.ino)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func contentHash(dir string, entries []treeEntry) (string, error) {
	h := sha256.New()
	for _, e := range entries {
		p := filepath.Join(dir, e.rel)
		switch {
		case e.mode.IsDir():
			fmt.Fprintf(h, "dir %q\n", e.rel)
		case e.mode&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, "link %q %q\n", e.rel, target)
		case e.mode.IsRegular() && e.size <= smallFile:
			sum, err := fileSHA256(p)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(h, "file %q %t %s\n", e.rel, e.mode&0o111 != 0, sum)
		default:
			fmt.Fprintf(h, "big %q %o %d %d %d\n", e.rel, uint32(e.mode), e.size, e.mtime, e.ino)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func anyRecent(entries []treeEntry, now time.Time) bool {
	limit := now.Add(-racyWindow).UnixNano()
	for _, e := range entries {
		if e.mtime >= limit {
			return true
		}
	}
	return false
}

// ---- running nix ----

// nixBuild runs `nix build` for src and returns the store path of the
// image (a docker-archive, or a streamLayeredImage script). The out-link
// under C/gcroots keeps it from nix's garbage collector.
func (s *Store) nixBuild(ctx context.Context, src FlakeSource, nixPath, key string) (string, error) {
	if key == "" {
		key = "ref-" + shortHash(src.Ref+"\x00"+src.PackagesFile)
	}
	link := s.gcRootPath(key)
	if err := os.MkdirAll(filepath.Dir(link), 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", filepath.Dir(link), err)
	}
	logFile, err := createPrivate(s.logPath(key))
	if err != nil {
		return "", fmt.Errorf("create the nix build log: %w", err)
	}
	defer logFile.Close()
	if err := runNix(ctx, src, nixPath, link, logFile); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("nix build of %s interrupted: %w", src.Ref, ctx.Err())
		}
		return "", &BuildError{Ref: src.Ref, Summary: summarizeLog(logFile.Name(), err), LogPath: logFile.Name()}
	}
	out, err := os.Readlink(link)
	if err != nil {
		return "", fmt.Errorf("nix build of %s left no result at %s: %w", src.Ref, link, err)
	}
	return out, nil
}

// createPrivate creates (or truncates) a file only its owner can read.
func createPrivate(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
}

// runNix runs the build with all of nix's output in the log, showing
// progress meanwhile.
func runNix(ctx context.Context, src FlakeSource, nixPath, link string, log *os.File) error {
	args := buildArgs(src, link)
	fmt.Fprintf(log, "$ %s %s\n", nixPath, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, nixPath, args...)
	cmd.Env = buildEnv(os.Environ(), src.PackagesFile)
	lw := &lastLine{}
	cmd.Stdout = log
	cmd.Stderr = io.MultiWriter(log, lw)
	cmd.WaitDelay = 5 * time.Second
	stop := startProgress(src, lw)
	defer stop()
	return cmd.Run()
}

// buildArgs is the nix command line. The options make an offline machine
// fail in seconds instead of retrying downloads for minutes, and
// --no-write-lock-file keeps the flake directory untouched.
func buildArgs(src FlakeSource, link string) []string {
	args := []string{
		"build",
		"--extra-experimental-features", "nix-command flakes",
		"--no-write-lock-file",
		"--option", "connect-timeout", "5",
		"--option", "download-attempts", "1",
		"--out-link", link,
	}
	if src.PackagesFile != "" {
		// builtins.getEnv only sees the environment in impure evaluation.
		args = append(args, "--impure")
	}
	args = append(args, src.ExtraArgs...)
	return append(args, src.Ref+"#"+flakeAttr)
}

// buildEnv passes the caller's environment, with the packages file set
// exactly when one was given (a stale value from the caller must not leak
// into the image).
func buildEnv(environ []string, packagesFile string) []string {
	out := make([]string, 0, len(environ)+1)
	for _, kv := range environ {
		if !strings.HasPrefix(kv, packagesEnv+"=") {
			out = append(out, kv)
		}
	}
	if packagesFile != "" {
		out = append(out, packagesEnv+"="+packagesFile)
	}
	return out
}

// ansiEscape is compiled on first use: only builds need it, and a
// package-level regexp would be compiled at the start of every call.
var ansiEscape = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)
})

// summarizeLog picks nix's "error:" lines, each with the source location
// nix prints after it, from the build log.
func summarizeLog(logPath string, runErr error) []string {
	f, err := os.Open(logPath)
	if err != nil {
		return []string{"error: " + runErr.Error()}
	}
	defer f.Close()
	var out []string
	wantLocation := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() && len(out) < summaryLines {
		line := strings.TrimSpace(ansiEscape().ReplaceAllString(sc.Text(), ""))
		switch {
		case strings.HasPrefix(line, "error:"):
			out = append(out, line)
			wantLocation = true
		case wantLocation && strings.HasPrefix(line, "at "):
			out = append(out, line)
			wantLocation = false
		case wantLocation && line != "" && !strings.HasPrefix(line, "…"):
			wantLocation = false
		}
	}
	if len(out) == 0 {
		out = append(out, "error: nix exited with "+runErr.Error())
	}
	return out
}

// lastLine remembers the last complete line nix wrote, for the spinner.
type lastLine struct {
	mu   sync.Mutex
	buf  []byte
	line string
}

func (l *lastLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if i := strings.LastIndexByte(string(l.buf), '\n'); i >= 0 {
		lines := strings.Split(strings.TrimSpace(string(l.buf[:i])), "\n")
		if last := strings.TrimSpace(ansiEscape().ReplaceAllString(lines[len(lines)-1], "")); last != "" {
			l.line = last
		}
		l.buf = append(l.buf[:0], l.buf[i+1:]...)
	}
	if len(l.buf) > 4096 {
		l.buf = l.buf[:0]
	}
	return len(p), nil
}

func (l *lastLine) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.line
}

// startProgress tells the user a build is running: one plain line when
// stderr is not a terminal, a spinner with nix's latest line when it is.
// The returned stop ends the spinner and waits for it.
func startProgress(src FlakeSource, lw *lastLine) (stop func()) {
	w := src.Progress
	if w == nil {
		return func() {}
	}
	if !src.Terminal {
		fmt.Fprintf(w, "lectic-nix-sandbox: building image from %s…\n", src.Ref)
		return func() {}
	}
	base := "building image from " + src.Ref
	bar := newSpinner(w, base)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		follow(bar, base, lw, done)
	}()
	return func() {
		close(done)
		<-finished
		bar.Finish()
	}
}

// follow keeps the spinner's text on nix's latest line until done.
func follow(bar *progress, base string, lw *lastLine, done <-chan struct{}) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		desc := base
		if l := lw.String(); l != "" {
			desc += ": " + l
		}
		if r := []rune(desc); len(r) > 80 {
			desc = string(r[:80]) + "…"
		}
		bar.Describe(desc)
		select {
		case <-done:
			return
		case <-tick.C:
		}
	}
}

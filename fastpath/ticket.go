package fastpath

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/flagvalue"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/statedir"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

// Both sides of the format: fastpath.c reads what this file writes.
const (
	materialMagic = "lectic-nix-sandbox fast path v2\n"
	ticketMagic   = "lectic-nix-sandbox ticket 2"
	// ModeEnv is the variable that turns the fast path off ("off") or makes
	// it mandatory ("require"). It is left out of a ticket's name.
	ModeEnv = "_LECTIC_NIX_SANDBOX_FAST"
	// racyWindow: stat data younger than this cannot prove a file
	// unchanged (same size within one mtime tick).
	racyWindow = 2 * time.Second
	// maxTicket is the largest ticket fastpath.c reads.
	maxTicket = 1 << 20
)

// Kind says how a check stats its path.
type Kind string

const (
	// Lstat compares type, mode, size, mtime, ctime, inode and device,
	// without following a final symlink.
	Lstat Kind = "lstat"
	// Stat is Lstat through a final symlink.
	Stat Kind = "stat"
	// Identity compares only the type, inode and device a path resolves
	// to: for directories that are bound into the container, whose content
	// changes all the time but whose identity decides the mount.
	Identity Kind = "id"
	// Real compares the path a path resolves to, every symlink followed:
	// a `result` link that nix points at a new build changes it even where
	// the two builds' files stat alike. The state is a hash of that path,
	// so a ticket record holds no spaces.
	Real Kind = "real"
)

// Check is one file a ticket depends on, with the state it must still
// have.
type Check struct {
	Kind  Kind
	Path  string
	State string
	// changed is the newest of mtime and ctime, for the racy rule.
	changed time.Time
}

// Observe records the current state of path. A missing path is a state
// ("absent"); any other stat error is returned.
func Observe(kind Kind, path string) (Check, error) {
	if kind == Real {
		return observeReal(path)
	}
	var st unix.Stat_t
	var err error
	switch kind {
	case Lstat:
		err = unix.Lstat(path, &st)
	case Stat, Identity:
		err = unix.Stat(path, &st)
	default:
		return Check{}, fmt.Errorf("fast path: unknown check kind %q", kind)
	}
	c := Check{Kind: kind, Path: path}
	switch {
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
		c.State = "absent"
	case err != nil:
		return Check{}, fmt.Errorf("fast path: stat %s: %w", path, err)
	case kind == Identity:
		c.State = fmt.Sprintf("%o:%d:%d", st.Mode&unix.S_IFMT, st.Ino, st.Dev)
	default:
		c.State = fmt.Sprintf("%o:%d:%d:%d:%d:%d", st.Mode, st.Size, st.Mtim.Nano(), st.Ctim.Nano(), st.Ino, st.Dev)
		c.changed = time.Unix(0, max(st.Mtim.Nano(), st.Ctim.Nano()))
	}
	return c, nil
}

// observeReal records what path resolves to, as realpath(3) in
// fastpath.c's real_state resolves it.
func observeReal(path string) (Check, error) {
	c := Check{Kind: Real, Path: path}
	resolved, err := filepath.EvalSymlinks(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR):
		c.State = "absent"
	case err != nil:
		return Check{}, fmt.Errorf("fast path: resolve %s: %w", path, err)
	default:
		if !filepath.IsAbs(resolved) {
			if resolved, err = filepath.Abs(resolved); err != nil {
				return Check{}, fmt.Errorf("fast path: resolve %s: %w", path, err)
			}
		}
		sum := sha256.Sum256([]byte(resolved))
		c.State = hex.EncodeToString(sum[:16])
	}
	return c, nil
}

// Invocation is how the CLI split its arguments.
type Invocation struct {
	Options    []string // the words before the command, a final "--" included
	Terminated bool     // the options ended with "--"
}

// Ticket is what a later identical invocation needs to make the call.
type Ticket struct {
	Socket string
	// Request is the run request's JSON header (warm.FastRequest). The
	// constructor completes it for each call and sends with it the body:
	// Cwd, the command words, Env applied to its own environ, and the
	// names that withheld (package execargs).
	Request  []byte
	Cwd      string
	Env      oci.EnvRecipe
	Timeout  time.Duration
	Warnings []string
	Checks   []Check
	// Guard lists what the host runs later and the call's binds could
	// hold, absent when the ticket was written: present before a call,
	// the ticket is not used; created by the call, it is reported.
	Guard Guard
}

// Guard is the watch on what the host runs later (see Ticket.Guard).
type Guard struct {
	Absent []string // must stay absent
	// LecDirs are directories whose *.lec files are watched: with their
	// mtime (ns) then, and Lecs, the *.lec files they held.
	LecDirs []LecDir
	Lecs    []string
}

// LecDir is a watched directory and its mtime when the ticket was made.
type LecDir struct {
	Path  string
	Mtime int64
}

// ErrRacy means a file the ticket depends on changed too recently for its
// stat data to prove it unchanged later; no ticket is written.
var ErrRacy = errors.New("fast path: a file changed within the last two seconds")

// Dir is where the tickets of the temp root T live: T/fast. fastpath.c
// finds T itself, by statedir's rules and fallback order (temp_root).
func Dir(tempRoot string) string { return filepath.Join(tempRoot, "fast") }

// process is what a ticket's name covers besides the option words.
type process struct {
	uid, gid int
	exe      string
	exeStat  unix.Stat_t
	cwd      string
	config   []string // configEnv as lp() items: NAME=value, or NAME when unset
}

// configEnv are the variables the CLI reads to find its dirs (dirs.go),
// the caller's name, the flake and nix; config_env in fastpath.c lists
// the same, in the same order. Any other variable reaches the command
// only through the ticket's environment recipe, applied to each call's
// own environ.
var configEnv = []string{
	"HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "LECTIC_CACHE", "LECTIC_DATA",
	"LECTIC_TEMP", "TMPDIR", "USER", "LECTIC_NIX_SANDBOX_FLAKE", "PATH",
	"LECTIC_NIX_SANDBOX_PASS_ENV", "LECTIC_CONFIG", "XDG_CONFIG_HOME",
	"LECTIC_FILE", "LECTIC_RUNTIME",
}

func currentProcess() (process, error) {
	p := process{uid: os.Getuid(), gid: os.Getgid()}
	var err error
	if p.exe, err = os.Readlink("/proc/self/exe"); err != nil {
		return p, fmt.Errorf("fast path: %w", err)
	}
	if err := unix.Stat("/proc/self/exe", &p.exeStat); err != nil {
		return p, fmt.Errorf("fast path: stat /proc/self/exe: %w", err)
	}
	// getcwd(2), not os.Getwd: the constructor cannot consult $PWD.
	if p.cwd, err = unix.Getwd(); err != nil {
		return p, fmt.Errorf("fast path: getcwd: %w", err)
	}
	for _, name := range configEnv {
		if v, ok := os.LookupEnv(name); ok {
			p.config = append(p.config, name+"="+v)
		} else {
			p.config = append(p.config, name)
		}
	}
	return p, nil
}

// name is the ticket's file name: the hex of the first 16 bytes of the
// SHA-256 over the material, built byte for byte as material_prefix and
// ticket_name in fastpath.c build it.
func name(p process, inv Invocation) string {
	var b bytes.Buffer
	lp := func(s string) { b.WriteString(strconv.Itoa(len(s)) + ":" + s) }
	b.WriteString(materialMagic)
	fmt.Fprintf(&b, "uid %d gid %d\n", p.uid, p.gid)
	b.WriteString("exe ")
	lp(p.exe)
	fmt.Fprintf(&b, "\nexestat %d %d %d %d\n", p.exeStat.Dev, p.exeStat.Ino, p.exeStat.Size, p.exeStat.Mtim.Nano())
	b.WriteString("cwd ")
	lp(p.cwd)
	fmt.Fprintf(&b, "\nenv %d\n", len(p.config))
	for _, kv := range p.config {
		lp(kv)
	}
	// The option words come before their count, so that fastpath.c
	// names every candidate split of its argv from one running hash.
	b.WriteString("\nopts\n")
	for _, w := range inv.Options {
		lp(w)
	}
	term := 0
	if inv.Terminated {
		term = 1
	}
	fmt.Fprintf(&b, "\nsplit %d %d\n", len(inv.Options), term)
	sum := sha256.Sum256(b.Bytes())
	return hex.EncodeToString(sum[:16])
}

// encode lays out the ticket's records, each NUL-terminated.
func encode(t Ticket) ([]byte, error) {
	req := bytes.TrimSpace(t.Request)
	if len(req) < 2 || req[0] != '{' || req[len(req)-1] != '}' || bytes.Equal(req, []byte("{}")) {
		return nil, errors.New("fast path: the request is not a non-empty JSON object")
	}
	if t.Timeout != 0 && (t.Timeout < flagvalue.MinTimeout || t.Timeout > flagvalue.MaxTimeout) {
		// fastpath.c would refuse the ticket on every call.
		return nil, fmt.Errorf("fast path: timeout %v is outside %v..%v", t.Timeout, flagvalue.MinTimeout, flagvalue.MaxTimeout)
	}
	var b bytes.Buffer
	rec := func(s string) error {
		if strings.IndexByte(s, 0) >= 0 {
			return errors.New("fast path: a ticket record holds a NUL byte")
		}
		b.WriteString(s)
		b.WriteByte(0)
		return nil
	}
	recs := []string{ticketMagic, "sock " + t.Socket, "head " + string(req[:len(req)-1]), "cwd " + t.Cwd,
		"timeout_ns " + strconv.FormatInt(t.Timeout.Nanoseconds(), 10)}
	for _, w := range t.Warnings {
		recs = append(recs, "warn "+w)
	}
	recs = append(recs, recipeRecords(t.Env)...)
	for _, c := range t.Checks {
		recs = append(recs, "check "+string(c.Kind)+" "+c.State+" "+c.Path)
	}
	for _, p := range t.Guard.Absent {
		recs = append(recs, "guard "+p)
	}
	for _, d := range t.Guard.LecDirs {
		recs = append(recs, "lecdir "+strconv.FormatInt(d.Mtime, 10)+" "+d.Path)
	}
	for _, p := range t.Guard.Lecs {
		recs = append(recs, "lec "+p)
	}
	for _, r := range recs {
		if err := rec(r); err != nil {
			return nil, err
		}
	}
	if b.Len() > maxTicket {
		return nil, errors.New("fast path: the ticket is too large")
	}
	return b.Bytes(), nil
}

// recipeRecords are the environment recipe and the policy it is applied
// with, as fastpath.c's recipe_list tags them.
func recipeRecords(r oci.EnvRecipe) []string {
	var recs []string
	add := func(tag string, items []string) {
		for _, it := range items {
			recs = append(recs, tag+" "+it)
		}
	}
	keep, set := r.NamedSplit()
	sets := make([]string, len(set))
	for i, kv := range set {
		sets[i] = kv[0] + "=" + kv[1]
	}
	pol := oci.Policy()
	add("env_pre", r.Pre)
	add("env_keep", keep)
	add("env_set", sets)
	add("env_post", r.Post)
	add("pol_hostonly", pol.HostOnly)
	add("pol_hostonly_prefix", pol.HostOnlyPrefixes)
	add("pol_internal_prefix", pol.InternalPrefixes)
	add("pol_secret_part", pol.SecretParts)
	add("pol_secret_word", pol.SecretWords)
	add("pol_secret_prefix", pol.SecretPrefixes)
	if pol.URLCredentials {
		add("pol_url_credentials", []string{"1"})
	}
	return recs
}

// Write stores t under dir for invocations like inv made by this process
// (same binary, directory, environment, caller). It refuses with ErrRacy
// when a checked file changed too recently.
func Write(dir string, inv Invocation, t Ticket) error {
	now := time.Now()
	for _, c := range t.Checks {
		if !c.changed.IsZero() && now.Sub(c.changed) < racyWindow {
			return ErrRacy
		}
	}
	p, err := currentProcess()
	if err != nil {
		return err
	}
	data, err := encode(t)
	if err != nil {
		return err
	}
	if err := privateDir(dir); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return fmt.Errorf("fast path: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name(p, inv)))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("fast path: write ticket: %w", err)
	}
	return nil
}

// privateDir creates dir (0700) and makes sure it is this user's own and
// writable by no one else, as fastpath.c requires of it.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("fast path: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("fast path: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Getuid() || st.Mode&0o022 != 0 {
		return fmt.Errorf("fast path: %s is not a private directory of this user", dir)
	}
	return nil
}

// staleTemp is how old a temp file must be before Prune takes it for one
// a writer left behind: a ticket is written and renamed in microseconds,
// and one removed under its writer is a ticket lost.
const staleTemp = time.Minute

// Prune removes the tickets under dir whose agent socket is gone (and
// temp files left behind). A ticket for a stopped container would only
// cost a failed connect, but nothing else ever removes it.
func Prune(dir string) (removed int, err error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("fast path: %w", err)
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if strings.HasPrefix(e.Name(), ".tmp-") {
			if fi, err := e.Info(); err != nil || time.Since(fi.ModTime()) < staleTemp {
				continue // being written, or gone already
			}
		} else if socketAlive(p) {
			continue
		}
		if os.Remove(p) == nil {
			removed++
		}
	}
	return removed, nil
}

// socketAlive reports whether the ticket at p names a socket that exists.
// Anything but a regular file (a FIFO named like a ticket) is no ticket:
// it is neither read nor waited on, and Prune removes it.
func socketAlive(p string) bool {
	data, err := statedir.ReadRegular(p, maxTicket)
	if err != nil {
		return false
	}
	for _, rec := range strings.Split(string(data), "\x00") {
		if sock, ok := strings.CutPrefix(rec, "sock "); ok {
			_, err := os.Lstat(sock)
			return err == nil
		}
	}
	return false
}

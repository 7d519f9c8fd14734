package statedir

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// UnsafeError says which directory of a chain cannot be trusted, and why.
type UnsafeError struct {
	Dir    string
	Reason string
}

func (e *UnsafeError) Error() string { return e.Dir + " " + e.Reason }

// resolve returns the real path of dir's longest existing ancestor (dir
// itself when it exists) and the names below it that do not exist yet.
func resolve(dir string) (real string, missing []string, err error) {
	if !filepath.IsAbs(dir) {
		return "", nil, fmt.Errorf("%s is not an absolute path", dir)
	}
	p := filepath.Clean(dir)
	for {
		real, err = filepath.EvalSymlinks(p)
		if err == nil {
			return real, missing, nil
		}
		if !errors.Is(err, fs.ErrNotExist) || p == "/" {
			if errors.Is(err, unix.ENOTDIR) {
				return "", nil, &UnsafeError{Dir: p, Reason: "lies under something that is not a directory"}
			}
			return "", nil, err
		}
		missing = append([]string{filepath.Base(p)}, missing...)
		p = filepath.Dir(p)
	}
}

// RealPath is the real path dir has, or would have once created: the
// real path of its longest existing ancestor joined with the rest.
func RealPath(dir string) (string, error) {
	real, missing, err := resolve(dir)
	if err != nil {
		return "", err
	}
	return filepath.Join(append([]string{real}, missing...)...), nil
}

// judge applies the rules to one directory of a chain. own marks the
// directory that will hold the state itself.
func judge(path string, st *unix.Stat_t, own bool, uid int) error {
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return &UnsafeError{path, "is a symlink"}
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return &UnsafeError{path, "is not a directory"}
	case own && int(st.Uid) != uid:
		return &UnsafeError{path, fmt.Sprintf("belongs to uid %d, not to you (uid %d)", st.Uid, uid)}
	case own && st.Mode&0o022 != 0:
		return &UnsafeError{path, "is writable by other users"}
	case int(st.Uid) != uid && st.Uid != 0:
		return &UnsafeError{path, fmt.Sprintf("belongs to uid %d, neither to you (uid %d) nor to root", st.Uid, uid)}
	case st.Mode&0o022 != 0 && (st.Mode&unix.S_ISVTX == 0 || st.Uid != 0):
		return &UnsafeError{path, "is writable by other users"}
	}
	return nil
}

// chain judges every directory from / down to real, an existing real path;
// real itself by the rule for the state's own directory when own is set.
func chain(real string, own bool, uid int) error {
	p := "/"
	rest := strings.Split(strings.TrimPrefix(real, "/"), "/")
	if real == "/" {
		rest = nil
	}
	for i := -1; i < len(rest); i++ {
		if i >= 0 {
			p = filepath.Join(p, rest[i])
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if err := judge(p, &st, own && i == len(rest)-1, uid); err != nil {
			return err
		}
	}
	return nil
}

// Check returns the real path of dir when dir exists, belongs to uid, is
// writable by no one else, and every directory above it is trusted.
func Check(dir string, uid int) (string, error) {
	real, missing, err := resolve(dir)
	if err != nil {
		return "", err
	}
	if len(missing) > 0 {
		return "", &UnsafeError{filepath.Join(append([]string{real}, missing...)...), "does not exist"}
	}
	if err := chain(real, true, uid); err != nil {
		return "", err
	}
	return real, nil
}

// Inspect judges the part of dir that exists, creating nothing: nil means
// Make would only have to create what is missing.
func Inspect(dir string, uid int) error {
	real, missing, err := resolve(dir)
	if err != nil {
		return err
	}
	return chain(real, len(missing) == 0, uid)
}

// Make is Check for a directory it first creates (0700) where missing.
// Every existing directory is judged before anything is created in it, and
// each new level is judged after its mkdir, so a directory someone else
// slipped in first is refused rather than used.
func Make(dir string, uid int) (string, error) {
	real, missing, err := resolve(dir)
	if err != nil {
		return "", err
	}
	return makeResolved(real, missing, uid)
}

// makeResolved is Make once dir is resolved: real exists, missing are the
// levels below it to create.
func makeResolved(real string, missing []string, uid int) (string, error) {
	if err := chain(real, len(missing) == 0, uid); err != nil {
		return "", err
	}
	for i, name := range missing {
		p := filepath.Join(real, name)
		if err := unix.Mkdir(p, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return "", fmt.Errorf("create %s: %w", p, err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return "", fmt.Errorf("%s: %w", p, err)
		}
		if err := judge(p, &st, i == len(missing)-1, uid); err != nil {
			return "", err
		}
		real = p
	}
	return real, nil
}

// MaxTempRoot is the longest temp root whose sockets fit in sun_path: a
// one-shot container's T/warm/<16 hex>-<8 hex>/agent.sock within 107
// bytes.
const MaxTempRoot = 107 - len("/warm/") - 25 - len("/agent.sock")

// Candidate is one place the temp root may go.
type Candidate struct {
	Dir string
	// Needs is a directory that must already exist and be the caller's
	// for Dir to be used; it is never created (/run/user/UID belongs to
	// the login manager).
	Needs string
}

// TempCandidates is the fallback order of the temp root: the one Lectic
// gives, the caller's runtime dir when the system made one, a dir under
// the cache root (cache is C/nix-sandbox, already absolute), and a
// per-user dir in /tmp. fastpath.c's temp_candidates lists the same.
func TempCandidates(given, cache string, uid int) []Candidate {
	u := strconv.Itoa(uid)
	return []Candidate{
		{Dir: given},
		{Dir: "/run/user/" + u + "/lectic/nix-sandbox", Needs: "/run/user/" + u},
		{Dir: filepath.Join(cache, "temp")},
		{Dir: "/tmp/lectic-" + u + "/nix-sandbox"},
	}
}

// Attempt is a candidate that was not used, and why.
type Attempt struct {
	Dir string
	Err error
}

// NoTempError means no candidate could be used.
type NoTempError struct{ Tried []Attempt }

func (e *NoTempError) Error() string {
	var b strings.Builder
	b.WriteString("no safe directory for warm containers:")
	for i, a := range e.Tried {
		if i > 0 {
			b.WriteString(";")
		}
		fmt.Fprintf(&b, " %s (%v)", a.Dir, a.Err)
	}
	return b.String()
}

// PickTemp returns the real path of the first candidate that is trusted
// (made when missing) and short enough for its sockets.
func PickTemp(cands []Candidate, uid int) (string, error) {
	var tried []Attempt
	for _, c := range cands {
		dir, err := tryTemp(c, uid)
		if err == nil {
			return dir, nil
		}
		tried = append(tried, Attempt{Dir: c.Dir, Err: err})
	}
	return "", &NoTempError{Tried: tried}
}

func tryTemp(c Candidate, uid int) (string, error) {
	if c.Dir == "" {
		return "", errors.New("not set")
	}
	if c.Needs != "" {
		if _, err := Check(c.Needs, uid); err != nil {
			return "", err
		}
	}
	real, missing, err := resolve(c.Dir)
	if err != nil {
		return "", err
	}
	if n := len(filepath.Join(append([]string{real}, missing...)...)); n > MaxTempRoot {
		return "", fmt.Errorf("its real path is %d bytes, too long for unix sockets (at most %d)", n, MaxTempRoot)
	}
	return makeResolved(real, missing, uid)
}

// ErrNotRegular means a file of the sandbox's state is not a regular file:
// a FIFO, a device, a socket or a symlink left where a ticket, a lock or
// metadata belongs. It is skipped, never read or waited on.
var ErrNotRegular = errors.New("not a regular file")

// OpenRegular opens a state file with flag plus O_NOFOLLOW, O_NONBLOCK
// and O_CLOEXEC, and makes sure it is a regular file, so that nothing
// left in the state dirs can redirect the open or block it: opening a
// FIFO without O_NONBLOCK waits for a writer forever. (O_NONBLOCK means
// nothing to a regular file.)
func OpenRegular(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, perm)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENXIO) {
			return nil, fmt.Errorf("%s: %w", path, ErrNotRegular)
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, ErrNotRegular)
	}
	return f, nil
}

// ReadRegular reads a state file of at most max bytes (OpenRegular).
func ReadRegular(path string, max int64) ([]byte, error) {
	f, err := OpenRegular(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}

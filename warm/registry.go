package warm

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/statedir"
)

// Names inside T/warm/<key>/.
const (
	sockName  = "agent.sock"
	aliveName = "alive" // flock held by the supervisor for its whole life
	metaName  = "meta.json"
	logName   = "log"
)

// Key is a short name for everything that shapes a container. Parts are
// length-prefixed so no two different lists hash alike.
func Key(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s\x00", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// MountItems is Spec.Mounts for items that each name one thing a
// container's mounts depend on: a sorted list of their short hashes.
func MountItems(items []string) string {
	hashes := make([]string, 0, len(items))
	for _, it := range items {
		hashes = append(hashes, Key(it))
	}
	sort.Strings(hashes)
	return strings.Join(hashes, ",")
}

// MountsCovered reports whether a container made for the mounts have
// serves a request for want: every item of want is one of have's (a
// request that knows less, an MCP server's, is served by a container made
// for more).
func MountsCovered(want, have string) bool {
	if want == have {
		return true
	}
	if want == "" {
		return true
	}
	items := strings.Split(have, ",")
	for _, w := range strings.Split(want, ",") {
		if i := sort.SearchStrings(items, w); i >= len(items) || items[i] != w {
			return false
		}
	}
	return true
}

// BuildID identifies the executable at exe by its size, mtime, inode and
// device: cheap enough for every call, and it changes with any reinstall.
// /proc/self/exe names the running binary even after it was replaced.
func BuildID(exe string) (string, error) {
	fi, err := os.Stat(exe)
	if err != nil {
		return "", fmt.Errorf("identify the sandbox binary: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("identify the sandbox binary %s: no stat data", exe)
	}
	return Key(strconv.FormatInt(fi.Size(), 10), strconv.FormatInt(fi.ModTime().UnixNano(), 10),
		strconv.FormatUint(st.Ino, 10), strconv.FormatUint(st.Dev, 10)), nil
}

// AgentBinary returns a read-only copy of the running executable at
// C/bin/<build-id>/lectic-nix-sandbox, making it once. Containers bind this
// copy, so reinstalling the binary never touches running agents and nothing
// in a container can reach the installed one.
func AgentBinary(cacheRoot string) (string, error) {
	id, err := BuildID("/proc/self/exe")
	if err != nil {
		return "", err
	}
	binDir := filepath.Join(cacheRoot, "bin")
	final := filepath.Join(binDir, id, "lectic-nix-sandbox")
	if fi, err := os.Stat(final); err == nil && fi.Mode().IsRegular() {
		return final, nil
	}
	if err := os.MkdirAll(binDir, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", binDir, err)
	}
	tmp, err := os.MkdirTemp(binDir, ".tmp-")
	if err != nil {
		return "", fmt.Errorf("copy the sandbox binary: %w", err)
	}
	defer removeWarmDir(tmp) // unless published; read-only by then
	if err := copyExecutable("/proc/self/exe", filepath.Join(tmp, "lectic-nix-sandbox")); err != nil {
		return "", err
	}
	// Read-only to its owner too: the file is 0500, and its dir cannot
	// gain another file.
	if err := os.Chmod(tmp, 0o500); err != nil {
		return "", fmt.Errorf("copy the sandbox binary: %w", err)
	}
	// A racing caller may have published the same build first; its copy is
	// as good as ours.
	if err := os.Rename(tmp, filepath.Join(binDir, id)); err != nil && !errors.Is(err, fs.ErrExist) && !errors.Is(err, unix.ENOTEMPTY) {
		return "", fmt.Errorf("publish the sandbox binary copy: %w", err)
	}
	return final, nil
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy the sandbox binary: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o500)
	if err != nil {
		return fmt.Errorf("copy the sandbox binary: %w", err)
	}
	_, err = io.Copy(out, in)
	if serr := out.Sync(); err == nil {
		err = serr
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy the sandbox binary to %s: %w", dst, err)
	}
	return nil
}

func warmRoot(tempRoot string) string        { return filepath.Join(tempRoot, "warm") }
func warmDir(tempRoot, key string) string    { return filepath.Join(tempRoot, "warm", key) }
func socketPath(tempRoot, key string) string { return filepath.Join(tempRoot, "warm", key, sockName) }
func keyLockPath(tempRoot, key string) string {
	return filepath.Join(tempRoot, "warm", key+".lock")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// validKey keeps keys from naming anything outside T/warm.
func validKey(key string) bool {
	if key == "" || len(key) > 64 {
		return false
	}
	for _, r := range key {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r == '-') {
			return false
		}
	}
	return true
}

// fileLock is an flock held on an open file.
type fileLock struct{ f *os.File }

func (l *fileLock) unlock() {
	if l != nil && l.f != nil {
		_ = l.f.Close()
	}
}

// lockKey takes the key's creation lock. The lock file lives beside the
// warm dir so removing the dir never races with it; and since Prune may
// remove the file, a lock on an unlinked file is retried.
func lockKey(tempRoot, key string) (*fileLock, error) {
	if err := os.MkdirAll(warmRoot(tempRoot), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", warmRoot(tempRoot), err)
	}
	return lockPath(keyLockPath(tempRoot, key))
}

// lockPath takes an exclusive flock on the file at path, made if missing.
// Whoever removes such a file does it while holding the lock, so a lock
// taken on a file that was unlinked meanwhile is retried on the new one.
func lockPath(path string) (*fileLock, error) {
	for {
		f, err := openState(path, os.O_RDWR|os.O_CREATE)
		if err != nil {
			return nil, fmt.Errorf("open lock %s: %w", path, err)
		}
		if err := flock(f, unix.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if samePath(f, path) {
			return &fileLock{f: f}, nil
		}
		f.Close()
	}
}

// removeLockFile deletes the lock file at path unless someone holds it.
func removeLockFile(path string) {
	f, err := statedir.OpenRegular(path, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, statedir.ErrNotRegular) {
			_ = os.Remove(path)
		}
		return
	}
	defer f.Close()
	if flock(f, unix.LOCK_EX|unix.LOCK_NB) == nil && samePath(f, path) {
		_ = os.Remove(path)
	}
}

// tryLockKey is lockKey without waiting; ok is false when someone holds it.
func tryLockKey(tempRoot, key string) (l *fileLock, ok bool, err error) {
	path := keyLockPath(tempRoot, key)
	f, err := openState(path, os.O_RDWR|os.O_CREATE)
	if err != nil {
		return nil, false, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("lock %s: %w", path, err)
	}
	if !samePath(f, path) {
		f.Close()
		return nil, false, nil
	}
	return &fileLock{f: f}, true, nil
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}

// samePath reports whether path still names the open file f.
func samePath(f *os.File, path string) bool {
	a, err1 := f.Stat()
	b, err2 := os.Stat(path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// openState opens a file of the warm registry (a lock, the log, the
// alive file) without following a symlink or waiting on a FIFO; anything
// but a regular file in its place is junk in our own dir, removed once
// and replaced when flag creates.
func openState(path string, flag int) (*os.File, error) {
	f, err := statedir.OpenRegular(path, flag, 0o600)
	if errors.Is(err, statedir.ErrNotRegular) && flag&os.O_CREATE != 0 {
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return nil, err
		}
		f, err = statedir.OpenRegular(path, flag|os.O_EXCL, 0o600)
	}
	return f, err
}

// supervisorAlive reports whether a supervisor holds dir's alive lock.
func supervisorAlive(dir string) bool {
	f, err := statedir.OpenRegular(filepath.Join(dir, aliveName), os.O_RDONLY, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := flock(f, unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	return false
}

// waitGone waits until no supervisor owns dir, or the timeout passes.
func waitGone(dir string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for supervisorAlive(dir) {
		if time.Now().After(deadline) {
			return false
		}
		// Cleanup usually takes a few ms; a short poll keeps one-shot
		// calls from paying much more than that.
		time.Sleep(time.Millisecond)
	}
	return true
}

// removeStaleDir deletes a warm dir whose supervisor is gone (its alive
// lock is free), once what the dir held is gone too: an agent that
// outlived its supervisor (its parent-death signal should have ended it)
// is ended first, so that no container runs on without a dir that
// --list, --stop and --prune can see.
func removeStaleDir(dir string) error {
	if err := endOrphan(dir); err != nil {
		return err
	}
	return removeWarmDir(dir)
}

// endOrphan kills the agent meta.json names, if that very process (pid
// and start time) is still running, and waits until it is gone.
func endOrphan(dir string) error {
	m, err := readMeta(dir)
	if err != nil || m.AgentPid <= 0 || m.AgentAt == 0 {
		return nil
	}
	alive := func() bool {
		at, err := startTime(m.AgentPid)
		return err == nil && at == m.AgentAt
	}
	if !alive() {
		return nil
	}
	_ = unix.Kill(m.AgentPid, unix.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); alive(); {
		if time.Now().After(deadline) {
			return fmt.Errorf("the container of %s outlived its supervisor and did not end (agent pid %d); kill it and run again", dir, m.AgentPid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// removeWarmDir deletes a warm dir whose supervisor is gone. Overlay leaves
// its work dir without permissions, so modes are fixed first.
func removeWarmDir(dir string) error {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove stale sandbox state %s: %w", dir, err)
	}
	return nil
}

// meta is what a supervisor records about its container.
type meta struct {
	Key           string    `json:"key"`
	Image         string    `json:"image"`
	ChainID       string    `json:"chain_id"`
	Workdir       string    `json:"workdir"`
	Created       time.Time `json:"created"`
	SupervisorPid int       `json:"supervisor_pid"`
	SupervisorAt  uint64    `json:"supervisor_start"` // /proc/<pid>/stat field 22
	AgentPid      int       `json:"agent_pid"`
	AgentAt       uint64    `json:"agent_start"` // /proc/<pid>/stat field 22
	TTLSeconds    int64     `json:"ttl_seconds"`
	BuildID       string    `json:"build_id"`
	Family        string    `json:"family,omitempty"`
	OneShot       bool      `json:"one_shot,omitempty"`
}

// maxMeta bounds what readMeta reads.
const maxMeta = 64 << 10

func readMeta(dir string) (*meta, error) {
	b, err := statedir.ReadRegular(filepath.Join(dir, metaName), maxMeta)
	if err != nil {
		return nil, err
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, metaName), err)
	}
	return &m, nil
}

// writeMeta publishes meta.json atomically.
func writeMeta(dir string, m *meta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, metaName+".tmp")
	f, err := openState(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err == nil {
		_, err = f.Write(append(b, '\n'))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	return os.Rename(tmp, filepath.Join(dir, metaName))
}

// startTime is field 22 of /proc/<pid>/stat: with the pid it names one
// process, even after the pid is reused.
func startTime(pid int) (uint64, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(f[19], 10, 64)
}

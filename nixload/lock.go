package nixload

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// flockFile opens (creating) path and takes an flock on it. The lock is
// released by closing the returned file, or by the kernel when the process
// dies, which is what makes crash recovery safe.
func flockFile(path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, errBusy
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

var errBusy = errors.New("locked by another process")

func (s *Store) lockPath(name string) string { return filepath.Join(s.root, "locks", name+".lock") }

// shareStore is held by every loader for its whole run; GC takes it
// exclusively, so it never removes what a loader is about to link to.
func (s *Store) shareStore() (*os.File, error) { return flockFile(s.lockPath("store"), unix.LOCK_SH) }

// tempDir is a private working directory under tmp/, named with the owner's
// pid and guarded by an flock on a sibling .lock file held while it exists.
type tempDir struct {
	path string
	lock *os.File
}

func (s *Store) newTemp() (*tempDir, error) {
	for attempt := 0; attempt < 8; attempt++ {
		var rnd [6]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, fmt.Errorf("temp dir name: %w", err)
		}
		p := filepath.Join(s.root, "tmp", strconv.Itoa(os.Getpid())+"-"+hex.EncodeToString(rnd[:]))
		lock, err := flockFile(p+".lock", unix.LOCK_EX|unix.LOCK_NB)
		if errors.Is(err, errBusy) {
			continue // a cleaner is probing the brand-new lock file
		}
		if err != nil {
			return nil, err
		}
		if !sameFile(lock, p+".lock") {
			lock.Close() // a cleaner removed it between open and flock
			continue
		}
		if err := os.Mkdir(p, 0o700); err != nil {
			os.Remove(p + ".lock")
			lock.Close()
			return nil, fmt.Errorf("create temp dir: %w", err)
		}
		return &tempDir{path: p, lock: lock}, nil
	}
	return nil, errors.New("create temp dir: lock file kept vanishing")
}

func sameFile(f *os.File, path string) bool {
	a, err1 := f.Stat()
	b, err2 := os.Stat(path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// remove deletes the dir, then its lock file, then releases the lock: in
// that order a cleaner never sees a live dir without a held lock.
func (t *tempDir) remove() {
	removeAllForce(t.path)
	os.Remove(t.path + ".lock")
	t.lock.Close()
}

// tempCleaned is what cleanTemp removed: how many temp dirs, and the
// file data that went with them.
type tempCleaned struct {
	dirs  int
	bytes int64
}

// cleanTemp removes temp dirs whose owner no longer holds their lock (a
// loader killed mid-layer leaves one) and adds what it removed to c.
func (s *Store) cleanTemp(c *tempCleaned) error {
	dir := filepath.Join(s.root, "tmp")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	locks := map[string]bool{}
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".lock"); ok {
			locks[name] = true
		}
	}
	for _, e := range entries {
		name, isLock := strings.CutSuffix(e.Name(), ".lock")
		p := filepath.Join(dir, name)
		switch {
		case isLock:
			s.reapIfDead(p, c)
		case !locks[name]:
			// A live owner creates its lock before the dir and removes it
			// after, so a dir without a lock file has no owner.
			c.remove(p)
		}
	}
	return nil
}

// reapIfDead removes a temp dir whose lock nobody holds.
func (s *Store) reapIfDead(p string, c *tempCleaned) {
	lock, err := flockFile(p+".lock", unix.LOCK_EX|unix.LOCK_NB)
	if err != nil {
		return
	}
	defer lock.Close()
	if exists(p) {
		c.remove(p)
	}
	os.Remove(p + ".lock")
}

func (c *tempCleaned) remove(p string) {
	n := lastLinkBytes(p)
	if removeAllForce(p) == nil {
		c.dirs++
		c.bytes += n
	}
}

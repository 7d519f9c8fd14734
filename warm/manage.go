package warm

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/unixfd"
)

// statusTimeout bounds how long List waits for one agent.
const statusTimeout = 500 * time.Millisecond

// stopTimeout bounds how long Stop waits for a container to go away.
const stopTimeout = 10 * time.Second

// Info describes one warm container for --list.
type Info struct {
	Key             string `json:"key"`
	Pid             int    `json:"pid"` // the agent's host pid
	Image           string `json:"image"`
	ChainID         string `json:"chain_id"` // the tree GC must keep
	Workdir         string `json:"workdir"`
	Created         string `json:"created"` // RFC 3339
	IdleSeconds     int64  `json:"idle_seconds"`
	TTLSeconds      int64  `json:"ttl_seconds"`
	RunningRequests int    `json:"running_requests"`
}

// keys lists the warm dirs under tempRoot.
func keys(tempRoot string) ([]string, error) {
	ents, err := os.ReadDir(warmRoot(tempRoot))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list warm containers: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && validKey(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// List describes every live warm container. Dirs left by dead ones are
// removed on the way and not listed.
func List(tempRoot string) ([]Info, error) {
	ks, err := keys(tempRoot)
	if err != nil {
		return nil, err
	}
	out := []Info{}
	for _, k := range ks {
		info, ok := describe(tempRoot, k)
		if ok {
			out = append(out, info)
		}
	}
	return out, nil
}

// describe asks one agent for its status; a dead container's dir is cleaned.
func describe(tempRoot, key string) (Info, bool) {
	dir := warmDir(tempRoot, key)
	if !supervisorAlive(dir) {
		_ = clearIfStale(tempRoot, key)
		return Info{}, false
	}
	m, err := readMeta(dir)
	if err != nil {
		return Info{}, false // still starting
	}
	info := Info{Key: key, Pid: m.AgentPid, Image: m.Image, ChainID: m.ChainID, Workdir: m.Workdir,
		Created: m.Created.Format(time.RFC3339), TTLSeconds: m.TTLSeconds}
	if st, err := askStatus(socketPath(tempRoot, key)); err == nil {
		info.IdleSeconds, info.TTLSeconds, info.RunningRequests = st.IdleSeconds, st.TTLSeconds, st.Running
	}
	return info, true
}

// askStatus sends a status request with a short timeout.
func askStatus(sock string) (*agentStatus, error) {
	c, err := dialTimeout(sock, statusTimeout)
	if err != nil {
		return nil, err
	}
	defer c.close()
	if err := c.send(&message{Type: msgStatus, Proto: Proto}); err != nil {
		return nil, err
	}
	m, fds, err := c.recv()
	unixfd.CloseAll(fds)
	if err != nil {
		return nil, err
	}
	if m.Type != msgStatus || m.Status == nil {
		return nil, fmt.Errorf("agent answered %q to a status request", m.Type)
	}
	return m.Status, nil
}

// clearIfStale removes a dir whose supervisor is dead, under the key's lock
// so no caller is starting a container there at the same moment.
func clearIfStale(tempRoot, key string) error {
	lock, ok, err := tryLockKey(tempRoot, key)
	if err != nil || !ok {
		return err
	}
	defer lock.unlock()
	dir := warmDir(tempRoot, key)
	if supervisorAlive(dir) {
		return nil
	}
	return removeStaleDir(dir)
}

// Stop ends the warm container of key, or of every key for "all", and
// waits until its dir is gone. A key that names no container under
// tempRoot may name an orphan (see Orphans); "orphaned" stops every
// orphan of this user.
func Stop(tempRoot, key string) error {
	if key == "orphaned" {
		orphans, err := Orphans()
		if err != nil {
			return err
		}
		return StopOrphans(orphans)
	}
	if key != "all" {
		if !validKey(key) {
			return fmt.Errorf("no warm container %q; see --list for the keys", key)
		}
		if _, err := os.Stat(warmDir(tempRoot, key)); errors.Is(err, os.ErrNotExist) {
			if orphans, err := Orphans(); err == nil {
				var mine []Orphan
				for _, o := range orphans {
					if o.Key == key {
						mine = append(mine, o)
					}
				}
				if len(mine) > 0 {
					return StopOrphans(mine)
				}
			}
		}
		return stopOne(tempRoot, key)
	}
	ks, err := keys(tempRoot)
	if err != nil {
		return err
	}
	var errs []error
	for _, k := range ks {
		errs = append(errs, stopOne(tempRoot, k))
	}
	errs = append(errs, removeOrphanLocks(tempRoot))
	removeLockFile(evictLockPath(tempRoot))
	return errors.Join(errs...)
}

func stopOne(tempRoot, key string) error {
	dir := warmDir(tempRoot, key)
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		removeOrphanLock(tempRoot, key)
		return nil
	}
	if supervisorAlive(dir) {
		askStop(socketPath(tempRoot, key))
		if !waitGone(dir, stopTimeout/2) {
			terminateSupervisor(dir)
		}
		if !waitGone(dir, stopTimeout/2) {
			return fmt.Errorf("warm container %s did not stop within %s; its supervisor is still running", key, stopTimeout)
		}
	}
	lock, err := lockKey(tempRoot, key)
	if err != nil {
		return err
	}
	defer lock.unlock()
	if supervisorAlive(dir) {
		return nil // a new container was started meanwhile
	}
	if err := removeStaleDir(dir); err != nil {
		return err
	}
	// Removed while held: lockKey retries a lock on an unlinked file, so
	// a caller starting this key meanwhile still gets a lock.
	_ = os.Remove(keyLockPath(tempRoot, key))
	return nil
}

// askStop asks the agent to exit; its supervisor then cleans up.
func askStop(sock string) {
	c, err := dialTimeout(sock, statusTimeout)
	if err != nil {
		return
	}
	defer c.close()
	if c.send(&message{Type: msgStop, Proto: Proto}) == nil {
		_, fds, _ := c.recv()
		unixfd.CloseAll(fds)
	}
}

// terminateSupervisor sends SIGTERM to the supervisor recorded in meta.json
// if that pid still is the same process.
func terminateSupervisor(dir string) {
	m, err := readMeta(dir)
	if err != nil || m.SupervisorPid <= 0 {
		return
	}
	if at, err := startTime(m.SupervisorPid); err != nil || at != m.SupervisorAt {
		return
	}
	_ = syscall.Kill(m.SupervisorPid, syscall.SIGTERM)
}

// Prune stops containers idle for longer than their TTL and removes the
// dirs of dead ones. It returns the keys it removed.
func Prune(tempRoot string) ([]string, error) {
	ks, err := keys(tempRoot)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, k := range ks {
		dir := warmDir(tempRoot, k)
		if !supervisorAlive(dir) {
			if err := clearIfStale(tempRoot, k); err != nil {
				errs = append(errs, err)
			} else if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
				removed = append(removed, k)
			}
			continue
		}
		st, err := askStatus(socketPath(tempRoot, k))
		if err != nil || st.Running > 0 || st.TTLSeconds == 0 || st.IdleSeconds < st.TTLSeconds {
			continue
		}
		if err := stopOne(tempRoot, k); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, k)
	}
	errs = append(errs, removeOrphanLocks(tempRoot))
	return removed, errors.Join(errs...)
}

// removeOrphanLocks deletes key lock files whose warm dir is gone. Each is
// removed while held, and lockKey retries a lock on an unlinked file, so a
// caller starting that key concurrently is never left without a lock.
func removeOrphanLocks(tempRoot string) error {
	ents, err := os.ReadDir(warmRoot(tempRoot))
	if err != nil {
		return nil
	}
	for _, e := range ents {
		if key, ok := strings.CutSuffix(e.Name(), ".lock"); ok && validKey(key) {
			removeOrphanLock(tempRoot, key)
		}
	}
	return nil
}

// removeOrphanLock deletes key's lock file if its warm dir is gone and
// nobody holds it.
func removeOrphanLock(tempRoot, key string) {
	if _, err := os.Lstat(warmDir(tempRoot, key)); err == nil {
		return
	}
	lock, ok, err := tryLockKey(tempRoot, key)
	if err != nil || !ok {
		return
	}
	if _, err := os.Lstat(warmDir(tempRoot, key)); errors.Is(err, os.ErrNotExist) {
		_ = os.Remove(keyLockPath(tempRoot, key))
	}
	lock.unlock()
}

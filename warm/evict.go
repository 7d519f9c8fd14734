package warm

import (
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/unixfd"
)

// evict runs in the supervisor of a new container, once it is ready. It
// asks the other containers of the same family (same workdir and options,
// another image or build: replaced) to stop as soon as they are idle, and
// keeps at most s.MaxWarm idle warm containers under tempRoot, the new one
// counted, by asking the least recently used to stop. Busy containers are
// never touched; a stop request is withdrawn by the agent if a call
// arrives first. One-shot containers take no part.
func evict(tempRoot string, s Spec, log io.Writer) {
	if s.OneShot || (s.Family == "" && s.MaxWarm <= 0) {
		return
	}
	// One pass at a time: two containers starting together must not each
	// count the other's victims as still there.
	lock, err := lockPath(evictLockPath(tempRoot))
	if err != nil {
		fmt.Fprintln(log, "lectic-nix-sandbox supervisor: evict:", err)
		return
	}
	defer lock.unlock()
	replaced, idle := evictionCandidates(tempRoot, s)
	for _, k := range replaced {
		letGo(tempRoot, k, "replaced by "+s.Key, log)
	}
	if s.MaxWarm <= 0 || len(idle) <= s.MaxWarm-1 {
		return
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i].since.Before(idle[j].since) })
	for _, c := range idle[:len(idle)-(s.MaxWarm-1)] {
		letGo(tempRoot, c.key, fmt.Sprintf("least recently used of more than %d idle", s.MaxWarm), log)
	}
}

func evictLockPath(tempRoot string) string { return filepath.Join(warmRoot(tempRoot), "evict.lock") }

// idleContainer is a warm container with no request running.
type idleContainer struct {
	key   string
	since time.Time // when its last request ended
}

// evictionCandidates sorts the other live containers under tempRoot: those
// of s's family, and the idle ones of other families.
func evictionCandidates(tempRoot string, s Spec) (replaced []string, idle []idleContainer) {
	ks, err := keys(tempRoot)
	if err != nil {
		return nil, nil
	}
	for _, k := range ks {
		dir := warmDir(tempRoot, k)
		if k == s.Key {
			continue
		}
		// meta.json first: it is written once the supervisor holds its
		// alive lock, so probing that lock can never make a starting
		// supervisor believe another one owns its dir.
		m, err := readMeta(dir)
		if err != nil || m.OneShot || !supervisorAlive(dir) {
			continue // still starting, gone, or gone with its call
		}
		if s.Family != "" && m.Family == s.Family {
			replaced = append(replaced, k)
			continue
		}
		st, err := askStatus(socketPath(tempRoot, k))
		if err != nil || st.Running > 0 {
			continue
		}
		since := st.IdleSince
		if since.IsZero() { // an agent that does not say it
			since = time.Now().Add(-time.Duration(st.IdleSeconds) * time.Second)
		}
		idle = append(idle, idleContainer{key: k, since: since})
	}
	return replaced, idle
}

// letGo asks the container of key to exit once nothing runs in it. An
// agent of an older build that does not know the request is stopped only
// if it is idle.
func letGo(tempRoot, key, why string, log io.Writer) {
	sock := socketPath(tempRoot, key)
	if err := askExpire(sock); err == nil {
		fmt.Fprintf(log, "lectic-nix-sandbox supervisor: asked %s to stop when idle: %s\n", key, why)
		return
	}
	if st, err := askStatus(sock); err == nil && st.Running == 0 {
		if err := stopOne(tempRoot, key); err != nil {
			fmt.Fprintln(log, "lectic-nix-sandbox supervisor:", err)
		}
	}
}

// askExpire sends an expire request and waits for its answer.
func askExpire(sock string) error {
	c, err := dialTimeout(sock, statusTimeout)
	if err != nil {
		return err
	}
	defer c.close()
	if err := c.send(&message{Type: msgExpire, Proto: Proto}); err != nil {
		return err
	}
	m, fds, err := c.recv()
	unixfd.CloseAll(fds)
	if err != nil {
		return err
	}
	if m.Type != msgExpire {
		return fmt.Errorf("agent answered %q to an expire request", m.Type)
	}
	return nil
}

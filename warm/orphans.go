package warm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// supervisorArg0 is a supervisor's argv[0]; argv[1] is its warm dir.
const supervisorArg0 = "lectic-nix-sandbox-supervisor"

// Orphan is a warm container nothing can reach any more: its supervisor
// runs, but its dir under the temp root is gone (the temp root was
// deleted, for example by a cleaner of /tmp) or belongs to another
// container. It ends by its TTL; with a TTL of 0 it would run until
// stopped.
type Orphan struct {
	Key           string `json:"key"`
	Dir           string `json:"dir"` // where its state was
	SupervisorPid int    `json:"supervisor_pid"`
	start         uint64 // the supervisor's start time, so a reused pid is never signalled
}

// Orphans lists this user's orphaned warm containers, whatever temp root
// they were started under, by their supervisors' command lines.
func Orphans() ([]Orphan, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	uid := os.Getuid()
	var out []Orphan
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		dir, ok := supervisorDir(pid, uid)
		if !ok || !orphaned(dir, pid) {
			continue
		}
		at, err := startTime(pid)
		if err != nil {
			continue
		}
		out = append(out, Orphan{Key: filepath.Base(dir), Dir: dir, SupervisorPid: pid, start: at})
	}
	return out, nil
}

// supervisorDir is the warm dir of pid when pid is a supervisor of uid.
func supervisorDir(pid, uid int) (string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return "", false
	}
	args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
	if len(args) != 2 || args[0] != supervisorArg0 || !filepath.IsAbs(args[1]) || !validKey(filepath.Base(args[1])) {
		return "", false
	}
	return args[1], realUID(pid) == uid
}

// realUID is the real uid of pid as /proc/<pid>/status shows it here.
func realUID(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				if n, err := strconv.Atoi(f[0]); err == nil {
					return n
				}
			}
		}
	}
	return -1
}

// orphaned reports whether the supervisor pid has lost its dir: the dir
// is gone, or its meta.json names another supervisor. A dir without
// meta.json yet belongs to a container still starting.
func orphaned(dir string, pid int) bool {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return true
	}
	m, err := readMeta(dir)
	return err == nil && m.SupervisorPid != pid
}

// StopOrphans ends the given orphans (SIGTERM to their supervisors, which
// destroy their containers) and waits for them to exit.
func StopOrphans(orphans []Orphan) error {
	var errs []error
	for _, o := range orphans {
		if at, err := startTime(o.SupervisorPid); err != nil || at != o.start {
			continue // already gone
		}
		if err := syscall.Kill(o.SupervisorPid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("stop orphaned warm container %s (pid %d): %w", o.Key, o.SupervisorPid, err))
			continue
		}
		deadline := time.Now().Add(stopTimeout)
		for {
			at, err := startTime(o.SupervisorPid)
			if err != nil || at != o.start || zombie(o.SupervisorPid) {
				break
			}
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("orphaned warm container %s (pid %d) did not stop within %s", o.Key, o.SupervisorPid, stopTimeout))
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// zombie reports whether pid has exited and waits to be reaped.
func zombie(pid int) bool {
	f, err := procStat(pid)
	return err != nil || f[0] == "Z"
}

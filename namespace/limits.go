package namespace

import (
	"bufio"
	"bytes"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// LimitPlan says what can hold a container's pids and memory limits on
// this host, for this caller.
type LimitPlan struct {
	// Cgroup: a cgroup of the container's own holds pids.max and
	// memory.max (v1: memory.limit_in_bytes). Otherwise the pids limit is
	// RLIMIT_NPROC, counted per container by the kernel, and the memory
	// limit RLIMIT_AS, per process.
	Cgroup bool
	// Parent is the delegated cgroup (v2) the container's goes under; ""
	// lets libcontainer choose (v1 as host root).
	Parent string
	// Why says which applies and why, in one line, for --doctor and the
	// --memory warning.
	Why string
}

// PlanLimits decides for the calling process.
func PlanLimits() LimitPlan {
	self, _ := os.ReadFile("/proc/self/cgroup")
	euid := os.Geteuid()
	return planLimits(readCgroupHost("/sys/fs/cgroup", self, euid, euid == 0 && inInitialUserNS()))
}

// cgroupHost is what the decision looks at.
type cgroupHost struct {
	unified bool // /sys/fs/cgroup is cgroup v2
	// delegated is the nearest cgroup (v2) above our own that we own and
	// whose subtree_control enables pids and memory; "" when none.
	delegated  string
	own        string // our cgroup (v2), for the explanation
	root       bool   // host root (euid 0 in the initial user namespace)
	v1Writable bool   // v1 pids and memory hierarchies writable by us
}

func planLimits(h cgroupHost) LimitPlan {
	switch {
	case h.unified && h.delegated != "":
		return LimitPlan{Cgroup: true, Parent: h.delegated,
			Why: "cgroup v2 is delegated to you (" + h.delegated + "): each container gets its own cgroup with pids.max and memory.max"}
	case h.unified && h.root:
		return LimitPlan{Cgroup: true,
			Why: "you are root: each container gets its own cgroup v2 with pids.max and memory.max"}
	case h.unified:
		return LimitPlan{Why: "cgroup v2 is not delegated to you (no cgroup of yours above " + h.own +
			" enables pids and memory): the pids limit is RLIMIT_NPROC, counted per container, and --memory is RLIMIT_AS per process"}
	case h.root && h.v1Writable:
		return LimitPlan{Cgroup: true,
			Why: "cgroup v1 and you are root: each container gets its own pids and memory cgroup"}
	}
	return LimitPlan{Why: "cgroup v1 (or no cgroups) and you are not root: the pids limit is RLIMIT_NPROC, counted per container, and --memory is RLIMIT_AS per process"}
}

// readCgroupHost looks at the cgroup file system mounted at root, with
// self the contents of /proc/self/cgroup, for euid (hostRoot: real root).
func readCgroupHost(root string, self []byte, euid int, hostRoot bool) cgroupHost {
	h := cgroupHost{root: hostRoot}
	var st unix.Statfs_t
	if unix.Statfs(root, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		h.unified = true
	} else if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		h.unified = true // a test's stand-in for the file system
	}
	if !h.unified {
		h.v1Writable = unix.Access(filepath.Join(root, "pids"), unix.W_OK) == nil &&
			unix.Access(filepath.Join(root, "memory"), unix.W_OK) == nil
		return h
	}
	h.own = ownCgroup(self)
	if h.own == "" {
		return h
	}
	for dir := path.Dir(h.own); ; dir = path.Dir(dir) {
		if delegates(filepath.Join(root, dir), euid) {
			h.delegated = dir
			break
		}
		if dir == "/" {
			break
		}
	}
	return h
}

// ownCgroup is the cgroup v2 path in /proc/self/cgroup ("0::/path").
func ownCgroup(self []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(self))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok && strings.HasPrefix(p, "/") {
			return p
		}
	}
	return ""
}

// delegates reports whether dir is a cgroup owned by euid whose children
// get the pids and memory controllers.
func delegates(dir string, euid int) bool {
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return false
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != euid {
		return false
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return false
	}
	ctl := strings.Fields(string(b))
	return slices.Contains(ctl, "pids") && slices.Contains(ctl, "memory") &&
		unix.Access(filepath.Join(dir, "cgroup.procs"), unix.W_OK) == nil
}

// inInitialUserNS reports whether this process is in the host's user
// namespace (uid 0 there is real root).
func inInitialUserNS() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
}

package warm

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netfwd"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/seccomp"
)

// Environment and fds that carry the confinement of commands from the
// supervisor to the agent, and from the agent to its identity helpers.
const (
	// envSeccomp names the fd that holds the compiled filter
	// (seccomp.Filter's binary form) every command runs under.
	envSeccomp = "_LECTIC_NIX_SANDBOX_SECCOMP"
	// envConnects names the fd on which an agent with an allow-list and
	// a filter, and its helpers, hand their commands' connect(2) calls to
	// the supervisor, which makes the allowed ones on the host
	// (netfwd.Connects).
	envConnects = "_LECTIC_NIX_SANDBOX_CONNECTS"
	// envRlimitAS is RLIMIT_AS in bytes for every command (--memory where
	// no cgroup can hold it). The agent and helpers are not limited: a Go
	// runtime reserves far more address space than it uses.
	envRlimitAS = "_LECTIC_NIX_SANDBOX_RLIMIT_AS"
)

// Where an identity helper finds the filter and the connect channel.
const (
	helperFilterFD   = 4
	helperConnectsFD = 5
)

// confinement is what every command of an agent runs under.
type confinement struct {
	filter     *seccomp.Filter
	filterFile *os.File          // the filter's binary form, for helpers
	program    []unix.SockFilter // the filter's kernel program, for package spawn
	rlimitAS   uint64
	// intercepting is filter with connect(2) intercepted, when commands
	// connect through the supervisor (connects, for an allow-list):
	// commands then run under it, and program is its.
	intercepting *seccomp.Filter
	connects     *netfwd.Connects
	connectsFile *os.File // the channel, for helpers
}

// confinementFromEnv reads the confinement an agent or helper was given.
func confinementFromEnv() (confinement, error) {
	var c confinement
	if v := os.Getenv(envRlimitAS); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return c, fmt.Errorf("bad %s=%q", envRlimitAS, v)
		}
		c.rlimitAS = n
	}
	fd, ok, err := fdFromEnv(envSeccomp)
	if err != nil || !ok {
		return c, err
	}
	f := os.NewFile(uintptr(fd), "seccomp-filter")
	filter, err := seccomp.ReadFilter(f)
	if err != nil {
		return c, fmt.Errorf("no seccomp filter at fd %d: %w", fd, err)
	}
	c.filter, c.filterFile, c.program = filter, f, filter.Program()
	if fd, ok, err := fdFromEnv(envConnects); err != nil || !ok {
		return c, err
	} else if err := c.interceptConnects(os.NewFile(uintptr(fd), "connects")); err != nil {
		return c, err
	}
	return c, nil
}

// interceptConnects makes commands connect through the supervisor over
// the channel f: their filter sends connect(2) to the listener, which
// hands it on (netfwd.Connects).
func (c *confinement) interceptConnects(f *os.File) error {
	connects, err := netfwd.NewConnects(f)
	if err != nil {
		return err
	}
	filter, err := c.filter.Intercept("connect")
	if err != nil {
		connects.Close()
		return err
	}
	c.intercepting, c.connects, c.connectsFile, c.program = filter, connects, f, filter.Program()
	return nil
}

// kernelFilter is the filter a process installs on itself to confine
// what it starts.
func (c confinement) kernelFilter() *seccomp.Filter {
	if c.intercepting != nil {
		return c.intercepting
	}
	return c.filter
}

// files are the fds a helper needs to inherit c, in env's order from
// helperFilterFD on.
func (c confinement) files() []uintptr {
	var files []uintptr
	if c.filter != nil {
		files = append(files, c.filterFile.Fd())
		if c.connectsFile != nil {
			files = append(files, c.connectsFile.Fd())
		}
	}
	return files
}

// fdFromEnv reads the fd number a variable names: ok is false when it is
// unset; stdio (0-2) or anything but a number is an error.
func fdFromEnv(name string) (fd int, ok bool, err error) {
	v := os.Getenv(name)
	if v == "" {
		return 0, false, nil
	}
	fd, err = strconv.Atoi(v)
	if err != nil || fd < 3 {
		return 0, false, fmt.Errorf("bad %s=%q", name, v)
	}
	return fd, true, nil
}

// env is what a helper needs in its environment to inherit c; the filter
// itself goes at helperFilterFD.
func (c confinement) env() []string {
	var env []string
	if c.filter != nil {
		env = append(env, envSeccomp+"="+strconv.Itoa(helperFilterFD))
		if c.connectsFile != nil {
			env = append(env, envConnects+"="+strconv.Itoa(helperConnectsFD))
		}
	}
	if c.rlimitAS > 0 {
		env = append(env, envRlimitAS+"="+strconv.FormatUint(c.rlimitAS, 10))
	}
	return env
}

// confine makes s start through package spawn when it must be confined as
// it starts: without capabilities (uid 0), under RLIMIT_AS, or under the
// filter, whose listener spawn hands back. filtered says whether this
// process is already under the filter (a helper), so its children inherit
// it.
func (c confinement) confine(s *cmdSpec, filtered bool) {
	withFilter := c.filter != nil && !filtered
	if !s.dropCaps && c.rlimitAS == 0 && !withFilter {
		return
	}
	s.confine = &spawnConfinement{rlimitAS: c.rlimitAS}
	if withFilter {
		s.confine.filter = c.program
	}
}

// serve answers the refusals of a command's filter for the command's life
// and reports them to rep.
func (c confinement) serve(listener int, rep *callReport) {
	c.serveListener(listener, func(n *seccomp.Notification, d seccomp.Decision) {
		comm := commOf(n.Pid)
		if seccomp.Valid(listener, n.ID) {
			rep.refused(c.filter, n, comm)
		}
	})
}

// serveListener answers the notifications of listener: refusals after
// report has seen them, intercepted connects by the supervisor.
func (c confinement) serveListener(listener int, report func(*seccomp.Notification, seccomp.Decision)) {
	if c.intercepting == nil {
		c.filter.Serve(listener, report)
		return
	}
	c.intercepting.ServeIntercepting(listener, report, func(listener int, n *seccomp.Notification) {
		if err := c.connects.Hand(listener, n); err != nil {
			// Made in the container's namespace, the call still
			// reaches only the relay, which decides it there.
			_ = seccomp.Continue(listener, n.ID)
		}
	})
}

// callReport is where one call's refusals are reported: its stderr, one
// line per system call name.
type callReport struct {
	mu   sync.Mutex
	fd   int // a dup of the call's stderr; -1 once the call is over
	seen map[string]bool
}

func newCallReport(stderr int) *callReport {
	fd, err := unix.FcntlInt(uintptr(stderr), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		fd = -1
	}
	return &callReport{fd: fd, seen: map[string]bool{}}
}

// refused writes the line for a refused call, the first time its name is
// refused in this call.
func (r *callReport) refused(f *seccomp.Filter, n *seccomp.Notification, comm string) {
	if r == nil {
		return
	}
	name := f.Name(&n.Data)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fd < 0 || r.seen[name] {
		return
	}
	r.seen[name] = true
	writeNonBlocking(r.fd, fmt.Sprintf("lectic-nix-sandbox: blocked %s in '%s' (seccomp; --seccomp off to allow)\n", f.Describe(&n.Data), comm))
}

func (r *callReport) close() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fd >= 0 {
		_ = unix.Close(r.fd)
		r.fd = -1
	}
}

// writeNonBlocking writes line to fd without waiting for a reader: the
// command shares fd's file description, so its flags must not change.
// RWF_NOWAIT does that for pipes (Linux 5.x and later); a terminal is
// opened again, non-blocking, through /proc. A line that does not fit is
// dropped.
func writeNonBlocking(fd int, line string) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return
	}
	b := []byte(line)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFSOCK:
		_ = unix.Sendto(fd, b, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, nil)
		return
	case unix.S_IFREG, unix.S_IFBLK:
		_, _ = unix.Write(fd, b)
		return
	}
	_, err := unix.Pwritev2(fd, [][]byte{b}, -1, unix.RWF_NOWAIT)
	if err != unix.EOPNOTSUPP && err != unix.EINVAL {
		return
	}
	nb, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	_, _ = unix.Write(nb, b)
	_ = unix.Close(nb)
}

// commOf is a process's command name, as ps shows it.
func commOf(pid uint32) string {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/comm")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// callTable finds the call a process belongs to, for a listener that
// serves many calls (an identity helper's).
type callTable struct {
	mu    sync.Mutex
	calls map[int]*callReport // process group of the command -> its report
}

func (t *callTable) add(pgid int, r *callReport) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.calls == nil {
		t.calls = map[int]*callReport{}
	}
	t.calls[pgid] = r
}

func (t *callTable) remove(pgid int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.calls, pgid)
}

// find looks for pid's call by its process group, then by its ancestors'
// (a command that moved to a process group of its own).
func (t *callTable) find(pid int) *callReport {
	for i := 0; i < 64 && pid > 1; i++ {
		ppid, pgrp, ok := netfwd.Parent("/proc", pid)
		if !ok {
			return nil
		}
		t.mu.Lock()
		r := t.calls[pgrp]
		if r == nil {
			r = t.calls[pid]
		}
		t.mu.Unlock()
		if r != nil {
			return r
		}
		pid = ppid
	}
	return nil
}

// procStat returns the fields of /proc/pid/stat after the command name:
// state, ppid, pgrp, session, ... (field 3 of proc(5) is index 0).
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return nil, errors.New("malformed stat")
	}
	return f, nil
}

// SeccompPolicy is the system call filter a container's commands run
// under.
type SeccompPolicy struct {
	// Mode is "default" (seccomp.Default), "file" (Profile) or "off";
	// "" is no filter, like "off".
	Mode    string `json:"mode,omitempty"`
	Profile []byte `json:"profile,omitempty"` // an OCI/Docker JSON profile
}

// Off says whether the policy installs no filter: Filter is nil exactly
// then, and the agent is given no filter fd.
func (p SeccompPolicy) Off() bool { return p.Mode == "" || p.Mode == "off" }

// Filter compiles the policy for this machine, resolving the profile's
// conditional rules against the container's capabilities; nil when off.
func (p SeccompPolicy) Filter(caps []string) (*seccomp.Filter, error) {
	if p.Off() {
		return nil, nil
	}
	var prof *seccomp.Profile
	switch p.Mode {
	case "default":
		if slices.Equal(caps, seccomp.ContainerCaps()) {
			arch, err := seccomp.Native()
			if err != nil {
				return nil, err
			}
			return seccomp.DefaultFilter(arch) // precompiled
		}
		prof = seccomp.Default()
	case "file":
		var err error
		if prof, err = seccomp.Parse(p.Profile); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown seccomp mode %q", p.Mode)
	}
	arch, err := seccomp.Native()
	if err != nil {
		return nil, err
	}
	resolved, err := seccomp.Resolve(prof, seccomp.Host{Arch: arch, Caps: caps, Kernel: seccomp.KernelVersion()})
	if err != nil {
		return nil, err
	}
	return seccomp.Compile(resolved, arch)
}

// endGroup follows an ending signal with SIGKILL after grace: to the
// whole process group while the command lives, and after it has been
// reaped to the members that were alive when the signal came (a pgid can
// only be reused once none of them is left).
func endGroup(p *proc, grace time.Duration) {
	since := bootTicks()
	if grace > 0 {
		t := time.NewTimer(grace)
		<-t.C
	}
	if p.kill(unix.SIGKILL) {
		return
	}
	if groupHasMembersFrom(p.pid, since) {
		_ = unix.Kill(-p.pid, unix.SIGKILL)
	}
}

// bootTicks is now in the clock ticks /proc/pid/stat counts start times in.
func bootTicks() uint64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return ^uint64(0)
	}
	return uint64(ts.Sec)*100 + uint64(ts.Nsec)/10_000_000
}

// groupHasMembersFrom reports whether process group pgid has a member that
// started no later than since.
func groupHasMembersFrom(pgid int, since uint64) bool {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := procStat(pid)
		if err != nil || f[2] != strconv.Itoa(pgid) {
			continue
		}
		if start, err := strconv.ParseUint(f[19], 10, 64); err == nil && start <= since {
			return true
		}
	}
	return false
}

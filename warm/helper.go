package warm

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/unixfd"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/seccomp"
)

// envHelper marks an identity helper: an agent that lives in a nested user
// namespace as one uid/gid and runs the commands of that identity.
//
// Why: starting each command in a fresh nested user namespace forbids the
// vfork fast path of fork/exec and costs about 2 ms per call. A helper pays
// that once per identity and container; afterwards the agent hands it the
// client's connection and stdio over a socketpair (SCM_RIGHTS) and the
// helper forks the command as itself. For uid 0 the helper forks from one
// thread that dropped every capability (capabilities are per thread), so
// the command starts without any, as a command started through package
// spawn does when no helper can be started.
const envHelper = "_LECTIC_NIX_SANDBOX_HELPER"

// envHelper's values: a uid 0 helper in a nested namespace drops its
// capabilities; the root helper shares the agent's identity and exists
// only to run root-mode commands under the seccomp filter, which the agent
// itself does not run under.
const (
	helperDropCaps = "dropcaps"
	helperRoot     = "root"
)

// helperStartTimeout bounds the wait for a new helper's ready message.
const helperStartTimeout = 5 * time.Second

// helperFD is where a helper finds its socketpair end.
const helperFD = 3

// helperKey names a helper: an identity in a nested namespace, or root
// for the agent's own identity.
type helperKey struct {
	uid, gid uint32
	root     bool
}

// helper is the agent's side of one identity helper.
type helper struct {
	c      conn
	pid    int
	userns uint64 // inode of the helper's user namespace

	sendMu sync.Mutex // one message at a time on the socketpair

	mu      sync.Mutex
	pending map[int64]chan struct{}
	groups  map[int64]int       // request -> process group of its command
	onPid   map[int64]func(int) // request -> who wants its command's pid
	nextID  int64
	dead    bool
}

// helperFor returns the helper that runs commands as user, starting it if
// needed, or nil when the command should be started directly.
func (a *agent) helperFor(u *UserSpec) *helper {
	// A one-shot agent runs one command: starting a helper would cost more
	// than the single nested namespace it saves.
	if a.isHelper || a.oneShot || u == nil {
		return nil
	}
	uid, gid, nested, cerr := target(*u)
	if cerr != nil || (!nested && a.conf.filter == nil) {
		return nil
	}
	key := helperKey{uid: uid, gid: gid}
	if !nested {
		key = helperKey{root: true}
	}
	a.helpersMu.Lock()
	defer a.helpersMu.Unlock()
	if h := a.helpers[key]; h != nil {
		return h
	}
	h, err := a.startHelper(key)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lectic-nix-sandbox agent: start identity helper:", err)
		return nil
	}
	a.helpers[key] = h
	go h.readLoop(func() {
		a.helpersMu.Lock()
		if a.helpers[key] == h {
			delete(a.helpers, key)
		}
		a.helpersMu.Unlock()
	})
	return h
}

// startHelper starts a helper as key's uid/gid in a nested user namespace,
// or the root helper as the agent itself. It inherits the agent's
// confinement, the filter at helperFilterFD.
func (a *agent) startHelper(key helperKey) (*helper, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	defer unix.Close(fds[1])
	mode := "1"
	switch {
	case key.root:
		mode = helperRoot
	case key.uid == 0:
		mode = helperDropCaps
	}
	spec := &cmdSpec{
		path: "/proc/self/exe",
		argv: []string{"lectic-nix-sandbox-helper"},
		env:  append([]string{envAgent + "=1", envHelper + "=" + mode}, a.conf.env()...),
		dir:  "/",
		sys:  &syscall.SysProcAttr{Setpgid: true},
	}
	if !key.root {
		spec.sys = &syscall.SysProcAttr{
			Setpgid:     true,
			Cloneflags:  syscall.CLONE_NEWUSER,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: int(key.uid), HostID: os.Getuid(), Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: int(key.gid), HostID: os.Getgid(), Size: 1}},
			Credential:  &syscall.Credential{Uid: key.uid, Gid: key.gid, NoSetGroups: true},
		}
	}
	files := append([]uintptr{0, 2, 2, uintptr(fds[1])}, a.conf.files()...)
	pid, err := a.reaper.spawnFiles(spec, files)
	if err != nil {
		unix.Close(fds[0])
		return nil, err
	}
	c := conn{fd: fds[0]}
	if err := awaitHelper(c); err != nil {
		c.close()
		_ = unix.Kill(pid, unix.SIGKILL)
		return nil, err
	}
	var ns uint64
	if !key.root {
		// The root helper shares the agent's user namespace: killing
		// that one would end the container.
		ns, _ = usernsOf(pid)
	}
	return &helper{c: c, pid: pid, userns: ns, pending: make(map[int64]chan struct{}), groups: make(map[int64]int), onPid: make(map[int64]func(int))}, nil
}

// usernsOf returns the inode of pid's user namespace.
func usernsOf(pid int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+strconv.Itoa(pid)+"/ns/user", &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// killUserns ends every process in the user namespace ns: what a dead
// helper started, including commands it had not yet reported.
func killUserns(ns uint64) {
	if ns == 0 {
		return
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if got, err := usernsOf(pid); err == nil && got == ns {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// awaitHelper waits for a new helper's ready message.
func awaitHelper(c conn) error {
	if err := c.setTimeout(helperStartTimeout); err != nil {
		return err
	}
	m, fds, err := c.recv()
	unixfd.CloseAll(fds)
	if err != nil {
		return fmt.Errorf("identity helper did not start: %w", err)
	}
	if m.Type != msgStarted {
		return fmt.Errorf("identity helper failed: %s", m.Message)
	}
	return c.setTimeout(0)
}

// serve hands a checked run request to the helper and waits until the
// helper has finished it; onPid learns the command's pid. false means the
// helper could not take it; fds are then still open and the caller starts
// the command itself.
func (h *helper) serve(c conn, m *message, fds []int, onPid func(int)) bool {
	id, done := h.register(onPid)
	if done == nil {
		return false
	}
	fwd := *m
	fwd.ID = id
	fwd.User = &UserSpec{Mode: "root"} // the helper already is the user
	fwd.Build, fwd.TTLSeconds = "", nil
	// The body goes on as it came: inline, or the same memfd, which the
	// agent itself never has to read.
	fwd.Argv, fwd.Env, fwd.Withheld = nil, nil, nil
	h.sendMu.Lock()
	err := h.c.send(&fwd, append([]int{c.fd}, fds...)...)
	h.sendMu.Unlock()
	if err != nil {
		h.complete(id)
		return false
	}
	unixfd.CloseAll(fds)
	<-done
	return true
}

func (h *helper) register(onPid func(int)) (int64, chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dead {
		return 0, nil
	}
	h.nextID++
	done := make(chan struct{})
	h.pending[h.nextID] = done
	h.onPid[h.nextID] = onPid
	return h.nextID, done
}

func (h *helper) complete(id int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if done := h.pending[id]; done != nil {
		close(done)
		delete(h.pending, id)
	}
	delete(h.groups, id)
	delete(h.onPid, id)
}

func (h *helper) started(id int64, pgid int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pending[id] != nil && pgid > 0 {
		h.groups[id] = pgid
		if f := h.onPid[id]; f != nil {
			f(pgid)
		}
	}
}

// readLoop completes requests the helper reports done; when the helper
// dies, every pending request is over too (its clients see the connection
// close).
func (h *helper) readLoop(forget func()) {
	for {
		m, fds, err := h.c.recv()
		unixfd.CloseAll(fds)
		if err != nil {
			break
		}
		switch m.Type {
		case msgStarted:
			h.started(m.ID, m.Pid)
		case msgDone:
			h.complete(m.ID)
		}
	}
	forget()
	h.mu.Lock()
	h.dead = true
	// Commands of a dead helper have nobody to report their exit: end them,
	// as if their clients had gone. A command started just before the
	// helper died may not be in groups yet; its user namespace gives it away.
	for _, pgid := range h.groups {
		_ = unix.Kill(-pgid, unix.SIGKILL)
	}
	killUserns(h.userns)
	for id, done := range h.pending {
		close(done)
		delete(h.pending, id)
	}
	h.mu.Unlock()
	h.c.close()
}

// runHelper is the helper process: it serves requests handed over on fd 3
// until the agent goes away.
func runHelper() int {
	// Commands run as the same uid; they must not be able to ptrace the
	// helper, which holds the connections of other requests.
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	closeOnExecAll()
	parent := conn{fd: helperFD}
	if err := checkPeer(parent.fd, os.Getuid()); err != nil {
		fmt.Fprintln(os.Stderr, "lectic-nix-sandbox helper:", err)
		return 125
	}
	a := newAgent("", 0, false)
	a.isHelper = true
	if os.Getenv(envHelper) == helperDropCaps {
		run, err := capFreeThread()
		if err != nil {
			_ = parent.send(&message{Type: msgError, Message: err.Error()})
			return 125
		}
		a.reaper.runOn = run
	}
	if err := a.confineSelf(); err != nil {
		_ = parent.send(&message{Type: msgError, Message: err.Error()})
		return 125
	}
	if err := parent.send(&message{Type: msgStarted, Pid: os.Getpid()}); err != nil {
		return 125
	}
	go a.reaper.run()
	var sendMu sync.Mutex
	a.agentGone = func() bool {
		fds := []unix.PollFd{{Fd: int32(parent.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err == nil && n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
	}
	a.onStart = func(id int64, pid int) {
		sendMu.Lock()
		_ = parent.send(&message{Type: msgStarted, ID: id, Pid: pid})
		sendMu.Unlock()
	}
	for {
		m, fds, err := parent.recv()
		if err != nil {
			a.reaper.killAll()
			return 0
		}
		if m.Type != msgRun || len(fds) != 4+m.bodyFDs() {
			unixfd.CloseAll(fds)
			continue
		}
		go func() {
			c := conn{fd: fds[0]}
			a.begin()
			a.handleRun(c, m, fds[1:])
			c.close()
			sendMu.Lock()
			_ = parent.send(&message{Type: msgDone, ID: m.ID})
			sendMu.Unlock()
		}()
	}
}

// confineSelf puts the helper, every thread of it, under the agent's
// filter, so that every command it forks inherits it, and answers the
// refusals on the filter's listener.
func (a *agent) confineSelf() error {
	conf, err := confinementFromEnv()
	if err != nil {
		return err
	}
	a.conf = conf
	if conf.filter == nil {
		return nil
	}
	listener, err := conf.kernelFilter().Install(seccomp.AllThreads)
	if err != nil {
		return err
	}
	a.filtered = true
	go conf.serveListener(listener, func(n *seccomp.Notification, _ seccomp.Decision) {
		// A command can be refused before handleRun has registered its
		// call (right after the fork): it waits for the answer, so
		// waiting briefly for the registration costs it nothing else.
		rep := a.refusals.find(int(n.Pid))
		for i := 0; rep == nil && i < 20 && seccomp.Valid(listener, n.ID); i++ {
			time.Sleep(5 * time.Millisecond)
			rep = a.refusals.find(int(n.Pid))
		}
		comm := commOf(n.Pid)
		if seccomp.Valid(listener, n.ID) {
			rep.refused(conf.filter, n, comm)
		}
	})
	return nil
}

// capFreeThread starts a goroutine locked to a thread without any
// capability and returns a function that runs f on that thread. Children
// forked there inherit the thread's empty capability sets.
func capFreeThread() (func(f func()), error) {
	jobs := make(chan func())
	ready := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the helper
		if err := dropAllCaps(); err != nil {
			ready <- fmt.Errorf("drop capabilities: %w", err)
			return
		}
		close(ready)
		for f := range jobs {
			f()
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return func(f func()) {
		done := make(chan struct{})
		jobs <- func() { f(); close(done) }
		<-done
	}, nil
}

package warm

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/spawn"
)

// exitStatus is how a command ended: its exit code, or the signal that
// killed it (code is then 0).
type exitStatus struct{ code, signal int }

// proc is one command the agent started and has not yet reaped.
type proc struct {
	pid    int
	r      *reaper
	exited chan exitStatus // receives exactly one status
	// listener is the seccomp listener of a filter installed as the
	// command started (package spawn), for the agent to serve; -1: none.
	listener int
}

// reaper is the agent's only waiter. As PID 1 (or a subreaper) the agent
// inherits every orphan in the container, so one loop reaps all children
// and hands the statuses of tracked commands to their connections; a
// per-command wait would race with it.
type reaper struct {
	mu    sync.Mutex // held across spawn and registration, so no exit is missed
	procs map[int]*proc
	kick  chan struct{}
	// runOn, when set, runs every fork on one dedicated thread (a uid 0
	// helper's capability-free thread).
	runOn func(f func())
}

func newReaper() *reaper {
	return &reaper{procs: make(map[int]*proc), kick: make(chan struct{}, 1)}
}

// spawn starts a prepared command with the given fds and tracks it.
func (r *reaper) spawn(s *cmdSpec, files []uintptr) (*proc, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, listener, err := r.forkExec(s, files)
	if err != nil {
		return nil, err
	}
	p := &proc{pid: pid, r: r, exited: make(chan exitStatus, 1), listener: listener}
	r.procs[pid] = p
	return p, nil
}

// spawnFiles starts an untracked child (a helper) with the given fds; its
// exit is reaped and discarded like an orphan's.
func (r *reaper) spawnFiles(s *cmdSpec, files []uintptr) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, _, err := r.forkExec(s, files)
	return pid, err
}

// forkExec starts s, confined as it starts when s.confine is set (then
// listener is its filter's, or -1); r.mu is held.
func (r *reaper) forkExec(s *cmdSpec, files []uintptr) (pid, listener int, err error) {
	defer withStackLimit(s.stack)()
	listener = -1
	fork := func() {
		if s.confine != nil {
			pid, listener, err = spawn.Start(s.attr(files))
			return
		}
		pid, err = syscall.ForkExec(s.path, s.argv, &syscall.ProcAttr{Dir: s.dir, Env: s.env, Files: files, Sys: s.sys})
	}
	if r.runOn != nil {
		r.runOn(fork)
	} else {
		fork()
	}
	if err != nil {
		return 0, -1, err
	}
	select {
	case r.kick <- struct{}{}:
	default:
	}
	return pid, listener, nil
}

// kill signals the command's process group while the command is alive
// (not yet reaped, so its pid, the group's id, cannot have been reused),
// and reports whether it did.
func (p *proc) kill(sig unix.Signal) bool {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	if p.r.procs[p.pid] == p {
		_ = unix.Kill(-p.pid, sig)
		return true
	}
	return false
}

// killAll ends every tracked command's process group; used when the agent
// exits without being PID 1 of a pid namespace that would do it anyway.
func (r *reaper) killAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for pid := range r.procs {
		_ = unix.Kill(-pid, unix.SIGKILL)
	}
}

// childInfo is the head of siginfo_t for SIGCHLD-style results.
type childInfo struct {
	Signo, Errno, Code, _ int32
	Pid                   int32
	UID                   uint32
	Status                int32
	_                     [100]byte
}

// run reaps children forever.
func (r *reaper) run() {
	for {
		pid, err := r.next()
		if err == unix.ECHILD {
			<-r.kick
			continue
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "lectic-nix-sandbox agent: waitid:", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		r.reap(pid)
	}
}

// next blocks until some child has exited, without reaping it.
func (r *reaper) next() (int, error) {
	var info childInfo
	for {
		err := unix.Waitid(unix.P_ALL, 0, (*unix.Siginfo)(unsafe.Pointer(&info)), unix.WEXITED|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		return int(info.Pid), err
	}
}

// reap collects pid and delivers its status if it is a tracked command.
func (r *reaper) reap(pid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return // already reaped by a failed ForkExec
		}
		break
	}
	p := r.procs[pid]
	if p == nil {
		return
	}
	delete(r.procs, pid)
	st := exitStatus{code: ws.ExitStatus()}
	if ws.Signaled() {
		st = exitStatus{signal: int(ws.Signal())}
	}
	p.exited <- st
}

// withStackLimit sets this process's soft RLIMIT_STACK to want, as far as
// the hard limit allows, for the fork that follows, and returns what puts
// it back. The stack limit decides how much argv and environment execve
// takes, so a command gets its caller's. Limits belong to the whole
// process; r.mu is held across every fork, so no other command starts
// under a limit meant for this one. nil changes nothing.
func withStackLimit(want *uint64) (restore func()) {
	restore = func() {}
	if want == nil {
		return restore
	}
	var old unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_STACK, &old) != nil {
		return restore
	}
	cur := min(*want, old.Max)
	if cur == old.Cur || unix.Setrlimit(unix.RLIMIT_STACK, &unix.Rlimit{Cur: cur, Max: old.Max}) != nil {
		return restore
	}
	return func() { _ = unix.Setrlimit(unix.RLIMIT_STACK, &old) }
}

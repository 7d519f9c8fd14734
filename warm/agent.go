package warm

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/unixfd"
)

// Environment of the agent, set by the supervisor.
const (
	envAgent   = "_LECTIC_NIX_SANDBOX_AGENT"
	envBuild   = "_LECTIC_NIX_SANDBOX_BUILD"
	envMounts  = "_LECTIC_NIX_SANDBOX_MOUNTS"
	envTTL     = "_LECTIC_NIX_SANDBOX_TTL"
	envOneShot = "_LECTIC_NIX_SANDBOX_ONESHOT"
	// envWatch names the fd of the supervisor's watch pipe: when it hangs
	// up, the supervisor is gone and so must the container be.
	envWatch = "_LECTIC_NIX_SANDBOX_WATCH"
)

// listenFD is where the agent finds its listening socket.
const listenFD = 3

// IsAgent reports whether this process was started as an agent or an
// identity helper.
func IsAgent() bool { return os.Getenv(envAgent) != "" }

// agentGCPercent is the GOGC of agents and identity helpers.
const agentGCPercent = 20

// RunAgent serves requests on the listening socket at fd 3 until the TTL
// expires, a stop message arrives, or (one-shot) the first request is done.
// It returns the process exit status.
func RunAgent() int {
	// Commands run as the same uid, and in root mode with the same
	// capabilities; none of them may ptrace the agent or reach its
	// descriptors through /proc or pidfd_getfd. A non-dumpable process's
	// /proc files belong to root of its user namespace: the agent, in a
	// container, so it can still write the id maps of the helpers it
	// starts. An agent that is not uid 0 (a test's, on the host) would
	// lose that, and stays dumpable.
	if os.Getuid() == 0 {
		_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	}
	// Agents and helpers live for hours and are idle between small
	// requests: a low heap target keeps their RSS near its idle size at a
	// cost of a few extra short collections.
	debug.SetGCPercent(agentGCPercent)
	if os.Getenv(envHelper) != "" {
		return runHelper()
	}
	a, err := newAgentFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lectic-nix-sandbox agent:", err)
		return 125
	}
	return a.serve()
}

// agent is the state of one agent process.
type agent struct {
	lfd     int
	watchFD int // the supervisor's watch pipe; -1 without one
	build   string
	mounts  string // Spec.Mounts of the container, which requests must match
	oneShot bool
	created time.Time
	reaper  *reaper
	done    chan int // exit status of the whole agent

	mu       sync.Mutex
	ttl      time.Duration
	running  int
	idleFrom time.Time
	// expire asks the agent to exit as soon as nothing runs (an evicted
	// or replaced container); a new run request withdraws it.
	expire   bool
	inflight int // accepted connections whose request is not read yet

	// calls is set when the container has an allow-list: refusals are
	// reported to the calls running (netreport.go).
	calls *callLog

	helpersMu sync.Mutex
	helpers   map[helperKey]*helper

	noticeMu sync.Mutex
	reported map[string]bool // withheld names this container has reported
	isHelper bool

	// conf is what commands run under; filtered says this process itself
	// is under conf.filter (an identity helper), so its children inherit
	// it, and refusals maps their process groups to the calls they belong
	// to.
	conf      confinement
	filtered  bool
	refusals  callTable
	onStart   func(id int64, pid int) // a helper tells its agent which group to kill if it dies
	agentGone func() bool             // a helper's check that its agent still lives
}

func newAgentFromEnv() (*agent, error) {
	ttl, err := strconv.ParseInt(os.Getenv(envTTL), 10, 64)
	if (err != nil || ttl < 0 || ttl > maxTTLSeconds) && os.Getenv(envTTL) != "" {
		return nil, fmt.Errorf("bad %s=%q: want whole seconds from 0 to %d", envTTL, os.Getenv(envTTL), maxTTLSeconds)
	}
	if _, err := unix.FcntlInt(uintptr(listenFD), unix.F_GETFD, 0); err != nil {
		return nil, fmt.Errorf("no listening socket at fd %d: %w", listenFD, err)
	}
	closeOnExecAll()
	conf, err := confinementFromEnv()
	if err != nil {
		return nil, err
	}
	// When not PID 1 (tests, diagnosis), orphans of commands must still be
	// reaped here rather than by whatever init the host has.
	if os.Getpid() != 1 {
		_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	}
	a := newAgent(os.Getenv(envBuild), time.Duration(ttl)*time.Second, os.Getenv(envOneShot) != "")
	a.mounts = os.Getenv(envMounts)
	a.lfd = listenFD
	if fd, ok, err := fdFromEnv(envReports); err != nil {
		return nil, err
	} else if ok {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return nil, fmt.Errorf("no report channel at fd %d: %w", fd, err)
		}
		if a.calls, err = newCallLog(os.NewFile(uintptr(fd), "reports")); err != nil {
			return nil, err
		}
		go a.calls.serveReports()
	}
	a.conf = conf
	if fd, ok, err := fdFromEnv(envWatch); err != nil {
		return nil, err
	} else if ok {
		if err := watchSupervisor(fd); err != nil {
			return nil, err
		}
		a.watchFD = fd
	}
	return a, nil
}

// watchSupervisor makes the agent die with its supervisor: SIGKILL when the
// thread that started the container exits (the supervisor's main thread),
// and, since that may already have happened before the signal was set,
// a check of the watch pipe right after: a hang-up means the supervisor is
// gone. acceptLoop keeps watching the pipe.
func watchSupervisor(fd int) error {
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("set the parent-death signal: %w", err)
	}
	if supervisorGone(fd, 0) {
		return errors.New("the supervisor is gone")
	}
	return nil
}

// supervisorGone polls the watch pipe for up to ms milliseconds.
func supervisorGone(fd, ms int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, ms)
	return err == nil && n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLIN) != 0
}

// closeOnExecAll marks every fd above stdio close-on-exec, so nothing the
// agent inherited reaches a command.
func closeOnExecAll() {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}

func newAgent(build string, ttl time.Duration, oneShot bool) *agent {
	now := time.Now()
	return &agent{
		lfd:      -1,
		watchFD:  -1,
		build:    build,
		oneShot:  oneShot,
		created:  now,
		reaper:   newReaper(),
		done:     make(chan int, 1),
		ttl:      ttl,
		idleFrom: now,
		helpers:  make(map[helperKey]*helper),
		reported: make(map[string]bool),
	}
}

// serve runs the agent until it has a reason to exit.
func (a *agent) serve() int {
	go a.reaper.run()
	go a.acceptLoop()
	code := <-a.done
	a.reaper.killAll()
	return code
}

func (a *agent) finish(code int) {
	select {
	case a.done <- code:
	default:
	}
}

// acceptLoop accepts connections and decides the TTL in one goroutine, so
// a connection is either accepted and served, or never accepted when the
// agent exits; its client then gets ECONNRESET and safely starts a fresh
// agent. A connection is counted as in flight from the moment it is
// accepted.
func (a *agent) acceptLoop() {
	fds := []unix.PollFd{{Fd: int32(a.lfd), Events: unix.POLLIN}}
	if a.watchFD >= 0 {
		fds = append(fds, unix.PollFd{Fd: int32(a.watchFD), Events: unix.POLLIN})
	}
	for {
		timeout := a.pollTimeout()
		if timeout == 0 {
			a.finish(0)
			return
		}
		n, err := unix.Poll(fds, timeout)
		if err == unix.EINTR || (err == nil && n == 0) {
			continue
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "lectic-nix-sandbox agent: poll:", err)
			a.finish(125)
			return
		}
		if len(fds) > 1 && fds[1].Revents != 0 {
			fmt.Fprintln(os.Stderr, "lectic-nix-sandbox agent: the supervisor is gone; ending the container")
			a.finish(125)
			return
		}
		if fds[0].Revents&unix.POLLIN == 0 {
			continue
		}
		fd, _, err := unix.Accept4(a.lfd, unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.ECONNABORTED || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "lectic-nix-sandbox agent: accept:", err)
			a.finish(125)
			return
		}
		// Only the agent's own user (the caller, uid 0 here) and root may
		// talk to it; the temp root's modes already keep others out.
		if checkPeer(fd, os.Getuid(), 0) != nil {
			_ = unix.Close(fd)
			continue
		}
		a.mu.Lock()
		a.inflight++
		a.mu.Unlock()
		go a.handle(conn{fd: fd})
		if a.oneShot {
			// Nobody else may join a one-shot container.
			_ = unix.Close(a.lfd)
			return
		}
	}
}

// pollTimeout is how long acceptLoop may wait for a connection (ms; -1
// forever, 0 = the TTL expired). While anything runs the loop looks again
// every second, since the end of a request re-arms the TTL.
func (a *agent) pollTimeout() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	busy := a.running > 0 || a.inflight > 0
	switch {
	case busy:
		return 1000
	case a.expire:
		return 0
	case a.ttl == 0:
		return -1
	}
	left := time.Until(a.idleFrom.Add(a.ttl))
	if left <= 0 {
		return 0
	}
	return int(left/time.Millisecond) + 1
}

// classified ends a connection's in-flight state once its request type is
// known; a run request then counts as running.
func (a *agent) classified(run bool) {
	a.mu.Lock()
	a.inflight--
	if run {
		a.running++
		a.expire = false // in use again: no longer the one to let go
	}
	a.mu.Unlock()
}

// begin counts a running request; end uncounts it.
func (a *agent) begin() {
	a.mu.Lock()
	a.running++
	a.mu.Unlock()
}

func (a *agent) end() {
	a.mu.Lock()
	a.running--
	if a.running == 0 {
		a.idleFrom = time.Now()
	}
	a.mu.Unlock()
}

// setTTL takes a request's TTL. A value that is negative or would
// overflow a time.Duration is no TTL the client could have meant: ignored.
func (a *agent) setTTL(seconds int64) {
	if seconds < 0 || seconds > maxTTLSeconds {
		return
	}
	a.mu.Lock()
	a.ttl = time.Duration(seconds) * time.Second
	a.mu.Unlock()
}

// maxTTLSeconds is the largest TTL a time.Duration holds.
const maxTTLSeconds = int64(math.MaxInt64 / time.Second)

func (a *agent) status() *agentStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := &agentStatus{Running: a.running, TTLSeconds: int64(a.ttl / time.Second), Created: a.created}
	if a.running == 0 {
		s.IdleSeconds = int64(time.Since(a.idleFrom) / time.Second)
		s.IdleSince = a.idleFrom
	}
	return s
}

// handle serves one connection: a run, status or stop request.
func (a *agent) handle(c conn) {
	defer c.close()
	m, fds, err := c.recv()
	if err != nil {
		a.classified(false)
		return
	}
	a.classified(m.Type == msgRun)
	switch m.Type {
	case msgRun:
		a.handleRun(c, m, fds)
		if a.oneShot {
			a.finish(0)
		}
	case msgStatus:
		unixfd.CloseAll(fds)
		_ = c.send(&message{Type: msgStatus, Proto: Proto, Build: a.build, Status: a.status()})
	case msgExpire:
		unixfd.CloseAll(fds)
		a.mu.Lock()
		a.expire = true
		a.mu.Unlock()
		_ = c.send(&message{Type: msgExpire, Proto: Proto})
	case msgStop:
		unixfd.CloseAll(fds)
		_ = c.send(&message{Type: msgStop, Proto: Proto})
		a.finish(0)
	default:
		unixfd.CloseAll(fds)
		_ = c.send(&message{Type: msgError, Code: 125, Message: "unknown request type " + strconv.Quote(m.Type)})
	}
}

// handleRun starts the command, relays signals to it, and reports its exit.
// The request counts as running until its exit status is known, so a
// status request right after the client's return sees it idle.
func (a *agent) handleRun(c conn, m *message, fds []int) {
	if !a.checkRun(c, m, fds) {
		unixfd.CloseAll(fds)
		a.end()
		return
	}
	if !a.isHelper && m.Withheldc > 0 {
		// Only the names are needed here; a body the agent hands to a
		// helper is otherwise never read by the agent.
		if err := m.loadBody(fds); err != nil {
			_ = c.send(&message{Type: msgError, Code: 125, Message: err.Error()})
			unixfd.CloseAll(fds)
			a.end()
			return
		}
	}
	if !a.isHelper {
		// The agent decides what this container has said; a helper
		// relays the notice its agent put in the forwarded request.
		m.Notice = a.withheldNotice(m.Withheld)
	}
	rec := a.calls.add(fds[2])
	defer a.calls.remove(rec)
	if h := a.helperFor(m.User); h != nil && h.serve(c, m, fds, rec.setPid) {
		a.end()
		return
	}
	var rep *callReport
	if a.conf.filter != nil {
		rep = newCallReport(fds[2])
		defer rep.close()
	}
	p, cerr := a.start(c, m, fds, rep)
	unixfd.CloseAll(fds) // the command has its own copies
	if cerr == errClientGone {
		a.end()
		return
	}
	if cerr != nil {
		reply := &message{Type: msgError, Code: cerr.code, Message: cerr.msg, Notice: m.Notice}
		if cerr.code == 127 {
			reply.Missing, reply.Hint = missingCommand(m.Argv, cerr.msg)
		}
		_ = c.send(reply)
		a.end()
		return
	}
	rec.setPid(p.pid)
	m.dropBody()
	if a.filtered {
		a.refusals.add(p.pid, rep)
		defer a.refusals.remove(p.pid)
	}
	if a.onStart != nil {
		a.onStart(m.ID, p.pid)
	}
	if err := c.send(&message{Type: msgStarted, Pid: p.pid}); err != nil {
		p.kill(unix.SIGKILL)
	}
	relayDone := make(chan struct{})
	go a.relay(c, p, killAfter(m), relayDone)
	st := <-p.exited
	a.end()
	// A command killed because the container is going down must not look
	// like a command that died of SIGKILL on its own: the client reports
	// the sandbox failure instead.
	if a.agentGone == nil || !a.agentGone() {
		_ = c.send(&message{Type: msgExit, Code: st.code, Signal: st.signal})
	}
	c.shutdown()
	<-relayDone
}

// checkRun checks a run request; on failure it has answered the client.
func (a *agent) checkRun(c conn, m *message, fds []int) bool {
	if m.Proto != Proto || (a.build != "" && m.Build != a.build) {
		_ = c.send(&message{Type: msgError, Code: 125, Reason: reasonMismatch, Proto: Proto, Build: a.build,
			Message: fmt.Sprintf("agent speaks protocol %d build %q, client protocol %d build %q", Proto, a.build, m.Proto, m.Build)})
		return false
	}
	if !a.isHelper && !MountsCovered(m.Mounts, a.mounts) {
		// What the binds show changed on the host (a workdir removed and
		// made again, a protected file that appeared): this container
		// shows the old state, so the client replaces it.
		_ = c.send(&message{Type: msgError, Code: 125, Reason: reasonMismatch, Proto: Proto, Build: a.build,
			Message: "the container's mounts are outdated"})
		return false
	}
	if m.TTLSeconds != nil {
		a.setTTL(*m.TTLSeconds)
	}
	if want := 3 + m.bodyFDs(); len(fds) != want {
		_ = c.send(&message{Type: msgError, Code: 125, Message: fmt.Sprintf("run request carries %d fds, want %d (stdin, stdout, stderr, and a memfd body if announced)", len(fds), want)})
		return false
	}
	return true
}

// relay forwards signal messages to the command's process group, and kills
// the group when the client goes away before the command ends. An ending
// signal (SIGTERM, SIGINT, SIGHUP) is followed by SIGKILL after grace.
func (a *agent) relay(c conn, p *proc, grace time.Duration, done chan<- struct{}) {
	defer close(done)
	ending := false
	for {
		m, fds, err := c.recv()
		unixfd.CloseAll(fds)
		if errors.Is(err, io.EOF) || err != nil {
			p.kill(unix.SIGKILL)
			return
		}
		if m.Type != msgSignal || m.Signal <= 0 || m.Signal >= 65 {
			continue
		}
		sig := unix.Signal(m.Signal)
		if p.kill(sig) && isEnding(sig) && !ending {
			ending = true
			go endGroup(p, grace)
		}
	}
}

// errClientGone means the client went away before its command started.
var errClientGone = &cmdError{125, "the client went away"}

// noticeTimeout bounds the wait for a client to print a notice.
const noticeTimeout = 30 * time.Second

// tell has the client print n's lines before the command starts, so they
// come first on the caller's stderr and are never split by the command's
// own output; nothing to say costs nothing. false means the client went
// away, and the command must not start.
func tell(c conn, n *message) bool {
	if n.Notice == "" && n.Missing == "" {
		return true
	}
	if c.setTimeout(noticeTimeout) != nil || c.send(n) != nil {
		return false
	}
	m, fds, err := c.recv()
	unixfd.CloseAll(fds)
	return err == nil && m.Type == msgNoticed && c.setTimeout(0) == nil
}

func isEnding(sig unix.Signal) bool {
	return sig == unix.SIGTERM || sig == unix.SIGINT || sig == unix.SIGHUP
}

// killAfter is a run request's grace period after an ending signal.
func killAfter(m *message) time.Duration {
	if m.KillAfterMs == nil {
		return DefaultKillAfter
	}
	return time.Duration(*m.KillAfterMs) * time.Millisecond
}

// start resolves and starts the command of a run request, under the
// agent's confinement: inherited from a filtered helper, or set up as the
// command starts (package spawn), whose filter's refusals are reported to
// rep.
func (a *agent) start(c conn, m *message, fds []int, rep *callReport) (*proc, *cmdError) {
	if err := m.loadBody(fds); err != nil {
		return nil, &cmdError{125, err.Error()}
	}
	user := UserSpec{Mode: "caller"}
	if m.User != nil {
		user = *m.User
	}
	spec, cerr := prepare(m.Argv, m.Env, m.Cwd, user)
	if cerr != nil {
		return nil, cerr
	}
	missing, hint := missingScript(m.Argv)
	if !tell(c, &message{Type: msgNotice, Notice: m.Notice, Missing: missing, Hint: hint}) {
		return nil, errClientGone
	}
	spec.stack = m.StackLimit
	files := []uintptr{uintptr(fds[0]), uintptr(fds[1]), uintptr(fds[2])}
	a.conf.confine(spec, a.filtered)
	p, err := a.reaper.spawn(spec, files)
	if err != nil {
		return nil, execError(m.Argv[0], err)
	}
	if p.listener >= 0 {
		go a.conf.serve(p.listener, rep)
	}
	return p, nil
}

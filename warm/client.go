package warm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/execargs"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/termtext"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/unixfd"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/namespace"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netpolicy"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

// Exit codes the client produces itself.
const (
	exitTimeout = 124
	exitSandbox = 125
)

// Request is one command to run in the container.
type Request struct {
	Argv []string
	Env  []string // the command's whole environment (oci.EnvRecipe.Apply); its PATH resolves Argv[0]
	// Withheld names the caller's variables the environment policy kept
	// back as secrets (oci.EnvRecipe.Build): names only. The container
	// reports each name once, on the caller's stderr.
	Withheld []string
	Cwd      string // in-container path; "" means /
	User     UserSpec
	// Stdin, Stdout and Stderr are passed to the command as they are (no
	// copying). nil means this process's own.
	Stdin, Stdout, Stderr *os.File
	// Timeout > 0 ends the command when it expires as SIGTERM would (see
	// KillAfter); Run then returns 124.
	Timeout time.Duration
	// KillAfter is how long the command's process group has, after the
	// client forwards SIGTERM, SIGINT or SIGHUP or the timeout expires,
	// before whatever is left of it gets SIGKILL. 0 means
	// DefaultKillAfter; a negative value means at once.
	KillAfter time.Duration
}

// DefaultKillAfter is the grace period of Request.KillAfter.
const DefaultKillAfter = 2 * time.Second

// endingSignals are the signals that end a call: the client forwards them,
// the agent follows them with SIGKILL after the grace period, and the
// client exits 128+N.
var endingSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// Spec describes the warm container a request runs in.
type Spec struct {
	Key     string        // from Key(); names T/warm/<Key>
	TTL     time.Duration // idle time after which the agent exits; 0 = never
	OneShot bool          // a private container that ends after this call (--no-keep-warm)
	BuildID string        // from BuildID(); "" = computed from /proc/self/exe
	Image   string        // shown by List: a human label of the image
	ChainID string        // the chain id of the image's tree; List reports it so GC keeps the tree
	Workdir string        // shown by List; "" = Create.Config.Workdir
	// Family names the container's shape without its image and build
	// (the workdir and options). When a container of a family starts,
	// the other containers of that family were replaced: each is stopped
	// as soon as it is idle. "" belongs to no family.
	Family string
	// MaxWarm > 0 keeps at most that many idle warm containers under the
	// temp root, this one counted: when this container starts, the least
	// recently used others are stopped. 0 = no limit.
	MaxWarm int
	// Mounts names the state of the host paths the container binds and
	// covers (their identities, which protected files exist), as
	// MountItems; a request with an item the container lacks replaces it
	// (MountsCovered), so a call never runs in a container that shows a
	// deleted workdir or lacks a cover.
	Mounts string
	// TicketDir holds the fast-path tickets (package fastpath) of calls
	// that may name this container. When the container ends, its
	// supervisor removes the tickets whose agent socket is gone, so
	// tickets do not outlive their containers. "" leaves them.
	TicketDir string
	// CacheRoot is C. When Create.Config.AgentPath is empty, the container
	// gets AgentBinary(CacheRoot); resolved only when a container is created.
	CacheRoot string
	// Users and Groups are added to the image's /etc/passwd and /etc/group
	// (oci.MergePasswd, oci.MergeGroup) when the container is created.
	Users  []oci.User
	Groups []oci.Group
	// Net is the container's network allow-list; nil means none (no
	// network, or the host's with Create.Config.AllowNet). The supervisor
	// serves it (package netfwd) and the agent reports its refusals to the
	// calls that meet them.
	Net *netpolicy.Policy `json:"net,omitempty"`
	// Create describes the container. cmd fills Config (Image, Workdir,
	// Home, HomeTarget, Volumes, AllowNet, AgentPath from AgentBinary,
	// Hostname, ...); warm fills ID, StateDir, the overlay dirs, Volatile,
	// EtcFiles, InitArgs, InitEnv, ExtraFiles, Stdio and Config.HostUID/GID.
	Create namespace.CreateOptions
	// Seccomp is the filter every command runs under.
	Seccomp SeccompPolicy
	// Plain runs the agent as an ordinary process without any namespace.
	// It isolates nothing: it exists for tests and diagnosis.
	Plain bool
}

// errAgentGone means the agent closed the connection before it took the
// request; a fresh agent is started and the request sent again.
var errAgentGone = errors.New("agent closed the connection before taking the request")

// errMismatch means the agent is of another protocol or build.
var errMismatch = errors.New("agent of another protocol or build")

// Run runs r in the warm container described by s, starting the container
// when none answers, and returns the exit code: the command's, 128+N when a
// signal N killed it, 124 on timeout, 126/127 when it cannot be executed or
// found (the reason is then written to r.Stderr). Failures of the sandbox
// itself come back as (125, error) with a one-line message.
//
// ctx bounds the start of a container; once the command runs, it is ended
// by forwarded signals and r.Timeout, not by ctx.
func Run(ctx context.Context, tempRoot string, s Spec, r Request) (int, error) {
	sock, err := resolve(tempRoot, &s, &r)
	if err != nil {
		return exitSandbox, err
	}
	m, bodyFD, err := newRequest(s, r)
	if errors.Is(err, execargs.ErrTooLong) {
		// No execve takes it, here or in the container: said as the
		// agent says E2BIG, before any container is started for it.
		cerr := execError(argv0(r.Argv), syscall.E2BIG)
		say(orDefault(r.Stderr, os.Stderr), cerr.msg)
		return cerr.code, nil
	}
	if err != nil {
		return exitSandbox, err
	}
	if bodyFD >= 0 {
		defer unix.Close(bodyFD)
	}
	code, err := runWithRetry(ctx, tempRoot, s, r, sock, m, bodyFD)
	if s.OneShot {
		// Nothing stays behind: wait for the supervisor's cleanup.
		waitGone(warmDir(tempRoot, s.Key), 10*time.Second)
		_ = os.Remove(keyLockPath(tempRoot, s.Key))
	}
	return code, err
}

// resolve completes s and r as a call sends them and names the agent's
// socket.
func resolve(tempRoot string, s *Spec, r *Request) (sock string, err error) {
	if err := s.fill(); err != nil {
		return "", err
	}
	sock = socketPath(tempRoot, s.Key)
	if err := checkSocketPath(sock); err != nil {
		return "", err
	}
	r.User = imageUser(r.User, *s)
	return sock, nil
}

// imageUser resolves the "image" mode without a name to the image config's
// User; an image without one runs as root, as it would under Docker.
func imageUser(u UserSpec, s Spec) UserSpec {
	if u.Mode != "image" || u.Name != "" {
		return u
	}
	if user := s.Create.Config.Image.Config.User; user != "" {
		u.Name = user
		return u
	}
	return UserSpec{Mode: "root"}
}

// fill completes the defaults of a spec.
func (s *Spec) fill() error {
	if s.Key == "" {
		return errors.New("warm: empty key")
	}
	if s.BuildID == "" {
		id, err := BuildID("/proc/self/exe")
		if err != nil {
			return err
		}
		s.BuildID = id
	}
	if s.OneShot {
		s.Key += "-" + randomHex(4)
	}
	return nil
}

// newRequest is r's run message and, when its body is too large to go
// inline, the memfd that carries it (else -1; the caller closes it).
func newRequest(s Spec, r Request) (*message, int, error) {
	m := runMessage(s, r)
	fd, err := attachBody(m)
	if err != nil {
		return nil, -1, err
	}
	return m, fd, nil
}

func argv0(argv []string) string {
	if len(argv) == 0 {
		return ""
	}
	return argv[0]
}

func runWithRetry(ctx context.Context, tempRoot string, s Spec, r Request, sock string, m *message, bodyFD int) (int, error) {
	const attempts = 4
	var last error
	for i := 0; i < attempts; i++ {
		c, err := dial(sock)
		if err != nil {
			if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ECONNREFUSED) {
				return exitSandbox, fmt.Errorf("reach the sandbox agent: %w", err)
			}
			if err := ensureAgent(ctx, tempRoot, s); err != nil {
				return exitSandbox, err
			}
			continue
		}
		code, err := call(c, r, m, bodyFD)
		switch {
		case errors.Is(err, errMismatch):
			if err := Stop(tempRoot, s.Key); err != nil {
				return exitSandbox, fmt.Errorf("replace an outdated sandbox agent: %w", err)
			}
		case errors.Is(err, errAgentGone):
			last = err
		default:
			return code, err
		}
	}
	return exitSandbox, fmt.Errorf("the sandbox agent keeps going away (%v); see %s/log", last, warmDir(tempRoot, s.Key))
}

// call sends the run request m (its body in bodyFD unless that is -1) on
// c and follows it to the command's exit.
func call(c conn, r Request, m *message, bodyFD int) (int, error) {
	defer c.close()
	stdio := [3]*os.File{orDefault(r.Stdin, os.Stdin), orDefault(r.Stdout, os.Stdout), orDefault(r.Stderr, os.Stderr)}
	fds, err := rawFDs(stdio)
	if err != nil {
		return exitSandbox, err
	}
	// Signals are caught before the command starts, so one that arrives
	// while it starts is forwarded rather than ending the client.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, endingSignals...)
	defer signal.Stop(sigs)
	pass := fds[:]
	if bodyFD >= 0 {
		pass = append(pass, bodyFD)
	}
	err = c.send(m, pass...)
	for _, f := range stdio {
		runtime.KeepAlive(f)
	}
	switch {
	case errors.Is(err, unix.EPIPE), errors.Is(err, unix.ECONNRESET), errors.Is(err, unix.ECONNREFUSED):
		return exitSandbox, errAgentGone
	case err != nil:
		// Not the agent's doing: another attempt would fail the same way.
		return exitSandbox, fmt.Errorf("sandbox agent: %w", err)
	}
	reply, fds2, err := c.recv()
	unixfd.CloseAll(fds2)
	for err == nil && reply.Type == msgNotice {
		// Printed before the command starts, and acknowledged so that
		// it starts only then.
		say(stdio[2], reply.Notice)
		if reply.Missing != "" && reply.Hint != "" && HostHas(reply.Missing) {
			say(stdio[2], reply.Hint)
		}
		if err = c.send(&message{Type: msgNoticed}); err != nil {
			return exitSandbox, agentDied(err)
		}
		reply, fds2, err = c.recv()
		unixfd.CloseAll(fds2)
		if errors.Is(err, unix.ECONNRESET) {
			return exitSandbox, agentDied(err)
		}
	}
	switch {
	case errors.Is(err, unix.ECONNRESET):
		// The agent never read the request (it exited with the request
		// still queued): nothing ran, so a fresh agent may take it.
		return exitSandbox, errAgentGone
	case err != nil:
		// The agent read the request and went away: the command may have
		// started, so it must not be run a second time.
		return exitSandbox, agentDied(err)
	}
	switch {
	case reply.Type == msgError && reply.Reason == reasonMismatch:
		return exitSandbox, errMismatch
	case reply.Type == msgError && reply.Code == exitSandbox:
		return exitSandbox, errors.New(reply.Message)
	case reply.Type == msgError:
		say(stdio[2], reply.Notice)
		if reply.Missing != "" && reply.Hint != "" && HostHas(reply.Missing) {
			say(stdio[2], reply.Hint)
		} else {
			say(stdio[2], reply.Message)
		}
		return reply.Code, nil
	case reply.Type != msgStarted:
		return exitSandbox, fmt.Errorf("sandbox agent answered %q to a run request", reply.Type)
	}
	return follow(c, sigs, r.Timeout)
}

// runMessage is the run request for r, without its body laid out;
// r.User is already resolved.
func runMessage(s Spec, r Request) *message {
	ttl := int64(s.TTL / time.Second)
	m := &message{Type: msgRun, Proto: Proto, Build: s.BuildID, Argv: r.Argv, Env: r.Env, Withheld: r.Withheld,
		Cwd: r.Cwd, User: &r.User, TTLSeconds: &ttl, StackLimit: stackLimit(),
		Mounts: s.Mounts}
	if r.KillAfter != 0 {
		ms := max(int64(r.KillAfter/time.Millisecond), 0)
		m.KillAfterMs = &ms
	}
	return m
}

// stackLimit is this process's soft RLIMIT_STACK, which its command gets
// (message.StackLimit); nil when it cannot be read.
func stackLimit() *uint64 {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_STACK, &rl) != nil {
		return nil
	}
	return &rl.Cur
}

// say writes one line of the sandbox's own on w, in one write so that it
// is never split by the command's output; "" says nothing.
func say(w io.Writer, line string) {
	if line != "" {
		_, _ = io.WriteString(w, "lectic-nix-sandbox: "+termtext.Printable(line)+"\n")
	}
}

// FastRequest is what a fast-path ticket for s and r holds: the agent's
// socket and the run message's JSON header as Run would send it, without
// what the fast path adds for each call: the body (r.Cwd, which the ticket
// holds on its own, its environment, the names it withheld and the command
// words), the body's counts and size, and its own stack limit.
func FastRequest(tempRoot string, s Spec, r Request) (sock string, msg []byte, err error) {
	if s.OneShot {
		return "", nil, errors.New("a one-shot call has no fast path")
	}
	if sock, err = resolve(tempRoot, &s, &r); err != nil {
		return "", nil, err
	}
	m := runMessage(s, r)
	m.StackLimit = nil
	msg, err = json.Marshal(m)
	if err != nil {
		return "", nil, fmt.Errorf("encode the run request: %w", err)
	}
	return sock, msg, nil
}

// follow forwards signals and the timeout to the running command and waits
// for its exit status. The agent ends what an ending signal leaves alive
// (see Request.KillAfter); the call then exits 128+N for the first ending
// signal, or 124 when the timeout came first, whatever the command did
// with the signal.
func follow(c conn, sigs <-chan os.Signal, timeout time.Duration) (int, error) {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	exits := make(chan exitResult, 1)
	go readExit(c, exits)
	ended := 0 // exit code decided by an ending signal or the timeout
	for {
		select {
		case sig := <-sigs:
			n := int(sig.(syscall.Signal))
			_ = c.send(&message{Type: msgSignal, Signal: n})
			if ended == 0 {
				ended = 128 + n
			}
		case <-expired:
			expired = nil
			_ = c.send(&message{Type: msgSignal, Signal: int(syscall.SIGTERM)})
			if ended == 0 {
				ended = exitTimeout
			}
		case res := <-exits:
			return res.code(ended)
		}
	}
}

// exitResult is the end of a call as the connection saw it.
type exitResult struct {
	msg *message
	err error
}

func agentDied(err error) error {
	if errors.Is(err, io.EOF) {
		err = errors.New("connection closed before the exit status arrived")
	}
	return fmt.Errorf("sandbox agent died during the call (%v); run again, the next call starts a fresh container", err)
}

func (e exitResult) code(ended int) (int, error) {
	if e.err != nil {
		return exitSandbox, agentDied(e.err)
	}
	if ended != 0 {
		return ended, nil
	}
	if e.msg.Signal > 0 {
		return 128 + e.msg.Signal, nil
	}
	return e.msg.Code, nil
}

// readExit waits for the exit message; every other message is ignored.
func readExit(c conn, out chan<- exitResult) {
	for {
		m, fds, err := c.recv()
		unixfd.CloseAll(fds)
		if err != nil {
			out <- exitResult{err: err}
			return
		}
		if m.Type == msgExit {
			out <- exitResult{msg: m}
			return
		}
	}
}

func orDefault(f, def *os.File) *os.File {
	if f != nil {
		return f
	}
	return def
}

// rawFDs returns the descriptors of files without switching them to
// blocking mode, as (*os.File).Fd would.
func rawFDs(files [3]*os.File) ([3]int, error) {
	var fds [3]int
	for i, f := range files {
		sc, err := f.SyscallConn()
		if err != nil {
			return fds, fmt.Errorf("pass stdio fd %d: %w", i, err)
		}
		if err := sc.Control(func(fd uintptr) { fds[i] = int(fd) }); err != nil {
			return fds, fmt.Errorf("pass stdio fd %d: %w", i, err)
		}
	}
	return fds, nil
}

package warm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/execargs"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/unixfd"
)

// Proto is the version of the wire protocol between client and agent. A
// client that meets an agent of another version (or another build) replaces
// the agent instead of talking to it.
const Proto = 2

// maxInline is the largest run body that travels in the request's own
// packet (execargs.MaxInline); a larger one comes in a sealed memfd.
const maxInline = execargs.MaxInline

// maxMessage bounds one packet: a JSON header and an inline body.
const maxMessage = maxInline + 32<<10

// maxFDs is the most fds one message carries: a run request forwarded to
// an identity helper has the client's connection, stdio and a memfd body.
const maxFDs = 5

// maxSocketPath is the usable length of sun_path including its NUL.
const maxSocketPath = 107

// Message types on the wire.
const (
	msgRun     = "run"
	msgStarted = "started"
	msgError   = "error"
	msgSignal  = "signal"
	msgExit    = "exit"
	msgStatus  = "status"
	msgStop    = "stop"
	msgDone    = "done" // helper -> agent: a delegated request is over
	// msgNotice (agent -> client, before the command starts) carries
	// lines for the caller's stderr; the client prints them and answers
	// msgNoticed, and only then does the command start.
	msgNotice  = "notice"
	msgNoticed = "noticed"
	// msgExpire asks an agent to exit as soon as no request runs, unless
	// a new run request arrives first; it answers msgExpire.
	msgExpire = "expire"
)

// reasonMismatch marks an error reply that means "this agent speaks another
// protocol or is another build": the client replaces the agent.
const reasonMismatch = "mismatch"

// UserSpec says whom the command runs as inside the container.
type UserSpec struct {
	// Mode is "caller" (default: the caller's uid/gid, no capabilities),
	// "root" (uid 0 of the container with its capabilities), "id" (Name
	// resolved in the container's /etc/passwd, or UID/GID when Name is
	// empty) or "image" (Name is the image config's User, resolved the same
	// way).
	Mode string `json:"mode,omitempty"`
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	// Name is NAME, UID, NAME:GROUP or UID:GID as --user and the image
	// config's User accept.
	Name string `json:"name,omitempty"`
}

// message is every message of the protocol; Type says which fields matter.
type message struct {
	Type  string `json:"type"`
	Proto int    `json:"proto,omitempty"`
	Build string `json:"build,omitempty"`

	// run
	User       *UserSpec `json:"user,omitempty"`
	TTLSeconds *int64    `json:"ttl_seconds,omitempty"`
	// StackLimit is the caller's soft RLIMIT_STACK. It bounds how much
	// argv and environment execve takes (a quarter of it, up to
	// execargs.MaxExec), so the command gets it too, as far as the
	// container's hard limit allows: what the caller's host would run, the
	// sandbox runs.
	StackLimit *uint64 `json:"stack_limit,omitempty"`
	// KillAfterMs is how long the command's process group has after an
	// ending signal (SIGTERM, SIGINT, SIGHUP) before it gets SIGKILL;
	// absent means DefaultKillAfter.
	KillAfterMs *int64 `json:"kill_after_ms,omitempty"`
	// Mounts is Spec.Mounts: an agent whose container was made for other
	// mounts answers with a mismatch.
	Mounts string `json:"mounts,omitempty"`

	// A run message's cwd, argv, environment and withheld names are byte
	// strings (package execargs), not JSON text: its body. The header
	// gives the counts and the body's size; the body follows the header
	// in the same packet after a NUL, or, when BodyFD, is a sealed memfd
	// passed as the last fd.
	Argc      int  `json:"argc,omitempty"`
	Envc      int  `json:"envc,omitempty"`
	Withheldc int  `json:"withheldc,omitempty"`
	Body      int  `json:"body,omitempty"`
	BodyFD    bool `json:"body_fd,omitempty"`

	// The body once loaded (loadBody). Withheld names the caller's
	// variables the client kept back as secrets: names only, never
	// values; the agent reports each name once per container, in Notice.
	Cwd      string   `json:"-"`
	Argv     []string `json:"-"`
	Env      []string `json:"-"`
	Withheld []string `json:"-"`
	// inline is the body as it came in the packet, forwarded as it is.
	inline []byte
	loaded bool

	// ID names a request the agent delegated to an identity helper.
	ID int64 `json:"id,omitempty"`

	// started, exit, error, signal
	Pid     int    `json:"pid,omitempty"`
	Code    int    `json:"code,omitempty"`
	Signal  int    `json:"signal,omitempty"`
	Message string `json:"message,omitempty"`
	Reason  string `json:"reason,omitempty"`

	// notice, error: Notice is a line the client prints before anything
	// else. Missing is an absolute path the command names that the
	// container does not have; when the caller's host has it, the client
	// prints Hint (for an error: instead of Message), which says how to
	// make it visible. Only the host side can tell whether it exists there.
	Notice  string `json:"notice,omitempty"`
	Missing string `json:"missing,omitempty"`
	Hint    string `json:"hint,omitempty"`

	// status reply
	Status *agentStatus `json:"status,omitempty"`
}

// agentStatus is what an agent tells --list about itself.
type agentStatus struct {
	Running     int       `json:"running_requests"`
	IdleSeconds int64     `json:"idle_seconds"`
	IdleSince   time.Time `json:"idle_since,omitzero"` // when the last request ended; zero while one runs
	TTLSeconds  int64     `json:"ttl_seconds"`
	Created     time.Time `json:"created"`
}

// conn is one SOCK_SEQPACKET connection. Blocking syscalls are used on
// purpose: one connection per goroutine, no poller, nothing to initialise.
type conn struct{ fd int }

// send writes one message, with fds attached as SCM_RIGHTS when given. A
// run message's inline body follows its header after a NUL.
func (c conn) send(m *message, fds ...int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s message: %w", m.Type, err)
	}
	bufs := [][]byte{b}
	if m.inline != nil {
		bufs = append(bufs, []byte{0}, m.inline)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for {
		_, err = unix.SendmsgBuffers(c.fd, bufs, oob, nil, unix.MSG_NOSIGNAL)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("send %s message: %w", m.Type, err)
	}
	return nil
}

// recv reads one message and the fds that came with it (close-on-exec).
// A closed peer gives io.EOF.
func (c conn) recv() (*message, []int, error) {
	size, err := c.nextSize()
	if err != nil {
		return nil, nil, fmt.Errorf("receive message: %w", err)
	}
	// A buffer of the message's own size keeps the agent's heap small.
	buf := make([]byte, max(1, min(size, maxMessage+1)))
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	var n, oobn, flags int
	for {
		n, oobn, flags, _, err = unix.Recvmsg(c.fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("receive message: %w", err)
	}
	fds, err := unixfd.Rights(oob[:oobn])
	if err != nil {
		return nil, nil, err
	}
	if n == 0 {
		unixfd.CloseAll(fds)
		return nil, nil, io.EOF
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || n > maxMessage {
		unixfd.CloseAll(fds)
		return nil, nil, errors.New("receive message: message too large")
	}
	// JSON never holds a raw NUL: one ends the header and starts a body.
	head, inline, hasBody := bytes.Cut(buf[:n], []byte{0})
	var m message
	if err := json.Unmarshal(head, &m); err != nil {
		unixfd.CloseAll(fds)
		return nil, nil, fmt.Errorf("decode message: %w", err)
	}
	if hasBody {
		m.inline = inline
	}
	return &m, fds, nil
}

// nextSize returns the length of the next message without consuming it
// (0 at end of stream).
func (c conn) nextSize() (int, error) {
	var one [1]byte
	for {
		n, _, _, _, err := unix.Recvmsg(c.fd, one[:], nil, unix.MSG_PEEK|unix.MSG_TRUNC)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// shutdown wakes a goroutine blocked in recv on this connection.
func (c conn) shutdown() { _ = unix.Shutdown(c.fd, unix.SHUT_RDWR) }

func (c conn) close() { _ = unix.Close(c.fd) }

// setTimeout bounds every later send and recv on the connection.
func (c conn) setTimeout(d time.Duration) error {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("set receive timeout: %w", err)
	}
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return fmt.Errorf("set send timeout: %w", err)
	}
	return nil
}

// checkSocketPath fails clearly when a path cannot be a unix socket address.
func checkSocketPath(path string) error {
	if len(path) > maxSocketPath {
		return fmt.Errorf("socket path %s is %d bytes, longer than the %d a unix socket allows; set LECTIC_TEMP to a shorter directory", path, len(path), maxSocketPath)
	}
	return nil
}

// dial connects to a listening agent socket.
func dial(path string) (conn, error) { return dialTimeout(path, 0) }

// dialTimeout is dial with every step bounded by d (0: unbounded): the
// connect (a listener whose backlog is full would hold it), and every
// later send and receive.
func dialTimeout(path string, d time.Duration) (conn, error) {
	if err := checkSocketPath(path); err != nil {
		return conn{}, err
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return conn{}, fmt.Errorf("create socket: %w", err)
	}
	if d > 0 {
		if err := (conn{fd: fd}).setTimeout(d); err != nil {
			_ = unix.Close(fd)
			return conn{}, err
		}
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		_ = unix.Close(fd)
		return conn{}, fmt.Errorf("connect to %s: %w", path, err)
	}
	if err := checkPeer(fd, os.Getuid()); err != nil {
		_ = unix.Close(fd)
		return conn{}, fmt.Errorf("refusing %s: %w; nothing was sent", path, err)
	}
	return conn{fd: fd}, nil
}

// ErrForeignPeer means the other end of a socket runs as another user.
var ErrForeignPeer = errors.New("served by another user")

// checkPeer makes sure the process at the other end of the unix socket fd
// runs as one of uids: what it would receive (a request, the caller's
// stdio, a command's connection) must never reach another user. The
// credentials are those of whoever listened (or made the socketpair), as
// the kernel recorded them.
func checkPeer(fd int, uids ...int) error {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return fmt.Errorf("read the peer's credentials: %w", err)
	}
	for _, uid := range uids {
		if int(cred.Uid) == uid {
			return nil
		}
	}
	return fmt.Errorf("%w: uid %d (pid %d), not uid %d", ErrForeignPeer, cred.Uid, cred.Pid, uids[0])
}

// listen creates the agent's listening socket at path, replacing a stale
// socket file left there.
func listen(path string) (int, error) {
	if err := checkSocketPath(path); err != nil {
		return -1, err
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("create socket: %w", err)
	}
	if err := unix.Unlink(path); err != nil && err != unix.ENOENT {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("remove old socket %s: %w", path, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("listen on %s: %w", path, err)
	}
	return fd, nil
}

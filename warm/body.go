package warm

import (
	"errors"
	"fmt"
	"runtime/debug"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/execargs"
)

// attachBody lays out m's Cwd, Argv, Env and Withheld as its body
// (package execargs): inline when it fits maxInline, otherwise in a sealed
// memfd whose fd is returned to be sent as the run message's last fd (the
// caller closes it); -1 when the body is inline. execargs.ErrTooLong means
// no execve would take the request.
func attachBody(m *message) (int, error) {
	b, err := execargs.Encode(execargs.Args{Cwd: m.Cwd, Argv: m.Argv, Env: m.Env, Withheld: m.Withheld})
	if err != nil {
		return -1, err
	}
	m.Argc, m.Envc, m.Withheldc, m.Body = len(m.Argv), len(m.Env), len(m.Withheld), len(b)
	if len(b) <= maxInline {
		m.inline, m.BodyFD = b, false
		return -1, nil
	}
	fd, err := sealedMemfd(b)
	if err != nil {
		return -1, err
	}
	m.inline, m.BodyFD = nil, true
	return fd, nil
}

// sealedMemfd returns a memfd holding b that nobody can change any more.
func sealedMemfd(b []byte) (int, error) {
	fd, err := unix.MemfdCreate("lectic-nix-sandbox-request", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, fmt.Errorf("create a memfd for the request: %w", err)
	}
	for off := 0; off < len(b); {
		n, err := unix.Write(fd, b[off:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			_ = unix.Close(fd)
			return -1, fmt.Errorf("write the request to its memfd: %w", err)
		}
		off += n
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		_ = unix.Close(fd)
		return -1, fmt.Errorf("seal the request's memfd: %w", err)
	}
	return fd, nil
}

// bodyFDs is how many of a run message's fds carry its body.
func (m *message) bodyFDs() int {
	if m.BodyFD {
		return 1
	}
	return 0
}

// loadBody decodes the body of a run message that came with fds (a memfd
// body is the last of them, and stays open). Loading twice does nothing.
func (m *message) loadBody(fds []int) error {
	if m.loaded {
		return nil
	}
	var b []byte
	switch {
	case m.Body < 0 || m.Body > execargs.MaxBody:
		return fmt.Errorf("run request announces a body of %d bytes, more than the %d any command can take", m.Body, execargs.MaxBody)
	case m.BodyFD && m.inline != nil:
		return errors.New("run request has a body both inline and in a memfd")
	case m.BodyFD && len(fds) == 0:
		return errors.New("run request announces a memfd body but carries no fd")
	case m.BodyFD:
		var err error
		if b, err = readBody(fds[len(fds)-1], m.Body); err != nil {
			return err
		}
	case len(m.inline) != m.Body:
		return fmt.Errorf("run request body is %d bytes, its header says %d", len(m.inline), m.Body)
	default:
		b = m.inline
	}
	a, err := execargs.Decode(b, m.Argc, m.Envc, m.Withheldc)
	if err != nil {
		return err
	}
	m.Cwd, m.Argv, m.Env, m.Withheld, m.loaded = a.Cwd, a.Argv, a.Env, a.Withheld, true
	return nil
}

// readBody reads a memfd body of size bytes. A pipe or a socket could
// block the reader for ever and a file that grows never ends, so only a
// regular file of exactly the announced size is read.
func readBody(fd, size int) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("run request body: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != int64(size) {
		return nil, fmt.Errorf("run request body is not a memfd of the %d bytes its header says", size)
	}
	b := make([]byte, size)
	for off := 0; off < size; {
		n, err := unix.Pread(fd, b[off:], int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read the run request body: %w", err)
		}
		if n == 0 {
			return nil, fmt.Errorf("run request body ends after %d of %d bytes", off, size)
		}
		off += n
	}
	return b, nil
}

// bigBody is the body size past which the memory it took is handed back
// to the system as soon as the command has started.
const bigBody = 1 << 20

// dropBody forgets a loaded body once the command runs: a request lives
// as long as its command, and its body may be megabytes. Agents and
// helpers stay small between calls (agentGCPercent), so a big body's
// memory is returned at once rather than when the scavenger gets to it.
func (m *message) dropBody() {
	big := m.Body > bigBody
	m.Argv, m.Env, m.Withheld, m.inline = nil, nil, nil, nil
	if big {
		debug.FreeOSMemory()
	}
}

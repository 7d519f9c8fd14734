package warm

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netfwd"
)

// envReports names the fd of the report channel of an agent whose
// container has an allow-list: the supervisor sends it every refusal
// (netfwd.Refusal) there, and the agent tells the call whose command made
// the connection.
const envReports = "_LECTIC_NIX_SANDBOX_REPORTS"

// maxAncestry bounds the walk from a socket's owner up to a call's command.
const maxAncestry = 64

// callLog is the calls running now, each with a copy of its stderr, so a
// refusal reaches the caller who should hear of it.
type callLog struct {
	mu    sync.Mutex
	calls map[*callRec]struct{}
	// netDir and proc are where sockets and processes are found (the
	// agent's own namespaces).
	netDir, proc string
	reports      *netfwd.ReportReceiver

	// lo is lo's received-packets count, kept open; seen is the count the
	// last end of a call read (see remove); seenMu also orders the ends of
	// calls.
	lo     *os.File
	seenMu sync.Mutex
	seen   string
}

// callRec is one running call.
type callRec struct {
	stderr *os.File // a copy of the call's stderr; the command shares it

	mu   sync.Mutex
	pid  int             // the command's pid, which leads its process group; 0 until known
	told map[string]bool // host:port already reported to this call
}

// flushTimeout bounds how long the end of a call waits for the refusals
// its command may have met to be reported.
const flushTimeout = time.Second

func newCallLog(f *os.File) (*callLog, error) {
	rr, err := netfwd.NewReportReceiver(f)
	if err != nil {
		return nil, err
	}
	l := &callLog{calls: map[*callRec]struct{}{}, netDir: "/proc/net", proc: "/proc", reports: rr}
	if f, err := os.Open("/sys/class/net/lo/statistics/rx_packets"); err == nil {
		l.lo = f
	}
	return l, nil
}

// serveReports reads the report channel for the agent's life.
func (l *callLog) serveReports() {
	if err := l.reports.Serve(l.report); err != nil {
		fmt.Fprintln(os.Stderr, "lectic-nix-sandbox agent:", err)
	}
}

// add records a call starting with stderr at fd; nil when stderr cannot be
// kept (the call then only hears of refusals nobody else can be told of).
func (l *callLog) add(fd int) *callRec {
	if l == nil {
		return nil
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil
	}
	r := &callRec{stderr: os.NewFile(uintptr(dup), "stderr"), told: map[string]bool{}}
	l.mu.Lock()
	l.calls[r] = struct{}{}
	l.mu.Unlock()
	return r
}

// remove forgets a call that ended. A refusal the kernel made (a reset, a
// port unreachable) reaches the supervisor on its own time; when lo has
// carried any packet since a call last ended, the supervisor is asked to
// report what it has first, so the line reaches this call's stderr before
// its copy closes (a caller reading stderr to the end sees it). Whatever
// a flush reports reaches every call then running, so comparing with the
// last end, not this call's start, misses nothing, and a call that used
// no network costs one pread.
func (l *callLog) remove(r *callRec) {
	if l == nil || r == nil {
		return
	}
	// Held across the flush: a call that ends while another's flush runs
	// waits for it rather than finding the counters already seen.
	l.seenMu.Lock()
	if now, ok := l.loPackets(); !ok || now != l.seen {
		l.reports.Flush(flushTimeout)
		l.seen = now
	}
	l.seenMu.Unlock()
	l.mu.Lock()
	delete(l.calls, r)
	l.mu.Unlock()
	r.stderr.Close()
}

func (r *callRec) setPid(pid int) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.pid = pid
	r.mu.Unlock()
}

func (r *callRec) commandPid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pid
}

// tell writes the line once per key.
func (r *callRec) tell(key, line string) {
	r.mu.Lock()
	if r.told[key] {
		r.mu.Unlock()
		return
	}
	r.told[key] = true
	r.mu.Unlock()
	_, _ = r.stderr.WriteString("lectic-nix-sandbox: " + line + "\n")
}

// report tells the calls whose commands hold the refused socket, or, when
// that cannot be told, every call running now.
func (l *callLog) report(ref netfwd.Refusal) {
	for _, r := range l.recipients(ref) {
		r.tell(ref.Key, ref.Line)
	}
}

func (l *callLog) recipients(ref netfwd.Refusal) []*callRec {
	l.mu.Lock()
	byPid := make(map[int]*callRec, len(l.calls))
	all := make([]*callRec, 0, len(l.calls))
	for r := range l.calls {
		all = append(all, r)
		if pid := r.commandPid(); pid > 0 {
			byPid[pid] = r
		}
	}
	l.mu.Unlock()
	if ref.Pid > 0 {
		if r := l.callOf(ref.Pid, byPid); r != nil {
			return []*callRec{r}
		}
	}
	client, err1 := netip.ParseAddrPort(ref.Client)
	server, err2 := netip.ParseAddrPort(ref.Server)
	if err1 != nil || err2 != nil || len(byPid) == 0 {
		return all
	}
	seen := map[*callRec]bool{}
	var mine []*callRec
	for _, pid := range netfwd.SocketOwners(l.netDir, l.proc, ref.Proto, client, server) {
		if r := l.callOf(pid, byPid); r != nil && !seen[r] {
			seen[r] = true
			mine = append(mine, r)
		}
	}
	if len(mine) == 0 {
		return all
	}
	return mine
}

// callOf finds the call a process belongs to: its own command, or the
// command it descends from or shares a process group with.
func (l *callLog) callOf(pid int, byPid map[int]*callRec) *callRec {
	for i := 0; i < maxAncestry && pid > 1; i++ {
		if r := byPid[pid]; r != nil {
			return r
		}
		ppid, pgid, ok := netfwd.Parent(l.proc, pid)
		if !ok {
			return nil
		}
		if r := byPid[pgid]; r != nil {
			return r
		}
		pid = ppid
	}
	return nil
}

// loPackets is the count of packets lo has received, read from a file the
// agent keeps open (a pread is a few microseconds; /proc/net/snmp took
// tens to hundreds here). A refusal is a packet on lo, so while the count
// has not moved, nothing can be waiting to be reported. ok is false when
// the count cannot be read: the caller then flushes anyway.
func (l *callLog) loPackets() (count string, ok bool) {
	if l.lo == nil {
		return "", false
	}
	var buf [32]byte
	n, err := l.lo.ReadAt(buf[:], 0)
	if n == 0 || (err != nil && !errors.Is(err, io.EOF)) {
		return "", false
	}
	return strings.TrimSpace(string(buf[:n])), true
}

package warm

import (
	"fmt"
	"net/netip"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netfwd"
)

// envReports marks an agent whose container has an allow-list: the
// supervisor sends it every refusal (netfwd.Refusal) on reportsFD, and the
// agent tells the call whose command made the connection.
const envReports = "_LECTIC_NIX_SANDBOX_REPORTS"

// reportsFD is where the agent finds the report channel.
const reportsFD = 4

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
}

// callRec is one running call.
type callRec struct {
	stderr *os.File // a copy of the call's stderr; the command shares it

	mu   sync.Mutex
	pid  int             // the command's pid, which leads its process group; 0 until known
	told map[string]bool // host:port already reported to this call
}

func newCallLog() *callLog {
	return &callLog{calls: map[*callRec]struct{}{}, netDir: "/proc/net", proc: "/proc"}
}

// serveReports reads the report channel for the agent's life.
func (l *callLog) serveReports(f *os.File) {
	if err := netfwd.ServeReports(f, l.report); err != nil {
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

// remove forgets a call that ended.
func (l *callLog) remove(r *callRec) {
	if l == nil || r == nil {
		return
	}
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

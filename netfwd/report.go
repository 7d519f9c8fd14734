package netfwd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Refusal is one connection the sandbox refused or could not make, as the
// caller's stderr is told about it. The agent, which knows the calls,
// decides whose stderr that is.
type Refusal struct {
	// ID is nonzero when the sender waits for the agent's answer before it
	// resets the connection, so the line comes before the command's own
	// error and the command's socket can still be found.
	ID uint64 `json:"id,omitempty"`
	// Line is the text after "lectic-nix-sandbox: ".
	Line string `json:"line"`
	// Key is host:port; a call is told at most once per key.
	Key string `json:"key"`
	// Proto ("tcp" or "udp"), Client (the command's end, ip:port) and
	// Server (the address it connected to) find the command's socket.
	Proto  string `json:"proto"`
	Client string `json:"client,omitempty"`
	Server string `json:"server,omitempty"`
	// Pid is the process that made the connection, in the agent's pid
	// namespace, when that is known (a connect made in its place).
	Pid int `json:"pid,omitempty"`
	// Open says the connection waits for the line before it is reset;
	// the sender then waits for the agent's answer.
	Open bool `json:"-"`
}

// Reporter tells the caller about a refusal. Report returns when the line
// is written or the reporter gave up waiting.
type Reporter interface {
	Report(ctx context.Context, r Refusal)
}

// The report channel is a SOCK_SEQPACKET socketpair; each message is one
// JSON object.
//
//	supervisor -> agent  {"refusal": {...}}     a refusal to report
//	agent -> supervisor  {"ack": ID}            its line is written
//	agent -> supervisor  {"flush": N}           report what is pending, then say so
//	supervisor -> agent  {"flushed": N}         every refusal seen before the flush was sent
type wireMsg struct {
	Refusal *Refusal `json:"refusal,omitempty"`
	Ack     uint64   `json:"ack,omitempty"`
	Flush   uint64   `json:"flush,omitempty"`
	Flushed uint64   `json:"flushed,omitempty"`
}

const (
	// reportWait bounds how long a refused connection waits for its line
	// to be written before it is reset anyway.
	reportWait = 2 * time.Second
	// maxReport bounds one message.
	maxReport = 16 << 10
	// maxWaiting bounds the refused connections held open for their line
	// at once; beyond it a refusal is reported without waiting, so a
	// command that opens refused connections by the thousand cannot make
	// the supervisor hold them all.
	maxWaiting = 64
)

// ReportPair returns the two ends of the report channel: the supervisor's
// sender, and the file the agent receives reports on (for the container's
// extra files; the caller closes its copy once the agent has it).
func ReportPair() (*ReportSender, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("report channel: socketpair: %w", err)
	}
	c, err := seqConn(os.NewFile(uintptr(fds[0]), "reports"))
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	s := &ReportSender{c: c, waiting: map[uint64]chan struct{}{}, done: make(chan struct{}), slots: make(chan struct{}, maxWaiting)}
	go s.readLoop()
	return s, os.NewFile(uintptr(fds[1]), "agent-reports"), nil
}

// seqConn wraps f (closed) as a connection served by the runtime poller.
func seqConn(f *os.File) (net.Conn, error) {
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("report channel: %w", err)
	}
	return c, nil
}

func send(c net.Conn, mu *sync.Mutex, m wireMsg) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(b) > maxReport {
		return errors.New("report channel: message too large")
	}
	mu.Lock()
	defer mu.Unlock()
	_, err = c.Write(b)
	return err
}

// ReportSender is the supervisor's end of the report channel.
type ReportSender struct {
	c     net.Conn
	wmu   sync.Mutex
	done  chan struct{}
	slots chan struct{} // one per refusal waiting for its answer

	mu      sync.Mutex
	next    uint64
	waiting map[uint64]chan struct{}
	flusher func()
}

// SetFlusher names what makes pending refusals reported (Net.Flush); the
// agent asks for it when a call ends.
func (s *ReportSender) SetFlusher(f func()) {
	s.mu.Lock()
	s.flusher = f
	s.mu.Unlock()
}

// Report sends r and, for a refusal whose connection is still open, waits
// (at most reportWait) until the agent has written the line.
func (s *ReportSender) Report(ctx context.Context, r Refusal) {
	if r.Open {
		select {
		case s.slots <- struct{}{}:
			defer func() { <-s.slots }()
		default:
			r.Open = false
		}
	}
	ack := s.register(&r)
	if err := send(s.c, &s.wmu, wireMsg{Refusal: &r}); err != nil || ack == nil {
		s.forget(r.ID)
		return
	}
	t := time.NewTimer(reportWait)
	defer t.Stop()
	select {
	case <-ack:
	case <-t.C:
	case <-ctx.Done():
	case <-s.done:
	}
	s.forget(r.ID)
}

// register gives r an id to be answered on, when it wants an answer.
func (s *ReportSender) register(r *Refusal) chan struct{} {
	r.ID = 0
	if !r.Open {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	r.ID = s.next
	ch := make(chan struct{})
	s.waiting[r.ID] = ch
	return ch
}

func (s *ReportSender) forget(id uint64) {
	s.mu.Lock()
	delete(s.waiting, id)
	s.mu.Unlock()
}

// readLoop serves the agent's answers and flush requests until it is gone.
func (s *ReportSender) readLoop() {
	defer close(s.done)
	buf := make([]byte, maxReport+1)
	for {
		n, err := s.c.Read(buf)
		if err != nil || n == 0 {
			return
		}
		var m wireMsg
		if n > maxReport || json.Unmarshal(buf[:n], &m) != nil {
			continue
		}
		s.mu.Lock()
		if ch := s.waiting[m.Ack]; m.Ack != 0 && ch != nil {
			close(ch)
			delete(s.waiting, m.Ack)
		}
		flusher := s.flusher
		s.mu.Unlock()
		if m.Flush != 0 {
			go func() {
				if flusher != nil {
					flusher()
				}
				_ = send(s.c, &s.wmu, wireMsg{Flushed: m.Flush})
			}()
		}
	}
}

// Close ends the channel; waiting reports return.
func (s *ReportSender) Close() error { return s.c.Close() }

// ReportReceiver is the agent's end of the report channel.
type ReportReceiver struct {
	c   net.Conn
	wmu sync.Mutex

	mu      sync.Mutex
	next    uint64
	flushes map[uint64]chan struct{}
	busy    int             // reports being handled
	idle    []chan struct{} // closed when busy drops to 0
}

// NewReportReceiver takes the agent's end of the channel.
func NewReportReceiver(f *os.File) (*ReportReceiver, error) {
	c, err := seqConn(f)
	if err != nil {
		return nil, err
	}
	return &ReportReceiver{c: c, flushes: map[uint64]chan struct{}{}}, nil
}

// Serve reads reports and calls handle for each, concurrently; a report
// that waits for an answer gets it when its handle returns. It returns when
// the supervisor's end is closed.
func (r *ReportReceiver) Serve(handle func(Refusal)) error {
	defer r.c.Close()
	buf := make([]byte, maxReport+1)
	for {
		n, err := r.c.Read(buf)
		if err != nil || n == 0 {
			r.releaseFlushes()
			if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("report channel: %w", err)
		}
		var m wireMsg
		if n > maxReport || json.Unmarshal(buf[:n], &m) != nil {
			continue
		}
		if m.Flushed != 0 {
			// Every report sent before this answer is in a handler now;
			// the flush is over when they are.
			r.mu.Lock()
			ch := r.flushes[m.Flushed]
			delete(r.flushes, m.Flushed)
			r.mu.Unlock()
			if ch != nil {
				r.whenIdle(ch)
			}
		}
		if m.Refusal == nil {
			continue
		}
		ref := *m.Refusal
		r.mu.Lock()
		r.busy++
		r.mu.Unlock()
		go func() {
			defer r.handled()
			handle(ref)
			if ref.ID != 0 {
				_ = send(r.c, &r.wmu, wireMsg{Ack: ref.ID})
			}
		}()
	}
}

// whenIdle closes ch once no report is being handled.
func (r *ReportReceiver) whenIdle(ch chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.busy == 0 {
		close(ch)
		return
	}
	r.idle = append(r.idle, ch)
}

func (r *ReportReceiver) handled() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.busy--
	if r.busy == 0 {
		for _, ch := range r.idle {
			close(ch)
		}
		r.idle = nil
	}
}

// Flush asks the supervisor to report every refusal it has seen and waits
// (at most timeout) until those reports are handled.
func (r *ReportReceiver) Flush(timeout time.Duration) {
	r.mu.Lock()
	r.next++
	id := r.next
	ch := make(chan struct{})
	r.flushes[id] = ch
	r.mu.Unlock()
	if err := send(r.c, &r.wmu, wireMsg{Flush: id}); err != nil {
		r.mu.Lock()
		delete(r.flushes, id)
		r.mu.Unlock()
		return
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
		r.mu.Lock()
		delete(r.flushes, id)
		r.mu.Unlock()
	}
}

// releaseFlushes lets every waiting Flush return: nobody will answer.
func (r *ReportReceiver) releaseFlushes() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, ch := range r.flushes {
		close(ch)
		delete(r.flushes, id)
	}
}

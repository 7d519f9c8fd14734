package nixload

import (
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/sys/unix"
)

// Progress is drawn only on a terminal (the caller passes a nil writer or
// Terminal=false otherwise), so logs of non-interactive runs stay clean.
// The drawing is mpb's: it handles widths, refreshing and clearing, and
// unlike some bar libraries it does not link net/http, which would cost
// every call ~0.4 ms of start-up (measured with perf stat).

// progress is one bar or spinner; Finish removes it from the terminal and
// stops its refresh goroutine.
type progress struct {
	p    *mpb.Progress
	bar  *mpb.Bar
	desc atomic.Pointer[string]
}

func newContainer(w io.Writer) *mpb.Progress {
	return mpb.New(mpb.WithOutput(w), mpb.WithRefreshRate(100*time.Millisecond), mpb.WithAutoRefresh())
}

// newSpinner shows that something of unknown length is running.
func newSpinner(w io.Writer, desc string) *progress {
	pr := &progress{p: newContainer(w)}
	pr.desc.Store(&desc)
	pr.bar = pr.p.New(0, mpb.SpinnerStyle().PositionLeft(),
		mpb.BarWidth(2),
		mpb.PrependDecorators(decor.Any(func(decor.Statistics) string { return *pr.desc.Load() + " " })),
		mpb.AppendDecorators(decor.Elapsed(decor.ET_STYLE_GO)),
		mpb.BarRemoveOnComplete(), mpb.BarFillerClearOnAbort())
	return pr
}

// newByteBar counts the bytes read from an archive of size bytes.
func newByteBar(w io.Writer, size int64, desc string) *progress {
	pr := &progress{p: newContainer(w)}
	pr.desc.Store(&desc)
	pr.bar = pr.p.AddBar(size, mpb.BarWidth(30),
		mpb.PrependDecorators(decor.Name(desc+" ")),
		mpb.AppendDecorators(decor.CountersKibiByte(" % .1f / % .1f"), decor.Percentage(decor.WCSyncSpace)),
		mpb.BarRemoveOnComplete(), mpb.BarFillerClearOnAbort())
	return pr
}

// Describe replaces a spinner's text.
func (pr *progress) Describe(desc string) { pr.desc.Store(&desc) }

// Reader counts what is read through r on the bar.
func (pr *progress) Reader(r io.Reader) io.Reader {
	proxy, err := pr.bar.ProxyReader(r)
	if err != nil {
		return r
	}
	return proxy
}

// Write prints a message above the bar.
func (pr *progress) Write(b []byte) (int, error) { return pr.p.Write(b) }

// Finish removes the bar and waits until the terminal is tidy.
func (pr *progress) Finish() {
	pr.bar.Abort(true)
	pr.p.Wait()
}

// IsTerminal reports whether w is a terminal: progress is drawn only there.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The network scenarios run the same static client (netprobe) through an
// --allow-domain allow-list and directly on the host, against servers this
// harness runs on the host's loopback; --add-host maps the allowed name to
// them. Each pair is measured in the same run, one right after the other.

const (
	netName      = "bench.test"
	downloadSize = 256 << 20
	concurrentN  = 100
)

// netServers are the harness's loopback servers.
type netServers struct {
	echo, http int // ports
	close      func()
}

func startNetServers() (*netServers, error) {
	el, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the echo server: %w", err)
	}
	hl, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		el.Close()
		return nil, fmt.Errorf("listen for the HTTP server: %w", err)
	}
	go serveEcho(el)
	srv := &http.Server{Handler: http.HandlerFunc(serveBytes)}
	go func() { _ = srv.Serve(hl) }()
	return &netServers{
		echo:  el.Addr().(*net.TCPAddr).Port,
		http:  hl.Addr().(*net.TCPAddr).Port,
		close: func() { el.Close(); srv.Close() },
	}, nil
}

// serveEcho answers every byte with itself.
func serveEcho(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// serveBytes answers /bytes?n=N with N bytes from one buffer.
func serveBytes(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
	if err != nil || n < 0 {
		http.Error(w, "want /bytes?n=N", http.StatusBadRequest)
		return
	}
	buf := make([]byte, 1<<20)
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := w.Write(buf[:k]); err != nil {
			return
		}
		n -= k
	}
}

// netArgs are the sandbox options of every allow-list scenario: one warm
// container serves them all.
func (b *bench) netArgs(s *netServers, cmd ...string) []string {
	allow := fmt.Sprintf("%s:%d,%s:%d", netName, s.echo, netName, s.http)
	return b.warmArgs(append([]string{"--allow-domain", allow, "--add-host", netName + ":127.0.0.1"}, cmd...)...)
}

// netScenarioNames are the results netScenarios gives, in order.
var netScenarioNames = []string{"warm_exec_allowlist", "net_connect", "net_connect_direct", "net_download_256m", "net_download_256m_direct", "net_concurrent_100"}

// netScenarios measures warm_exec with an allow-list, then each network
// scenario through it and directly.
func (b *bench) netScenarios(ctx context.Context) []Result {
	names := netScenarioNames
	fail := func(reason string, failed bool) []Result {
		var out []Result
		for _, n := range names {
			r := Result{Name: n, Kind: kindSandbox, Missing: reason, Failed: failed}
			if strings.HasSuffix(n, "_direct") {
				r.Kind = kindBare
			}
			out = append(out, r)
		}
		b.logf("  network scenarios: %s", reason)
		return out
	}
	probe, err := b.netprobe(ctx)
	if err != nil {
		return fail("failed: "+oneLine(err.Error()), true)
	}
	s, err := startNetServers()
	if err != nil {
		return fail("failed: "+oneLine(err.Error()), true)
	}
	defer s.close()
	return []Result{
		b.warmExecAllowlist(ctx, s),
		b.netConnect(ctx, s, probe, true),
		b.netConnect(ctx, s, probe, false),
		b.netDownload(ctx, s, probe, true),
		b.netDownload(ctx, s, probe, false),
		b.netConcurrent(ctx, s, probe),
	}
}

// netprobe returns the static client, copied into the workdir so the
// sandbox sees it at the same path.
func (b *bench) netprobe(ctx context.Context) (string, error) {
	src := b.o.netprobe
	if src == "" {
		var err error
		if src, err = buildNetprobe(ctx, filepath.Join(b.work, "netprobe-build")); err != nil {
			return "", err
		}
	}
	dst := filepath.Join(b.workdir, "netprobe")
	if _, err := stageFile(src, dst); err != nil {
		return "", fmt.Errorf("copy netprobe into the workdir: %w", err)
	}
	return dst, nil
}

// buildNetprobe builds cmd/sandbox-bench/netprobe static, from the module
// in the current directory.
func buildNetprobe(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "netprobe")
	cmd := exec.CommandContext(ctx, goTool(), "build", "-o", out, "./cmd/sandbox-bench/netprobe")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build netprobe: %v: %s", err, lastLine(b))
	}
	return out, nil
}

func moduleRoot(ctx context.Context) (string, error) {
	gomod, err := exec.CommandContext(ctx, goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the Go module to build: %w; pass -bin PATH", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if _, err := os.Stat(filepath.Join(root, "cmd", "lectic-nix-sandbox")); err != nil {
		return "", fmt.Errorf("run from the lectic-nix-sandbox checkout or pass -bin PATH (no cmd/lectic-nix-sandbox under %s)", root)
	}
	return root, nil
}

// warmExecAllowlist is warm_exec with an allow-list: the network it adds
// costs the warm path nothing per call.
func (b *bench) warmExecAllowlist(ctx context.Context, s *netServers) Result {
	p := b.sandbox(b.netArgs(s, "true")...)
	r := Result{Name: "warm_exec_allowlist", Kind: kindSandbox, Command: shellJoin(p.argv[1:]),
		Counterpart: []string{"podman_exec"}, Note: "warm_exec with --allow-domain and --add-host: its own warm container, started by an untimed first call"}
	b.logf("warm_exec_allowlist")
	if err := b.settle(ctx, b.image); err != nil {
		return b.record(r, nil, err)
	}
	if err := verify(ctx, p, ""); err != nil {
		return b.record(r, nil, err)
	}
	r.Note += b.fastPathNote(ctx, p)
	samples, err := b.measure(ctx, b.plan.Fast, b.timed(p))
	return b.record(r, samples, err)
}

// probeProc runs netprobe through the allow-list or directly on the host.
func (b *bench) probeProc(s *netServers, probe string, inside bool, args ...string) proc {
	if inside {
		return b.sandbox(b.netArgs(s, append([]string{probe}, args...)...)...)
	}
	return proc{argv: append([]string{probe}, args...), env: b.env, dir: b.workdir}
}

func (b *bench) netConnect(ctx context.Context, s *netServers, probe string, inside bool) Result {
	host, name, kind := netName, "net_connect", kindSandbox
	note := "per connection: dial, one byte each way, close, through the allow-list (DNS looked up once, outside the timing)"
	if !inside {
		host, name, kind = "127.0.0.1", "net_connect_direct", kindBare
		note = "the same client on the host, straight to the echo server on its loopback"
	}
	n := max(2*b.plan.Fast, 20)
	p := b.probeProc(s, probe, inside, "connect", fmt.Sprintf("%s:%d", host, s.echo), strconv.Itoa(n))
	r := Result{Name: name, Kind: kind, Command: shellJoin(p.argv), Note: note}
	b.logf("%s", name)
	out, err := Output(ctx, p, nil)
	if err != nil {
		return b.record(r, nil, err)
	}
	samples, err := parseNanos(out, n)
	return b.record(r, samples, err)
}

// parseNanos reads one duration in nanoseconds per line.
func parseNanos(out string, want int) ([]time.Duration, error) {
	var samples []time.Duration
	for _, f := range strings.Fields(out) {
		ns, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("netprobe printed %q, not nanoseconds", f)
		}
		samples = append(samples, time.Duration(ns))
	}
	if len(samples) != want {
		return nil, fmt.Errorf("netprobe printed %d samples, want %d", len(samples), want)
	}
	return samples, nil
}

func (b *bench) netDownload(ctx context.Context, s *netServers, probe string, inside bool) Result {
	host, name, kind := netName, "net_download_256m", kindSandbox
	note := "256 MiB over HTTP from the host's loopback through the allow-list; the client's own transfer time"
	if !inside {
		host, name, kind = "127.0.0.1", "net_download_256m_direct", kindBare
		note = "the same download by the same client on the host, straight from the server"
	}
	p := b.probeProc(s, probe, inside, "download", fmt.Sprintf("%s:%d", host, s.http), fmt.Sprintf("/bytes?n=%d", downloadSize))
	r := Result{Name: name, Kind: kind, Command: shellJoin(p.argv), Note: note}
	b.logf("%s", name)
	samples, err := b.measure(ctx, b.plan.Slow, func(int) (time.Duration, error) {
		out, err := Output(ctx, p, nil)
		if err != nil {
			return 0, err
		}
		f := strings.Fields(out)
		if len(f) != 2 || f[1] != strconv.Itoa(downloadSize) {
			return 0, fmt.Errorf("netprobe printed %q, want NANOS %d", oneLine(out), downloadSize)
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		return time.Duration(ns), err
	})
	if err == nil && len(samples) > 0 {
		r.Note += fmt.Sprintf("; %.0f MB/s at p50", float64(downloadSize)/1e6/median(samples).Seconds())
	}
	return b.record(r, samples, err)
}

func median(s []time.Duration) time.Duration {
	sum, err := Summarize(s)
	if err != nil {
		return 0
	}
	return time.Duration(sum.P50 * float64(time.Millisecond))
}

func (b *bench) netConcurrent(ctx context.Context, s *netServers, probe string) Result {
	p := b.probeProc(s, probe, true, "concurrent", fmt.Sprintf("%s:%d", netName, s.echo), strconv.Itoa(concurrentN))
	r := Result{Name: "net_concurrent_100", Kind: kindSandbox, Command: shellJoin(p.argv[1:]),
		Note: "one call opens 100 connections through the allow-list before sending on any, then a round trip on each; the call fails unless all 100 complete; whole call"}
	b.logf("net_concurrent_100")
	if out, err := Output(ctx, p, nil); err != nil || strings.TrimSpace(out) != strconv.Itoa(concurrentN) {
		if err == nil {
			err = errors.New("netprobe printed " + strconv.Quote(out))
		}
		return b.record(r, nil, err)
	}
	samples, err := b.measure(ctx, b.plan.Slow, b.timed(p))
	return b.record(r, samples, err)
}

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
var netScenarioNames = []string{"warm_exec_allowlist", "warm_exec_alternating", "net_connect", "net_connect_direct", "net_download_256m", "net_download_256m_direct", "net_concurrent_100"}

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
	out := b.warmExecAllowlist(ctx, s)
	out = append(out, b.netConnect(ctx, s, probe)...)
	out = append(out, b.netDownload(ctx, s, probe)...)
	return append(out, b.netConcurrent(ctx, s, probe))
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
// costs the warm path nothing per call. Its calls alternate with plain
// warm_exec calls (warm_exec_alternating), its baseline on a machine
// whose load changes between minutes.
func (b *bench) warmExecAllowlist(ctx context.Context, s *netServers) []Result {
	p := b.sandbox(b.netArgs(s, "true")...)
	plain := b.sandbox(b.warmArgs("true")...)
	r := Result{Name: "warm_exec_allowlist", Kind: kindSandbox, Command: shellJoin(p.argv[1:]),
		Counterpart: []string{"podman_exec"}, Note: "warm_exec with --allow-domain and --add-host: its own warm container, started by an untimed first call; calls alternate with warm_exec_alternating's"}
	alt := Result{Name: "warm_exec_alternating", Kind: kindSandbox, Command: shellJoin(plain.argv[1:]),
		Counterpart: []string{"podman_exec"}, Note: "warm_exec's call, one before each warm_exec_allowlist call: that scenario's same-moment baseline"}
	b.logf("warm_exec_allowlist, warm_exec_alternating")
	fail := func(err error) []Result { return []Result{b.record(r, nil, err), b.record(alt, nil, err)} }
	if err := b.settle(ctx, b.image); err != nil {
		return fail(err)
	}
	for _, q := range []proc{p, plain} {
		if err := verify(ctx, q, ""); err != nil {
			return fail(err)
		}
	}
	r.Note += b.fastPathNote(ctx, p)
	alt.Note += b.fastPathNote(ctx, plain)
	var alternate []time.Duration
	samples, err := b.measure(ctx, b.plan.Fast, func(int) (time.Duration, error) {
		d, err := b.l.Time(plain)
		if err != nil {
			return 0, err
		}
		alternate = append(alternate, d)
		return b.l.Time(p)
	})
	return []Result{b.record(r, samples, err), b.record(alt, alternate, err)}
}

// probeProc runs netprobe through the allow-list or directly on the host.
func (b *bench) probeProc(s *netServers, probe string, inside bool, args ...string) proc {
	if inside {
		return b.sandbox(b.netArgs(s, append([]string{probe}, args...)...)...)
	}
	return proc{argv: append([]string{probe}, args...), env: b.env, dir: b.workdir}
}

// The pairs below are measured interleaved, one sample (or one batch) of
// each in turn, so on a shared machine both sides see the same load.

// netConnect measures net_connect and net_connect_direct: rounds of
// connections through the allow-list and directly, alternating.
func (b *bench) netConnect(ctx context.Context, s *netServers, probe string) []Result {
	const perRound = 20
	rounds := max(b.plan.Fast/10, 2)
	in := b.probeProc(s, probe, true, "connect", fmt.Sprintf("%s:%d", netName, s.echo), strconv.Itoa(perRound))
	direct := b.probeProc(s, probe, false, "connect", fmt.Sprintf("127.0.0.1:%d", s.echo), strconv.Itoa(perRound))
	rIn := Result{Name: "net_connect", Kind: kindSandbox, Command: shellJoin(in.argv[1:]),
		Note: "per connection: dial, one byte each way, close, through the allow-list to an echo server on the host's loopback (DNS looked up once, outside the timing); batches of 20 alternating with net_connect_direct"}
	rDirect := Result{Name: "net_connect_direct", Kind: kindBare, Command: shellJoin(direct.argv),
		Note: "the same client on the host, straight to the echo server; batches alternating with net_connect"}
	b.logf("net_connect, net_connect_direct")
	var samplesIn, samplesDirect []time.Duration
	var err error
	for i := 0; i < rounds && err == nil; i++ {
		for _, side := range []struct {
			p   proc
			out *[]time.Duration
		}{{in, &samplesIn}, {direct, &samplesDirect}} {
			var got []time.Duration
			if got, err = probeNanos(ctx, side.p, perRound); err != nil {
				break
			}
			*side.out = append(*side.out, got...)
		}
	}
	return []Result{b.record(rIn, samplesIn, err), b.record(rDirect, samplesDirect, err)}
}

func probeNanos(ctx context.Context, p proc, want int) ([]time.Duration, error) {
	out, err := Output(ctx, p, nil)
	if err != nil {
		return nil, err
	}
	return parseNanos(out, want)
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

// netDownload measures net_download_256m and its direct twin, one download
// of each in turn.
func (b *bench) netDownload(ctx context.Context, s *netServers, probe string) []Result {
	path := fmt.Sprintf("/bytes?n=%d", downloadSize)
	in := b.probeProc(s, probe, true, "download", fmt.Sprintf("%s:%d", netName, s.http), path)
	direct := b.probeProc(s, probe, false, "download", fmt.Sprintf("127.0.0.1:%d", s.http), path)
	rIn := Result{Name: "net_download_256m", Kind: kindSandbox, Command: shellJoin(in.argv[1:]),
		Note: "256 MiB over HTTP from the host's loopback through the allow-list; the client's own transfer time; alternating with the direct download"}
	rDirect := Result{Name: "net_download_256m_direct", Kind: kindBare, Command: shellJoin(direct.argv),
		Note: "the same download by the same client on the host, straight from the server; alternating with net_download_256m"}
	b.logf("net_download_256m, net_download_256m_direct")
	var samplesIn, samplesDirect []time.Duration
	_, err := b.measure(ctx, b.plan.Slow, func(int) (time.Duration, error) {
		d, err := downloadNanos(ctx, in)
		if err != nil {
			return 0, err
		}
		samplesIn = append(samplesIn, d)
		d, err = downloadNanos(ctx, direct)
		if err != nil {
			return 0, err
		}
		samplesDirect = append(samplesDirect, d)
		return d, nil
	})
	results := []Result{b.record(rIn, samplesIn, err), b.record(rDirect, samplesDirect, err)}
	for i, samples := range [][]time.Duration{samplesIn, samplesDirect} {
		if err == nil && len(samples) > 0 {
			results[i].Note += fmt.Sprintf("; %.0f MB/s at p50", float64(downloadSize)/1e6/median(samples).Seconds())
		}
	}
	return results
}

// downloadNanos runs one download and returns the client's transfer time.
func downloadNanos(ctx context.Context, p proc) (time.Duration, error) {
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

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// plan says how many iterations each class of scenario gets; slow ones run
// fewer so a full run stays within a few minutes.
type plan struct {
	Fast      int // milliseconds per call: warm, bare, bwrap, cold
	Slow      int // up to a second per call: first_start, podman run/exec
	Slowest   int // seconds per call: podman load
	PerClient int // calls per client in parallel_16
}

func newPlan(n int, quick bool) plan {
	if quick {
		return plan{Fast: n, Slow: 2, Slowest: 1, PerClient: 2}
	}
	return plan{Fast: n, Slow: max(3, n/5), Slowest: max(3, n/20), PerClient: max(2, n/8)}
}

// parallelClients is the concurrency of parallel_16.
const parallelClients = 16

// warmTTL keeps the warm container alive for the whole run.
const warmTTL = "600"

// bench holds one run's private state: every directory lives under work,
// which is removed at the end.
type bench struct {
	o        options
	plan     plan
	work     string
	home     string
	workdir  string
	bin      string
	image    string
	busybox  string
	env      []string
	l        *launcher
	progress io.Writer
	cleanups []func()
}

func runBench(ctx context.Context, o options, stdout, stderr io.Writer) error {
	b, err := newBench(ctx, o, stderr)
	if err != nil {
		return err
	}
	defer b.close()
	report := Report{Machine: b.machine(ctx)}
	report.Results = b.runAll(ctx)
	if ctx.Err() != nil {
		return errors.New("interrupted; no results written")
	}
	if err := writeOutputs(report, o.out, stdout, stderr); err != nil {
		return err
	}
	return checkComplete(report.Results, os.Getenv("CI") == "true")
}

// checkComplete fails the run when a scenario failed, so a smoke run
// catches a broken sandbox; timings are never judged. A missing tool is
// fine on a laptop but not in CI, which installs every tool.
func checkComplete(results []Result, ci bool) error {
	var bad []string
	for _, r := range results {
		if r.Failed || (ci && r.Missing != "") {
			bad = append(bad, r.Name)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("%d scenario(s) did not run: %s (reasons above)", len(bad), strings.Join(bad, ", "))
}

func newBench(ctx context.Context, o options, progress io.Writer) (*bench, error) {
	work, err := os.MkdirTemp("", "sb-") // short: podman limits its runroot path
	if err != nil {
		return nil, fmt.Errorf("make work dir: %w", err)
	}
	b := &bench{o: o, plan: newPlan(o.n, o.quick), work: work, progress: progress,
		home: filepath.Join(work, "home"), workdir: filepath.Join(work, "workdir")}
	b.cleanups = append(b.cleanups, func() { removeAll(work) })
	if err := b.setup(ctx); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *bench) setup(ctx context.Context) error {
	for _, d := range []string{b.home, b.workdir, filepath.Join(b.work, "state")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("make %s: %w", d, err)
		}
	}
	var err error
	if b.busybox, err = findBusybox(); err != nil {
		return err
	}
	if b.l, err = newLauncher(filepath.Join(b.work, "children.log")); err != nil {
		return err
	}
	if b.bin, err = b.resolveBinary(ctx); err != nil {
		return err
	}
	if b.image, err = b.resolveImage(ctx); err != nil {
		return err
	}
	b.env = b.sandboxEnv(filepath.Join(b.work, "state"))
	b.cleanups = append(b.cleanups, func() { b.stopWarm(b.env) })
	return nil
}

// stopWarm ends the warm containers kept under env's temp root; the run
// owns them and must not leave agents behind.
func (b *bench) stopWarm(env []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := b.sandbox("--stop", "all")
	p.env = env
	if _, err := Output(ctx, p, nil); err != nil {
		b.logf("cleanup: %v", err)
	}
}

func (b *bench) resolveBinary(ctx context.Context) (string, error) {
	if b.o.bin == "" {
		b.logf("building the sandbox binary")
		return buildSandbox(ctx, filepath.Join(b.work, "bin"))
	}
	if err := checkExecutable(b.o.bin); err != nil {
		return "", fmt.Errorf("-bin %s: %w", b.o.bin, err)
	}
	return b.o.bin, nil
}

func (b *bench) resolveImage(ctx context.Context) (string, error) {
	if b.o.image != "" {
		f, err := os.Open(b.o.image)
		if err != nil {
			return "", fmt.Errorf("-image: %w (it must be readable by uid %d)", err, os.Getuid())
		}
		f.Close()
		return b.o.image, nil
	}
	path := filepath.Join(b.work, "image.tar")
	b.logf("generating a %d MiB busybox image", b.o.imageMB)
	if err := writeBenchImage(ctx, path, int64(b.o.imageMB)<<20); err != nil {
		return "", err
	}
	return path, nil
}

func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}

// sandboxEnv is what a Lectic user's shell would pass, with the sandbox's
// cache and temp roots moved under state so nothing outside the run is
// touched or reused.
func (b *bench) sandboxEnv(state string) []string {
	return []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=" + b.home,
		"USER=" + os.Getenv("USER"),
		"LECTIC_CACHE=" + filepath.Join(state, "cache"),
		"LECTIC_TEMP=" + filepath.Join(state, "temp"),
		"LECTIC_DATA=" + filepath.Join(state, "data"),
		// Nix must never wait on an unreachable binary cache.
		"NIX_CONFIG=substituters =\nexperimental-features = nix-command flakes",
	}
}

func (b *bench) machine(ctx context.Context) Machine {
	m := describeMachine(ctx, time.Now())
	m.User = os.Getenv("USER")
	m.Binary = b.bin
	m.Image = b.image
	if b.o.image == "" {
		m.Image = fmt.Sprintf("generated docker-archive: busybox + applets, %d MiB in 3 layers", b.o.imageMB)
	}
	if fi, err := os.Stat(b.image); err == nil {
		m.ImageBytes = fi.Size()
	}
	m.Quick = b.o.quick
	m.Iterations = map[string]int{"fast": b.plan.Fast, "slow": b.plan.Slow, "slowest": b.plan.Slowest,
		"parallel_per_client": b.plan.PerClient}
	return m
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.progress, "sandbox-bench: "+format+"\n", args...)
}

// close runs the cleanups in reverse order of registration.
func (b *bench) close() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	if b.l != nil {
		b.l.Close()
	}
}

// removeAll also removes trees an overlay left mode 000.
func removeAll(dir string) {
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			_ = os.Chmod(path, 0o700)
		}
		return nil
	})
	_ = os.RemoveAll(dir)
}

// measure calls step up to iters times and stops early once the budget is
// spent, keeping at least two samples so a percentile means something.
func (b *bench) measure(ctx context.Context, iters int, step func(i int) (time.Duration, error)) ([]time.Duration, error) {
	deadline := time.Now().Add(b.o.budget)
	var samples []time.Duration
	for i := 0; i < iters; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if len(samples) >= 2 && time.Now().After(deadline) {
			b.logf("  budget %s spent after %d of %d iterations", b.o.budget, len(samples), iters)
			break
		}
		d, err := step(i)
		if err != nil {
			return nil, fmt.Errorf("iteration %d: %w", i+1, err)
		}
		samples = append(samples, d)
	}
	return samples, nil
}

// timed is a step that times one run of p.
func (b *bench) timed(p proc) func(int) (time.Duration, error) {
	return func(int) (time.Duration, error) { return b.l.Time(p) }
}

// record summarises samples into r, or marks r missing with the reason.
func (b *bench) record(r Result, samples []time.Duration, err error) Result {
	if err == nil {
		r.Summary, err = Summarize(samples)
	}
	if err != nil {
		r.Missing = "failed: " + oneLine(err.Error())
		r.Failed = true
		b.logf("  %s: %s", r.Name, r.Missing)
		return r
	}
	b.logf("  %s: p50 %s ms, n %d", r.Name, formatMS(r.Summary.P50), r.Summary.N)
	return r
}

func missing(r Result, reason string) Result {
	r.Missing = reason
	return r
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

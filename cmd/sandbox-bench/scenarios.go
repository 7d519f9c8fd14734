package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// runAll measures every scenario in a fixed order: sandbox scenarios first,
// while the warm container is fresh, then the baselines. Each result is
// either numbers or a reason it has none. With -only, groups none of whose
// scenarios were asked for are not run at all.
func (b *bench) runAll(ctx context.Context) []Result {
	var out []Result
	run := func(names []string, f func() []Result) {
		for _, n := range names {
			if b.wants(n) {
				out = append(out, f()...)
				return
			}
		}
	}
	one := func(f func(context.Context) Result) func() []Result {
		return func() []Result { return []Result{f(ctx)} }
	}
	run([]string{"bare_exec"}, one(b.bareExec))
	run([]string{"client_startup"}, one(b.clientStartup))
	var rootfs string
	var loadErr error
	run([]string{"bwrap"}, func() []Result { rootfs, loadErr = b.load(ctx); return nil })
	run([]string{"warm_exec", "warm_exec_unconfined", "warm_exec_baseline"}, func() []Result { return b.warmExec(ctx) })
	run([]string{"warm_exec_env10k"}, one(b.warmExecEnv))
	run([]string{"warm_exec_sh"}, one(b.warmExecSh))
	run([]string{"parallel_16"}, one(b.parallel16))
	run([]string{"parallel_16_bare"}, one(b.parallel16Bare))
	run(netScenarioNames, func() []Result { return b.netScenarios(ctx) })
	run([]string{"nix_fast_path"}, one(b.nixFastPath))
	run([]string{"cold_start", "cold_start_baseline"}, func() []Result { return b.coldStart(ctx) })
	run([]string{"first_start"}, one(b.firstStart))
	run([]string{"bwrap"}, func() []Result { return []Result{b.bwrap(ctx, rootfs, loadErr)} })
	run([]string{"unpack"}, one(b.unpack))
	run([]string{"unpack_tar"}, one(b.unpackTar))
	run([]string{"load_cached"}, one(b.loadCached))
	run([]string{"podman_load", "podman_run", "podman_exec"}, func() []Result { return b.podman(ctx) })
	return out
}

// wants reports whether -only names scenario (or names nothing).
func (b *bench) wants(scenario string) bool {
	if len(b.o.only) == 0 {
		return true
	}
	for _, w := range b.o.only {
		if w == scenario {
			return true
		}
	}
	return false
}

// sandbox is one call of the sandbox binary in the private state.
func (b *bench) sandbox(args ...string) proc {
	return proc{argv: append([]string{b.bin}, args...), env: b.env, dir: b.workdir}
}

// warmArgs select the image and keep its container warm for the run.
func (b *bench) warmArgs(cmd ...string) []string {
	return append([]string{"--image", b.image, "--keep-warm", "--warm-ttl-seconds", warmTTL}, cmd...)
}

func (b *bench) bareExec(ctx context.Context) Result {
	r := Result{Name: "bare_exec", Kind: kindBare, Command: b.busybox + " true",
		Note: "the busybox that runs `true` in the image, started directly: the floor of fork/exec plus harness overhead"}
	b.logf("bare_exec")
	samples, err := b.measure(ctx, b.plan.Fast, b.timed(proc{argv: []string{b.busybox, "true"}, dir: b.workdir}))
	return b.record(r, samples, err)
}

// clientStartup times `--version`: the static binary's start-up and exit
// with no sandbox work, the part of every warm call no agent can remove.
func (b *bench) clientStartup(ctx context.Context) Result {
	p := b.sandbox("--version")
	r := Result{Name: "client_startup", Kind: kindBare, Command: shellJoin(p.argv[1:]),
		Note: "the sandbox binary printing its version: process start-up of the client, no container involved"}
	b.logf("client_startup")
	if _, err := Output(ctx, p, nil); err != nil {
		return b.record(r, nil, err)
	}
	samples, err := b.measure(ctx, b.plan.Fast, b.timed(p))
	return b.record(r, samples, err)
}

// loadResult is what `--load` prints.
type loadResult struct {
	ID             string `json:"id"`
	ChainID        string `json:"chain_id"`
	Rootfs         string `json:"rootfs"`
	Layers         int    `json:"layers"`
	UnpackedLayers int    `json:"unpacked_layers"`
}

// load fills the cache with the image and returns the unpacked rootfs, the
// tree bwrap runs over.
func (b *bench) load(ctx context.Context) (string, error) {
	b.logf("loading the image into the sandbox cache")
	out, err := Output(ctx, b.sandbox("--load", b.image), nil)
	if err != nil {
		return "", fmt.Errorf("--load failed: %w", err)
	}
	var lr loadResult
	if err := json.Unmarshal([]byte(lastLine([]byte(out))), &lr); err != nil {
		return "", fmt.Errorf("--load printed %q, not its JSON line: %w", oneLine(out), err)
	}
	if lr.Rootfs == "" {
		return "", fmt.Errorf("--load printed no rootfs: %q", oneLine(out))
	}
	return lr.Rootfs, nil
}

// verify runs p once and checks its stdout, so a scenario that silently
// fails fast is never reported as fast.
func verify(ctx context.Context, p proc, wantStdout string) error {
	out, err := Output(ctx, p, nil)
	if err != nil {
		return err
	}
	if out != wantStdout {
		return fmt.Errorf("%s printed %q, want %q", shellJoin(p.argv), out, wantStdout)
	}
	return nil
}

// warmExec measures warm_exec, and interleaved with it (so that both see
// the same machine) warm_exec_unconfined (--seccomp off) and, with
// -baseline, warm_exec_baseline: what the filter costs, and what the
// previous build does.
func (b *bench) warmExec(ctx context.Context) []Result {
	p := b.sandbox(b.warmArgs("true")...)
	r := Result{Name: "warm_exec", Kind: kindSandbox, Command: shellJoin(p.argv[1:]),
		Counterpart: []string{"podman_exec"}, Note: "into the warm container started by an untimed first call"}
	pu := b.sandbox(append([]string{"--seccomp", "off"}, b.warmArgs("true")...)...)
	ru := Result{Name: "warm_exec_unconfined", Kind: kindSandbox, Command: shellJoin(pu.argv[1:]),
		Counterpart: []string{"podman_exec"}, Note: "as warm_exec, without the seccomp filter, measured alternately with it"}
	runs := []*pairRun{{r: &r, p: p}, {r: &ru, p: pu}}
	if b.o.baseline != "" {
		pb := p
		pb.argv = append([]string{b.o.baseline}, p.argv[1:]...)
		rb := Result{Name: "warm_exec_baseline", Kind: kindSandbox, Command: shellJoin(pb.argv[1:]),
			Counterpart: []string{"podman_exec"}, Note: "as warm_exec with the -baseline build, measured alternately with it"}
		runs = append(runs, &pairRun{r: &rb, p: pb})
	}
	b.logf("warm_exec, warm_exec_unconfined")
	if err := b.settle(ctx, b.image); err != nil {
		return b.recordAll(runs, err)
	}
	for _, pr := range runs {
		if err := verify(ctx, pr.p, ""); err != nil {
			return b.recordAll(runs, err)
		}
		pr.r.Note += b.fastPathNote(ctx, pr.p)
	}
	err := b.measureAlternately(ctx, b.plan.Fast, runs)
	if err == nil {
		err = b.checkWarm(ctx)
	}
	return b.recordAll(runs, err)
}

// pairRun is one scenario of an alternating measurement.
type pairRun struct {
	r       *Result
	p       proc
	samples []time.Duration
}

// measureAlternately times the runs in turn, iters rounds, so slow minutes
// of a shared machine fall on all of them alike. Each round starts with the
// next run (roundOrder): on a shared two-core machine a run's position in a
// fixed order was worth several milliseconds of cold start.
func (b *bench) measureAlternately(ctx context.Context, iters int, runs []*pairRun) error {
	_, err := b.measure(ctx, iters, func(i int) (time.Duration, error) {
		var total time.Duration
		for _, k := range roundOrder(i, len(runs)) {
			pr := runs[k]
			d, err := b.l.Time(pr.p)
			if err != nil {
				return 0, err
			}
			pr.samples = append(pr.samples, d)
			total += d
		}
		return total, nil
	})
	return err
}

// roundOrder is the order of n runs in round i: rotated by i, so over n
// rounds every run takes every position once.
func roundOrder(i, n int) []int {
	order := make([]int, n)
	for k := range order {
		order[k] = (i + k) % n
	}
	return order
}

func (b *bench) recordAll(runs []*pairRun, err error) []Result {
	out := make([]Result, len(runs))
	for i, pr := range runs {
		out[i] = b.record(*pr.r, pr.samples, err)
	}
	return out
}

// bigEnv is how many variables warm_exec_env10k adds to the caller's
// environment.
const bigEnv = 10000

// warmExecEnv is warm_exec with ten thousand more variables in the
// caller's environment, every one of which the fast path filters and
// passes on: its cost over warm_exec, in the same run, is the fast path's
// environment work.
func (b *bench) warmExecEnv(ctx context.Context) Result {
	p := b.sandbox(b.warmArgs("sh", "-c", `echo "$BENCH_VAR_9999"`)...)
	for i := range bigEnv {
		p.env = append(p.env, fmt.Sprintf("BENCH_VAR_%d=value %d", i, i))
	}
	r := Result{Name: "warm_exec_env10k", Kind: kindSandbox, Command: fmt.Sprintf("(%d variables BENCH_VAR_i) %s", bigEnv, shellJoin(p.argv[1:])),
		Note: fmt.Sprintf("warm_exec_sh with %d more variables in the caller's environment; warm_exec_sh of the same run is the baseline", bigEnv)}
	b.logf("warm_exec_env10k")
	if err := verify(ctx, p, fmt.Sprintf("value %d\n", bigEnv-1)); err != nil {
		return b.record(r, nil, err)
	}
	r.Note += b.fastPathNote(ctx, p)
	samples, err := b.measure(ctx, b.plan.Fast, b.timed(p))
	return b.record(r, samples, err)
}

// checkWarm makes sure warm_exec was warm: with no container listed, every
// call would have been a cold start.
func (b *bench) checkWarm(ctx context.Context) error {
	n, out, err := b.listWarm(ctx)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("--list --json shows no warm container after --keep-warm calls (%s), so the numbers are not warm", oneLine(out))
	}
	return nil
}

// listWarm counts the containers `--list --json` reports.
func (b *bench) listWarm(ctx context.Context) (int, string, error) {
	out, err := Output(ctx, b.sandbox("--list", "--json"), nil)
	if err != nil {
		return 0, out, err
	}
	return countJSONItems(out), out, nil
}

// countJSONItems counts the entries of a JSON array, or of JSON lines, so
// either listing style works; anything unparsable counts as one entry.
func countJSONItems(out string) int {
	trimmed := strings.TrimSpace(out)
	if trimmed == "" || trimmed == "null" {
		return 0
	}
	var items []json.RawMessage
	if err := json.Unmarshal([]byte(trimmed), &items); err == nil {
		return len(items)
	}
	return len(strings.Split(trimmed, "\n"))
}

func (b *bench) warmExecSh(ctx context.Context) Result {
	p := b.sandbox(b.warmArgs("sh", "-c", "echo hi")...)
	r := Result{Name: "warm_exec_sh", Kind: kindSandbox, Command: shellJoin(p.argv[1:]),
		Counterpart: []string{"podman_exec"}, Note: "output checked once, then sent to /dev/null"}
	b.logf("warm_exec_sh")
	if err := verify(ctx, p, "hi\n"); err != nil {
		return b.record(r, nil, err)
	}
	r.Note += b.fastPathNote(ctx, p)
	samples, err := b.measure(ctx, b.plan.Fast, b.timed(p))
	return b.record(r, samples, err)
}

func (b *bench) parallel16(ctx context.Context) Result {
	p := b.sandbox(b.warmArgs("true")...)
	r := Result{Name: "parallel_16", Kind: kindSandbox, Command: shellJoin(p.argv[1:]),
		Counterpart: []string{"podman_exec"},
		Note:        fmt.Sprintf("%d concurrent clients, %d calls each, into one warm container; per-call latency", parallelClients, b.plan.PerClient)}
	b.logf("parallel_16")
	if err := verify(ctx, p, ""); err != nil {
		return b.record(r, nil, err)
	}
	samples, err := b.parallel(ctx, parallelClients, b.plan.PerClient, p)
	return b.record(r, samples, err)
}

// parallel16Bare is parallel_16's measure applied to no sandbox at all:
// what this machine's cores and process start-up allow 16 clients.
func (b *bench) parallel16Bare(ctx context.Context) Result {
	p := proc{argv: []string{b.busybox, "true"}, dir: b.workdir}
	r := Result{Name: "parallel_16_bare", Kind: kindBare, Command: shellJoin(p.argv),
		Note: fmt.Sprintf("%d concurrent clients, %d calls each, of busybox true without any sandbox: the reference for parallel_16", parallelClients, b.plan.PerClient)}
	b.logf("parallel_16_bare")
	samples, err := b.parallel(ctx, parallelClients, b.plan.PerClient, p)
	return b.record(r, samples, err)
}

// parallel runs clients loops of perClient calls at once and returns every
// call's latency.
func (b *bench) parallel(ctx context.Context, clients, perClient int, p proc) ([]time.Duration, error) {
	var (
		mu      sync.Mutex
		samples []time.Duration
		errs    []error
		wg      sync.WaitGroup
	)
	for range clients {
		wg.Go(func() {
			for range perClient {
				if ctx.Err() != nil {
					return
				}
				d, err := b.l.Time(p)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					samples = append(samples, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, fmt.Errorf("%d of %d calls failed, first: %w", len(errs), clients*perClient, errs[0])
	}
	return samples, ctx.Err()
}

func (b *bench) nixFastPath(ctx context.Context) Result {
	r := Result{Name: "nix_fast_path", Kind: kindSandbox, Counterpart: []string{"podman_exec"},
		Note: "offline fixture flake (no inputs, busybox builder writing a docker-archive), unchanged since the untimed first build; warm container"}
	b.logf("nix_fast_path")
	if _, err := exec.LookPath("nix"); err != nil {
		return missing(r, "nix is not installed (Debian: apt-get install nix-bin)")
	}
	ref, err := writeFixtureFlake(filepath.Join(b.work, "flake"))
	if err != nil {
		return missing(r, "cannot write the fixture flake: "+oneLine(err.Error()))
	}
	p := b.sandbox("--flake", ref, "--keep-warm", "--warm-ttl-seconds", warmTTL, "true")
	r.Command = shellJoin(p.argv[1:])
	// The first call builds. A user's flake is not edited between tool
	// calls, so the files age before the call that leaves the ticket.
	buildCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := verify(buildCtx, p, ""); err != nil {
		return b.record(r, nil, fmt.Errorf("building or running the fixture flake: %w", err))
	}
	if err := b.settle(ctx, filepath.Join(b.work, "flake")); err != nil {
		return b.record(r, nil, err)
	}
	if err := verify(buildCtx, p, ""); err != nil {
		return b.record(r, nil, fmt.Errorf("running the fixture flake: %w", err))
	}
	r.Note += b.fastPathNote(ctx, p)
	samples, err := b.measure(ctx, b.plan.Fast, b.timed(p))
	return b.record(r, samples, err)
}

// coldStart measures cold_start and, with -baseline, cold_start_baseline,
// alternately.
func (b *bench) coldStart(ctx context.Context) []Result {
	p := b.sandbox("--image", b.image, "--no-keep-warm", "true")
	r := Result{Name: "cold_start", Kind: kindSandbox, Command: shellJoin(p.argv[1:]),
		Counterpart: []string{"podman_run"},
		Note:        "rootfs cached, no warm container: warm ones stopped with --stop all first, and --no-keep-warm leaves none behind"}
	runs := []*pairRun{{r: &r, p: p}}
	if b.o.baseline != "" {
		pb := p
		pb.argv = append([]string{b.o.baseline}, p.argv[1:]...)
		rb := Result{Name: "cold_start_baseline", Kind: kindSandbox, Command: shellJoin(pb.argv[1:]),
			Counterpart: []string{"podman_run"}, Note: "as cold_start with the -baseline build, measured alternately with it"}
		runs = append(runs, &pairRun{r: &rb, p: pb})
	}
	b.logf("cold_start")
	if _, err := Output(ctx, b.sandbox("--stop", "all"), nil); err != nil {
		return b.recordAll(runs, fmt.Errorf("stop the warm containers first: %w", err))
	}
	for _, pr := range runs {
		if err := verify(ctx, pr.p, ""); err != nil {
			return b.recordAll(runs, err)
		}
	}
	err := b.measureAlternately(ctx, b.plan.Fast, runs)
	if err == nil {
		err = b.checkNothingWarm(ctx)
	}
	return b.recordAll(runs, err)
}

// checkNothingWarm makes sure cold_start was cold: had --no-keep-warm left
// a container behind, later iterations would have reused it.
func (b *bench) checkNothingWarm(ctx context.Context) error {
	n, out, err := b.listWarm(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("--no-keep-warm left warm containers behind, so the numbers are not cold: %s", oneLine(out))
	}
	return nil
}

func (b *bench) firstStart(ctx context.Context) Result {
	r := Result{Name: "first_start", Kind: kindSandbox, Counterpart: []string{"podman_load", "podman_run"},
		Note: "empty cache and temp dirs for every call: load + unpack + create + run"}
	b.logf("first_start")
	step := func(i int) (time.Duration, error) {
		state := filepath.Join(b.work, fmt.Sprintf("first-%d", i))
		p := b.sandbox("--image", b.image, "--no-keep-warm", "true")
		p.env = b.sandboxEnv(state)
		defer func() {
			b.stopWarm(p.env)
			removeAll(state)
		}()
		r.Command = shellJoin(p.argv[1:])
		return b.l.Time(p)
	}
	samples, err := b.measure(ctx, b.plan.Slow, step)
	return b.record(r, samples, err)
}

func (b *bench) bwrap(ctx context.Context, rootfs string, loadErr error) Result {
	r := Result{Name: "bwrap", Kind: kindBwrap,
		Note: "a fresh bubblewrap sandbox per call over the rootfs unpacked by --load"}
	b.logf("bwrap")
	path, err := exec.LookPath("bwrap")
	if err != nil {
		return missing(r, "bwrap is not installed (Debian: apt-get install bubblewrap)")
	}
	if loadErr != nil {
		return b.record(r, nil, fmt.Errorf("needs the rootfs unpacked by the sandbox: %w", loadErr))
	}
	argv, err := bwrapArgv(path, rootfs)
	if err != nil {
		return b.record(r, nil, err)
	}
	p := proc{argv: argv, env: []string{"PATH=/usr/bin:/bin"}, dir: "/"}
	r.Command = shellJoin(p.argv)
	if err := verify(ctx, p, ""); err != nil {
		return b.record(r, nil, err)
	}
	samples, err := b.measure(ctx, b.plan.Fast, b.timed(p))
	return b.record(r, samples, err)
}

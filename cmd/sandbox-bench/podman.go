package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// podmanContainer is the long-lived container podman_exec runs in.
const podmanContainer = "lns-bench"

// podmanRunner holds the old bash wrapper's podman invocation: rootless,
// vfs storage in private directories, runc (crun rejects cgroup v1 hybrid
// hosts), no network.
type podmanRunner struct {
	path    string
	env     []string
	runtime string // XDG_RUNTIME_DIR: podman's pause process and runc state
	dir     string
}

func (b *bench) newPodman(path string) (*podmanRunner, error) {
	pm := &podmanRunner{path: path, runtime: filepath.Join(b.work, "podman-run"), dir: b.workdir}
	for _, d := range []string{pm.runtime, filepath.Join(b.work, "podman-config")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("make %s: %w", d, err)
		}
	}
	pm.env = []string{
		"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
		"HOME=" + b.home,
		"USER=" + os.Getenv("USER"),
		"XDG_RUNTIME_DIR=" + pm.runtime,
		"XDG_CONFIG_HOME=" + filepath.Join(b.work, "podman-config"),
	}
	return pm, nil
}

// cmd is `podman <private store flags> args...` for the store at dir.
// Podman refuses a runroot longer than 50 bytes, hence the short names.
func (pm *podmanRunner) cmd(store string, args ...string) proc {
	argv := []string{pm.path,
		"--root", filepath.Join(store, "r"), "--runroot", filepath.Join(store, "rr"),
		"--storage-driver", "vfs", "--runtime", "runc",
		"--cgroup-manager", "cgroupfs", "--events-backend", "file"}
	return proc{argv: append(argv, args...), env: pm.env, dir: pm.dir}
}

// removeStore deletes a store from inside podman's user namespace, where
// files owned by subordinate ids can be removed.
func (pm *podmanRunner) removeStore(ctx context.Context, store string) {
	_, _ = Output(ctx, pm.cmd(store, "unshare", "rm", "-rf", store), nil)
	removeAll(store)
}

// stopPause ends the pause process rootless podman leaves behind to hold
// its user namespace; it belongs to this run's private XDG_RUNTIME_DIR.
func (pm *podmanRunner) stopPause() {
	b, err := os.ReadFile(filepath.Join(pm.runtime, "libpod", "tmp", "pause.pid"))
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func (b *bench) podman(ctx context.Context) []Result {
	results := []Result{
		{Name: "podman_load", Kind: kindPodman, Note: "first-time `podman load` of the same archive into an empty vfs store, per call"},
		{Name: "podman_run", Kind: kindPodman, Note: "run --rm of the loaded image"},
		{Name: "podman_exec", Kind: kindPodman, Note: "exec into a running container (`sleep` as its init)"},
	}
	b.logf("podman baselines")
	path, err := exec.LookPath("podman")
	if err != nil {
		return allMissing(results, "podman is not installed (Debian: apt-get install podman uidmap runc)")
	}
	pm, err := b.newPodman(path)
	if err != nil {
		return []Result{b.record(results[0], nil, err), b.record(results[1], nil, err), b.record(results[2], nil, err)}
	}
	defer pm.stopPause()
	results[0] = b.podmanLoad(ctx, pm, results[0])
	store := filepath.Join(b.work, "pm")
	defer pm.removeStore(context.WithoutCancel(ctx), store)
	ref, err := pm.loadOnce(ctx, store, b.image)
	if err != nil {
		results[1] = b.record(results[1], nil, err)
		results[2] = b.record(results[2], nil, err)
		return results
	}
	results[1] = b.podmanRun(ctx, pm, store, ref, results[1])
	results[2] = b.podmanExec(ctx, pm, store, ref, results[2])
	return results
}

func allMissing(rs []Result, reason string) []Result {
	for i := range rs {
		rs[i].Missing = reason
	}
	return rs
}

// loadOnce loads the image untimed and returns the name podman gave it.
func (pm *podmanRunner) loadOnce(ctx context.Context, store, image string) (string, error) {
	out, err := Output(ctx, pm.cmd(store, "load", "-q", "-i", image), nil)
	if err != nil {
		return "", fmt.Errorf("podman load: %w", err)
	}
	line := lastLine([]byte(out))
	_, ref, ok := strings.Cut(line, ": ")
	if !ok {
		return "", fmt.Errorf("podman load printed %q, expected \"Loaded image: NAME\"", line)
	}
	ref, _, _ = strings.Cut(strings.TrimSpace(ref), ",")
	return ref, nil
}

func (b *bench) podmanLoad(ctx context.Context, pm *podmanRunner, r Result) Result {
	r.Command = shellJoin(pm.cmd("STORE", "load", "-q", "-i", b.image).argv)
	step := func(i int) (time.Duration, error) {
		store := filepath.Join(b.work, fmt.Sprintf("pl%d", i))
		defer pm.removeStore(context.WithoutCancel(ctx), store)
		return b.l.Time(pm.cmd(store, "load", "-q", "-i", b.image))
	}
	samples, err := b.measure(ctx, b.plan.Slowest, step)
	return b.record(r, samples, err)
}

func (b *bench) podmanRun(ctx context.Context, pm *podmanRunner, store, ref string, r Result) Result {
	p := pm.cmd(store, "run", "--rm", "--network", "none", ref, "true")
	r.Command = shellJoin(p.argv)
	if err := verify(ctx, p, ""); err != nil {
		return b.record(r, nil, err)
	}
	samples, err := b.measure(ctx, b.plan.Slow, b.timed(p))
	return b.record(r, samples, err)
}

func (b *bench) podmanExec(ctx context.Context, pm *podmanRunner, store, ref string, r Result) Result {
	start := pm.cmd(store, "run", "-d", "--name", podmanContainer, "--network", "none", ref, "sleep", "1000000")
	if _, err := Output(ctx, start, nil); err != nil {
		return b.record(r, nil, fmt.Errorf("start the container to exec into: %w", err))
	}
	defer func() {
		_, _ = Output(context.WithoutCancel(ctx), pm.cmd(store, "rm", "-f", "-t", "0", podmanContainer), nil)
	}()
	p := pm.cmd(store, "exec", podmanContainer, "true")
	r.Command = shellJoin(p.argv)
	if err := verify(ctx, p, ""); err != nil {
		return b.record(r, nil, err)
	}
	samples, err := b.measure(ctx, b.plan.Slow, b.timed(p))
	return b.record(r, samples, err)
}

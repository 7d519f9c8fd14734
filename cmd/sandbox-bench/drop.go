package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// identity is the unprivileged user the harness measures as.
type identity struct {
	name     string
	uid, gid int
	groups   []uint32
}

// pickUser resolves the -user flag, else sandboxtest, else nobody.
func pickUser(name string) (identity, error) {
	candidates := []string{name}
	if name == "" {
		candidates = []string{"sandboxtest", "nobody"}
	}
	var lastErr error
	for _, c := range candidates {
		u, err := user.Lookup(c)
		if err != nil {
			lastErr = err
			continue
		}
		return identityOf(u)
	}
	return identity{}, fmt.Errorf("no unprivileged user to measure as (%v); create one with `useradd -m sandboxtest` or pass -user NAME", lastErr)
}

func identityOf(u *user.User) (identity, error) {
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return identity{}, fmt.Errorf("user %s: %w", u.Username, err)
	}
	if uid == 0 {
		return identity{}, fmt.Errorf("user %s is root; the harness measures the rootless path, pick an unprivileged user with -user", u.Username)
	}
	id := identity{name: u.Username, uid: uid, gid: gid}
	gids, _ := u.GroupIds()
	for _, g := range gids {
		if n, err := strconv.Atoi(g); err == nil {
			id.groups = append(id.groups, uint32(n))
		}
	}
	return id, nil
}

// runDropped prepares, as root, what an unprivileged user cannot (building
// the binary with root's Go cache, an output dir it owns), then re-executes
// the harness as that user and waits for it.
func runDropped(ctx context.Context, o options, stdout, stderr io.Writer) error {
	id, err := pickUser(o.user)
	if err != nil {
		return err
	}
	stage, err := os.MkdirTemp("", "sandbox-bench-")
	if err != nil {
		return fmt.Errorf("make staging dir: %w", err)
	}
	defer os.RemoveAll(stage)
	if err := os.Chmod(stage, 0o755); err != nil {
		return err
	}
	if o.bin == "" {
		fmt.Fprintln(stderr, "sandbox-bench: building the sandbox binary")
		if o.bin, err = buildSandbox(ctx, filepath.Join(stage, "bin")); err != nil {
			return err
		}
	}
	if o.bin, err = stageFile(o.bin, filepath.Join(stage, "lectic-nix-sandbox")); err != nil {
		return fmt.Errorf("-bin: %w", err)
	}
	if o.netprobe == "" {
		// Built here with root's Go cache, as the sandbox binary is.
		if o.netprobe, err = buildNetprobe(ctx, filepath.Join(stage, "netprobe-build")); err != nil {
			return err
		}
	}
	if o.netprobe, err = stageFile(o.netprobe, filepath.Join(stage, "netprobe")); err != nil {
		return fmt.Errorf("-netprobe: %w", err)
	}
	if o.baseline != "" {
		if o.baseline, err = stageFile(o.baseline, filepath.Join(stage, "baseline")); err != nil {
			return fmt.Errorf("-baseline: %w", err)
		}
	}
	if o.image != "" {
		if o.image, err = stageFile(o.image, filepath.Join(stage, "image")); err != nil {
			return fmt.Errorf("-image: %w", err)
		}
	}
	self, err := stageFile("/proc/self/exe", filepath.Join(stage, "sandbox-bench"))
	if err != nil {
		return err
	}
	home := filepath.Join(stage, "home")
	if err := mkdirOwned(home, 0o700, id); err != nil {
		return err
	}
	if err := mkdirOwned(o.out, 0o755, id); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "sandbox-bench: running as root; measuring as unprivileged user %s (uid %d)\n", id.name, id.uid)
	return runChild(ctx, self, childArgs(o), childEnv(id, home), home, id, stdout, stderr)
}

// stageFile copies a regular file to dst, readable (and, if it was,
// executable) by everyone, so the unprivileged user can use it wherever
// root kept the original; `go run` for one leaves the harness in a root-only
// build directory. Directories (an OCI layout) are used in place.
func stageFile(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return "", err
	}
	if fi.IsDir() {
		return src, nil
	}
	mode := fi.Mode().Perm()&0o111 | 0o644
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return "", fmt.Errorf("copy %s: %w", src, err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		return "", fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Chmod(mode); err != nil {
		return "", err
	}
	return dst, out.Close()
}

func mkdirOwned(dir string, mode os.FileMode, id identity) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return fmt.Errorf("make %s: %w", dir, err)
	}
	if err := os.Chown(dir, id.uid, id.gid); err != nil {
		return fmt.Errorf("give %s to %s: %w", dir, id.name, err)
	}
	return nil
}

func childArgs(o options) []string {
	args := []string{"-bin", o.bin, "-out", o.out, "-n", strconv.Itoa(o.n),
		"-image-mb", strconv.Itoa(o.imageMB), "-budget", o.budget.String()}
	if o.image != "" {
		args = append(args, "-image", o.image)
	}
	if o.netprobe != "" {
		args = append(args, "-netprobe", o.netprobe)
	}
	if o.baseline != "" {
		args = append(args, "-baseline", o.baseline)
	}
	if o.quick {
		args = append(args, "-quick")
	}
	if len(o.only) > 0 {
		args = append(args, "-only", strings.Join(o.only, ","))
	}
	return args
}

// childEnv is a clean login-like environment: nothing of root's leaks into
// what the sandbox and podman see.
func childEnv(id identity, home string) []string {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + home,
		"USER=" + id.name,
		"LOGNAME=" + id.name,
	}
	for _, name := range []string{"CI", "TERM", "LANG"} {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	return env
}

func runChild(ctx context.Context, exe string, args, env []string, dir string, id identity, stdout, stderr io.Writer) error {
	cmd := exec.Command(exe, args...)
	cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = env, dir, stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
		Uid: uint32(id.uid), Gid: uint32(id.gid), Groups: id.groups}}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start harness as %s: %w", id.name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return childStatus(err)
	case <-ctx.Done():
		// The child cleans up its containers on SIGTERM; give it the time.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			return childStatus(err)
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			return childStatus(<-done)
		}
	}
}

func childStatus(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return exitError(ee.ExitCode())
	}
	return err
}

// buildSandbox builds the static binary exactly as the Makefile does, from
// the module in the current directory.
func buildSandbox(ctx context.Context, dir string) (string, error) {
	gomod, err := exec.CommandContext(ctx, goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the Go module to build: %w; pass -bin PATH", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if _, err := os.Stat(filepath.Join(root, "cmd", "lectic-nix-sandbox")); err != nil {
		return "", fmt.Errorf("run from the lectic-nix-sandbox checkout or pass -bin PATH (no cmd/lectic-nix-sandbox under %s)", root)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "lectic-nix-sandbox")
	// The same recipe as make: the harness must measure what users run.
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "build.sh"), out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the sandbox binary: %v: %s", err, lastLine(b))
	}
	return out, nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

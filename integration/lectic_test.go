package integration

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests run the sandbox the way Lectic does: an MCP server's stdio
// transport, an exec tool's environment, the plugin's sandbox line.

// mcpEnv is the environment Lectic gives a stdio MCP server: only HOME,
// LOGNAME, PATH, SHELL, TERM and USER of its own (the MCP SDK's default
// environment), plus the server spec's env: entries. The spec here also
// points LECTIC_TEMP, LECTIC_CACHE and LECTIC_DATA at the test user's own
// dirs, so the test never touches the machine's shared /tmp/lectic.
func (u *testUser) mcpEnv(spec ...string) []string {
	env := []string{
		"HOME=" + u.home, "LOGNAME=" + u.loginName(), "PATH=/usr/local/bin:/usr/bin:/bin",
		"SHELL=/bin/sh", "TERM=xterm-256color", "USER=" + u.loginName(),
		"LECTIC_TEMP=" + u.temp, "LECTIC_CACHE=" + u.cache, "LECTIC_DATA=" + u.data,
	}
	return append(env, spec...)
}

// runExact runs the binary with exactly env (nothing of the suite's own).
func (u *testUser) runExact(t *testing.T, env []string, dir string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := u.command(ctx, runOpts{dir: dir}, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.code = 128 + int(ws.Signal())
		}
	default:
		t.Fatalf("run %v: %v", args, err)
	}
	return r
}

// TestWithheldCredentials: a token an MCP server spec gives its server is
// withheld, and the caller's stderr says so once per warm container, by
// name only, with how to pass it; LECTIC_NIX_SANDBOX_PASS_ENV (which a
// spec's env: can set) and --env pass it. The Go path and the fast path
// say the same.
func TestWithheldCredentials(t *testing.T) {
	const value = "ghp_0123456789abcdefSECRET"
	forEachUser(t, func(t *testing.T, u *testUser) {
		img := privateImage(t, u)
		wd := u.workdir(t)
		settle(t, img)
		show := `echo "pat=${GITHUB_PERSONAL_ACCESS_TOKEN:-unset} npm=${NPM_TOKEN:-unset}"`
		call := func(spec []string, extra ...string) result {
			args := append(append([]string{"--image", img, "-d", wd}, extra...), "sh", "-c", show)
			return u.runExact(t, u.mcpEnv(spec...), wd, args...)
		}
		noValue := func(r result) {
			t.Helper()
			for _, v := range []string{value, "npm_SECRET"} {
				if strings.Contains(r.stderr, v) {
					t.Fatalf("a withheld value reached stderr: %v", r)
				}
			}
		}
		spec := []string{"GITHUB_PERSONAL_ACCESS_TOKEN=" + value}

		r := call(spec)
		wantOK(t, r)
		noValue(r)
		if r.stdout != "pat=unset npm=unset\n" {
			t.Fatalf("the token was not withheld: %v", r)
		}
		lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], "lectic-nix-sandbox: withheld GITHUB_PERSONAL_ACCESS_TOKEN from the command") ||
			!strings.Contains(lines[0], "--env NAME") || !strings.Contains(lines[0], "LECTIC_NIX_SANDBOX_PASS_ENV=GITHUB_PERSONAL_ACCESS_TOKEN") {
			t.Fatalf("want one line naming the withheld variable and how to pass it: %v", r)
		}

		// The same container does not say it again: not on the fast path
		// the first call left a ticket for, nor on the Go path.
		for _, mode := range [][]string{require, slow} {
			r = call(append(append([]string(nil), spec...), mode...))
			wantOK(t, r)
			if r.stdout != "pat=unset npm=unset\n" || r.stderr != "" {
				t.Fatalf("%v: a warm call repeated the notice: %v", mode, r)
			}
		}
		// A name this container has not withheld before is reported, on
		// the fast path too, alone.
		r = call(append(append([]string(nil), spec...), append([]string{"NPM_TOKEN=npm_SECRET"}, require...)...))
		wantOK(t, r)
		noValue(r)
		if !strings.HasPrefix(r.stderr, "lectic-nix-sandbox: withheld NPM_TOKEN from the command") || strings.Count(r.stderr, "\n") != 1 {
			t.Fatalf("fast path, newly withheld NPM_TOKEN: %v", r)
		}

		// Passing it: the spec's env: names it, or the sandbox line does.
		pass := append(append([]string(nil), spec...), "LECTIC_NIX_SANDBOX_PASS_ENV=GITHUB_PERSONAL_ACCESS_TOKEN, NPM_TOKEN", "NPM_TOKEN=npm_x")
		for _, mode := range [][]string{nil, require} {
			r = call(append(append([]string(nil), pass...), mode...))
			wantOK(t, r)
			if r.stdout != "pat="+value+" npm=npm_x\n" || r.stderr != "" {
				t.Fatalf("LECTIC_NIX_SANDBOX_PASS_ENV %v: %v", mode, r)
			}
		}
		r = call(spec, "--env", "GITHUB_PERSONAL_ACCESS_TOKEN")
		wantOK(t, r)
		if r.stdout != "pat="+value+" npm=unset\n" || r.stderr != "" {
			t.Fatalf("--env NAME: %v", r)
		}
		r = call(append(append([]string(nil), spec...), "LECTIC_NIX_SANDBOX_PASS_ENV=GITHUB_PERSONAL_ACCESS_TOKEN=x"))
		wantSandboxError(t, r, "LECTIC_NIX_SANDBOX_PASS_ENV")
	})
}

// TestHostPathNotVisible: a command named by a host path the sandbox does
// not see, or a script given to an interpreter by such a path, fails
// with a line that says so and shows the read-only bind that makes it
// visible; with that bind it runs. The fast path says the same.
func TestHostPathNotVisible(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		img := privateImage(t, u)
		wd := u.workdir(t)
		tools := filepath.Join(u.workdir(t), "lectic config", "tools")
		if err := os.MkdirAll(tools, 0o755); err != nil {
			t.Fatal(err)
		}
		script := filepath.Join(tools, "hello.sh")
		if err := os.WriteFile(script, []byte("#!/bin/sh\necho hello from the tool\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		chown(t, u, filepath.Dir(tools), tools, script)
		settle(t, img)
		bind := "'" + tools + ":" + tools + ":ro'"
		run := func(env []string, args ...string) result {
			return u.run(context.Background(), t, runOpts{dir: wd, env: env}, append([]string{"--image", img, "-d", wd}, args...)...)
		}
		for _, mode := range [][]string{slow, nil, require} {
			r := run(mode, script)
			want := "lectic-nix-sandbox: command not found: " + script + ": it is on the host but not visible in the sandbox; add --volume " + bind + " to the sandbox line\n"
			if r.code != 127 || r.stderr != want || r.stdout != "" {
				t.Fatalf("%v: argv[0] on the host only:\n%v\nwant stderr %q", mode, r, want)
			}
			r = run(mode, "sh", script)
			want = "lectic-nix-sandbox: " + script + " is on the host but not visible in the sandbox; add --volume " + bind + " to the sandbox line\n"
			if r.code == 0 || !strings.HasPrefix(r.stderr, want) {
				t.Fatalf("%v: a script given to sh:\n%v\nwant stderr to start with %q", mode, r, want)
			}
		}
		// A path the host lacks too is an ordinary "command not found".
		r := run(nil, "/nonexistent/tool.sh")
		if r.code != 127 || r.stderr != "lectic-nix-sandbox: command not found: /nonexistent/tool.sh\n" {
			t.Fatalf("a path that exists nowhere: %v", r)
		}
		// The bind it suggests, as Lectic's tokenizer reads the quotes.
		r = run(nil, "--volume", tools+":"+tools+":ro", script)
		wantOK(t, r)
		if r.stdout != "hello from the tool\n" {
			t.Fatalf("with the suggested bind: %v", r)
		}
	})
}

// TestHostNoticeOncePerChoice: with the plugin's default line and no
// buildable flake, the host image stands in and the user is told once per
// change of that choice, not in the first result of every new workdir;
// two calls at once do not both say it, nor split it; --doctor reports the
// choice and why. When the default flake builds, then breaks again, the
// fall-back is said again.
func TestHostNoticeOncePerChoice(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		base := u.workdir(t)
		data, cache := filepath.Join(base, "data"), filepath.Join(base, "cache")
		env := []string{"PATH=/usr/bin:/bin", "LECTIC_DATA=" + data, "LECTIC_CACHE=" + cache}
		notice := "lectic-nix-sandbox: using the host image: nix is not installed; pass --flake or --image to choose an image"
		// nix is installed on this machine; --nix-exe pointing at nothing
		// is how a machine without it looks to the sandbox.
		run := func(env []string, nixExe, wd string) result {
			return u.run(context.Background(), t, runOpts{dir: wd, env: env},
				"--nix-exe", nixExe, "-d", wd, "sh", "-c", "test -d /usr/bin && echo host; echo fixture=$FIXTURE")
		}
		r := run(env, "/nonexistent/nix", u.workdir(t))
		wantOK(t, r)
		if r.stdout != "host\nfixture=\n" || strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, notice) {
			t.Fatalf("first workdir: want the host image and one notice: %v", r)
		}
		r = run(env, "/nonexistent/nix", u.workdir(t))
		wantOK(t, r)
		if r.stdout != "host\nfixture=\n" || r.stderr != "" {
			t.Fatalf("a second new workdir repeated the notice: %v", r)
		}
		r = u.run(context.Background(), t, runOpts{env: env}, "--doctor")
		if !strings.Contains(r.stdout, "warn image: the host image since ") || !strings.Contains(r.stdout, ": nix is not installed\n") {
			t.Fatalf("--doctor does not report the host image and why:\n%s", r.stdout)
		}

		// Two new workdirs at once, with a cache that has seen no choice:
		// one of them says it, whole.
		env2 := []string{"PATH=/usr/bin:/bin", "LECTIC_DATA=" + data, "LECTIC_CACHE=" + filepath.Join(base, "cache2")}
		results := make([]result, 2)
		done := make(chan int)
		for i := range results {
			wd := u.workdir(t)
			go func() {
				results[i] = run(env2, "/nonexistent/nix", wd)
				done <- i
			}()
		}
		<-done
		<-done
		told := 0
		for _, r := range results {
			wantOK(t, r)
			switch {
			case r.stderr == "":
			case strings.HasPrefix(r.stderr, notice) && strings.Count(r.stderr, "\n") == 1:
				told++
			default:
				t.Fatalf("a concurrent call's stderr is neither empty nor the whole notice: %v", r)
			}
		}
		if told != 1 {
			t.Fatalf("%d of two concurrent calls said the notice, want 1: %v", told, results)
		}

		// The default flake (the installed plugin's) becomes buildable:
		// the flake is used, silently; broken again, the host image is
		// said again.
		flake, nixExe, _ := fixtureFlake(t, u)
		plugin := filepath.Join(data, "plugins", "nix-sandbox")
		if err := os.MkdirAll(plugin, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"flake.nix", "busybox"} {
			b, err := os.ReadFile(filepath.Join(flake, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(plugin, f), b, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		chown(t, u, filepath.Join(data, "plugins"), plugin, filepath.Join(plugin, "flake.nix"), filepath.Join(plugin, "busybox"))
		nixEnv := append(append([]string(nil), env...), "NIX_CONFIG=substituters =\nexperimental-features = nix-command flakes")
		r = run(nixEnv, nixExe, u.workdir(t))
		if r.code != 0 || r.stdout != "fixture=1\n" || strings.Contains(r.stderr, "host image") {
			t.Fatalf("the default flake, now buildable, must be used without a notice: %v", r)
		}
		r = u.run(context.Background(), t, runOpts{env: nixEnv}, "--nix-exe", nixExe, "--doctor")
		if !strings.Contains(r.stdout, "ok   image: the default flake path:"+plugin+" since ") {
			t.Fatalf("--doctor does not report the default flake:\n%s", r.stdout)
		}
		if err := os.WriteFile(filepath.Join(plugin, "flake.nix"), []byte("{ outputs = { self }: { }; }\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		r = run(nixEnv, nixExe, u.workdir(t))
		// (nix's progress line comes first)
		if r.code != 0 || r.stdout != "host\nfixture=\n" || strings.Count(r.stderr, "using the host image") != 1 ||
			!strings.Contains(r.stderr, "\nlectic-nix-sandbox: using the host image: the default flake could not be built (") {
			t.Fatalf("the flake broke: want the host image, said once: %v", r)
		}
	})
}

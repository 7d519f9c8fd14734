package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// listIn lists the warm containers under one temp root.
func (u *testUser) listIn(t *testing.T, temp string) []warmInfo {
	t.Helper()
	r := u.run(context.Background(), t, runOpts{env: []string{"LECTIC_TEMP=" + temp}}, "--list", "--json")
	wantOK(t, r)
	var all []warmInfo
	if err := json.Unmarshal([]byte(r.stdout), &all); err != nil {
		t.Fatalf("--list --json: %v: %q", err, r.stdout)
	}
	return all
}

// settleList waits until the containers under temp number want (stopping
// an evicted container takes up to a second each), and returns them.
func (u *testUser) settleList(t *testing.T, temp string, want int) []warmInfo {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := u.listIn(t, temp)
		if len(got) == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// privateTemp is a temp root of the test's own, so that it counts only its
// own containers.
func (u *testUser) privateTemp(t *testing.T) string {
	t.Helper()
	temp := filepath.Join(u.workdir(t), "t")
	if err := os.Mkdir(temp, 0o700); err != nil {
		t.Fatal(err)
	}
	chown(t, u, temp)
	t.Cleanup(func() {
		u.run(context.Background(), nil, runOpts{env: []string{"LECTIC_TEMP=" + temp}}, "--stop", "all")
	})
	return temp
}

// TestWarmContainersDoNotPileUp: after calls in 20 workdirs, at most
// --max-warm (default 16) idle containers stay, the most recently used.
func TestWarmContainersDoNotPileUp(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		temp := u.privateTemp(t)
		env := []string{"LECTIC_TEMP=" + temp}
		var wds []string
		for range 20 {
			wd := u.workdir(t)
			wds = append(wds, wd)
			wantOK(t, u.sandbox(t, wd, runOpts{env: env}, "true"))
		}
		got := u.settleList(t, temp, 16)
		if len(got) != 16 {
			t.Fatalf("after 20 workdirs, %d warm containers, want 16: %+v", len(got), got)
		}
		kept := map[string]bool{}
		for _, w := range got {
			kept[w.Workdir] = true
		}
		for i, wd := range wds {
			if kept[wd] != (i >= 4) {
				t.Fatalf("workdir #%d kept=%v: the least recently used four must go, the last 16 stay", i+1, kept[wd])
			}
		}
		// A smaller cap on the next new container applies at once.
		wantOK(t, u.sandbox(t, u.workdir(t), runOpts{env: env}, "--max-warm", "3", "true"))
		if got := u.settleList(t, temp, 3); len(got) != 3 {
			t.Fatalf("--max-warm 3: %d containers stay", len(got))
		}
		r := u.sandbox(t, u.workdir(t), runOpts{env: env}, "--max-warm", "0", "true")
		wantSandboxError(t, r, `--max-warm "0": want a whole number of idle containers from 1 to 1000; --no-keep-warm keeps none`)
	})
}

// TestReplacedImageStops: a new image for the same workdir and options
// (here the host image after the busybox one) replaces the old container,
// which stops as soon as it is idle rather than after its TTL.
func TestReplacedImageStops(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		temp := u.privateTemp(t)
		env := []string{"LECTIC_TEMP=" + temp}
		wd := u.workdir(t)
		wantOK(t, u.sandbox(t, wd, runOpts{env: env}, "true"))
		first := u.listIn(t, temp)
		if len(first) != 1 {
			t.Fatalf("one container expected: %+v", first)
		}
		other := u.workdir(t)
		wantOK(t, u.sandbox(t, other, runOpts{env: env}, "true")) // another family stays
		wantOK(t, u.run(context.Background(), t, runOpts{dir: wd, env: env}, "--image", "host", "-d", wd, "true"))
		got := u.settleList(t, temp, 2)
		if len(got) != 2 {
			t.Fatalf("want the host-image container and the other workdir's: %+v", got)
		}
		for _, w := range got {
			if w.Key == first[0].Key {
				t.Fatalf("the replaced container is still running: %+v", got)
			}
		}
	})
}

// supervisorOf reads the supervisor pid of a warm container from its dir.
func supervisorOf(t *testing.T, temp, key string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(temp, "nix-sandbox", "warm", key, "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Pid int `json:"supervisor_pid"`
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Pid <= 0 {
		t.Fatalf("meta.json %s: %v", b, err)
	}
	return m.Pid
}

func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && !strings.HasPrefix(strings.TrimSpace(string(b)[i+1:]), "Z")
}

func waitEnded(t *testing.T, pid int, within time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for running(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: supervisor %d still runs after %s", what, pid, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDeletedTempRoot: a container whose temp root was deleted under it
// still ends by its TTL; one that never would (TTL 0) is reported by
// --doctor and stopped with --stop KEY.
func TestDeletedTempRoot(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		start := func(ttl string) (temp, key string, pid int) {
			temp = u.privateTemp(t)
			wd := u.workdir(t)
			wantOK(t, u.sandbox(t, wd, runOpts{env: []string{"LECTIC_TEMP=" + temp}}, "--warm-ttl-seconds", ttl, "true"))
			list := u.listIn(t, temp)
			if len(list) != 1 {
				t.Fatalf("one container expected: %+v", list)
			}
			pid = supervisorOf(t, temp, list[0].Key)
			if err := os.RemoveAll(temp); err != nil {
				t.Fatal(err)
			}
			return temp, list[0].Key, pid
		}
		_, _, byTTL := start("2")
		_, key, forever := start("0")
		waitEnded(t, byTTL, 60*time.Second, "TTL 2 s, temp root deleted")

		r := u.run(context.Background(), t, runOpts{}, "--doctor")
		line := ""
		for _, l := range strings.Split(r.stdout, "\n") {
			if strings.Contains(l, "orphaned containers:") {
				line = l
			}
		}
		if !strings.HasPrefix(line, "warn orphaned containers:") || !strings.Contains(line, key+" (supervisor pid "+strconv.Itoa(forever)) {
			t.Fatalf("--doctor does not report the orphan %s (pid %d):\n%s", key, forever, r.stdout)
		}
		if !strings.Contains(r.stdout, "fix: lectic-nix-sandbox --stop orphaned") {
			t.Fatalf("--doctor gives no fix for the orphan:\n%s", r.stdout)
		}
		wantOK(t, u.run(context.Background(), t, runOpts{}, "--stop", key))
		waitEnded(t, forever, 30*time.Second, "--stop of an orphan")
	})
}

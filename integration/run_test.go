package integration

import (
	"bufio"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestBinaryIsStatic(t *testing.T) {
	f, err := elf.Open(suite.bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s has an ELF interpreter; it must be static to run inside images without libc", suite.bin)
		}
	}
	if ds, _ := f.ImportedLibraries(); len(ds) > 0 {
		t.Fatalf("binary needs shared libraries %v", ds)
	}
}

func TestExitCodes(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		notExec := filepath.Join(wd, "notexec")
		if err := os.WriteFile(notExec, []byte("#!/bin/sh\necho no\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		chown(t, u, notExec)
		tests := []struct {
			name string
			args []string
			want int
		}{
			{"true", []string{"true"}, 0},
			{"false", []string{"false"}, 1},
			{"status", []string{"sh", "-c", "exit 3"}, 3},
			{"signal", []string{"sh", "-c", "kill -TERM $$"}, 128 + 15},
			{"not found", []string{"no-such-command-xyz"}, 127},
			{"not executable", []string{notExec}, 126},
			{"timeout", []string{"--timeout", "1", "sleep", "30"}, 124},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				start := time.Now()
				r := u.sandbox(t, wd, runOpts{}, tt.args...)
				if r.code != tt.want {
					t.Fatalf("want exit %d, got %v", tt.want, r)
				}
				if tt.want == 124 && time.Since(start) > 20*time.Second {
					t.Fatalf("--timeout 1 took %v", time.Since(start))
				}
			})
		}
	})
}

func TestStdioPassthrough(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		r := u.sandbox(t, wd, runOpts{stdin: strings.NewReader("from stdin\n")},
			"sh", "-c", "cat; echo to-stderr >&2")
		wantOK(t, r)
		if r.stdout != "from stdin\n" || r.stderr != "to-stderr\n" {
			t.Fatalf("stdio not passed through: %v", r)
		}
	})
}

// TestLineProtocolOverStdio is what a stdio MCP server needs: a request on
// stdin answered on stdout before the next request is written.
func TestLineProtocolOverStdio(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := u.command(ctx, runOpts{dir: wd}, "--image", suite.images["busybox"], "-d", wd,
			"sh", "-c", `while read -r line; do echo "reply:$line"; done`)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		rd := bufio.NewReader(stdout)
		for i := range 5 {
			fmt.Fprintf(stdin, `{"id":%d}`+"\n", i)
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("read reply %d: %v", i, err)
			}
			if want := fmt.Sprintf(`reply:{"id":%d}`+"\n", i); line != want {
				t.Fatalf("reply %d = %q, want %q", i, line, want)
			}
		}
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("exit: %v", err)
		}
	})
}

// TestClientKilled: Lectic's timeoutSeconds ends the sandbox with SIGKILL;
// the command must not outlive it.
func TestClientKilled(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		marker := fmt.Sprintf("%d.%d", 700+os.Getpid()%100, time.Now().UnixNano()%1000)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := u.command(ctx, runOpts{dir: wd}, "--image", suite.images["busybox"], "-d", wd,
			"sh", "-c", "echo started; sleep "+marker+"; echo never")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || line != "started\n" {
			t.Fatalf("command did not start: %q %v", line, err)
		}
		waitFor(t, 10*time.Second, func() bool { return len(findProcesses("sleep", marker)) > 0 })
		cmd.Process.Kill()
		cmd.Wait()
		waitFor(t, 2*time.Second, func() bool { return len(findProcesses("sleep", marker)) == 0 })
	})
}

func TestEnvironmentPolicy(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		env := []string{"PLAIN_VAR=kept", "OPENAI_API_KEY=sk-secret", "GITHUB_TOKEN=ghp",
			"MY_PASSWORD=pw", "AWS_ACCESS_KEY_ID=aws", "SSH_AUTH_SOCK=/run/agent", "LD_PRELOAD=/x.so",
			"NAMED_TOKEN=shown", "DISPLAY=:0"}
		r := u.sandbox(t, wd, runOpts{env: env}, "--env", "NAMED_TOKEN", "--env", "SET_HERE=v a l", "env")
		wantOK(t, r)
		got := map[string]string{}
		for _, l := range strings.Split(r.stdout, "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				got[k] = v
			}
		}
		for k, want := range map[string]string{"PLAIN_VAR": "kept", "NAMED_TOKEN": "shown", "SET_HERE": "v a l"} {
			if got[k] != want {
				t.Errorf("%s = %q, want %q", k, got[k], want)
			}
		}
		for _, k := range []string{"OPENAI_API_KEY", "GITHUB_TOKEN", "MY_PASSWORD", "AWS_ACCESS_KEY_ID", "SSH_AUTH_SOCK", "LD_PRELOAD", "DISPLAY"} {
			if v, ok := got[k]; ok {
				t.Errorf("%s leaked into the sandbox (%q)", k, v)
			}
		}
		if strings.Contains(got["PATH"], "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin") && got["PATH"] == u.env(nil)[0][5:] {
			t.Errorf("PATH came from the host, want the image's: %q", got["PATH"])
		}
		if !strings.HasPrefix(got["HOME"], "/") || got["HOME"] == u.home {
			t.Errorf("HOME = %q, want the sandbox home", got["HOME"])
		}
	})
}

// TestSecretsWithheld: the variables of common tools that carry
// credentials, values that are URLs with credentials, and the host paths
// of Lectic's directories never reach the command, on the Go path and on
// the fast path; Lectic's other variables do.
func TestSecretsWithheld(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		img := privateImage(t, u)
		settle(t, img)
		secrets := []string{"OPENAI_KEY", "GEMINI_KEY", "STRIPE_KEY", "SIGNING_KEY", "ENCRYPTION_KEY", "ACCESS_KEY",
			"GH_PAT", "GITHUB_PAT", "MYSQL_PWD", "NPM_CONFIG__AUTH", "DOCKER_AUTH_CONFIG", "CI_JOB_JWT",
			"SLACK_WEBHOOK_URL", "SENTRY_DSN", "KRB5CCNAME", "COOKIE", "LECTIC_CONFIG", "LECTIC_RUNTIME", "LECTIC_STATE"}
		var env []string
		for _, k := range secrets {
			env = append(env, k+"=leaked-"+k)
		}
		env = append(env, "DATABASE_URL=postgres://app:leaked@db/app", "HTTPS_PROXY=http://u:leaked@proxy:3128",
			"LECTIC_INTERLOCUTOR=Assistant", "LECTIC_FILE="+wd+"/chat.lec", "TOKENIZERS_PARALLELISM=false",
			"HOMEPAGE=https://example.com/")
		// The variables the tests always set: LECTIC_CACHE, LECTIC_TEMP, LECTIC_DATA.
		for _, mode := range [][]string{nil, require} {
			r := u.run(context.Background(), t, runOpts{dir: wd, env: append(append([]string(nil), env...), mode...)},
				"--image", img, "-d", wd, "env")
			wantOK(t, r)
			if strings.Contains(r.stdout, "leaked") {
				t.Errorf("%v: a secret reached the command:\n%s", mode, r.stdout)
			}
			for _, k := range []string{"LECTIC_CACHE", "LECTIC_TEMP", "LECTIC_DATA", "DATABASE_URL", "HTTPS_PROXY"} {
				if strings.Contains(r.stdout, "\n"+k+"=") || strings.HasPrefix(r.stdout, k+"=") {
					t.Errorf("%v: %s reached the command", mode, k)
				}
			}
			for _, kv := range []string{"LECTIC_INTERLOCUTOR=Assistant", "LECTIC_FILE=" + wd + "/chat.lec", "TOKENIZERS_PARALLELISM=false", "HOMEPAGE=https://example.com/"} {
				if !strings.Contains(r.stdout, kv+"\n") {
					t.Errorf("%v: %s did not reach the command", mode, kv)
				}
			}
		}
		// Named, a withheld variable passes.
		r := u.run(context.Background(), t, runOpts{dir: wd, env: env}, "--image", img, "-d", wd, "--env", "GH_PAT", "--env", "DATABASE_URL", "env")
		if !strings.Contains(r.stdout, "GH_PAT=leaked-GH_PAT\n") || !strings.Contains(r.stdout, "DATABASE_URL=postgres://app:leaked@db/app\n") {
			t.Errorf("named variables were withheld: %v", r)
		}
	})
}

func TestIsolation(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		r := u.sandbox(t, wd, runOpts{}, "cat", "/proc/net/dev")
		wantOK(t, r)
		if ifaces := netdevInterfaces(r.stdout); len(ifaces) != 1 || ifaces[0] != "lo" {
			t.Errorf("without --allow-net want only lo, got %v", ifaces)
		}
		r = u.sandbox(t, wd, runOpts{}, "--allow-net", "cat", "/proc/net/dev")
		wantOK(t, r)
		host, _ := os.ReadFile("/proc/net/dev")
		if got, want := len(netdevInterfaces(r.stdout)), len(netdevInterfaces(string(host))); got != want {
			t.Errorf("with --allow-net want the host's %d interfaces, got %d", want, got)
		}
		r = u.sandbox(t, wd, runOpts{}, "sh", "-c", "ls -d /proc/[0-9]* | wc -l")
		wantOK(t, r)
		if n, _ := strconv.Atoi(strings.TrimSpace(r.stdout)); n == 0 || n > 6 {
			t.Errorf("sandbox sees %d processes, want only its own few", n)
		}
		r = u.sandbox(t, wd, runOpts{}, "grep", "NoNewPrivs", "/proc/self/status")
		wantOK(t, r)
		if !strings.Contains(r.stdout, "1") {
			t.Errorf("NoNewPrivs: %q", r.stdout)
		}
	})
}

func netdevInterfaces(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if name, _, ok := strings.Cut(l, ":"); ok && !strings.Contains(name, "|") {
			out = append(out, strings.TrimSpace(name))
		}
	}
	return out
}

func TestVolumes(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		ro, rw := u.workdir(t), u.workdir(t)
		r := u.sandbox(t, wd, runOpts{}, "-v", ro+":/data:ro", "-v", rw, "sh", "-c",
			"echo x > /data/f; echo $?; echo y > "+rw+"/f && echo written")
		wantOK(t, r)
		if !strings.Contains(r.stdout, "1\nwritten") {
			t.Errorf("ro volume accepted a write or rw refused: %v", r)
		}
		if _, err := os.Stat(filepath.Join(ro, "f")); err == nil {
			t.Errorf("write reached the read-only volume")
		}
		if b, _ := os.ReadFile(filepath.Join(rw, "f")); string(b) != "y\n" {
			t.Errorf("rw volume content %q", b)
		}
		r = u.sandbox(t, wd, runOpts{}, "-p", rw, "cat", "/persist/f")
		wantOK(t, r)
		if r.stdout != "y\n" {
			t.Errorf("--persist not at /persist: %v", r)
		}
		fresh := filepath.Join(wd, "conversations", "new")
		r = u.sandbox(t, wd, runOpts{}, "--persist", fresh, "sh", "-c", "echo kept > /persist/note")
		wantOK(t, r)
		if b, _ := os.ReadFile(filepath.Join(fresh, "note")); string(b) != "kept\n" {
			t.Errorf("a new --persist dir was not created and bound: %v", r)
		}
		bad := []struct{ spec, want string }{
			{"/no/such/dir/xyz", "/no/such/dir/xyz"},
			{ro + ":relative", "relative"},
			{ro + ":/proc/x", "/proc"},
			{ro + ":/dev", "/dev"},
			{ro + ":/sys/kernel", "/sys"},
		}
		for _, b := range bad {
			wantSandboxError(t, u.sandbox(t, wd, runOpts{}, "-v", b.spec, "true"), b.want)
		}
	})
}

// TestLecticScript runs a script the way Lectic does: written into the cwd,
// started as /usr/bin/env sh /abs/cwd/.script with arguments.
func TestLecticScript(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		script := filepath.Join(wd, ".lectic_script-abc")
		body := "echo \"args:$1,$2\"; pwd; echo out > made-by-script\n"
		if err := os.WriteFile(script, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		chown(t, u, script)
		r := u.sandbox(t, wd, runOpts{}, "/usr/bin/env", "sh", script, "a", "b c")
		wantOK(t, r)
		if r.stdout != "args:a,b c\n"+wd+"\n" {
			t.Fatalf("script output %q", r.stdout)
		}
		fi, err := os.Stat(filepath.Join(wd, "made-by-script"))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != u.uid {
			t.Errorf("file made in the workdir is owned by %d on the host, want %d", st.Uid, u.uid)
		}
	})
}

// TestInitIsACommand: libcontainer's re-exec entry must not swallow a user
// command that happens to be called init.
func TestInitIsACommand(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		r := u.sandbox(t, wd, runOpts{}, "init", "x")
		if r.code != 0 || r.stdout != "init ran x\n" {
			t.Fatalf("a command named init did not run: %v", r)
		}
	})
}

func TestSandboxErrors(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		garbage := filepath.Join(wd, "garbage.tar")
		os.WriteFile(garbage, []byte("this is not an image"), 0o644)
		chown(t, u, garbage)
		tests := []struct {
			name string
			args []string
			want string
		}{
			{"unknown option", []string{"--bogus", "true"}, "--bogus"},
			{"missing workdir", []string{"-d", "/no/such/workdir", "true"}, "/no/such/workdir"},
			{"missing image", []string{"--image", "/no/such/image.tar", "true"}, "/no/such/image.tar"},
			{"garbage image", []string{"--image", garbage, "true"}, "garbage.tar"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				wantSandboxError(t, u.run(context.Background(), t, runOpts{dir: wd}, tt.args...), tt.want)
			})
		}
	})
}

func TestLoadPrintsJSON(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		r := u.run(context.Background(), t, runOpts{}, "--load", suite.images["busybox"])
		wantOK(t, r)
		var got struct {
			ChainID        string `json:"chain_id"`
			Rootfs         string `json:"rootfs"`
			Layers         int    `json:"layers"`
			UnpackedLayers *int   `json:"unpacked_layers"`
		}
		if strings.Count(r.stdout, "\n") != 1 || json.Unmarshal([]byte(r.stdout), &got) != nil {
			t.Fatalf("want one JSON line, got %q", r.stdout)
		}
		if !strings.HasPrefix(got.ChainID, "sha256:") || !filepath.IsAbs(got.Rootfs) || got.Layers < 1 || got.UnpackedLayers == nil {
			t.Fatalf("bad --load output %+v", got)
		}
		if _, err := os.Stat(filepath.Join(got.Rootfs, "bin", "busybox")); err != nil {
			t.Fatalf("rootfs lacks busybox: %v", err)
		}
		// Loaded before by other tests or by the line above: nothing to unpack now.
		r = u.run(context.Background(), t, runOpts{}, "--load", suite.images["busybox"])
		wantOK(t, r)
		if !strings.Contains(r.stdout, `"unpacked_layers":0`) {
			t.Fatalf("second load unpacked again: %q", r.stdout)
		}
	})
}

// findProcesses lists host pids whose argv starts with name and contains arg.
func findProcesses(name, arg string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(argv) > 1 && filepath.Base(argv[0]) == name && argv[1] == arg {
			pids = append(pids, pid)
		}
	}
	return pids
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

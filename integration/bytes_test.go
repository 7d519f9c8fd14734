package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/fixture"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/testenv"
)

// probe prints what the shell was started with, as the kernel holds it:
// its argv, then its environ, each string ending in NUL. (It ends with a
// builtin: a shell execs a -c script's last command in its own place.)
const probe = `cat /proc/$$/cmdline; echo ==; cat /proc/$$/environ; exit 0`

// probed splits probe's output into argv and environ.
func probed(t *testing.T, r result) (argv, env []string) {
	t.Helper()
	a, e, ok := strings.Cut(r.stdout, "==\n")
	if r.code != 0 || !ok {
		t.Fatalf("probe: %.500v", r)
	}
	split := func(s string) []string { return strings.Split(strings.TrimSuffix(s, "\x00"), "\x00") }
	return split(a), split(e)
}

// modes are the ways a warm call is made: the Go client alone, the fast
// path when it can (else the Go client), and the fast path or 125.
var modes = []struct {
	name string
	env  []string
}{{"go", slow}, {"default", nil}, {"fast", require}}

// TestExactBytes: arguments and environment values that are not UTF-8
// (Latin-1 file names, binary arguments) reach the command byte for byte,
// on the Go path and the fast path alike.
func TestExactBytes(t *testing.T) {
	words := []string{"caf\xe9.txt", "\xff\xfe", "na\xefve", "\x01\x7f", "", "\xc3\x28", "ünï", `"\`}
	vars := []string{"LATIN=caf\xe9 na\xefve", "BIN=\x01\x7f\xff\xfe", "QUOTE=\"\\"}
	forEachUser(t, func(t *testing.T, u *testUser) {
		img := privateImage(t, u)
		wd := u.workdir(t)
		settle(t, img)
		call := func(env []string, args ...string) result {
			full := append([]string{"--image", img, "-d", wd}, args...)
			return u.run(context.Background(), t, runOpts{dir: wd, env: env}, full...)
		}
		argv := append([]string{"sh", "-c", probe, "sh"}, words...)
		wantOK(t, call(vars, argv...)) // leaves the ticket
		var first result
		for _, m := range modes {
			r := call(append(append([]string(nil), vars...), m.env...), argv...)
			gotArgv, gotEnv := probed(t, r)
			if !equalStrings(gotArgv, argv) {
				t.Fatalf("%s: argv %q, want %q", m.name, gotArgv, argv)
			}
			for _, kv := range vars {
				if !contains(gotEnv, kv) {
					t.Fatalf("%s: %q is not in the environment %q", m.name, kv, gotEnv)
				}
			}
			if first.stdout == "" {
				first = r
			} else if r.stdout != first.stdout {
				t.Fatalf("%s: the command saw another argv or environment than on the Go path:\n%q\n%q", m.name, r.stdout, first.stdout)
			}
		}
		// A name that is not ASCII is judged by the Go client alone: the
		// fast path leaves such a call to it, and the bytes still arrive.
		odd := "\xe9T\xe9=summer \xe9"
		for _, m := range modes[:2] {
			_, env := probed(t, call(append([]string{odd}, m.env...), argv...))
			if !contains(env, odd) {
				t.Fatalf("%s: %q is not in the environment", m.name, odd)
			}
		}
		wantSandboxError(t, call(append([]string{odd}, require...), argv...), "a variable name is not ASCII")
		// A workdir whose path is not UTF-8 cannot be mounted: one line.
		latin := filepath.Join(u.workdir(t), "d\xe9j\xe0")
		if err := os.Mkdir(latin, 0o755); err != nil {
			t.Fatal(err)
		}
		chown(t, u, latin)
		wantSandboxError(t, u.run(context.Background(), t, runOpts{dir: latin}, "--image", img, "true"), "is not valid UTF-8")
	})
}

// TestLargeRequests: a request is not bounded by one socket packet.
// 600 KB of values, a hundred thousand words and ten thousand variables
// reach the command byte for byte on both paths; a value no execve
// takes (one string past the kernel's 128 KiB, here from the image's Env)
// is E2BIG's own message and 126.
func TestLargeRequests(t *testing.T) {
	big := make([]string, 6)
	for i := range big {
		big[i] = fmt.Sprintf("BIG%d=%s", i, strings.Repeat("\xe9", 100<<10))
	}
	longest := strings.Repeat("\xff", 128<<10-1) // the most one string may hold
	words := make([]string, 100000)
	for i := range words {
		words[i] = "w\xe9" + strconv.Itoa(i)
	}
	vars := make([]string, 10000)
	for i := range vars {
		vars[i] = fmt.Sprintf("V%d=\xe9%d", i, i)
	}
	cases := []struct {
		name string
		env  []string
		args []string
	}{
		{"600 KB of values", big, []string{longest}},
		{"100k words", nil, words},
		{"10k variables", vars, nil},
	}
	forEachUser(t, func(t *testing.T, u *testUser) {
		img := privateImage(t, u)
		wd := u.workdir(t)
		settle(t, img)
		call := func(env []string, args ...string) result {
			full := append([]string{"--image", img, "-d", wd}, args...)
			return u.run(context.Background(), t, runOpts{dir: wd, env: env}, full...)
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				argv := append([]string{"sh", "-c", probe, "sh"}, tc.args...)
				wantOK(t, call(tc.env, argv...))
				for _, m := range modes {
					gotArgv, gotEnv := probed(t, call(append(append([]string(nil), tc.env...), m.env...), argv...))
					if !equalStrings(gotArgv, argv) {
						t.Fatalf("%s: argv differs (%d words, want %d)", m.name, len(gotArgv), len(argv))
					}
					for _, kv := range tc.env {
						if !contains(gotEnv, kv) {
							t.Fatalf("%s: %.40q... is not in the environment", m.name, kv)
						}
					}
				}
			})
		}
		t.Run("one-shot", func(t *testing.T) {
			// --no-keep-warm: a private agent reads the memfd itself.
			argv := append([]string{"--no-keep-warm", "sh", "-c", probe, "sh"}, longest)
			gotArgv, gotEnv := probed(t, call(big, argv...))
			if !equalStrings(gotArgv, argv[1:]) {
				t.Fatalf("argv differs")
			}
			for _, kv := range big {
				if !contains(gotEnv, kv) {
					t.Fatalf("%.40q... is not in the environment", kv)
				}
			}
		})
		t.Run("past what execve takes", func(t *testing.T) {
			hostile := imageWithEnv(t, u, "HUGE="+strings.Repeat("x", 600<<10))
			settle(t, hostile)
			for _, m := range append([]struct {
				name string
				env  []string
			}{{"first", nil}}, modes...) {
				r := u.run(context.Background(), t, runOpts{dir: wd, env: m.env}, "--image", hostile, "-d", wd, "sh", "-c", "echo ran")
				if r.code != 126 || r.stdout != "" || r.stderr != "lectic-nix-sandbox: cannot execute sh: argument list too long\n" {
					t.Fatalf("%s: %v", m.name, r)
				}
			}
		})
	})
}

// TestStackLimit: execve takes a quarter of the stack limit in argv and
// environment, so a caller with a larger stack limit passes more; the
// command gets the caller's limit, up to the hard limit the container was
// created with, past which the answer is E2BIG.
func TestStackLimit(t *testing.T) {
	var orig unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_STACK, &orig); err != nil {
		t.Fatal(err)
	}
	if orig.Max < 64<<20 {
		testenv.Missing(t, "the hard stack limit is below 64 MiB")
	}
	// Only the soft limit of this process changes (children inherit it);
	// a hard limit once lowered could not be raised again.
	setSoft := func(t *testing.T, cur uint64) {
		t.Helper()
		if err := unix.Setrlimit(unix.RLIMIT_STACK, &unix.Rlimit{Cur: cur, Max: orig.Max}); err != nil {
			t.Fatal(err)
		}
	}
	defer func() { _ = unix.Setrlimit(unix.RLIMIT_STACK, &orig) }()
	// 3 MiB of arguments: past a quarter of the default 8 MiB.
	args := []string{"sh", "-c", `echo $# $(ulimit -s)`, "sh"}
	for range 30 {
		args = append(args, strings.Repeat("s", 100<<10))
	}
	forEachUser(t, func(t *testing.T, u *testUser) {
		img := privateImage(t, u)
		settle(t, img)
		for _, lowHard := range []bool{false, true} {
			wd := u.workdir(t) // a container of its own
			base := []string{"--image", img, "-d", wd}
			// The container is created by a client with an 8 MiB soft
			// limit and, the second time, an 8 MiB hard limit too.
			setSoft(t, 8<<20)
			if lowHard {
				wantOK(t, u.runUnder(t, runOpts{dir: wd}, "ulimit -H -s 8192", append(base, "true")...))
			} else {
				wantOK(t, u.run(context.Background(), t, runOpts{dir: wd}, append(base, "true")...))
			}
			setSoft(t, 64<<20)
			for _, m := range append([]struct {
				name string
				env  []string
			}{{"first", nil}}, modes...) {
				r := u.run(context.Background(), t, runOpts{dir: wd, env: m.env}, append(base, args...)...)
				if !lowHard && (r.code != 0 || r.stdout != "30 65536\n") {
					t.Fatalf("%s, 64 MiB stack: %v", m.name, r)
				}
				if lowHard && (r.code != 126 || r.stderr != "lectic-nix-sandbox: cannot execute sh: argument list too long\n") {
					t.Fatalf("%s, past the container's hard limit: %v", m.name, r)
				}
			}
			setSoft(t, orig.Cur)
		}
	})
}

// runUnder runs the binary with args from a shell that first runs setup
// (a ulimit, say), as the user.
func (u *testUser) runUnder(t *testing.T, o runOpts, setup string, args ...string) result {
	t.Helper()
	cmd := u.command(context.Background(), o, args...)
	cmd.Path = "/bin/sh"
	cmd.Args = append([]string{"sh", "-c", setup + ` && exec "$0" "$@"`, suite.bin}, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

// imageWithEnv is the busybox fixture with extra variables in its Env.
func imageWithEnv(t *testing.T, u *testUser, env ...string) string {
	t.Helper()
	bb, err := busyboxPath()
	if err != nil {
		t.Fatal(err)
	}
	layer, err := fixture.BusyboxLayer(bb)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fixture.DefaultConfig()
	cfg.Env = append(cfg.Env, env...)
	var b bytes.Buffer
	if err := fixture.WriteDockerArchive(&b, []fixture.Layer{layer}, &cfg, fixture.ArchiveOptions{}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(u.workdir(t), "env-image.tar")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	chown(t, u, path)
	return path
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

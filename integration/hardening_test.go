package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// modes are the ways a call reaches a container: warm (an identity
// helper forks the command) and one-shot (the agent forks it through the
// exec trampoline).
var modes = []struct {
	name string
	pre  []string
}{{"warm", nil}, {"one-shot", []string{"--no-keep-warm"}}}

// users are the identities a command can have inside.
var users = []struct {
	name string
	pre  []string
}{{"caller", nil}, {"root", []string{"--user", "root"}}, {"uid0", []string{"--user", "0"}}}

// blockedLine is the line a refused call puts on the caller's stderr.
func blockedLine(call, comm string) string {
	return "lectic-nix-sandbox: blocked " + call + " in '" + comm + "' (seccomp; --seccomp off to allow)"
}

func countLines(s, line string) int {
	n := 0
	for _, l := range strings.Split(s, "\n") {
		if l == line {
			n++
		}
	}
	return n
}

// TestSeccompDefault: every command runs under the filter, whoever runs
// it and however it is started; the calls of finding 1 are refused, each
// refusal is reported once per call name, and ordinary work is untouched.
func TestSeccompDefault(t *testing.T) {
	script := `grep '^Seccomp:' /proc/self/status
unshare -Ur true; echo unshare=$?
unshare -Ur true
probe io_uring; probe add_key; probe bpf; probe userfaultfd; probe perf_event_open; probe fsopen
probe socket vsock; probe socket packet; probe socket unix; probe socket inet; probe socket inet6; probe socket netlink
probe tiocsti </dev/null
probe threads
echo hi | sh -c 'read x; echo got $x' &
wait
mkdir -p /tmp/d && echo data > /tmp/d/f && cat /tmp/d/f`
	forEachUser(t, func(t *testing.T, u *testUser) {
		for _, m := range modes {
			for _, who := range users {
				t.Run(m.name+"/"+who.name, func(t *testing.T) {
					wd := u.workdir(t)
					args := append(append(append([]string{}, m.pre...), who.pre...), "sh", "-c", script)
					r := u.sandbox(t, wd, runOpts{}, args...)
					wantOK(t, r)
					for _, want := range []string{"Seccomp:\t2", "unshare=1",
						"io_uring_setup: EPERM", "add_key: EPERM", "bpf: EPERM", "userfaultfd: EPERM",
						"perf_event_open: EPERM", "fsopen: EPERM",
						"socket_vsock: EPERM", "socket_packet: EPERM", "socket_unix: ok", "socket_inet: ok",
						"socket_inet6: ok", "socket_netlink: ok", "tiocsti: EPERM", "threads: ok",
						"got hi", "data"} {
						if !strings.Contains(r.stdout, want+"\n") {
							t.Errorf("stdout lacks %q:\n%v", want, r)
						}
					}
					// Two refused unshare calls in one call: one line.
					if n := countLines(r.stderr, blockedLine("unshare(CLONE_NEWUSER)", "unshare")); n != 1 {
						t.Errorf("want the unshare refusal reported once, got %d times:\n%s", n, r.stderr)
					}
					for _, call := range []string{"io_uring_setup", "add_key", "bpf", "socket(AF_VSOCK)", "ioctl(TIOCSTI)"} {
						if n := countLines(r.stderr, blockedLine(call, "probe")); n != 1 {
							t.Errorf("want %s reported once, got %d:\n%s", call, n, r.stderr)
						}
					}
					// A later call reports again: the count is per call.
					r = u.sandbox(t, wd, runOpts{}, append(append(append([]string{}, m.pre...), who.pre...), "sh", "-c", "unshare -Ur true")...)
					if r.code == 0 || countLines(r.stderr, blockedLine("unshare(CLONE_NEWUSER)", "unshare")) != 1 {
						t.Errorf("second call: %v", r)
					}
				})
			}
		}
	})
}

// TestSeccompOff: --seccomp off runs commands without a filter, which is
// what makes the refusals above the filter's doing.
func TestSeccompOff(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		for _, m := range modes {
			t.Run(m.name, func(t *testing.T) {
				wd := u.workdir(t)
				r := u.sandbox(t, wd, runOpts{}, append(append([]string{}, m.pre...), "--seccomp", "off", "sh", "-c",
					`grep '^Seccomp:' /proc/self/status; unshare -U true && echo userns ok; probe add_key`)...)
				wantOK(t, r)
				if r.stdout != "Seccomp:\t0\nuserns ok\nadd_key: ok\n" || strings.Contains(r.stderr, "blocked") {
					t.Fatalf("--seccomp off: %v", r)
				}
			})
		}
	})
}

// TestSeccompProfileFile: a profile in the OCI/Docker JSON format replaces
// the default; a bad one is refused with one line.
func TestSeccompProfileFile(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		prof := filepath.Join(wd, "profile.json")
		writeFile(t, u, prof, `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
			{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}`)
		for _, m := range modes {
			t.Run(m.name, func(t *testing.T) {
				r := u.sandbox(t, wd, runOpts{}, append(append([]string{}, m.pre...), "--seccomp", prof, "sh", "-c",
					`mkdir /tmp/x; echo mkdir=$?; unshare -U true && echo userns ok`)...)
				wantOK(t, r)
				if r.stdout != "mkdir=1\nuserns ok\n" {
					t.Errorf("the profile's rules do not hold: %v", r)
				}
				if countLines(r.stderr, blockedLine("mkdir", "mkdir")) != 1 || !strings.Contains(r.stderr, "Permission denied") {
					t.Errorf("want the mkdir refusal (EACCES) reported once: %v", r)
				}
			})
		}
		bad := filepath.Join(wd, "bad.json")
		writeFile(t, u, bad, `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_NOTIFY"}]}`)
		wantSandboxError(t, u.sandbox(t, wd, runOpts{}, "--seccomp", bad, "true"), "--seccomp "+bad+": ")
		wantSandboxError(t, u.sandbox(t, wd, runOpts{}, "--seccomp", filepath.Join(wd, "missing.json"), "true"), "missing.json")
	})
}

func writeFile(t *testing.T, u *testUser, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	chown(t, u, path)
}

// TestSandboxOutOfReach: no command, not even --user root and not even
// without the filter, can ptrace, read the memory of, or take descriptors
// from the agent (PID 1) or an identity helper; the agent's listening
// socket (fd 3) in particular.
func TestSandboxOutOfReach(t *testing.T) {
	// Every process of the sandbox's own: argv[0] is the agent's path or a
	// helper's name.
	script := `for p in /proc/[0-9]*; do
	pid=${p#/proc/}
	case "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" in
	/.lectic-nix-sandbox/agent*|lectic-nix-sandbox-helper*) echo "pid $pid"; probe ptrace $pid; probe pidfd_getfd $pid 3; probe process_vm_readv $pid;;
	esac
done`
	forEachUser(t, func(t *testing.T, u *testUser) {
		for _, m := range modes {
			for _, sc := range []string{"default", "off"} {
				t.Run(m.name+"/seccomp-"+sc, func(t *testing.T) {
					wd := u.workdir(t)
					r := u.sandbox(t, wd, runOpts{}, append(append([]string{}, m.pre...), "--seccomp", sc, "--user", "root", "sh", "-c", script)...)
					wantOK(t, r)
					if !strings.Contains(r.stdout, "pid 1\n") {
						t.Fatalf("the agent was not found: %v", r)
					}
					if m.name == "warm" && sc == "default" && strings.Count(r.stdout, "pid ") < 2 {
						t.Errorf("the root helper was not found: %v", r)
					}
					for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
						if strings.HasSuffix(l, ": ok") {
							t.Errorf("reached the sandbox: %q in\n%s", l, r.stdout)
						}
					}
				})
			}
		}
	})
}

// TestHostKeyringNotShared: a key the caller's shell added to its session
// keyring cannot be read inside, with or without the filter (each
// container has a session keyring of its own), and the keyring calls are
// refused under the filter.
func TestHostKeyringNotShared(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		for _, sc := range []string{"default", "off"} {
			t.Run(sc, func(t *testing.T) {
				wd := u.workdir(t)
				r := u.runProgram(t, runOpts{dir: wd}, suite.probe, "host-key", suite.bin, "--image", suite.images["busybox"],
					"-d", wd, "--seccomp", sc, "probe", "keyctl-read", "{key}")
				wantOK(t, r)
				if !strings.HasPrefix(r.stdout, "keyctl_read: ") || strings.Contains(r.stdout, ": ok") {
					t.Fatalf("the host's session key was readable inside: %v", r)
				}
				if sc == "default" && r.stdout != "keyctl_read: EPERM\n" {
					t.Errorf("keyctl is not refused by the filter: %v", r)
				}
			})
		}
	})
}

// runProgram runs another program than the sandbox as u.
func (u *testUser) runProgram(t *testing.T, o runOpts, prog string, args ...string) result {
	t.Helper()
	saved := suite.bin
	suite.bin = prog
	defer func() { suite.bin = saved }()
	return u.run(context.Background(), t, o, args...)
}

// TestEndingSignalKillsGroup: a command that ignores SIGTERM, and a
// background process of it, are gone within --kill-after plus a second of
// the client's SIGTERM, on the Go path and on the fast path; the client
// exits 143. --timeout ends it the same way, with 124.
func TestEndingSignalKillsGroup(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		img := privateImage(t, u)
		settle(t, img, wd)
		script := `trap '' TERM INT; sleep 300 & echo $$ $!; while :; do sleep 1; done`
		for _, path := range []struct {
			name string
			env  []string
		}{{"go", slow}, {"fast", require}} {
			t.Run(path.name, func(t *testing.T) {
				opts := []string{"--image", img, "-d", wd, "--kill-after", "1"}
				// Leaves the ticket the fast path serves from: a ticket is
				// for the options, whatever the command.
				wantOK(t, u.run(context.Background(), t, runOpts{dir: wd, env: slow}, append(opts, "true")...))
				args := append(append([]string{}, opts...), "sh", "-c", script)
				cmd := u.command(context.Background(), runOpts{dir: wd, env: path.env}, args...)
				out, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				var stderr strings.Builder
				cmd.Stderr = &stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				line := make([]byte, 64)
				n, _ := out.Read(line)
				pids := strings.Fields(string(line[:n]))
				if len(pids) != 2 {
					t.Fatalf("no pids from the command: %q %s", line[:n], stderr.String())
				}
				sent := time.Now()
				_ = cmd.Process.Signal(syscall.SIGTERM)
				err = cmd.Wait()
				took := time.Since(sent)
				code := -1
				if ee, ok := err.(interface{ ExitCode() int }); ok {
					code = ee.ExitCode()
				}
				if code != 143 || took > 2*time.Second {
					t.Fatalf("exit %d after %v (stderr %q); want 143 within --kill-after + 1s", code, took, stderr.String())
				}
				// Nothing of the group is left: ask the same container.
				r := u.run(context.Background(), t, runOpts{dir: wd, env: slow}, append(opts,
					"sh", "-c", "kill -0 "+pids[0]+" 2>/dev/null && echo shell alive; kill -0 "+pids[1]+" 2>/dev/null && echo sleep alive; true")...)
				wantOK(t, r)
				if r.stdout != "" {
					t.Fatalf("left behind: %v", r)
				}
			})
		}
		t.Run("timeout", func(t *testing.T) {
			start := time.Now()
			r := u.sandbox(t, wd, runOpts{}, "--timeout", "0.5", "--kill-after", "0.5", "sh", "-c", script)
			if r.code != 124 || time.Since(start) > 5*time.Second {
				t.Fatalf("want 124 soon after the timeout, got %v after %v", r, time.Since(start))
			}
		})
	})
}

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/namespace"
)

// startModes are the ways a call reaches a container: warm (an identity
// helper forks the command) and one-shot (the agent starts it through
// package spawn, which confines it between fork and exec).
var startModes = []struct {
	name string
	pre  []string
}{{"warm", nil}, {"one-shot", []string{"--no-keep-warm"}}}

// identities are who a command can be inside.
var identities = []struct {
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
		for _, m := range startModes {
			for _, who := range identities {
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
		for _, m := range startModes {
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
		for _, m := range startModes {
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
		for _, m := range startModes {
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

// containerOf finds the warm dir of wd's container (one-shot ones too,
// while their call runs) and reads its meta.json.
func containerOf(t *testing.T, u *testUser, wd string) (dir string, supervisor, agent int) {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(u.temp, "nix-sandbox", "warm", "*", "meta.json"))
	for _, m := range dirs {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		var meta struct {
			Workdir    string `json:"workdir"`
			Supervisor int    `json:"supervisor_pid"`
			Agent      int    `json:"agent_pid"`
		}
		if json.Unmarshal(b, &meta) == nil && meta.Workdir == wd {
			return filepath.Dir(m), meta.Supervisor, meta.Agent
		}
	}
	t.Fatalf("no container for %s", wd)
	return "", 0, 0
}

// procID names one process: its pid and start time.
type procID struct {
	pid   int
	start string
}

// pidNSMembers lists the processes in the pid namespace of pid, with their
// thread counts. Only that container's processes are looked at.
func pidNSMembers(pid int) (procs []procID, threads int) {
	ns, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", "pid"))
	if err != nil {
		return nil, 0
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if got, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "pid")); err != nil || got != ns {
			continue
		}
		if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
			procs = append(procs, procID{p, f[19]})
			if n, err := strconv.Atoi(f[17]); err == nil {
				threads += n
			}
		}
	}
	return procs, threads
}

func stillRunning(procs []procID) []procID {
	var left []procID
	for _, p := range procs {
		st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.pid), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		if f[19] == p.start && f[0] != "Z" {
			left = append(left, p)
		}
	}
	return left
}

// TestPidsLimit: a fork loop past --pids-limit fails in the command, and
// the container's tasks (the sandbox's own included) stay within the limit
// as the host counts them.
func TestPidsLimit(t *testing.T) {
	const limit = 64
	forEachUser(t, func(t *testing.T, u *testUser) {
		for _, m := range startModes {
			t.Run(m.name, func(t *testing.T) {
				wd := u.workdir(t)
				cmd := u.command(context.Background(), runOpts{dir: wd}, append(append([]string{"--image", suite.images["busybox"], "-d", wd},
					m.pre...), "--pids-limit", strconv.Itoa(limit), "probe", "forkloop", "500", "6")...)
				out, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				var stderr strings.Builder
				cmd.Stderr = &stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				defer cmd.Wait()
				buf := make([]byte, 256)
				n, _ := io.ReadAtLeast(out, buf, len("started 1\nfork: EAGAIN\n"))
				got := string(buf[:n])
				if !strings.Contains(got, "fork:") {
					cmd.Wait()
					t.Fatalf("the fork loop did not run: %q, stderr %q", got, stderr.String())
				}
				_, _, agent := containerOf(t, u, wd)
				_, threads := pidNSMembers(agent)
				if !strings.Contains(got, "fork: EAGAIN") {
					t.Errorf("the fork loop was not stopped: %q %s", got, stderr.String())
				}
				if threads > limit || threads == 0 {
					t.Errorf("the container has %d tasks, limit %d", threads, limit)
				}
				io.Copy(io.Discard, out)
				if err := cmd.Wait(); err != nil {
					t.Errorf("the call failed: %v %s", err, stderr.String())
				}
			})
		}
		// The default is a limit too.
		r := u.sandbox(t, u.workdir(t), runOpts{}, "sh", "-c", "grep processes /proc/self/limits")
		wantOK(t, r)
		if f := strings.Fields(r.stdout); len(f) < 4 || (f[2] != "4096" && u.uid != 0) {
			t.Errorf("default pids limit: %v", r)
		}
	})
}

// TestStorageSize: the writable layer and every tmpfs share one cap; a
// write past it gets ENOSPC and the container goes on serving.
func TestStorageSize(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		for _, m := range startModes {
			t.Run(m.name, func(t *testing.T) {
				wd := u.workdir(t)
				opts := append(append([]string{}, m.pre...), "--storage-size", "32m")
				r := u.sandbox(t, wd, runOpts{}, append(opts, "sh", "-c",
					`dd if=/dev/zero of=/tmp/a bs=1M count=20 2>/dev/null; probe fill /var/tmp/b; probe fill /big; probe fill /dev/shm/c; df -k /tmp | tail -1`)...)
				wantOK(t, r)
				if strings.Count(r.stdout, "fill: ENOSPC") != 3 {
					t.Fatalf("want ENOSPC on /var/tmp, / and /dev/shm: %v", r)
				}
				var mib int
				fmt.Sscanf(r.stdout[strings.Index(r.stdout, "wrote "):], "wrote %d MiB", &mib)
				if mib > 12 {
					t.Errorf("/var/tmp took %d MiB after /tmp took 20 of 32", mib)
				}
				r = u.sandbox(t, wd, runOpts{}, append(opts, "sh", "-c", "echo next; rm -f /tmp/a /var/tmp/b /big; echo x > /tmp/ok && cat /tmp/ok")...)
				wantOK(t, r)
				if r.stdout != "next\nx\n" {
					t.Errorf("the next call: %v", r)
				}
			})
		}
	})
}

// TestMemoryLimit: --memory holds; where no cgroup can hold it (an
// unprivileged caller on this cgroup v1 host) it is RLIMIT_AS per command
// and the call says so.
func TestMemoryLimit(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		r := u.sandbox(t, wd, runOpts{}, "--memory", "64m", "sh", "-c", "ulimit -v; dd if=/dev/zero of=/dev/null bs=200M count=1 2>/dev/null && echo allocated")
		if strings.Contains(r.stdout, "allocated") {
			t.Fatalf("a 200 MiB buffer under --memory 64m: %v", r)
		}
		warned := strings.Contains(r.stderr, "warning: --memory is a per-process address-space limit (RLIMIT_AS)")
		// The test user has no systemd session, so no delegated cgroup:
		// only root gets a cgroup (v1 here, or v2).
		if u.uid != 0 {
			if !warned || !strings.HasPrefix(r.stdout, "65536\n") {
				t.Errorf("want RLIMIT_AS and the warning: %v", r)
			}
			return
		}
		if warned || !namespace.PlanLimits().Cgroup {
			t.Fatalf("root's container has no cgroup for the limit: %v", r)
		}
		// As root on this host: the container's own cgroup.
		_, _, agent := containerOf(t, u, wd)
		for ctl, want := range map[string]string{"memory": "memory.limit_in_bytes", "pids": "pids.max"} {
			path := cgroupPath(t, agent, ctl)
			b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", ctl, path, want))
			if err != nil {
				t.Fatal(err)
			}
			if v := strings.TrimSpace(string(b)); (ctl == "memory" && v != "67108864") || (ctl == "pids" && v != "4096") {
				t.Errorf("%s of the container's cgroup %s = %s", want, path, v)
			}
		}
	})
}

func cgroupPath(t *testing.T, pid int, controller string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cgroup"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) == 3 && strings.Contains(","+f[1]+",", ","+controller+",") {
			return f[2]
		}
	}
	t.Fatalf("no %s cgroup for pid %d: %s", controller, pid, b)
	return ""
}

// TestSupervisorKilledLeavesNothing: SIGKILL to a container's supervisor
// ends the container, background processes included; the next call
// starts a fresh one.
func TestSupervisorKilledLeavesNothing(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		for _, m := range startModes {
			t.Run(m.name, func(t *testing.T) {
				wd := u.workdir(t)
				args := append(append([]string{"--image", suite.images["busybox"], "-d", wd}, m.pre...), "sh", "-c", "sleep 1000 & echo started; wait")
				if m.name == "warm" {
					args[len(args)-1] = "sleep 1000 >/dev/null 2>&1 & echo started"
				}
				cmd := u.command(context.Background(), runOpts{dir: wd}, args...)
				out, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 8)
				if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "started\n" {
					t.Fatalf("no start: %q %v", buf, err)
				}
				if m.name == "warm" {
					if err := cmd.Wait(); err != nil {
						t.Fatal(err)
					}
				}
				_, supervisor, agent := containerOf(t, u, wd)
				procs, _ := pidNSMembers(agent)
				if len(procs) < 2 {
					t.Fatalf("the container has %d processes", len(procs))
				}
				if err := syscall.Kill(supervisor, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				deadline := time.Now().Add(10 * time.Second)
				for len(stillRunning(procs)) > 0 {
					if time.Now().After(deadline) {
						t.Fatalf("left behind: %v", stillRunning(procs))
					}
					time.Sleep(20 * time.Millisecond)
				}
				if m.name == "one-shot" {
					cmd.Wait()
					return
				}
				wantOK(t, u.sandbox(t, wd, runOpts{}, "true"))
			})
		}
	})
}

// ordinaryWork is what a tool call does every day: threads, processes,
// sockets, git, a C compiler, Python, Node and a Nix build (single-user,
// no sandbox, in a store of its own), on the host image.
const ordinaryWork = `set -e
python3 -c 'import threading, subprocess, socket, multiprocessing as mp
t = threading.Thread(target=lambda: None); t.start(); t.join()
subprocess.run(["true"], check=True); socket.socket().close(); socket.socketpair()
print("python", sum(mp.Pool(2).map(abs, [-1, -2])))'
cd "$(mktemp -d)"
git init -q . && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m x && echo git $(git log --oneline | wc -l)
printf '#include <stdio.h>\n#include <pthread.h>\nstatic void *f(void *a) { return a; }\nint main(void) { pthread_t t; pthread_create(&t, 0, f, 0); pthread_join(t, 0); puts("c ok"); return 0; }\n' > a.c
gcc -pthread -o a a.c && ./a
node -e 'const { Worker } = require("worker_threads"); require("child_process").execSync("true"); new Worker("1", { eval: true }).on("exit", () => console.log("node ok"))'
export NIX_CONFIG='sandbox = false
build-users-group =
substituters =' NIX_REMOTE=local NIX_STORE_DIR=$PWD/nix/store NIX_STATE_DIR=$PWD/nix/var NIX_LOG_DIR=$PWD/nix/log NIX_CONF_DIR=$PWD/nix/etc
mkdir -p nix/store nix/var nix/etc
cat "$(nix-build --quiet --no-out-link -E 'derivation { name = "x"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo nix ok > $out"]; }')"`

// TestOrdinaryWorkUnderFilter: the default filter leaves ordinary work
// alone, and says nothing about it.
func TestOrdinaryWorkUnderFilter(t *testing.T) {
	for _, tool := range []string{"python3", "git", "gcc", "node", "nix-build"} {
		requireTool(t, tool)
	}
	forEachUser(t, func(t *testing.T, u *testUser) {
		for _, m := range startModes {
			for _, who := range identities[:2] {
				t.Run(m.name+"/"+who.name, func(t *testing.T) {
					wd := u.workdir(t)
					args := append(append(append([]string{"--image", "host", "-d", wd}, m.pre...), who.pre...), "sh", "-c", ordinaryWork)
					r := u.run(context.Background(), t, runOpts{dir: wd}, args...)
					wantOK(t, r)
					if r.stdout != "python 3\ngit 1\nc ok\nnode ok\nnix ok\n" {
						t.Errorf("stdout: %v", r)
					}
					stderr := r.stderr
					if who.name == "root" || u.uid == 0 {
						// Nix as uid 0 tries a private mount namespace
						// for its store and carries on without one; the
						// kernel would refuse it too (no CAP_SYS_ADMIN),
						// the filter only says so.
						stderr = strings.ReplaceAll(stderr, blockedLine("unshare(CLONE_NEWNS)", "nix-build")+"\n", "")
					}
					if strings.Contains(stderr, "blocked") {
						t.Errorf("ordinary work met the filter: %s", r.stderr)
					}
				})
			}
		}
	})
}

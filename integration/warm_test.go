package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type warmInfo struct {
	Key             string  `json:"key"`
	Pid             int     `json:"pid"`
	Image           string  `json:"image"`
	Workdir         string  `json:"workdir"`
	Created         string  `json:"created"`
	IdleSeconds     float64 `json:"idle_seconds"`
	TTLSeconds      float64 `json:"ttl_seconds"`
	RunningRequests int     `json:"running_requests"`
}

// warmFor lists the warm containers whose workdir is wd.
func (u *testUser) warmFor(t *testing.T, wd string) []warmInfo {
	t.Helper()
	r := u.run(context.Background(), t, runOpts{}, "--list", "--json")
	wantOK(t, r)
	var all []warmInfo
	if err := json.Unmarshal([]byte(r.stdout), &all); err != nil {
		t.Fatalf("--list --json is not a JSON array: %v: %q", err, r.stdout)
	}
	var mine []warmInfo
	for _, w := range all {
		if w.Workdir == wd {
			mine = append(mine, w)
		}
	}
	return mine
}

func TestWarmReuse(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		wantOK(t, u.sandbox(t, wd, runOpts{}, "true"))
		first := u.warmFor(t, wd)
		if len(first) != 1 {
			t.Fatalf("want one warm container after a call, got %+v", first)
		}
		w := first[0]
		if w.Pid <= 0 || w.TTLSeconds != 900 || w.RunningRequests != 0 || w.Created == "" || w.Image == "" {
			t.Errorf("list entry incomplete: %+v", w)
		}
		wantOK(t, u.sandbox(t, wd, runOpts{}, "true"))
		second := u.warmFor(t, wd)
		if len(second) != 1 || second[0].Pid != w.Pid {
			t.Fatalf("second call did not reuse the container: %+v then %+v", first, second)
		}
		// A different TTL updates the running agent rather than starting another.
		wantOK(t, u.sandbox(t, wd, runOpts{}, "--warm-ttl-seconds", "600", "true"))
		third := u.warmFor(t, wd)
		if len(third) != 1 || third[0].Pid != w.Pid || third[0].TTLSeconds != 600 {
			t.Fatalf("TTL update: %+v", third)
		}
		r := u.run(context.Background(), t, runOpts{}, "--stop", w.Key)
		wantOK(t, r)
		if left := u.warmFor(t, wd); len(left) != 0 {
			t.Fatalf("--stop left %+v", left)
		}
		if _, err := os.Stat(filepath.Join(u.temp, "nix-sandbox", "warm", w.Key)); !os.IsNotExist(err) {
			t.Fatalf("--stop left the warm dir behind: %v", err)
		}
	})
}

// TestWarmConcurrentCold: many calls at once on a cold key make exactly one
// container, and each call's output reaches only its own stdout.
func TestWarmConcurrentCold(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		const n = 8
		var wg sync.WaitGroup
		results := make([]result, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = u.sandbox(t, wd, runOpts{}, "sh", "-c", fmt.Sprintf("echo out-%d; echo err-%d >&2", i, i))
			}()
		}
		wg.Wait()
		for i, r := range results {
			if r.code != 0 || r.stdout != fmt.Sprintf("out-%d\n", i) || r.stderr != fmt.Sprintf("err-%d\n", i) {
				t.Errorf("call %d: %v", i, r)
			}
		}
		if ws := u.warmFor(t, wd); len(ws) != 1 {
			t.Fatalf("want exactly one container, got %d: %+v", len(ws), ws)
		}
	})
}

func TestNoKeepWarmLeavesNothing(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		warmDir := filepath.Join(u.temp, "nix-sandbox", "warm")
		before := dirNames(warmDir)
		r := u.sandbox(t, wd, runOpts{}, "--no-keep-warm", "sh", "-c", "echo x > /tmp/x; cat /tmp/x")
		wantOK(t, r)
		if r.stdout != "x\n" {
			t.Fatalf("one-shot call: %v", r)
		}
		if after := dirNames(warmDir); after != before {
			t.Fatalf("--no-keep-warm left state behind: %q -> %q", before, after)
		}
	})
}

func dirNames(dir string) string {
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return strings.Join(names, ",")
}

func TestWarmTTLExpiry(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		wantOK(t, u.sandbox(t, wd, runOpts{}, "--warm-ttl-seconds", "1", "true"))
		waitFor(t, 15*time.Second, func() bool { return len(u.warmFor(t, wd)) == 0 })
	})
}

// TestAgentKilledHeals: an agent killed mid-request fails that call with 125
// and one line; the next call starts a fresh container by itself.
func TestAgentKilledHeals(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := u.command(ctx, runOpts{dir: wd}, "--image", suite.images["busybox"], "-d", wd,
			"sh", "-c", "echo started; sleep 60")
		stdout, _ := cmd.StdoutPipe()
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "started\n" {
			t.Fatalf("did not start: %q", line)
		}
		ws := u.warmFor(t, wd)
		if len(ws) != 1 {
			t.Fatalf("want one container, got %+v", ws)
		}
		if err := syscall.Kill(ws[0].Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 125 {
			t.Fatalf("call whose agent died: exit %d (%v), stderr %q", code, err, stderr.String())
		}
		if lines := strings.Split(strings.TrimSpace(stderr.String()), "\n"); len(lines) != 1 {
			t.Errorf("want one stderr line, got %q", stderr.String())
		}
		r := u.sandbox(t, wd, runOpts{}, "echo", "healed")
		wantOK(t, r)
		if r.stdout != "healed\n" {
			t.Fatalf("next call: %v", r)
		}
	})
}

// TestClientKilledKeepsWarm: killing a client ends its command, not the
// container.
func TestClientKilledKeepsWarm(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		wantOK(t, u.sandbox(t, wd, runOpts{}, "true"))
		before := u.warmFor(t, wd)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := u.command(ctx, runOpts{dir: wd}, "--image", suite.images["busybox"], "-d", wd, "sh", "-c", "echo started; sleep 60")
		stdout, _ := cmd.StdoutPipe()
		cmd.Start()
		bufio.NewReader(stdout).ReadString('\n')
		cmd.Process.Kill()
		cmd.Wait()
		after := u.warmFor(t, wd)
		if len(before) != 1 || len(after) != 1 || before[0].Pid != after[0].Pid {
			t.Fatalf("container changed after a client was killed: %+v -> %+v", before, after)
		}
		waitFor(t, 5*time.Second, func() bool { return u.warmFor(t, wd)[0].RunningRequests == 0 })
	})
}

// TestManySequentialCalls: the agent must not leak fds, zombies or memory.
func TestManySequentialCalls(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		wantOK(t, u.sandbox(t, wd, runOpts{}, "true"))
		pid := u.warmFor(t, wd)[0].Pid
		sample := func() (fds, zombies, rssKB int) {
			fds = openFDs(pid)
			status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			for _, l := range strings.Split(string(status), "\n") {
				if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
					rssKB, _ = strconv.Atoi(f[1])
				}
			}
			return fds, countZombies(pid), rssKB
		}
		// Warm up allocator and caches before the baseline.
		for range 20 {
			wantOK(t, u.sandbox(t, wd, runOpts{}, "sh", "-c", "sleep 0 & true"))
		}
		fd0, _, rss0 := sample()
		for range 300 {
			r := u.sandbox(t, wd, runOpts{}, "sh", "-c", "sleep 0 & true")
			if r.code != 0 {
				t.Fatalf("call failed: %v", r)
			}
		}
		time.Sleep(200 * time.Millisecond)
		fd1, z1, rss1 := sample()
		if fd1 != fd0 || z1 != 0 || rss1 > rss0+4096 {
			t.Fatalf("agent state drifted: fds %d->%d, zombies %d, rss %dKB->%dKB", fd0, fd1, z1, rss0, rss1)
		}
		if rss1 > 15*1024 {
			t.Errorf("agent RSS %d KB is above the 15 MB budget", rss1)
		}
	})
}

// openFDs counts the agent's open descriptors, leaving out the Go
// runtime's own poller (an epoll fd and an eventfd), which it creates once,
// lazily, the first time any request needs it.
func openFDs(pid int) int {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	n := 0
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		if target == "anon_inode:[eventpoll]" || target == "anon_inode:[eventfd]" {
			continue
		}
		n++
	}
	return n
}

// countZombies counts zombie descendants of the agent (it is PID 1 of its
// namespace, so orphans are its children).
func countZombies(agent int) int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(agent) {
			n++
		}
	}
	return n
}

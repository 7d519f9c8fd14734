package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// require makes a call fail with 125 unless the fast path serves it.
var (
	require = []string{"_LECTIC_NIX_SANDBOX_FAST=require"}
	slow    = []string{"_LECTIC_NIX_SANDBOX_FAST=off"}
)

// settle waits until the newest mtime or ctime of paths is old enough for
// a ticket to rely on their stat data (fastpath's two-second rule).
func settle(t *testing.T, paths ...string) {
	t.Helper()
	var newest time.Time
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		for _, ts := range []unix.Timespec{st.Mtim, st.Ctim} {
			if tm := time.Unix(ts.Unix()); tm.After(newest) {
				newest = tm
			}
		}
	}
	if wait := time.Until(newest.Add(2100 * time.Millisecond)); wait > 0 {
		time.Sleep(wait)
	}
}

// privateImage is a copy of the busybox fixture the test may touch.
func privateImage(t *testing.T, u *testUser) string {
	t.Helper()
	img := filepath.Join(u.workdir(t), "image.tar")
	data, err := os.ReadFile(suite.images["busybox"])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	chown(t, u, img)
	return img
}

func tickets(t *testing.T, u *testUser) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(u.temp, "nix-sandbox", "fast"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return len(ents)
}

// TestFastPathServesWarmCalls: after one call of an invocation, the same
// invocation is served before the Go runtime starts, and what the command
// sees (environment, identity, cwd, stdin, exit status, timeout) is what
// the Go client gives it.
func TestFastPathServesWarmCalls(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		img := privateImage(t, u)
		wd := u.workdir(t)
		settle(t, img)
		call := func(env []string, stdin string, args ...string) result {
			full := append([]string{"--image", img, "-d", wd}, args...)
			o := runOpts{dir: wd, env: env}
			if stdin != "" {
				o.stdin = strings.NewReader(stdin)
			}
			return u.run(context.Background(), t, o, full...)
		}
		probe := []string{"sh", "-c", "env | sort; id; pwd; cat; exit 7"}
		vars := []string{"PER_CALL=1", "GH_TOKEN=secret", "LANG=C.UTF-8"}
		first := call(append([]string(nil), vars...), "in\n", probe...)
		if first.code != 7 {
			t.Fatalf("first call: %v", first)
		}
		if tickets(t, u) == 0 {
			t.Fatal("the first call left no ticket")
		}
		// The first call in the container names what it withheld; later
		// ones, on either path, have nothing more to say.
		if !strings.HasPrefix(first.stderr, "lectic-nix-sandbox: withheld GH_TOKEN from the command") {
			t.Fatalf("first call did not name the withheld GH_TOKEN: %v", first)
		}
		for _, env := range [][]string{slow, require} {
			r := call(append(append([]string(nil), vars...), env...), "in\n", probe...)
			if r.code != 7 || r.stdout != first.stdout || r.stderr != "" {
				t.Fatalf("%v: the call differs from the first:\n%v\nfirst:\n%v", env, r, first)
			}
		}
		if strings.Contains(first.stdout, "GH_TOKEN") || !strings.Contains(first.stdout, "PER_CALL=1") {
			t.Fatalf("environment policy: %v", first)
		}
		// A variable set for one call only reaches that call's command.
		r := call(append([]string{"ONLY_NOW=yes"}, require...), "", "sh", "-c", "echo $ONLY_NOW")
		if r.code != 0 || r.stdout != "yes\n" {
			t.Fatalf("per-call variable: %v", r)
		}
		// Options are part of the invocation: a new one takes the slow
		// path once, then the fast one, timeout included.
		if r := call(nil, "", "--timeout", "0.5", "sleep", "5"); r.code != 124 {
			t.Fatalf("timeout: %v", r)
		}
		if r := call(require, "", "--timeout", "0.5", "sleep", "5"); r.code != 124 {
			t.Fatalf("timeout on the fast path: %v", r)
		}
	})
}

// TestFastPathNoticesChanges: a ticket is not used once a file it depends
// on changed, and the slow path that follows sees the change.
func TestFastPathNoticesChanges(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		img := privateImage(t, u)
		wd := u.workdir(t)
		dataA, dataB := filepath.Join(wd, "a"), filepath.Join(wd, "b")
		link := filepath.Join(wd, "data")
		for _, d := range []string{dataA, dataB} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d, "which"), []byte(filepath.Base(d)), 0o644); err != nil {
				t.Fatal(err)
			}
			chown(t, u, d, filepath.Join(d, "which"))
		}
		if err := os.Symlink(dataA, link); err != nil {
			t.Fatal(err)
		}
		settle(t, img)
		call := func(env []string, args ...string) result {
			full := append([]string{"--image", img, "-d", wd, "-v", link + ":/data"}, args...)
			return u.run(context.Background(), t, runOpts{dir: wd, env: env}, full...)
		}
		wantOK(t, call(nil, "cat", "/data/which"))
		if r := call(require, "cat", "/data/which"); r.code != 0 || r.stdout != "a" {
			t.Fatalf("fast path: %v", r)
		}

		// The volume's symlink now points elsewhere.
		os.Remove(link)
		if err := os.Symlink(dataB, link); err != nil {
			t.Fatal(err)
		}
		wantSandboxError(t, call(require, "true"), "fast path was not taken")
		if r := call(nil, "cat", "/data/which"); r.code != 0 || r.stdout != "b" {
			t.Fatalf("after retargeting the volume: %v", r)
		}

		// The image file changed: no fast path until the slow path has
		// looked at it again, and not while its stat data is fresh.
		now := time.Now()
		if err := os.Chtimes(img, now, now); err != nil {
			t.Fatal(err)
		}
		wantSandboxError(t, call(require, "true"), "a file the image or the mounts depend on changed")
		wantOK(t, call(nil, "true"))
		wantSandboxError(t, call(require, "true"), "fast path was not taken")
		settle(t, img)
		wantOK(t, call(nil, "true"))
		wantOK(t, call(require, "true"))

		// A stopped container takes its tickets with it; the slow path
		// starts a new one and leaves a new ticket.
		before := tickets(t, u)
		wantOK(t, u.run(context.Background(), t, runOpts{}, "--stop", "all"))
		if after := tickets(t, u); after >= before {
			t.Fatalf("--stop kept tickets of stopped containers (%d -> %d)", before, after)
		}
		wantSandboxError(t, call(require, "true"), "no ticket for this invocation")
		wantOK(t, call(nil, "true"))
		wantOK(t, call(require, "true"))
		// An agent killed: its supervisor cleans up, tickets included,
		// and the slow path starts a new container.
		ws := u.warmFor(t, wd)
		if len(ws) != 1 {
			t.Fatalf("want one container, got %+v", ws)
		}
		if err := syscall.Kill(ws[0].Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for len(u.warmFor(t, wd)) != 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		wantSandboxError(t, call(require, "true"), "no ticket for this invocation")
		wantOK(t, call(nil, "true"))
		wantOK(t, call(require, "true"))
	})
}

// TestFastPathFlake: a flake's ticket covers the flake's files and the nix
// executable, so editing the flake leads back to nix.
func TestFastPathFlake(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		flake, nix, counter := fixtureFlake(t, u)
		wd := u.workdir(t)
		settle(t, filepath.Join(flake, "flake.nix"), filepath.Join(flake, "busybox"), nix, flake)
		call := func(env []string, args ...string) result {
			full := append([]string{"--flake", flake, "--nix-exe", nix, "-d", wd}, args...)
			return u.run(context.Background(), t, runOpts{dir: wd, env: env}, full...)
		}
		wantOK(t, call(nil, "sh", "-c", "true"))
		built := nixCalls(counter)
		if r := call(require, "sh", "-c", "echo $FIXTURE"); r.code != 0 || r.stdout != "1\n" {
			t.Fatalf("fast path on a flake image: %v", r)
		}
		if nixCalls(counter) != built {
			t.Fatal("the fast path ran nix")
		}
		extra := filepath.Join(flake, "notes.txt")
		if err := os.WriteFile(extra, []byte("a new file in the flake\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		wantSandboxError(t, call(require, "sh", "-c", "true"), "changed")
	})
}

// TestFastPathHostImage: the host image's ticket is checked against the
// host files its fingerprint covers.
func TestFastPathHostImage(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		// A nix build elsewhere in the suite may have just written to
		// /nix/store, one of the files the host image depends on.
		var host []string
		for _, p := range []string{"/usr", "/bin", "/lib", "/nix/store", "/etc/passwd", "/etc/group"} {
			if _, err := os.Stat(p); err == nil {
				host = append(host, p)
			}
		}
		call := func(env []string) result {
			return u.run(context.Background(), t, runOpts{dir: wd, env: env}, "--image", "host", "-d", wd, "sh", "-c", "echo ok")
		}
		// A miss is the fast path's fault only if none of those files
		// changed between the call that wrote the ticket and the one
		// that used it; a changed file must miss.
		for attempt := 1; ; attempt++ {
			settle(t, host...)
			before := statAll(t, host)
			wantOK(t, call(nil))
			r := call(require)
			if r.code == 0 && r.stdout == "ok\n" {
				break
			}
			if statAll(t, host) == before {
				t.Fatalf("fast path on the host image, with none of %q changed: %v", host, r)
			}
			if attempt == 3 {
				t.Fatalf("fast path on the host image: %v (the host's files changed during each of 3 attempts)", r)
			}
		}
	})
}

// statAll sums up the change times of paths, to tell whether any changed.
func statAll(t *testing.T, paths []string) string {
	t.Helper()
	var b strings.Builder
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %d.%d %d.%d;", p, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
	}
	return b.String()
}

// TestTicketsEndWithTheirContainer: a container that expires takes its
// tickets with it, so tickets do not pile up without a --prune.
func TestTicketsEndWithTheirContainer(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		img := privateImage(t, u)
		wd := u.workdir(t)
		settle(t, img)
		call := func(env []string) result {
			return u.run(context.Background(), t, runOpts{dir: wd, env: env},
				"--image", img, "-d", wd, "--warm-ttl-seconds", "1", "true")
		}
		wantOK(t, call(nil))
		wantOK(t, call(require))
		deadline := time.Now().Add(20 * time.Second)
		for len(u.warmFor(t, wd)) != 0 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if len(u.warmFor(t, wd)) != 0 {
			t.Fatal("the container outlived its 1 s TTL")
		}
		wantSandboxError(t, call(require), "no ticket for this invocation")
	})
}

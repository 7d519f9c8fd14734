package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/fixture"
)

func TestDoctor(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		r := u.run(context.Background(), t, runOpts{}, "--doctor")
		wantOK(t, r)
		for _, want := range []string{"ok   user namespaces", "ok   overlay root", "ok   static binary", "ok   socket path length"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("--doctor lacks %q:\n%s", want, r.stdout)
			}
		}
	})
}

// TestHostFallback: with no image source and no nix, the host image runs
// the command, and the user is told once, when the container is created.
func TestHostFallback(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		noNix := []string{"PATH=/usr/bin:/bin", "LECTIC_DATA=" + filepath.Join(wd, "no-plugin")}
		run := func() result {
			// nix is installed on this machine; --nix-exe pointing at nothing
			// is how a machine without it looks to the sandbox.
			return u.run(context.Background(), t, runOpts{dir: wd, env: noNix},
				"--nix-exe", "/nonexistent/nix", "-d", wd, "sh", "-c", "test -d /usr/bin && echo host")
		}
		r := run()
		wantOK(t, r)
		if r.stdout != "host\n" || strings.Count(r.stderr, "using the host image") != 1 {
			t.Fatalf("first call: %v", r)
		}
		r = run()
		wantOK(t, r)
		if r.stdout != "host\n" || r.stderr != "" {
			t.Fatalf("the warm call repeated the notice: %v", r)
		}
	})
}

// TestGC removes what nothing uses and keeps what a warm container and
// the current source caches use.
func TestGC(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		bb, err := busyboxPath()
		if err != nil {
			t.Fatal(err)
		}
		base, err := fixture.BusyboxLayer(bb)
		if err != nil {
			t.Fatal(err)
		}
		extra := fixture.Layer{Entries: []fixture.Entry{fixture.File("gc-marker", []byte(wd), 0o644)}}
		unused := filepath.Join(wd, "unused.tar")
		f, err := os.Create(unused)
		if err != nil {
			t.Fatal(err)
		}
		if err := fixture.WriteDockerArchive(f, []fixture.Layer{base, extra}, nil, fixture.ArchiveOptions{}); err != nil {
			t.Fatal(err)
		}
		f.Close()
		chown(t, u, unused)
		// Used once, then the file goes away: nothing refers to it any more.
		wantOK(t, u.sandbox(t, wd, runOpts{}, "--image", unused, "--no-keep-warm", "true"))
		r := u.run(context.Background(), t, runOpts{}, "--load", unused)
		wantOK(t, r)
		var loaded struct {
			Rootfs string `json:"rootfs"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &loaded); err != nil {
			t.Fatal(err)
		}
		os.Remove(unused)
		wantOK(t, u.sandbox(t, wd, runOpts{}, "true"))
		r = u.run(context.Background(), t, runOpts{}, "--gc")
		wantOK(t, r)
		if !strings.Contains(r.stdout, "removed") {
			t.Fatalf("--gc did not say what it freed: %v", r)
		}
		if _, err := os.Stat(loaded.Rootfs); !os.IsNotExist(err) {
			t.Fatalf("--gc kept the unused image %s (%v)", loaded.Rootfs, err)
		}
		// The busybox image is in use; the warm container keeps working and
		// nothing has to be unpacked again.
		wantOK(t, u.sandbox(t, wd, runOpts{}, "true"))
		r = u.run(context.Background(), t, runOpts{}, "--load", suite.images["busybox"])
		wantOK(t, r)
		if !strings.Contains(r.stdout, `"unpacked_layers":0`) {
			t.Fatalf("GC removed the image a warm container uses: %s", r.stdout)
		}
	})
}

func TestPrune(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd, other := u.workdir(t), u.workdir(t)
		wantOK(t, u.sandbox(t, wd, runOpts{}, "--warm-ttl-seconds", "0", "true"))
		wantOK(t, u.sandbox(t, other, runOpts{}, "true"))
		r := u.run(context.Background(), t, runOpts{}, "--prune")
		wantOK(t, r)
		if len(u.warmFor(t, wd)) != 1 || len(u.warmFor(t, other)) != 1 {
			t.Fatalf("--prune stopped containers within their TTL: %v", r)
		}
		wantOK(t, u.run(context.Background(), t, runOpts{}, "--stop", "all"))
		if len(u.warmFor(t, wd)) != 0 || len(u.warmFor(t, other)) != 0 {
			t.Fatal("--stop all left containers")
		}
	})
}

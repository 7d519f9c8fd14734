package integration

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fixtureFlake copies the offline fixture flake (no inputs; busybox is its
// builder) into a directory the user owns, and returns the directory and a
// nix wrapper that counts its invocations.
func fixtureFlake(t *testing.T, u *testUser) (flake, nixWrapper, counter string) {
	t.Helper()
	nixExe := requireTool(t, "nix")
	if _, err := os.Stat("/nix/var/nix/daemon-socket/socket"); err != nil && u.uid != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("nix-daemon is not running; .ci/run starts it")
		}
		t.Skip("nix-daemon is not running; start it to build as an unprivileged user")
	}
	base := u.workdir(t)
	flake = filepath.Join(base, "flake")
	src, err := os.ReadFile(filepath.Join(repoRoot(), "nixload", "testdata", "flake", "flake.nix"))
	if err != nil {
		t.Fatal(err)
	}
	bb, err := busyboxPath()
	if err != nil {
		t.Fatal(err)
	}
	bbBody, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	counter = filepath.Join(base, "nix-calls")
	nixWrapper = filepath.Join(base, "nix")
	wrapper := "#!/bin/sh\necho x >> " + counter + "\nexec " + nixExe + " \"$@\"\n"
	for path, f := range map[string]struct {
		body []byte
		mode os.FileMode
	}{
		filepath.Join(flake, "flake.nix"): {src, 0o644},
		filepath.Join(flake, "busybox"):   {bbBody, 0o755},
		nixWrapper:                        {[]byte(wrapper), 0o755},
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, f.body, f.mode); err != nil {
			t.Fatal(err)
		}
		chown(t, u, filepath.Dir(path), path)
	}
	return flake, nixWrapper, counter
}

func nixCalls(counter string) int {
	b, _ := os.ReadFile(counter)
	return strings.Count(string(b), "x")
}

// TestFlakeImage: the image comes from a flake; the second call starts no
// nix; a change to the packages file rebuilds, and the flake never gains a
// lock file from us.
func TestFlakeImage(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		flake, nix, counter := fixtureFlake(t, u)
		wd := u.workdir(t)
		run := func(args ...string) result {
			full := append([]string{"--flake", flake, "--nix-exe", nix, "-d", wd}, args...)
			return u.run(context.Background(), t, runOpts{dir: wd}, full...)
		}
		// The fixture image holds only busybox's sh: use its builtins.
		r := run("sh", "-c", "echo $FIXTURE; test -x /bin/busybox && echo has-busybox")
		wantOK(t, r)
		if r.stdout != "1\nhas-busybox\n" {
			t.Fatalf("flake image: %v", r)
		}
		built := nixCalls(counter)
		if built == 0 {
			t.Fatal("the first call did not run nix")
		}
		wantOK(t, run("--no-keep-warm", "sh", "-c", "true"))
		if got := nixCalls(counter); got != built {
			t.Fatalf("an unchanged flake ran nix again (%d -> %d calls)", built, got)
		}
		pkgs := filepath.Join(wd, "packages.nix")
		if err := os.WriteFile(pkgs, []byte("{ pkgs, ... }: [ pkgs.hello ]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		chown(t, u, pkgs)
		r = run("--nix-packages-file", "packages.nix", "hello")
		wantOK(t, r)
		if r.stdout != "hello from the fixture\n" {
			t.Fatalf("packages file did not reach the image: %v", r)
		}
		if nixCalls(counter) == built {
			t.Fatal("a new packages file did not rebuild")
		}
		if _, err := os.Stat(filepath.Join(flake, "flake.lock")); err == nil {
			t.Fatal("the flake gained a flake.lock")
		}
	})
}

func TestBrokenFlakeIs125(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		flake, nix, _ := fixtureFlake(t, u)
		if err := os.WriteFile(filepath.Join(flake, "flake.nix"), []byte("{ outputs = { self }: { packages = throw \"broken on purpose\"; }; }\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		wd := u.workdir(t)
		r := u.run(context.Background(), t, runOpts{dir: wd}, "--flake", flake, "--nix-exe", nix, "true")
		if r.code != 125 || r.stdout != "" || !strings.Contains(r.stderr, "broken on purpose") {
			t.Fatalf("broken flake: %v", r)
		}
	})
}

// TestInstall: --install writes a plugin Lectic can import, and the
// installed copy runs.
func TestInstall(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		r := u.run(context.Background(), t, runOpts{}, "--install")
		wantOK(t, r)
		dir := filepath.Join(u.data, "plugins", "nix-sandbox")
		for _, f := range []string{"lectic-nix-sandbox", "lectic.yaml", "flake.nix", "packages.example.nix"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Fatalf("--install did not write %s: %v", f, err)
			}
		}
		yaml, _ := os.ReadFile(filepath.Join(dir, "lectic.yaml"))
		if !strings.Contains(string(yaml), "\nsandbox: \"'local:./lectic-nix-sandbox'\"") {
			t.Fatalf("installed lectic.yaml has no sandbox line:\n%s", yaml)
		}
		again := u.run(context.Background(), t, runOpts{}, "--install")
		wantOK(t, again)
		wd := u.workdir(t)
		cmd := u.command(context.Background(), runOpts{dir: wd}, "--image", suite.images["busybox"], "-d", wd, "id", "-u")
		cmd.Path = filepath.Join(dir, "lectic-nix-sandbox")
		out, err := cmd.Output()
		if err != nil || strings.TrimSpace(string(out)) != strconv.Itoa(u.uid) {
			t.Fatalf("installed copy: %q %v", out, err)
		}
	})
}

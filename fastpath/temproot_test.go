package fastpath

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/statedir"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/termtext"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/testenv"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

// rootEnv are the variables the temp root and the cache root come from.
var rootEnv = []string{"LECTIC_TEMP", "TMPDIR", "LECTIC_CACHE", "XDG_CACHE_HOME", "HOME"}

// goRoots resolves the given temp root and the cache root from the
// environment as cmd's resolveRoots does.
func goRoots(t *testing.T) (given, cache string) {
	t.Helper()
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	if lt := os.Getenv("LECTIC_TEMP"); lt != "" {
		given = abs(filepath.Join(lt, "nix-sandbox"))
	} else {
		tmp := os.Getenv("TMPDIR")
		if tmp == "" {
			tmp = "/tmp"
		}
		given = abs(filepath.Join(tmp, "lectic", "nix-sandbox"))
	}
	switch {
	case os.Getenv("LECTIC_CACHE") != "":
		cache = os.Getenv("LECTIC_CACHE")
	case os.Getenv("XDG_CACHE_HOME") != "":
		cache = filepath.Join(os.Getenv("XDG_CACHE_HOME"), "lectic")
	default:
		cache = filepath.Join(os.Getenv("HOME"), ".cache", "lectic")
	}
	return given, abs(filepath.Join(cache, "nix-sandbox"))
}

// TestTempRootAgreesWithGo: the constructor looks for tickets in the temp
// root the Go client picks (statedir's rules and fallback order), so that
// a call whose temp root is not safe still gets the fast path, and never
// from a dir the Go client would not use.
func TestTempRootAgreesWithGo(t *testing.T) {
	uid := os.Getuid()
	if _, err := statedir.Check("/run/user/"+strconv.Itoa(uid), uid); err == nil {
		t.Skip("this machine has a runtime dir for the caller; the fallback would go there")
	}
	cases := []struct {
		name  string
		root  bool
		setup func(t *testing.T, base string) map[string]string
		want  string // the candidate Go must pick: "given" or "cache"
	}{
		{"the given temp root", false, func(t *testing.T, base string) map[string]string {
			return map[string]string{"LECTIC_TEMP": filepath.Join(base, "t")}
		}, "given"},
		{"a path to clean", false, func(t *testing.T, base string) map[string]string {
			os.MkdirAll(filepath.Join(base, "a", "b"), 0o700)
			return map[string]string{"LECTIC_TEMP": base + "//a/./b/../c/"}
		}, "given"},
		{"through a symlink", false, func(t *testing.T, base string) map[string]string {
			os.Mkdir(filepath.Join(base, "real"), 0o700)
			os.Symlink("real", filepath.Join(base, "link"))
			return map[string]string{"LECTIC_TEMP": filepath.Join(base, "link")}
		}, "given"},
		{"relative to the cwd", false, func(t *testing.T, base string) map[string]string {
			t.Chdir(base)
			return map[string]string{"LECTIC_TEMP": "rel"}
		}, "given"},
		{"TMPDIR without LECTIC_TEMP", false, func(t *testing.T, base string) map[string]string {
			return map[string]string{"TMPDIR": filepath.Join(base, "tmp")}
		}, "given"},
		{"too long for socket paths: the cache's", false, func(t *testing.T, base string) map[string]string {
			return map[string]string{"LECTIC_TEMP": filepath.Join(base, strings.Repeat("x", statedir.MaxTempRoot)), "LECTIC_CACHE": filepath.Join(base, "cache")}
		}, "cache"},
		{"longer than a path may be: the cache's, not the default", false, func(t *testing.T, base string) map[string]string {
			return map[string]string{"LECTIC_TEMP": filepath.Join(base, strings.Repeat("x/", unix.PathMax)), "LECTIC_CACHE": filepath.Join(base, "cache")}
		}, "cache"},
		{"in a dir anyone may write: the cache's", false, func(t *testing.T, base string) map[string]string {
			os.Mkdir(filepath.Join(base, "shared"), 0o777)
			os.Chmod(filepath.Join(base, "shared"), 0o777)
			return map[string]string{"TMPDIR": filepath.Join(base, "shared"), "LECTIC_CACHE": filepath.Join(base, "cache")}
		}, "cache"},
		{"an attacker's sticky lectic dir: XDG_CACHE_HOME's", true, func(t *testing.T, base string) map[string]string {
			tmp := filepath.Join(base, "tmp")
			os.Mkdir(tmp, 0o777)
			os.Chmod(tmp, 0o777|os.ModeSticky)
			os.Mkdir(filepath.Join(tmp, "lectic"), 0o777)
			os.Chmod(filepath.Join(tmp, "lectic"), 0o777|os.ModeSticky)
			os.Chown(filepath.Join(tmp, "lectic"), 12345, 12345)
			return map[string]string{"TMPDIR": tmp, "XDG_CACHE_HOME": filepath.Join(base, "xdg")}
		}, "cache"},
		{"a foreign LECTIC_TEMP: HOME's cache", true, func(t *testing.T, base string) map[string]string {
			os.Mkdir(filepath.Join(base, "theirs"), 0o700)
			os.Chown(filepath.Join(base, "theirs"), 12345, 12345)
			return map[string]string{"LECTIC_TEMP": filepath.Join(base, "theirs"), "HOME": filepath.Join(base, "home")}
		}, "cache"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && os.Getuid() != 0 {
				testenv.Missing(t, "only root can make a directory another user owns")
			}
			base := shortTempDir(t)
			env := tc.setup(t, base)
			for _, k := range rootEnv {
				t.Setenv(k, env[k])
			}
			if env["HOME"] == "" {
				t.Setenv("HOME", filepath.Join(base, "home"))
			}
			t.Setenv("USER", "tester")
			given, cache := goRoots(t)
			root := goTempRoot(t, given, cache)
			want := given
			if tc.want == "cache" {
				want = filepath.Join(cache, "temp")
			}
			if real, err := filepath.EvalSymlinks(want); err != nil || root != real {
				t.Fatalf("Go picked %s, want %s (%v)", root, want, err)
			}
			if code, stderr := serveOne(t, Dir(root), base); code != 3 {
				t.Fatalf("the constructor did not find the ticket in %s: exit %d, %q", root, code, stderr)
			}
		})
	}
}

// TestTempRootNotCreatedYet: a temp root the Go client would create is
// where the constructor stops looking, even when a later candidate holds
// a ticket; only a candidate the Go client passes by is passed by.
func TestTempRootNotCreatedYet(t *testing.T) {
	base := shortTempDir(t)
	t.Setenv("LECTIC_TEMP", filepath.Join(base, "new"))
	t.Setenv("LECTIC_CACHE", filepath.Join(base, "cache"))
	t.Setenv("USER", "tester")
	fallback, err := statedir.Make(filepath.Join(base, "cache", "nix-sandbox", "temp"), os.Getuid())
	if err != nil {
		t.Fatal(err)
	}
	code, stderr := serveOne(t, Dir(fallback), base)
	if code != 125 || !strings.Contains(stderr, "no tickets yet") {
		t.Fatalf("exit %d, %q; want the fast path not taken", code, stderr)
	}
	if _, err := os.Lstat(filepath.Join(base, "new")); err == nil {
		t.Fatal("the constructor created the temp root")
	}
}

// serveOne writes a ticket for "opt true" into dir, whose agent answers
// exit 3, and runs the invocation with the fast path required.
func serveOne(t *testing.T, dir, base string) (int, string) {
	t.Helper()
	sock := filepath.Join(base, "agent.sock")
	head := `{"type":"run","proto":1,"build":"b1","cwd":"/w","user":{"mode":"caller","uid":1,"gid":1},"ttl_seconds":900}`
	recipe := oci.NewEnvRecipe([]string{"PATH=/bin"}, nil, "/home/tester", "tester")
	if err := Write(dir, Invocation{Options: []string{"--allow-net"}}, Ticket{Socket: sock, Request: []byte(head), Env: recipe}); err != nil {
		t.Fatal(err)
	}
	fakeAgent(t, sock, exitWith(3, 0))
	c := runChild(t, []string{"--allow-net", "true"}, []string{ModeEnv + "=require"}, nil)
	return c.code, c.stderr
}

// TestWarningsArePrintable: text from a ticket reaches the caller's
// stderr as one line of text; terminal escapes and other control
// characters do not get through.
func TestWarningsArePrintable(t *testing.T) {
	base := shortTempDir(t)
	t.Setenv("LECTIC_TEMP", base)
	t.Setenv("USER", "tester")
	dir := Dir(goTempRoot(t, filepath.Join(base, "nix-sandbox"), filepath.Join(base, "cache", "nix-sandbox")))
	sock := filepath.Join(base, "agent.sock")
	head := `{"type":"run","proto":1,"build":"b1","cwd":"/w","user":{"mode":"caller","uid":1,"gid":1},"ttl_seconds":900}`
	recipe := oci.NewEnvRecipe([]string{"PATH=/bin"}, nil, "/home/tester", "tester")
	warn := "a\x1b]0;pwned\x07b\x1b[2J\r\nc\u009bd\x7fé"
	if err := Write(dir, Invocation{Options: []string{"--allow-net"}}, Ticket{Socket: sock, Request: []byte(head), Env: recipe, Warnings: []string{warn}}); err != nil {
		t.Fatal(err)
	}
	fakeAgent(t, sock, exitWith(0, 0))
	c := runChild(t, []string{"--allow-net", "true"}, []string{ModeEnv + "=require"}, nil)
	want := "lectic-nix-sandbox: warning: a?]0;pwned?b?[2J  c?d?é\n"
	if c.code != 0 || c.stderr != want {
		t.Fatalf("exit %d, stderr %q; want %q", c.code, c.stderr, want)
	}
	if got := "lectic-nix-sandbox: warning: " + termtext.Printable(warn) + "\n"; got != want {
		t.Fatalf("the Go client prints %q, the fast path %q", got, want)
	}
}

// TestGuards: a file the host runs later that a call creates in a bind is
// reported after the call, once; one that exists before a call sends it
// to the Go client, which makes a container that covers it.
func TestGuards(t *testing.T) {
	base := shortTempDir(t)
	t.Setenv("LECTIC_TEMP", base)
	t.Setenv("USER", "tester")
	dir := Dir(goTempRoot(t, filepath.Join(base, "nix-sandbox"), filepath.Join(base, "cache", "nix-sandbox")))
	wd := filepath.Join(base, "w")
	os.Mkdir(wd, 0o755)
	os.WriteFile(filepath.Join(wd, "old.lec"), nil, 0o644)
	var st unix.Stat_t
	unix.Lstat(wd, &st)
	guard := Guard{Absent: []string{filepath.Join(wd, "lectic.yaml"), filepath.Join(wd, ".envrc")},
		LecDirs: []LecDir{{Path: wd, Mtime: st.Mtim.Nano()}}, Lecs: []string{filepath.Join(wd, "old.lec")}}
	sock := filepath.Join(base, "agent.sock")
	head := `{"type":"run","proto":1,"build":"b1","cwd":"/w","user":{"mode":"caller","uid":1,"gid":1},"ttl_seconds":900}`
	recipe := oci.NewEnvRecipe([]string{"PATH=/bin"}, nil, "/home/tester", "tester")
	if err := Write(dir, Invocation{Options: []string{"--allow-net"}}, Ticket{Socket: sock, Request: []byte(head), Env: recipe, Guard: guard}); err != nil {
		t.Fatal(err)
	}
	// The command creates lectic.yaml and a .lec file.
	fakeAgent(t, sock, func(t testing.TB, fd int, _ map[string]any) {
		send(t, fd, `{"type":"started","pid":42}`)
		os.WriteFile(filepath.Join(wd, "lectic.yaml"), []byte("hooks: evil"), 0o644)
		os.WriteFile(filepath.Join(wd, "new.lec"), nil, 0o644)
		send(t, fd, `{"type":"exit","code":0}`)
	})
	c := runChild(t, []string{"--allow-net", "true"}, []string{ModeEnv + "=require"}, nil)
	want := "lectic-nix-sandbox: warning: the command created " + filepath.Join(wd, "lectic.yaml") + ", " + filepath.Join(wd, "new.lec") +
		", which the host may run later (Lectic, git, direnv or the shell read it); check it before you use it there\n"
	if c.code != 0 || c.stderr != want {
		t.Fatalf("exit %d, stderr %q; want %q", c.code, c.stderr, want)
	}
	// The next call is the Go client's: it covers what appeared.
	c = runChild(t, []string{"--allow-net", "true"}, []string{ModeEnv + "=require"}, nil)
	if c.code != 125 || !strings.Contains(c.stderr, "a file the host runs later appeared in a bind") {
		t.Fatalf("exit %d, stderr %q; want the fast path not taken", c.code, c.stderr)
	}
	os.Remove(filepath.Join(wd, "lectic.yaml"))
	c = runChild(t, []string{"--allow-net", "true"}, []string{ModeEnv + "=require"}, nil)
	if c.code != 125 || !strings.Contains(c.stderr, "a file the host runs later appeared in a bind") {
		t.Fatalf("a new .lec file: exit %d, stderr %q; want the fast path not taken", c.code, c.stderr)
	}
}

package nixload

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/testenv"
)

// The flake tests build the offline fixture in testdata/flake with the
// real nix. Each scenario runs in this process and, when the tests run as
// root, again as the unprivileged user sandboxtest (through the daemon),
// because the rootless path is the product.

const (
	helperEnv = "NIXLOAD_TEST_SCENARIO" // set in the child that runs a scenario as another user
	workEnv   = "NIXLOAD_TEST_WORK"
	testUser  = testenv.UserName
	// nixTestConfig keeps nix off the network: no binary cache to wait for.
	nixTestConfig = "experimental-features = nix-command flakes\nsubstituters =\n"
)

// scenario is one flake test; work is a directory the running user owns,
// holding flake/ (the fixture with busybox) and nothing else.
type scenario func(t *testing.T, work string)

func scenarios() map[string]scenario {
	return map[string]scenario{
		"build-and-cache":   scenarioBuildAndCache,
		"packages-shapes":   scenarioPackagesShapes,
		"broken-flake":      scenarioBrokenFlake,
		"refresh-and-nogc":  scenarioRefresh,
		"missing-flake-nix": scenarioMissingFlakeNix,
		"concurrent":        scenarioConcurrent,
		"stream-image":      scenarioStreamImage,
	}
}

// needEnv skips (or, under CI=true, fails) when a prerequisite is missing.
func TestFlakeScenarios(t *testing.T) {
	_, err := exec.LookPath("nix")
	need(t, err == nil, "nix is not installed (apt-get install nix-bin)")
	need(t, isFile("/bin/busybox"), "/bin/busybox is missing (apt-get install busybox-static)")
	for _, name := range sortedScenarioNames() {
		t.Run(name+"/as-me", func(t *testing.T) {
			t.Setenv("NIX_CONFIG", nixTestConfig)
			work := t.TempDir()
			prepareFixture(t, work, -1, -1)
			scenarios()[name](t, work)
		})
		t.Run(name+"/unprivileged", func(t *testing.T) {
			runAsTestUser(t, name)
		})
	}
}

// TestScenarioHelper is the child side of runAsTestUser.
func TestScenarioHelper(t *testing.T) {
	name := os.Getenv(helperEnv)
	if name == "" {
		return // only meaningful in the child started by runAsTestUser
	}
	sc, ok := scenarios()[name]
	if !ok {
		t.Fatalf("unknown scenario %q", name)
	}
	sc(t, os.Getenv(workEnv))
}

func sortedScenarioNames() []string {
	var names []string
	for n := range scenarios() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// runAsTestUser re-runs this test binary as the unprivileged test user,
// with a work directory that user owns.
func runAsTestUser(t *testing.T, name string) {
	if os.Geteuid() != 0 {
		t.Skip("not root: the as-me variant already ran unprivileged")
	}
	u, err := user.Lookup(testUser)
	need(t, err == nil, "user "+testUser+" does not exist (useradd -m "+testUser+"; usermod -aG nix-users "+testUser+")")
	_, err = os.Stat("/nix/var/nix/daemon-socket/socket")
	need(t, err == nil, "nix-daemon is not running (start it: nix-daemon &)")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	base, err := os.MkdirTemp("", "nixload-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "nixload.test")
	copyFile(t, self, bin, 0o755)
	work := filepath.Join(base, "work")
	prepareFixture(t, work, uid, gid)

	cmd := exec.Command(bin, "-test.run=^TestScenarioHelper$", "-test.v")
	cmd.Dir = work
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + work, "USER=" + testUser,
		"NIX_CONFIG=" + nixTestConfig, helperEnv + "=" + name, workEnv + "=" + work,
		"CI=" + os.Getenv("CI"),
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: supplementary(t, u)}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scenario %s as %s failed: %v\n%s", name, testUser, err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestScenarioHelper") {
		t.Fatalf("scenario %s as %s did not pass:\n%s", name, testUser, out)
	}
}

func supplementary(t *testing.T, u *user.User) []uint32 {
	ids, err := u.GroupIds()
	if err != nil {
		t.Fatal(err)
	}
	var out []uint32
	for _, s := range ids {
		n, err := strconv.Atoi(s)
		if err == nil {
			out = append(out, uint32(n))
		}
	}
	return out
}

// prepareFixture creates work/flake (fixture + busybox) and hands work to
// uid:gid when they are not -1.
func prepareFixture(t *testing.T, work string, uid, gid int) {
	t.Helper()
	dir := filepath.Join(work, "flake")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join("testdata", "flake", "flake.nix"), filepath.Join(dir, "flake.nix"), 0o644)
	copyFile(t, "/bin/busybox", filepath.Join(dir, "busybox"), 0o755)
	if uid < 0 {
		return
	}
	err := filepath.Walk(work, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	if err := testenv.CopyFile(to, from, mode); err != nil {
		t.Fatal(err)
	}
}

// countingNix writes a nix wrapper that records each invocation, so the
// tests can prove the fast path starts no nix at all.
func countingNix(t *testing.T, work string) (exe string, calls func() int) {
	t.Helper()
	real, err := exec.LookPath("nix")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(work, "wrap")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	count := filepath.Join(dir, "count")
	exe = filepath.Join(dir, "nix")
	script := fmt.Sprintf("#!/bin/sh\necho call >> %q\nexec %q \"$@\"\n", count, real)
	if err := os.WriteFile(exe, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return exe, func() int {
		b, err := os.ReadFile(count)
		if errors.Is(err, os.ErrNotExist) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "call\n")
	}
}

func openStore(t *testing.T, work string) *Store {
	t.Helper()
	s, err := Open(filepath.Join(work, "cache"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return s
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func noLockFile(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "flake.lock")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("flake.lock appeared in %s (err=%v); builds must never write it", dir, err)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func scenarioBuildAndCache(t *testing.T, work string) {
	s := openStore(t, work)
	exe, calls := countingNix(t, work)
	dir := filepath.Join(work, "flake")
	var progress strings.Builder
	src := FlakeSource{Ref: "path:" + dir, NixExe: exe, Progress: &progress}

	if _, ok := s.CachedFlake(src); ok {
		t.Fatal("CachedFlake hit before anything was built")
	}
	img, err := s.LoadFlake(ctxT(t), src)
	if err != nil {
		t.Fatalf("LoadFlake: %v", err)
	}
	if calls() != 1 {
		t.Fatalf("first build ran nix %d times, want 1", calls())
	}
	if img.Layers != 1 || !strings.HasPrefix(img.ChainID, "sha256:") {
		t.Fatalf("image = %+v, want 1 layer and a sha256 chain id", img)
	}
	if !isFile(filepath.Join(img.Rootfs, "bin", "busybox")) {
		t.Fatalf("rootfs %s lacks bin/busybox", img.Rootfs)
	}
	if got := progress.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, "building image from path:"+dir) {
		t.Fatalf("progress on a non-terminal = %q, want one plain line naming the flake", got)
	}
	noLockFile(t, dir)
	roots, _ := filepath.Glob(filepath.Join(s.Root(), "gcroots", "flake-*"))
	if len(roots) != 1 {
		t.Fatalf("gcroots = %v, want one out-link", roots)
	}

	cached, ok := s.CachedFlake(src)
	if !ok || cached.ID != img.ID {
		t.Fatalf("CachedFlake after a build = %v, %v; want the built image", cached, ok)
	}
	again, err := s.LoadFlake(ctxT(t), src)
	if err != nil || again.ID != img.ID {
		t.Fatalf("second LoadFlake = %v, %v", again, err)
	}
	if calls() != 1 {
		t.Fatalf("cached calls ran nix: %d invocations, want 1", calls())
	}

	// Touching a file without changing it keeps the cache valid.
	now := time.Now().Add(time.Minute)
	if err := os.Chtimes(filepath.Join(dir, "flake.nix"), now, now); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.CachedFlake(src); !ok {
		t.Fatal("CachedFlake missed after a touch that changed no content")
	}

	// A result out-link and a .git directory are not inputs.
	if err := os.Symlink(img.Rootfs, filepath.Join(dir, "result")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, ".git"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.CachedFlake(src); !ok {
		t.Fatal("CachedFlake missed after adding result and .git")
	}

	// A real change must rebuild.
	appendFile(t, filepath.Join(dir, "flake.nix"), "\n# changed\n")
	if _, ok := s.CachedFlake(src); ok {
		t.Fatal("CachedFlake hit after flake.nix changed")
	}
	if _, err := s.LoadFlake(ctxT(t), src); err != nil {
		t.Fatalf("rebuild after change: %v", err)
	}
	if calls() != 2 {
		t.Fatalf("rebuild after change ran nix %d times in total, want 2", calls())
	}
	roots, _ = filepath.Glob(filepath.Join(s.Root(), "gcroots", "flake-*"))
	entries, _ := filepath.Glob(filepath.Join(s.Root(), "sources", "flake-*.json"))
	if len(roots) != 1 || len(entries) != 1 {
		t.Fatalf("after a rebuild: gcroots %v, entries %v; want only the newest of each", roots, entries)
	}
	noLockFile(t, dir)
}

func scenarioConcurrent(t *testing.T, work string) {
	s := openStore(t, work)
	exe, calls := countingNix(t, work)
	src := FlakeSource{Ref: "path:" + filepath.Join(work, "flake"), NixExe: exe}
	const n = 6
	type result struct {
		img *Image
		err error
	}
	results := make(chan result, n)
	for i := 0; i < n; i++ {
		go func() {
			img, err := s.LoadFlake(ctxT(t), src)
			results <- result{img, err}
		}()
	}
	chain := ""
	for i := 0; i < n; i++ {
		r := <-results
		if r.err != nil {
			t.Fatalf("concurrent LoadFlake: %v", r.err)
		}
		if chain != "" && r.img.ID != chain {
			t.Fatalf("concurrent callers got different images: %s vs %s", chain, r.img.ID)
		}
		chain = r.img.ID
	}
	if calls() != 1 {
		t.Fatalf("%d concurrent first calls ran nix %d times, want 1", n, calls())
	}
}

func scenarioStreamImage(t *testing.T, work string) {
	s := openStore(t, work)
	dir := filepath.Join(work, "flake")
	flake := filepath.Join(dir, "flake.nix")
	b, err := os.ReadFile(flake)
	if err != nil {
		t.Fatal(err)
	}
	streamed := strings.Replace(string(b), "containerImage = image;", "containerImage = stream;", 1)
	if err := os.WriteFile(flake, []byte(streamed), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := s.LoadFlake(ctxT(t), FlakeSource{Ref: "path:" + dir})
	if err != nil {
		t.Fatalf("LoadFlake of a streamed image: %v", err)
	}
	if img.Layers != 1 || !isFile(filepath.Join(img.Rootfs, "bin", "busybox")) {
		t.Fatalf("streamed image = %+v", img)
	}
	roots, _ := filepath.Glob(filepath.Join(s.Root(), "gcroots", "flake-*"))
	if len(roots) != 1 {
		t.Fatalf("gcroots = %v", roots)
	}
	target, _ := os.Readlink(roots[0])
	if st, err := os.Stat(target); err != nil || st.Mode()&0o111 == 0 {
		t.Fatalf("out-link target %s is not the stream script (%v)", target, err)
	}
}

func scenarioPackagesShapes(t *testing.T, work string) {
	s := openStore(t, work)
	exe, calls := countingNix(t, work)
	dir := filepath.Join(work, "flake")
	cases := []struct {
		name string
		text string
		want []string // files expected in the rootfs
	}{
		{"list", listShape(dir), []string{"bin/hello"}},
		{"attrset", attrsetShape(dir), []string{"bin/hello"}},
		{"function", `{ pkgs, callPackage }: [ pkgs.hello (callPackage ({ cowsay }: cowsay) { }) ]`, []string{"bin/hello", "bin/cowsay"}},
		{"function-attrset", `{ pkgs, callPackage }: { packages = [ pkgs.cowsay ]; }`, []string{"bin/cowsay"}},
	}
	seen := map[string]bool{}
	for i, c := range cases {
		file := filepath.Join(work, c.name+".nix")
		if err := os.WriteFile(file, []byte(c.text), 0o644); err != nil {
			t.Fatal(err)
		}
		src := FlakeSource{Ref: "path:" + dir, NixExe: exe, PackagesFile: file}
		img, err := s.LoadFlake(ctxT(t), src)
		if err != nil {
			t.Fatalf("%s: LoadFlake: %v", c.name, err)
		}
		if img.Layers != 1+len(c.want) {
			t.Fatalf("%s: %d layers, want %d", c.name, img.Layers, 1+len(c.want))
		}
		for _, f := range c.want {
			if !isFile(filepath.Join(img.Rootfs, f)) {
				t.Fatalf("%s: rootfs lacks %s", c.name, f)
			}
		}
		if calls() != i+1 {
			t.Fatalf("%s: nix ran %d times, want %d", c.name, calls(), i+1)
		}
		seen[img.ID] = true
		if _, ok := s.CachedFlake(src); !ok {
			t.Fatalf("%s: CachedFlake missed right after the build", c.name)
		}
	}
	if len(seen) != 3 {
		t.Fatalf("distinct images = %d, want 3 (list and attrset add the same package)", len(seen))
	}

	// Editing the packages file invalidates its cache entry.
	file := filepath.Join(work, "function.nix")
	if err := os.WriteFile(file, []byte(`{ pkgs, callPackage }: [ pkgs.hello ]`), 0o644); err != nil {
		t.Fatal(err)
	}
	src := FlakeSource{Ref: "path:" + dir, NixExe: exe, PackagesFile: file}
	if _, ok := s.CachedFlake(src); ok {
		t.Fatal("CachedFlake hit after the packages file changed")
	}
	img, err := s.LoadFlake(ctxT(t), src)
	if err != nil {
		t.Fatal(err)
	}
	if img.Layers != 2 || isFile(filepath.Join(img.Rootfs, "bin", "cowsay")) {
		t.Fatalf("after editing the packages file: %d layers, cowsay present=%v", img.Layers, isFile(filepath.Join(img.Rootfs, "bin", "cowsay")))
	}

	// A caller's stale variable must not reach nix when no file is given.
	t.Setenv(packagesEnv, file)
	img, err = s.LoadFlake(ctxT(t), FlakeSource{Ref: "path:" + dir, NixExe: exe})
	if err != nil {
		t.Fatal(err)
	}
	if img.Layers != 1 {
		t.Fatalf("without a packages file the image has %d layers, want 1", img.Layers)
	}
	noLockFile(t, dir)
}

// listShape and attrsetShape cannot receive the fixture's pkgs, so they
// reach it through the flake itself, as a user's file would import nixpkgs.
func listShape(dir string) string {
	return `let f = import ` + filepath.Join(dir, "flake.nix") + `; o = f.outputs { self = ` + dir + `; }; in [ o.packages.${builtins.currentSystem}.hello ]`
}

func attrsetShape(dir string) string {
	return `let f = import ` + filepath.Join(dir, "flake.nix") + `; o = f.outputs { self = ` + dir + `; }; in { packages = [ o.packages.${builtins.currentSystem}.hello ]; }`
}

func scenarioBrokenFlake(t *testing.T, work string) {
	s := openStore(t, work)
	exe, calls := countingNix(t, work)
	dir := filepath.Join(work, "flake")
	flake := filepath.Join(dir, "flake.nix")
	good, err := os.ReadFile(flake)
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(good), "containerImage = image;", "containerImage = image + 1;", 1)
	if broken == string(good) {
		t.Fatal("fixture changed: cannot break it")
	}
	if err := os.WriteFile(flake, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	src := FlakeSource{Ref: "path:" + dir, NixExe: exe}

	_, err = s.LoadFlake(ctxT(t), src)
	var be *BuildError
	if !errors.As(err, &be) {
		t.Fatalf("broken flake: err = %v, want a *BuildError", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "cannot coerce") || !strings.Contains(msg, "flake.nix:") {
		t.Fatalf("error does not carry nix's error and location:\n%s", msg)
	}
	if n := strings.Count(msg, "\n"); n > 8 {
		t.Fatalf("error is %d lines, want a short summary:\n%s", n+1, msg)
	}
	if !strings.HasPrefix(be.LogPath, filepath.Join(s.Root(), "logs")+"/") || !isFile(be.LogPath) || !strings.Contains(msg, be.LogPath) {
		t.Fatalf("log path %q not kept under the cache or not named in the error", be.LogPath)
	}
	if be.Cached || calls() != 1 {
		t.Fatalf("first failure: cached=%v nix calls=%d", be.Cached, calls())
	}

	// The failure is remembered: no second nix run for the same inputs.
	_, err = s.LoadFlake(ctxT(t), src)
	if !errors.As(err, &be) || !be.Cached || calls() != 1 {
		t.Fatalf("second call: err=%v calls=%d; want the cached failure without nix", err, calls())
	}
	if !strings.Contains(err.Error(), "--refresh") {
		t.Fatalf("cached failure does not say how to retry: %v", err)
	}
	if _, ok := s.CachedFlake(src); ok {
		t.Fatal("CachedFlake hit for a failed build")
	}

	// --refresh retries.
	src.Refresh = true
	if _, err := s.LoadFlake(ctxT(t), src); err == nil || calls() != 2 {
		t.Fatalf("refresh: err=%v calls=%d; want a new failing nix run", err, calls())
	}
	src.Refresh = false

	// Fixing the flake retries without --refresh.
	if err := os.WriteFile(flake, good, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadFlake(ctxT(t), src); err != nil || calls() != 3 {
		t.Fatalf("after the fix: err=%v calls=%d", err, calls())
	}
	noLockFile(t, dir)
}

func scenarioRefresh(t *testing.T, work string) {
	s := openStore(t, work)
	exe, calls := countingNix(t, work)
	dir := filepath.Join(work, "flake")
	src := FlakeSource{Ref: "path:" + dir, NixExe: exe}
	first, err := s.LoadFlake(ctxT(t), src)
	if err != nil {
		t.Fatal(err)
	}
	src.Refresh = true
	if _, ok := s.CachedFlake(src); ok {
		t.Fatal("CachedFlake answered despite Refresh")
	}
	again, err := s.LoadFlake(ctxT(t), src)
	if err != nil {
		t.Fatal(err)
	}
	if calls() != 2 {
		t.Fatalf("refresh ran nix %d times in total, want 2", calls())
	}
	if again.ID != first.ID {
		t.Fatalf("an unchanged flake rebuilt to a different image: %s vs %s", again.ID, first.ID)
	}
	// The out-link keeps the image alive through nix's garbage collector.
	link := filepath.Join(s.Root(), "gcroots")
	roots, _ := filepath.Glob(filepath.Join(link, "flake-*"))
	if len(roots) != 1 {
		t.Fatalf("gcroots = %v", roots)
	}
	target, err := os.Readlink(roots[0])
	if err != nil || !strings.HasPrefix(target, "/nix/store/") {
		t.Fatalf("out-link %s -> %q (%v)", roots[0], target, err)
	}
	out, err := exec.Command("nix-store", "--gc", "--print-roots").Output()
	if err == nil && !strings.Contains(string(out), roots[0]) {
		t.Fatalf("nix does not list %s as a GC root:\n%s", roots[0], out)
	}
}

func scenarioMissingFlakeNix(t *testing.T, work string) {
	s := openStore(t, work)
	exe, calls := countingNix(t, work)
	empty := filepath.Join(work, "empty")
	if err := os.MkdirAll(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := s.LoadFlake(ctxT(t), FlakeSource{Ref: "path:" + empty, NixExe: exe})
	if err == nil || !strings.Contains(err.Error(), "no flake.nix in "+empty) || calls() != 0 {
		t.Fatalf("err=%v calls=%d; want a clear error and no nix run", err, calls())
	}
	_, err = s.LoadFlake(ctxT(t), FlakeSource{Ref: "path:" + filepath.Join(work, "flake"), NixExe: filepath.Join(work, "no-such-nix")})
	if !errors.Is(err, ErrNixUnavailable) {
		t.Fatalf("missing nix: err = %v, want ErrNixUnavailable", err)
	}
}

func TestResolveFlakeRef(t *testing.T) {
	root := t.TempDir()
	withFlake := filepath.Join(root, "plugin")
	repo := filepath.Join(root, "repo")
	noFlake := filepath.Join(root, "bare")
	for _, d := range []string{withFlake, filepath.Join(repo, "bin"), noFlake} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(withFlake, "flake.nix"), filepath.Join(repo, "flake.nix")} {
		if err := os.WriteFile(f, []byte("{ outputs = _: { }; }"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(root, "data")
	cases := []struct {
		name, flag, env, exe string
		want                 string
		explicit, wantErr    bool
	}{
		{"flag dir", withFlake, "", "", "path:" + withFlake, true, false},
		{"flag ref", "github:owner/repo", "", "", "github:owner/repo", true, false},
		{"flag wins over env", withFlake, "github:a/b", "", "path:" + withFlake, true, false},
		{"flag dir without flake.nix", noFlake, "", "", "", true, true},
		{"flag with attribute", "github:owner/repo#image", "", "", "", true, true},
		{"env dir", "", repo, "", "path:" + repo, true, false},
		{"env without flake.nix", "", noFlake, "", "", true, true},
		{"binary beside flake", "", "", filepath.Join(withFlake, "lectic-nix-sandbox"), "path:" + withFlake, false, false},
		{"binary in repo/bin", "", "", filepath.Join(repo, "bin", "lectic-nix-sandbox"), "path:" + repo, false, false},
		{"installed plugin", "", "", filepath.Join(noFlake, "lectic-nix-sandbox"), "path:" + filepath.Join(data, "plugins", "nix-sandbox"), false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ref, explicit, err := ResolveFlakeRef(c.flag, c.env, c.exe, data)
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, c.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "no flake.nix in") && !strings.Contains(err.Error(), "without #attribute") {
					t.Fatalf("error does not say what is wrong: %v", err)
				}
				return
			}
			if ref != c.want || explicit != c.explicit {
				t.Fatalf("= %q, %v; want %q, %v", ref, explicit, c.want, c.explicit)
			}
		})
	}
}

func TestFlakeKey(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("flake.nix", "{ }")
	nix := filepath.Join(t.TempDir(), "nix")
	if err := os.WriteFile(nix, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	pk := filepath.Join(t.TempDir(), "packages.nix")
	if err := os.WriteFile(pk, []byte("[ ]"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := FlakeSource{Ref: "path:" + dir}
	key := func(src FlakeSource) string {
		t.Helper()
		k, ok, err := s.flakeKey(src, nix)
		if err != nil || !ok {
			t.Fatalf("flakeKey(%+v) = %q, %v, %v", src, k, ok, err)
		}
		return k
	}
	k0 := key(base)
	if key(base) != k0 {
		t.Fatal("key is not stable")
	}
	withPk := base
	withPk.PackagesFile = pk
	withExtra := base
	withExtra.ExtraArgs = []string{"--option", "x", "y"}
	for name, src := range map[string]FlakeSource{"packages file": withPk, "extra args": withExtra} {
		if key(src) == k0 {
			t.Fatalf("%s does not change the key", name)
		}
	}
	kPk := key(withPk)
	if err := os.WriteFile(pk, []byte("[ x ]"), 0o644); err != nil {
		t.Fatal(err)
	}
	if key(withPk) == kPk {
		t.Fatal("packages file content does not change the key")
	}
	write("other.nix", "1")
	k1 := key(base)
	if k1 == k0 {
		t.Fatal("a new file does not change the key")
	}
	if err := os.Chmod(filepath.Join(dir, "other.nix"), 0o755); err != nil {
		t.Fatal(err)
	}
	if key(base) == k1 {
		t.Fatal("the executable bit does not change the key")
	}
	for _, ref := range []string{"github:NixOS/nixpkgs", "git+https://example.org/x", "path:relative/dir"} {
		if _, ok, err := s.flakeKey(FlakeSource{Ref: ref}, nix); ok || err != nil {
			t.Fatalf("flakeKey(%s) cacheable=%v err=%v; non-local refs are never cached", ref, ok, err)
		}
	}
	// A file changed within the same mtime tick and size is still seen,
	// because fresh stat data is never trusted.
	write("flake.nix", "{a}")
	ka := key(base)
	st, _ := os.Stat(filepath.Join(dir, "flake.nix"))
	write("flake.nix", "{b}")
	if err := os.Chtimes(filepath.Join(dir, "flake.nix"), st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if key(base) == ka {
		t.Fatal("same-size change within the same mtime was missed")
	}
}

func TestSummarizeLog(t *testing.T) {
	cases := []struct {
		name, log string
		want      []string
	}{
		{"eval error with location", "warning: Git tree is dirty\n\x1b[31;1merror:\x1b[0m cannot coerce an integer to a string\n\n       at /nix/store/x-source/flake.nix:82:63:\n\n           81| {\n", []string{"error: cannot coerce an integer to a string", "at /nix/store/x-source/flake.nix:82:63:"}},
		{"download error", "error: unable to download 'https://api.github.com/x': Couldn't resolve host name (6)\n(use '--show-trace' to show detailed location information)\n", []string{"error: unable to download 'https://api.github.com/x': Couldn't resolve host name (6)"}},
		{"no error line", "killed\n", []string{"error: nix exited with exit status 1"}},
		{"many errors capped", strings.Repeat("error: x\n", 20), []string{"error: x", "error: x", "error: x", "error: x", "error: x", "error: x"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "log")
			if err := os.WriteFile(p, []byte(c.log), 0o600); err != nil {
				t.Fatal(err)
			}
			got := summarizeLog(p, errors.New("exit status 1"))
			if strings.Join(got, "|") != strings.Join(c.want, "|") {
				t.Fatalf("= %q, want %q", got, c.want)
			}
		})
	}
}

func TestBuildArgsAndEnv(t *testing.T) {
	src := FlakeSource{Ref: "path:/p", PackagesFile: "/abs/pk.nix", ExtraArgs: []string{"--show-trace"}}
	args := strings.Join(buildArgs(src, "/c/gcroots/flake-k"), " ")
	for _, want := range []string{"build", "--extra-experimental-features nix-command flakes", "--no-write-lock-file", "--option connect-timeout 5", "--option download-attempts 1", "--out-link /c/gcroots/flake-k", "--impure", "--show-trace", "path:/p#containerImage"} {
		if !strings.Contains(args, want) {
			t.Fatalf("nix args %q lack %q", args, want)
		}
	}
	if strings.HasSuffix(args, "--show-trace") {
		t.Fatal("the installable must come last")
	}
	if strings.Contains(strings.Join(buildArgs(FlakeSource{Ref: "path:/p"}, "/l"), " "), "--impure") {
		t.Fatal("--impure without a packages file")
	}
	env := buildEnv([]string{"A=1", packagesEnv + "=/stale"}, "")
	if strings.Join(env, ",") != "A=1" {
		t.Fatalf("env = %v, want the stale packages variable removed", env)
	}
	env = buildEnv([]string{"A=1"}, "/abs/pk.nix")
	if strings.Join(env, ",") != "A=1,"+packagesEnv+"=/abs/pk.nix" {
		t.Fatalf("env = %v", env)
	}
}

func TestProgress(t *testing.T) {
	lw := &lastLine{}
	lw.Write([]byte("building '/nix/store/x-hello.drv'...\npartial"))
	if lw.String() != "building '/nix/store/x-hello.drv'..." {
		t.Fatalf("last line = %q", lw.String())
	}
	cases := []struct {
		name     string
		terminal bool
		check    func(t *testing.T, out string)
	}{
		{"plain", false, func(t *testing.T, out string) {
			if out != "lectic-nix-sandbox: building image from path:/p…\n" {
				t.Fatalf("plain progress = %q", out)
			}
		}},
		{"terminal", true, func(t *testing.T, out string) {
			// The spinner shows the build and nix's latest line.
			if !strings.Contains(out, "building image from path:/p") || !strings.Contains(out, "x-hello.drv") {
				t.Fatalf("spinner output = %q", out)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out strings.Builder
			stop := startProgress(FlakeSource{Ref: "path:/p", Progress: &out, Terminal: c.terminal}, lw)
			time.Sleep(150 * time.Millisecond)
			stop()
			c.check(t, out.String())
		})
	}
}

// BenchmarkCachedFlake is the warm path's cost for an installed plugin
// directory: walk and stat the flake files, read two small cache files,
// look the image up. No nix process.
func BenchmarkCachedFlake(b *testing.B) {
	work := b.TempDir()
	dir := filepath.Join(work, "flake")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	for name, size := range map[string]int{"flake.nix": 4000, "lectic.yaml": 1500, "packages.example.nix": 1200, "lectic-nix-sandbox": 12 << 20} {
		if err := os.WriteFile(filepath.Join(dir, name), make([]byte, size), 0o644); err != nil {
			b.Fatal(err)
		}
		old := time.Now().Add(-time.Hour)
		os.Chtimes(filepath.Join(dir, name), old, old)
	}
	s, err := Open(filepath.Join(work, "cache"))
	if err != nil {
		b.Fatal(err)
	}
	nix := filepath.Join(work, "nix")
	if err := os.WriteFile(nix, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		b.Fatal(err)
	}
	src := FlakeSource{Ref: "path:" + dir, NixExe: nix}
	key, _, err := s.flakeKey(src, nix)
	if err != nil {
		b.Fatal(err)
	}
	img, err := s.Host()
	if err != nil {
		b.Fatal(err)
	}
	if err := s.writeFlakeEntry(key, flakeEntry{Ref: src.Ref, ImageID: img.ID}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := s.CachedFlake(src); !ok {
			b.Fatal("miss")
		}
	}
}

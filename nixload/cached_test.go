package nixload

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/fixture"
)

func TestLoadFileCachedSkipsUnchangedFiles(t *testing.T) {
	e := newEnv(t)
	e.store.now = func() time.Time { return time.Now().Add(racyWindow) } // the file is not racy
	layers := []fixture.Layer{busyboxLayer(t)}
	script := filepath.Join(e.dir, "stream")
	if err := fixture.WriteStreamScript(script, layers, nil, fixture.ArchiveOptions{}); err != nil {
		t.Fatal(err)
	}
	// Count the runs: the fast path must not run (or read) the image.
	counter := filepath.Join(e.dir, "runs")
	body := "#!/bin/sh\necho run >> '" + counter + "'\nexec cat '" + script + ".tar'\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	runs := func() int {
		b, _ := os.ReadFile(counter)
		return strings.Count(string(b), "run")
	}
	ctx := context.Background()
	first, err := e.store.LoadFileCached(ctx, FileSource{Path: script}, LoadOptions{})
	if err != nil || first.UnpackedLayers != 1 || runs() != 1 {
		t.Fatalf("first load: %+v %v, %d runs", first, err, runs())
	}
	second, err := e.store.LoadFileCached(ctx, FileSource{Path: script}, LoadOptions{})
	if err != nil || second.ID != first.ID || runs() != 1 {
		t.Fatalf("cached load: %+v %v, %d runs; want no run", second, err, runs())
	}
	if err := os.WriteFile(script, []byte(body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.LoadFileCached(ctx, FileSource{Path: script}, LoadOptions{}); err != nil || runs() != 2 {
		t.Fatalf("changed file: %v, %d runs; want a re-read", err, runs())
	}
	removeAllForce(filepath.Join(e.store.Root(), "trees"))
	os.Mkdir(filepath.Join(e.store.Root(), "trees"), 0o700)
	if img, err := e.store.LoadFileCached(ctx, FileSource{Path: script}, LoadOptions{}); err != nil || runs() != 3 || !exists(img.Rootfs) {
		t.Fatalf("removed rootfs: %v, %d runs; want a reload", err, runs())
	}
}

func TestStreamScriptFailure(t *testing.T) {
	e := newEnv(t)
	script := filepath.Join(e.dir, "broken")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'error: builder exploded' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := e.load(t, script)
	if err == nil || !strings.Contains(err.Error(), "builder exploded") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error %v: want one line quoting the script's stderr", err)
	}
}

// wrapper writes an image script at path: a wrapper around an archive, as
// nix builds one. Scripts for archives whose paths are the same length
// are the same length; like every Nix store file they get mtime 1.
func wrapper(t *testing.T, path, archive string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\nexec cat '"+archive+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, time.Unix(1, 0), time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
}

// twinArchives writes two archives of the same layers, configs V=x and
// V=y, at paths of the same length.
func twinArchives(t *testing.T, e *env) (x, y string) {
	t.Helper()
	layers := []fixture.Layer{busyboxLayer(t)}
	for _, name := range []string{"x", "y"} {
		cfg := fixture.DefaultConfig()
		cfg.Env = append(cfg.Env, "V="+name)
		var buf bytes.Buffer
		if err := fixture.WriteDockerArchive(&buf, layers, &cfg, fixture.ArchiveOptions{}); err != nil {
			t.Fatal(err)
		}
		e.writeBytes(t, name+".tar", buf.Bytes())
	}
	return filepath.Join(e.dir, "x.tar"), filepath.Join(e.dir, "y.tar")
}

func loadEnv(t *testing.T, e *env, src FileSource) string {
	t.Helper()
	img, err := e.store.LoadFileCached(context.Background(), src, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range img.Config.Env {
		if v, ok := strings.CutPrefix(kv, "V="); ok {
			return v
		}
	}
	return ""
}

// TestRebuiltWrapperIsANewImage: a wrapper rebuilt at the same path, of
// the same size, with mtime 1 and (when the file system hands it back) the
// same inode, is told apart by its ctime.
func TestRebuiltWrapperIsANewImage(t *testing.T) {
	e := newEnv(t)
	e.store.now = func() time.Time { return time.Now().Add(racyWindow) } // the file is not racy
	x, y := twinArchives(t, e)
	script := filepath.Join(e.dir, "image")
	wrapper(t, script, x)
	var before syscall.Stat_t
	syscall.Stat(script, &before)
	if v := loadEnv(t, e, FileSource{Path: script}); v != "x" {
		t.Fatalf("first build: V=%s", v)
	}
	os.Remove(script)
	wrapper(t, script, y)
	var after syscall.Stat_t
	syscall.Stat(script, &after)
	if after.Size != before.Size || after.Mtim != before.Mtim {
		t.Fatalf("the rebuilt wrapper differs in size or mtime: the test proves nothing")
	}
	t.Logf("inode reused: %v", after.Ino == before.Ino)
	if v := loadEnv(t, e, FileSource{Path: script}); v != "y" {
		t.Fatalf("rebuilt wrapper: V=%s, want y (the old image was served)", v)
	}
}

// TestResultSymlinkSwitched: `result` pointed at a new build is the new
// image, and what a link resolves to is part of a file's identity even
// where the two targets are one inode.
func TestResultSymlinkSwitched(t *testing.T) {
	e := newEnv(t)
	e.store.now = func() time.Time { return time.Now().Add(racyWindow) }
	x, y := twinArchives(t, e)
	result := filepath.Join(e.dir, "result")
	if err := os.Symlink(x, result); err != nil {
		t.Fatal(err)
	}
	if v := loadEnv(t, e, FileSource{Path: result}); v != "x" {
		t.Fatalf("first build: V=%s", v)
	}
	os.Remove(result)
	if err := os.Symlink(y, result); err != nil {
		t.Fatal(err)
	}
	if v := loadEnv(t, e, FileSource{Path: result}); v != "y" {
		t.Fatalf("switched result: V=%s, want y", v)
	}
	alias := filepath.Join(e.dir, "alias.tar")
	if err := os.Link(y, alias); err != nil {
		t.Fatal(err)
	}
	a, err1 := fileIdentity(FileSource{Path: result}, time.Now())
	os.Remove(result)
	os.Symlink(alias, result)
	b, err2 := fileIdentity(FileSource{Path: result}, time.Now())
	if err1 != nil || err2 != nil || sameIdentity(a, b) {
		t.Fatalf("a link pointed at another name of the same inode keeps its identity: %+v %+v (%v %v)", a, b, err1, err2)
	}
}

// TestRacyEntriesDoNotHit: an entry taken right after its file changed
// only keeps its image from GC; the next call reads the file again.
func TestRacyEntriesDoNotHit(t *testing.T) {
	e := newEnv(t)
	script := filepath.Join(e.dir, "stream")
	if err := fixture.WriteStreamScript(script, []fixture.Layer{busyboxLayer(t)}, nil, fixture.ArchiveOptions{}); err != nil {
		t.Fatal(err)
	}
	counter := filepath.Join(e.dir, "runs")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho run >> '"+counter+"'\nexec cat '"+script+".tar'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := e.store.LoadFileCached(context.Background(), FileSource{Path: script}, LoadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(counter); strings.Count(string(b), "run") != 2 {
		t.Fatalf("a file written just now was taken from the cache: %q", b)
	}
	e.store.now = func() time.Time { return time.Now().Add(racyWindow) }
	for i := 0; i < 2; i++ {
		if _, err := e.store.LoadFileCached(context.Background(), FileSource{Path: script}, LoadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(counter); strings.Count(string(b), "run") != 3 {
		t.Fatalf("an old enough file was read again: %q", b)
	}
}

// TestStorePathIdentity: a file in the Nix store is known by its path.
func TestStorePathIdentity(t *testing.T) {
	// A store path of the test's own: on a fresh machine the store may
	// hold nothing yet, or only directories.
	_, err := exec.LookPath("nix-store")
	need(t, err == nil, "nix-store is not installed (nix-bin)")
	src := filepath.Join(t.TempDir(), "identity.txt")
	if err := os.WriteFile(src, []byte("store path identity "+t.Name()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nix-store", "--add", src).Output()
	need(t, err == nil, "nix-store --add cannot reach a store (run nix-daemon): "+errText(err))
	found := strings.TrimSpace(string(out))
	var st syscall.Stat_t
	if err := syscall.Lstat(found, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Mode&0o222 != 0 || st.Mtim.Sec != 1 {
		t.Fatalf("nix-store --add made %q (%v), not a read-only file of mtime 1 as Nix leaves them", found, err)
	}
	e, err := fileIdentity(FileSource{Path: found}, time.Now())
	if err != nil || !e.Store || e.Real != found || e.Inode != 0 || e.racy() {
		t.Fatalf("identity of %s: %+v %v; want the store path alone", found, e, err)
	}
}

func TestParseFileSource(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "img.tar")
	colon := filepath.Join(dir, "a:b.tar")
	for _, p := range []string{img, colon} {
		os.WriteFile(p, nil, 0o644)
	}
	tests := []struct {
		value, path, ref string
	}{
		{img, img, ""},
		{colon, colon, ""},
		{img + ":busybox:latest", img, "busybox:latest"},
		{img + ":@1", img, "@1"},
		{colon + ":x", colon, "x"},
		{img + ":", img + ":", ""},
		{filepath.Join(dir, "missing:tag"), filepath.Join(dir, "missing:tag"), ""},
	}
	for _, tt := range tests {
		got, err := ParseFileSource(tt.value)
		if err != nil || got.Path != tt.path || got.Ref != tt.ref {
			t.Errorf("ParseFileSource(%q) = %+v, %v; want %q and %q", tt.value, got, err, tt.path, tt.ref)
		}
	}
	// A FILE:REF split holds only while the whole value is no path.
	src, _ := ParseFileSource(img + ":busybox:latest")
	in := FileInputs(src)
	var absent []string
	for _, i := range in[2:] {
		absent = append(absent, i.Path)
	}
	if want := []string{img + ":busybox:latest", img + ":busybox"}; !slices.Equal(absent, want) {
		t.Errorf("FileInputs of a FILE:REF: %v, want %v to stay absent", absent, want)
	}
}

// errText is err's text with a command's stderr, for a skip reason.
func errText(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return strings.TrimSpace(string(ee.Stderr))
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

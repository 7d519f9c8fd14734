package nixload

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/fixture"
)

func TestLoadFormats(t *testing.T) {
	bb := busyboxLayer(t)
	extra := fixture.Layer{Entries: []fixture.Entry{fixture.File("etc/motd", []byte("hello\n"), 0o644)}}
	layers := []fixture.Layer{bb, extra}
	docker := func(opts fixture.ArchiveOptions) func(e *env, t *testing.T) string {
		return func(e *env, t *testing.T) string { return e.writeArchive(t, "img", layers, opts) }
	}
	ociTar := func(opts fixture.ArchiveOptions) func(e *env, t *testing.T) string {
		return func(e *env, t *testing.T) string {
			var buf bytes.Buffer
			if err := fixture.WriteOCITar(&buf, layers, nil, opts); err != nil {
				t.Fatal(err)
			}
			return e.writeBytes(t, "img", buf.Bytes())
		}
	}
	tests := []struct {
		name string
		make func(e *env, t *testing.T) string
	}{
		{"docker manifest last", docker(fixture.ArchiveOptions{})},
		{"docker manifest first", docker(fixture.ArchiveOptions{ManifestFirst: true})},
		{"docker gzip", docker(fixture.ArchiveOptions{Compression: fixture.Gzip})},
		{"docker zstd", docker(fixture.ArchiveOptions{Compression: fixture.Zstd, ManifestFirst: true})},
		{"docker dot-slash names", docker(fixture.ArchiveOptions{DotSlashNames: true})},
		{"docker absolute names", docker(fixture.ArchiveOptions{AbsoluteNames: true})},
		{"docker gzip layers", docker(fixture.ArchiveOptions{LayerCompression: fixture.Gzip})},
		{"docker zstd layers manifest first", docker(fixture.ArchiveOptions{LayerCompression: fixture.Zstd, ManifestFirst: true})},
		{"stream script", func(e *env, t *testing.T) string {
			p := filepath.Join(e.dir, "stream")
			if err := fixture.WriteStreamScript(p, layers, nil, fixture.ArchiveOptions{AbsoluteNames: true}); err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{"oci layout dir", func(e *env, t *testing.T) string {
			p := filepath.Join(e.dir, "layout")
			if err := fixture.WriteOCILayout(p, layers, nil, fixture.ArchiveOptions{LayerCompression: fixture.Gzip}); err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{"oci tar index last", ociTar(fixture.ArchiveOptions{})},
		{"oci tar index first zstd layers", ociTar(fixture.ArchiveOptions{ManifestFirst: true, LayerCompression: fixture.Zstd})},
		{"oci tar gzip", ociTar(fixture.ArchiveOptions{Compression: fixture.Gzip, LayerCompression: fixture.Gzip})},
	}
	want := chainOf(t, layers)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			img, err := e.load(t, tt.make(e, t))
			if err != nil {
				t.Fatal(err)
			}
			if img.ChainID != want || img.Layers != 2 || img.UnpackedLayers != 2 {
				t.Fatalf("got %+v, want chain %s with 2 layers unpacked", img, want)
			}
			assertBusyboxRoot(t, img)
			if got, _ := os.ReadFile(filepath.Join(img.Rootfs, "etc/motd")); string(got) != "hello\n" {
				t.Errorf("etc/motd = %q", got)
			}
			if !slices.Contains(img.Config.Env, "PATH=/usr/bin:/bin") {
				t.Errorf("config env %v lacks PATH", img.Config.Env)
			}
			if got := e.names(t, "tmp"); len(got) != 0 {
				t.Errorf("temp dirs left behind: %v", got)
			}
			again, err := e.load(t, tt.make(e, t))
			if err != nil || again.UnpackedLayers != 0 || again.ChainID != want {
				t.Fatalf("second load: %+v, %v; want nothing unpacked", again, err)
			}
		})
	}
}

func assertBusyboxRoot(t *testing.T, img *Image) {
	t.Helper()
	st, err := os.Stat(filepath.Join(img.Rootfs, "bin/busybox"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("bin/busybox: %v %v", st, err)
	}
	if target, err := os.Readlink(filepath.Join(img.Rootfs, "bin/sh")); err != nil || target != "busybox" {
		t.Fatalf("bin/sh -> %q, %v", target, err)
	}
	if st, err := os.Stat(filepath.Join(img.Rootfs, "tmp")); err != nil || st.Mode()&os.ModeSticky == 0 {
		t.Fatalf("tmp is not sticky: %v %v", st, err)
	}
}

func TestLayersAndRootfsShareInodes(t *testing.T) {
	e := newEnv(t)
	layers := []fixture.Layer{{Entries: []fixture.Entry{
		fixture.File("a", []byte("data"), 0o644),
		fixture.Hardlink("b", "a"),
		fixture.Hardlink("c", "/a"),
		fixture.Symlink("nix/store/abc-foo/bin/tool", "/nix/store/def-bar/bin/tool"),
	}}}
	img, err := e.load(t, e.writeArchive(t, "img", layers, fixture.ArchiveOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(filepath.Join(img.Rootfs, "a"))
	for _, n := range []string{"b", "c"} {
		st, err := os.Stat(filepath.Join(img.Rootfs, n))
		if err != nil || !os.SameFile(a, st) {
			t.Errorf("%s is not a hardlink of a: %v", n, err)
		}
	}
	diff, _ := layers[0].DiffID()
	inLayer, err := os.Stat(filepath.Join(e.store.layerDir(diff), "a"))
	if err != nil || !os.SameFile(a, inLayer) {
		t.Errorf("rootfs file is not a hardlink into the layer: %v", err)
	}
	target, err := os.Readlink(filepath.Join(img.Rootfs, "nix/store/abc-foo/bin/tool"))
	if err != nil || target != "/nix/store/def-bar/bin/tool" {
		t.Errorf("absolute symlink -> %q, %v; want it verbatim", target, err)
	}
}

func TestWhiteouts(t *testing.T) {
	e := newEnv(t)
	lower := fixture.Layer{Entries: []fixture.Entry{
		fixture.File("etc/gone", []byte("x"), 0o644),
		fixture.File("etc/kept", []byte("x"), 0o644),
		fixture.File("d/x", []byte("x"), 0o644),
		fixture.File("d/y", []byte("y"), 0o644),
		fixture.File("o/p", []byte("p"), 0o644),
		fixture.File("o/sub/q", []byte("q"), 0o644),
		fixture.File("f", []byte("file becomes dir"), 0o644),
		fixture.Dir("g/", 0o755),
		fixture.File("g/inner", []byte("dir becomes symlink"), 0o644),
	}}
	upper := fixture.Layer{Entries: []fixture.Entry{
		fixture.Whiteout("etc/gone"),
		fixture.Whiteout("d/x"),
		fixture.File("o/new", []byte("n"), 0o644),
		fixture.Opaque("o"), // after a same-layer entry: hides only lower content
		fixture.File("f/child", []byte("c"), 0o644),
		fixture.Symlink("g", "/elsewhere"),
	}}
	img, err := e.load(t, e.writeArchive(t, "img", []fixture.Layer{lower, upper}, fixture.ArchiveOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path   string
		exists bool
	}{
		{"etc/gone", false}, {"etc/kept", true}, {"d/x", false}, {"d/y", true},
		{"o/new", true}, {"o/p", false}, {"o/sub", false}, {"f/child", true},
		{"etc/.wh.gone", false}, {"o/.wh..wh..opq", false}, {"g/inner", false},
	} {
		_, err := os.Lstat(filepath.Join(img.Rootfs, tc.path))
		if (err == nil) != tc.exists {
			t.Errorf("%s: exists=%v, want %v", tc.path, err == nil, tc.exists)
		}
	}
	if target, _ := os.Readlink(filepath.Join(img.Rootfs, "g")); target != "/elsewhere" {
		t.Errorf("g -> %q, want the upper symlink", target)
	}
}

func TestReadOnlyDirsStayRemovable(t *testing.T) {
	e := newEnv(t)
	layers := []fixture.Layer{{Entries: []fixture.Entry{
		fixture.Dir("nix/", 0o555),
		fixture.Dir("nix/store/", 0o555),
		fixture.Dir("nix/store/abc-pkg/", 0o555),
		fixture.File("nix/store/abc-pkg/f", []byte("x"), 0o444),
		fixture.Dir("nix/store/abc-pkg/empty/", 0o500),
	}}}
	img, err := e.load(t, e.writeArchive(t, "img", layers, fixture.ArchiveOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(img.Rootfs, "nix/store/abc-pkg"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("0555 dir stored as %v (%v), want 0755", st.Mode(), err)
	}
	if err := os.RemoveAll(e.store.Root()); err != nil {
		t.Fatalf("cache not removable: %v", err)
	}
}

func TestModesAndDevices(t *testing.T) {
	e := newEnv(t)
	layers := []fixture.Layer{{Entries: []fixture.Entry{
		fixture.File("bin/su", []byte("x"), 0o4755),
		fixture.File("bin/sg", []byte("x"), 0o2711),
		fixture.Dir("shared/", 0o2775),
		{Name: "dev/null", Type: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		{Name: "dev/sda", Type: tar.TypeBlock, Mode: 0o660, Devmajor: 8},
		{Name: "fifo", Type: tar.TypeFifo, Mode: 0o644},
		{Name: "xa", Type: tar.TypeReg, Mode: 0o644, Body: []byte("x"), Xattrs: map[string]string{"user.ok": "1", "security.capability": "bad", "trusted.t": "bad"}},
	}}}
	var progress bytes.Buffer
	img, err := e.store.LoadFile(context.Background(), e.writeArchive(t, "img", layers, fixture.ArchiveOptions{}), &progress)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{"bin/su": 0o755, "bin/sg": 0o711, "shared": os.ModeDir | 0o775} {
		st, err := os.Stat(filepath.Join(img.Rootfs, path))
		if err != nil || st.Mode()&(os.ModeType|os.ModePerm|os.ModeSetuid|os.ModeSetgid) != want {
			t.Errorf("%s mode %v (%v), want %v", path, st.Mode(), err, want)
		}
	}
	for _, p := range []string{"dev/null", "dev/sda", "fifo"} {
		if _, err := os.Lstat(filepath.Join(img.Rootfs, p)); err == nil {
			t.Errorf("%s was created", p)
		}
	}
	if !strings.Contains(progress.String(), "skipped 3 device") {
		t.Errorf("progress %q does not report the skipped devices", progress.String())
	}
	buf := make([]byte, 64)
	probe := filepath.Join(e.dir, "probe")
	os.WriteFile(probe, nil, 0o644)
	need(t, syscall.Setxattr(probe, "user.probe", []byte("1"), 0) == nil, "the test filesystem has no user xattrs")
	if n, err := syscall.Getxattr(filepath.Join(img.Rootfs, "xa"), "user.ok", buf); err != nil || string(buf[:n]) != "1" {
		t.Errorf("user.ok = %q, %v; want \"1\"", buf[:max(n, 0)], err)
	}
	if _, err := syscall.Getxattr(filepath.Join(img.Rootfs, "xa"), "trusted.t", buf); err == nil {
		t.Error("trusted.* xattr was applied")
	}
}

func TestSharedLayersUnpackOnce(t *testing.T) {
	e := newEnv(t)
	a := []fixture.Layer{busyboxLayer(t), {Entries: []fixture.Entry{fixture.File("a", []byte("a"), 0o644)}}}
	b := append(slices.Clone(a), fixture.Layer{Entries: []fixture.Entry{fixture.File("b", []byte("b"), 0o644)}})
	imgA, err := e.load(t, e.writeArchive(t, "a", a, fixture.ArchiveOptions{}))
	if err != nil || imgA.UnpackedLayers != 2 {
		t.Fatalf("A: %+v %v", imgA, err)
	}
	imgB, err := e.load(t, e.writeArchive(t, "b", b, fixture.ArchiveOptions{Compression: fixture.Gzip}))
	if err != nil {
		t.Fatal(err)
	}
	if imgB.UnpackedLayers != 1 || imgB.Layers != 3 {
		t.Fatalf("B unpacked %d of %d layers, want 1 of 3", imgB.UnpackedLayers, imgB.Layers)
	}
	if got := len(e.names(t, "layers")); got != 3 {
		t.Fatalf("%d layers in store, want 3", got)
	}
}

func TestLookup(t *testing.T) {
	e := newEnv(t)
	layers := []fixture.Layer{busyboxLayer(t)}
	img, err := e.load(t, e.writeArchive(t, "img", layers, fixture.ArchiveOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.store.Lookup(img.ChainID)
	if err != nil || got.Rootfs != img.Rootfs || got.Layers != 1 || got.UnpackedLayers != 0 {
		t.Fatalf("Lookup: %+v %v", got, err)
	}
	if _, err := e.store.Lookup(fixture.Digest([]byte("nothing"))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup of an absent image: %v, want ErrNotFound", err)
	}
	if _, err := e.store.Lookup("sha256:../../etc"); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup of a malformed id: %v, want a format error", err)
	}
}

func TestCleanName(t *testing.T) {
	tests := []struct {
		in   string
		want string
		err  error
	}{
		{"a/b", "a/b", nil},
		{"/abs/x", "abs/x", nil},
		{"./dot/./x/", "dot/x", nil},
		{"//a//b", "a/b", nil},
		{"../x", "", errEscape},
		{"a/../../x", "", errEscape},
		{"a/..", "", errEscape},
		{"a\x00b", "", errNUL},
		{"./", "", nil},
	}
	for _, tt := range tests {
		got, err := cleanName(tt.in)
		if !errors.Is(err, tt.err) || strings.Join(got, "/") != tt.want {
			t.Errorf("cleanName(%q) = %q, %v; want %q, %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestMtimesKept(t *testing.T) {
	e := newEnv(t)
	layers := []fixture.Layer{{Entries: []fixture.Entry{
		fixture.Dir("nix/", 0o555),
		fixture.Dir("nix/store/", 0o555),
		fixture.Dir("nix/store/abc-py/", 0o555),
		fixture.File("nix/store/abc-py/mod.py", []byte("x = 1\n"), 0o444),
		fixture.Symlink("nix/store/abc-py/link", "mod.py"),
	}}}
	img, err := e.load(t, e.writeArchive(t, "img", layers, fixture.ArchiveOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"nix/store/abc-py/mod.py", "nix/store/abc-py/link", "nix/store/abc-py", "nix/store", "nix"} {
		st, err := os.Lstat(filepath.Join(img.Rootfs, p))
		if err != nil || st.ModTime().Unix() != 1 {
			t.Errorf("%s mtime %v (%v), want the image's (1 s after the epoch)", p, st.ModTime(), err)
		}
	}
}

// TestLayerNamedAfterCachedLayer covers the streamLayeredImage shortcut:
// a member named after a cached layer is only hashed, and must match.
func TestLayerNamedAfterCachedLayer(t *testing.T) {
	e := newEnv(t)
	cached := fixture.Layer{Entries: []fixture.Entry{fixture.File("a", []byte("a"), 0o644)}}
	if _, err := e.load(t, e.writeArchive(t, "first", []fixture.Layer{cached}, fixture.ArchiveOptions{})); err != nil {
		t.Fatal(err)
	}
	cachedID, _ := cached.DiffID()
	impostor := fixture.Layer{Entries: []fixture.Entry{fixture.File("evil", []byte("x"), 0o644)}}
	body, err := impostor.Tar()
	if err != nil {
		t.Fatal(err)
	}
	config := `{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["` + fixture.Digest(body) + `"]}}`
	name := strings.TrimPrefix(cachedID, "sha256:") + "/layer.tar"
	manifest := `[{"Config":"c.json","Layers":["` + name + `"]}]`
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range []struct {
		name string
		body []byte
	}{{name, body}, {"c.json", []byte(config)}, {"manifest.json", []byte(manifest)}} {
		tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.body)), Typeflag: tar.TypeReg})
		tw.Write(m.body)
	}
	tw.Close()
	_, err = e.load(t, e.writeBytes(t, "impostor", buf.Bytes()))
	if err == nil || !strings.Contains(err.Error(), "its name promises content") {
		t.Fatalf("impostor layer: %v, want a name/content mismatch error", err)
	}
	if got := len(e.names(t, "layers")); got != 1 {
		t.Fatalf("%d layers published, want only the first image's", got)
	}
}

// TestDockerSaveLegacyMembers covers `docker save`'s v1 extras: VERSION and
// json files beside each layer, and a duplicate layer stored as a symlink.
func TestDockerSaveLegacyMembers(t *testing.T) {
	e := newEnv(t)
	layer := fixture.Layer{Entries: []fixture.Entry{fixture.File("a", []byte("a"), 0o644)}}
	body, err := layer.Tar()
	if err != nil {
		t.Fatal(err)
	}
	d := fixture.Digest(body)
	config := `{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["` + d + `","` + d + `"]}}`
	manifest := `[{"Config":"c.json","Layers":["one/layer.tar","two/layer.tar"]}]`
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, b []byte) {
		h.Size = int64(len(b))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	add(&tar.Header{Name: "one/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	add(&tar.Header{Name: "one/VERSION", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("1.0"))
	add(&tar.Header{Name: "one/json", Typeflag: tar.TypeReg, Mode: 0o644}, []byte(`{"id":"one"}`))
	add(&tar.Header{Name: "one/layer.tar", Typeflag: tar.TypeReg, Mode: 0o644}, body)
	add(&tar.Header{Name: "two/layer.tar", Typeflag: tar.TypeSymlink, Linkname: "../one/layer.tar"}, nil)
	add(&tar.Header{Name: "c.json", Typeflag: tar.TypeReg, Mode: 0o644}, []byte(config))
	add(&tar.Header{Name: "manifest.json", Typeflag: tar.TypeReg, Mode: 0o644}, []byte(manifest))
	tw.Close()
	img, err := e.load(t, e.writeBytes(t, "legacy", buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if img.Layers != 2 || img.UnpackedLayers != 1 || img.ChainID != fixture.ChainID([]string{d, d}) {
		t.Fatalf("got %+v", img)
	}
}

func TestSameLayersNewConfig(t *testing.T) {
	e := newEnv(t)
	layers := []fixture.Layer{busyboxLayer(t)}
	load := func(name string, env string) *Image {
		cfg := fixture.DefaultConfig()
		cfg.Env = append(cfg.Env, env)
		var buf bytes.Buffer
		if err := fixture.WriteDockerArchive(&buf, layers, &cfg, fixture.ArchiveOptions{}); err != nil {
			t.Fatal(err)
		}
		img, err := e.load(t, e.writeBytes(t, name, buf.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	a, b := load("a", "V=a"), load("b", "V=b")
	if a.ChainID != b.ChainID || !slices.Contains(b.Config.Env, "V=b") {
		t.Fatalf("second config not returned: %v", b.Config.Env)
	}
	looked, err := e.store.Lookup(b.ChainID)
	if err != nil || !slices.Contains(looked.Config.Env, "V=b") {
		t.Fatalf("Lookup after a config change: %v %v", looked.Config.Env, err)
	}
}

func TestCancelledLoadPublishesNothing(t *testing.T) {
	e := newEnv(t)
	path := e.writeArchive(t, "img", []fixture.Layer{busyboxLayer(t)}, fixture.ArchiveOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.store.LoadFile(ctx, path, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled load: %v, want context.Canceled", err)
	}
	for _, sub := range []string{"layers", "rootfs", "tmp"} {
		if got := e.names(t, sub); len(got) != 0 {
			t.Errorf("%s/ holds %v after a cancelled load", sub, got)
		}
	}
}

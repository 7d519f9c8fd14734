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
	"time"

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
	// The tree is sealed: the image's modes without write permission.
	st, err := os.Stat(filepath.Join(img.Rootfs, "bin/busybox"))
	if err != nil || st.Mode().Perm() != 0o555 {
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

// TestImageModesInTheTree: the tree shows the image's own modes, down to
// 0555 directories, 0000 ones and 0400 files, also where a later layer
// adds to a directory without listing it; the store can still remove it.
func TestImageModesInTheTree(t *testing.T) {
	e := newEnv(t)
	lower := fixture.Layer{Entries: []fixture.Entry{
		fixture.Dir("./", 0o555),
		fixture.Dir("nix/", 0o555),
		fixture.Dir("nix/store/", 0o555),
		fixture.Dir("nix/store/abc-pkg/", 0o555),
		fixture.File("nix/store/abc-pkg/f", []byte("x"), 0o444),
		fixture.File("nix/store/abc-pkg/secret", []byte("x"), 0o400),
		fixture.Dir("nix/store/abc-pkg/empty/", 0o500),
		fixture.Dir("locked/", 0o000),
		fixture.File("locked/inside", []byte("x"), 0o644),
		fixture.Dir("sticky/", 0o1777),
		fixture.Dir("later/", 0o555),
	}}
	// The upper layer adds to nix/store without listing it (its parent
	// dirs are implicit: the lower 0555 stands) and lists later/ anew.
	upper := fixture.Layer{Entries: []fixture.Entry{
		fixture.File("nix/store/def-pkg/g", []byte("y"), 0o444),
		fixture.Dir("later/", 0o750),
	}}
	img, err := e.load(t, e.writeArchive(t, "img", []fixture.Layer{lower, upper}, fixture.ArchiveOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		".":                        os.ModeDir | 0o555,
		"nix":                      os.ModeDir | 0o555,
		"nix/store":                os.ModeDir | 0o555,
		"nix/store/abc-pkg":        os.ModeDir | 0o555,
		"nix/store/abc-pkg/f":      0o444,
		"nix/store/abc-pkg/secret": 0o400,
		"nix/store/abc-pkg/empty":  os.ModeDir | 0o500,
		"nix/store/def-pkg":        os.ModeDir | 0o755,
		"locked":                   os.ModeDir,
		"sticky":                   os.ModeDir | os.ModeSticky | 0o777,
		"later":                    os.ModeDir | 0o750,
	} {
		// The tree is sealed: the image's modes without the owner's
		// write bit (sealTree).
		want &^= 0o200
		st, err := os.Lstat(filepath.Join(img.Rootfs, path))
		if err != nil || st.Mode() != want {
			t.Errorf("%s: mode %v (%v), want %v", path, st.Mode(), err, want)
		}
	}
	// Read-only to its owner too: nothing is planted in a directory the
	// image made writable (root ignores modes).
	if os.Getuid() != 0 {
		if err := os.WriteFile(filepath.Join(img.Rootfs, "nix/store/def-pkg/planted"), nil, 0o644); err == nil {
			t.Error("a file was planted in a sealed tree")
		}
	}
	// The layers themselves stay the store's to change and remove.
	for _, l := range []fixture.Layer{lower, upper} {
		d, _ := l.DiffID()
		st, err := os.Stat(filepath.Join(e.store.layerDir(d), "nix"))
		if err != nil || st.Mode().Perm()&0o700 != 0o700 {
			t.Errorf("layer %s keeps nix/ as %v (%v), want u+rwx", short(d), st.Mode(), err)
		}
	}
	os.Remove(filepath.Join(e.store.Root(), "sources"))
	if _, err := e.store.GC(nil, nil); err != nil {
		t.Fatalf("GC of a tree with read-only directories: %v", err)
	}
	if got := e.names(t, "trees"); len(got) != 0 {
		t.Fatalf("GC left %v", got)
	}
}

// TestEntryKinds: FIFOs are made, hardlinks may point at any non-directory
// entry (a symlink, a FIFO), devices are left out with a notice.
func TestEntryKinds(t *testing.T) {
	e := newEnv(t)
	layers := []fixture.Layer{{Entries: []fixture.Entry{
		fixture.File("bin/busybox", []byte("bb"), 0o755),
		fixture.Symlink("bin/x", "busybox"),
		fixture.Hardlink("bin/y", "bin/x"),
		{Name: "run/fifo", Type: tar.TypeFifo, Mode: 0o640},
		fixture.Hardlink("run/fifo2", "run/fifo"),
		{Name: "dev/null", Type: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		{Name: "dev/sda", Type: tar.TypeBlock, Mode: 0o660, Devmajor: 8},
	}}}
	var notices bytes.Buffer
	img, err := e.store.LoadFile(context.Background(), e.writeArchive(t, "img", layers, fixture.ArchiveOptions{}), LoadOptions{Notices: &notices})
	if err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(img.Rootfs, "bin/y")); err != nil || target != "busybox" {
		t.Errorf("bin/y (a hardlink to the symlink bin/x) -> %q, %v; want busybox", target, err)
	}
	for _, p := range []string{"run/fifo", "run/fifo2"} {
		st, err := os.Lstat(filepath.Join(img.Rootfs, p))
		if err != nil || st.Mode() != os.ModeNamedPipe|0o640 {
			t.Errorf("%s: %v (%v), want a 0640 FIFO", p, st.Mode(), err)
		}
	}
	for _, p := range []string{"dev/null", "dev/sda"} {
		if _, err := os.Lstat(filepath.Join(img.Rootfs, p)); err == nil {
			t.Errorf("%s was created", p)
		}
	}
	n := notices.String()
	if strings.Count(n, "\n") != 1 || !strings.Contains(n, "2 device node(s) (dev/null, dev/sda)") {
		t.Errorf("notices %q: want one line naming the two device nodes", n)
	}
}

func TestModesAndXattrs(t *testing.T) {
	e := newEnv(t)
	layers := []fixture.Layer{{Entries: []fixture.Entry{
		fixture.File("bin/su", []byte("x"), 0o4755),
		fixture.File("bin/sg", []byte("x"), 0o2711),
		fixture.Dir("shared/", 0o2775),
		{Name: "xa", Type: tar.TypeReg, Mode: 0o644, Body: []byte("x"), Xattrs: map[string]string{"user.ok": "1", "security.capability": "bad", "trusted.t": "bad"}},
	}}}
	img, err := e.load(t, e.writeArchive(t, "img", layers, fixture.ArchiveOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	// The tree is sealed: no owner write bit (sealTree).
	for path, want := range map[string]os.FileMode{"bin/su": 0o555, "bin/sg": 0o511, "shared": os.ModeDir | 0o575} {
		st, err := os.Stat(filepath.Join(img.Rootfs, path))
		if err != nil || st.Mode()&(os.ModeType|os.ModePerm|os.ModeSetuid|os.ModeSetgid) != want {
			t.Errorf("%s mode %v (%v), want %v", path, st.Mode(), err, want)
		}
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
	if got := len(e.layers(t)); got != 3 {
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
	got, err := e.store.Lookup(img.ID)
	if err != nil || got.Rootfs != img.Rootfs || got.Layers != 1 || got.UnpackedLayers != 0 || got.ChainID != img.ChainID {
		t.Fatalf("Lookup: %+v %v", got, err)
	}
	if _, err := e.store.Lookup(img.ChainID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup of a chain id: %v, want ErrNotFound (an image is named by its config)", err)
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
	if got := len(e.layers(t)); got != 1 {
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

// TestConfigOnlyTwins: two images with the same layers and different
// configs share the tree, never the config, whatever order they are
// loaded and looked up in, from the file or from the source cache.
func TestConfigOnlyTwins(t *testing.T) {
	e := newEnv(t)
	e.store.now = func() time.Time { return time.Now().Add(racyWindow) } // the files are not racy
	layers := []fixture.Layer{busyboxLayer(t)}
	counter := filepath.Join(e.dir, "runs")
	write := func(name, env string) string {
		cfg := fixture.DefaultConfig()
		cfg.Env = append(cfg.Env, env)
		p := filepath.Join(e.dir, name)
		if err := fixture.WriteStreamScript(p, layers, &cfg, fixture.ArchiveOptions{}); err != nil {
			t.Fatal(err)
		}
		body := "#!/bin/sh\necho " + name + " >> '" + counter + "'\nexec cat '" + p + ".tar'\n"
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	x, y := write("x", "V=x"), write("y", "V=y")
	ids := map[string]string{}
	for i, f := range []string{x, y, x, y} {
		img, err := e.store.LoadFileCached(context.Background(), FileSource{Path: f}, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := "V=" + filepath.Base(f)
		if !slices.Contains(img.Config.Env, want) {
			t.Fatalf("load %d of %s: env %v, want %s", i, f, img.Config.Env, want)
		}
		if id, ok := ids[f]; ok && id != img.ID {
			t.Fatalf("%s loaded as %s, then as %s", f, id, img.ID)
		}
		ids[f] = img.ID
		if img.ChainID != chainOf(t, layers) || img.Rootfs != filepath.Join(e.store.Root(), "trees", hexPart(img.ChainID), "root") {
			t.Fatalf("load %d: %+v, want the shared tree", i, img)
		}
		looked, err := e.store.Lookup(img.ID)
		if err != nil || !slices.Contains(looked.Config.Env, want) {
			t.Fatalf("Lookup(%s): %v %v", img.ID, looked.Config.Env, err)
		}
	}
	if runs, _ := os.ReadFile(counter); string(runs) != "x\ny\n" {
		t.Fatalf("image scripts ran %q, want each once (the second round from the source cache)", runs)
	}
	if ids[x] == ids[y] {
		t.Fatalf("both twins have id %s", ids[x])
	}
	if got := len(e.names(t, "trees")); got != 1 {
		t.Fatalf("%d trees, want 1 shared", got)
	}
}

func TestCancelledLoadPublishesNothing(t *testing.T) {
	e := newEnv(t)
	path := e.writeArchive(t, "img", []fixture.Layer{busyboxLayer(t)}, fixture.ArchiveOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.store.LoadFile(ctx, path, LoadOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled load: %v, want context.Canceled", err)
	}
	for _, sub := range []string{"layers", "trees", "images", "tmp"} {
		if got := e.names(t, sub); len(got) != 0 {
			t.Errorf("%s/ holds %v after a cancelled load", sub, got)
		}
	}
}

// TestHolesStayHoles: a sparse file, and runs of zeros a compressor made
// tiny, take no space on disk.
func TestHolesStayHoles(t *testing.T) {
	const size = 2 << 30
	e := newEnv(t)
	zeros := make([]byte, 16<<20)
	copy(zeros[1<<20:], "in the middle")
	layers := []fixture.Layer{{Entries: []fixture.Entry{
		fixture.Sparse("sparse", size, 0o644,
			fixture.SparseChunk{Offset: 0, Data: []byte("head")},
			fixture.SparseChunk{Offset: size - 4, Data: []byte("tail")}),
		fixture.File("zeros", zeros, 0o644),
	}}}
	path := e.writeArchive(t, "img", layers, fixture.ArchiveOptions{LayerCompression: fixture.Gzip})
	if st, _ := os.Stat(path); st.Size() > 1<<20 {
		t.Fatalf("the archive is %d bytes", st.Size())
	}
	img, err := e.load(t, path)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]map[int64]string{
		"sparse": {0: "head", size - 4: "tail", size / 2: "\x00\x00\x00\x00"},
		"zeros":  {1 << 20: "in the middle", 0: "\x00\x00", 16<<20 - 2: "\x00\x00"},
	} {
		p := filepath.Join(img.Rootfs, name)
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Blocks*512 > 1<<20 {
			t.Errorf("%s takes %d bytes on disk, want its holes kept", name, st.Blocks*512)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		for off, s := range want {
			got := make([]byte, len(s))
			if _, err := f.ReadAt(got, off); err != nil || string(got) != s {
				t.Errorf("%s at %d: %q %v, want %q", name, off, got, err, s)
			}
		}
		f.Close()
	}
	// The holes count towards the cap: it is about what an image unpacks to.
	small := newEnv(t, WithLimits(Limits{MaxTotalBytes: 1 << 30, MaxEntries: 100}))
	_, err = small.load(t, small.writeArchive(t, "img", layers, fixture.ArchiveOptions{}))
	var le *LimitError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "the image unpacks to more than 1GiB, the limit for one image; if you trust it, raise the limit with --max-image-size") {
		t.Fatalf("over the cap: %v", err)
	}
	for _, sub := range []string{"layers", "trees", "images", "tmp"} {
		if got := small.names(t, sub); len(got) != 0 {
			t.Errorf("%s/ holds %v after the cap stopped a load", sub, got)
		}
	}
}

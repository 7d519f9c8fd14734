package nixload

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/fixture"
)

// twoImages are images of the same base layer with different configs and
// tops, as `podman save -m a b` writes them.
func twoImages(t *testing.T) []fixture.Image {
	t.Helper()
	bb := busyboxLayer(t)
	img := func(tag, env string, top string) fixture.Image {
		cfg := fixture.DefaultConfig()
		cfg.Env = append(cfg.Env, env)
		return fixture.Image{Layers: []fixture.Layer{bb, {Entries: []fixture.Entry{fixture.File(top, []byte(top), 0o644)}}},
			Config: &cfg, Tags: []string{tag}}
	}
	return []fixture.Image{img("localhost/alpha:latest", "WHO=alpha", "a"), img("docker.io/library/beta:2", "WHO=beta", "b")}
}

func TestMultiImageArchives(t *testing.T) {
	imgs := twoImages(t)
	docker := func(manifestFirst bool) func(e *env, t *testing.T) string {
		return func(e *env, t *testing.T) string {
			var buf bytes.Buffer
			if err := fixture.WriteDockerArchiveImages(&buf, imgs, fixture.ArchiveOptions{ManifestFirst: manifestFirst}); err != nil {
				t.Fatal(err)
			}
			return e.writeBytes(t, "two.tar", buf.Bytes())
		}
	}
	formats := []struct {
		name string
		make func(e *env, t *testing.T) string
	}{
		{"docker-archive", docker(false)},
		{"docker-archive manifest first", docker(true)},
		{"oci tar", func(e *env, t *testing.T) string {
			var buf bytes.Buffer
			if err := fixture.WriteOCIImagesTar(&buf, imgs, fixture.ArchiveOptions{ManifestFirst: true}); err != nil {
				t.Fatal(err)
			}
			return e.writeBytes(t, "two.tar", buf.Bytes())
		}},
		{"oci layout dir", func(e *env, t *testing.T) string {
			dir := filepath.Join(e.dir, "two")
			if err := fixture.WriteOCIImagesLayout(dir, imgs, fixture.ArchiveOptions{}); err != nil {
				t.Fatal(err)
			}
			return dir
		}},
	}
	picks := []struct {
		ref     string
		want    string // WHO=…; "" for an error
		wantErr string
	}{
		{"", "", "the archive holds 2 images (localhost/alpha:latest, docker.io/library/beta:2): name one as "},
		{"localhost/alpha:latest", "alpha", ""},
		{"alpha", "alpha", ""},
		{"alpha:latest", "alpha", ""},
		{"beta:2", "beta", ""},
		{"docker.io/beta:2", "beta", ""},
		{"2", "beta", ""},
		{"@0", "alpha", ""},
		{"@1", "beta", ""},
		{"@2", "", `no image "@2" in the archive; it holds localhost/alpha:latest, docker.io/library/beta:2`},
		{"gamma", "", `no image "gamma" in the archive`},
		{"beta", "", `no image "beta" in the archive`}, // beta:latest is not beta:2
	}
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			e := newEnv(t)
			path := f.make(e, t)
			for _, p := range picks {
				img, err := e.store.LoadFile(context.Background(), path, LoadOptions{Ref: p.ref})
				if p.want == "" {
					var ce *ImageRefError
					if err == nil || !errors.As(err, &ce) || !strings.Contains(err.Error(), p.wantErr) || strings.Contains(err.Error(), "\n") {
						t.Fatalf("ref %q: %v, want one line containing %q", p.ref, err, p.wantErr)
					}
					if p.ref == "" && !strings.Contains(err.Error(), "for example "+path+":localhost/alpha:latest") {
						t.Errorf("ref %q: %v: want an example naming %s", p.ref, err, path)
					}
					continue
				}
				if err != nil {
					t.Fatalf("ref %q: %v", p.ref, err)
				}
				if !slices.Contains(img.Config.Env, "WHO="+p.want) {
					t.Fatalf("ref %q: env %v, want WHO=%s", p.ref, img.Config.Env, p.want)
				}
			}
			// A refused archive with the manifest first is refused before
			// anything is unpacked.
			if f.name == "docker-archive manifest first" {
				e2 := newEnv(t)
				path := f.make(e2, t)
				if _, err := e2.store.LoadFile(context.Background(), path, LoadOptions{}); err == nil {
					t.Fatal("loaded without a candidate")
				}
				if got := e2.layers(t); len(got) != 0 {
					t.Fatalf("layers unpacked for a refused archive: %v", got)
				}
			}
		})
	}
}

func TestOCIPlatforms(t *testing.T) {
	bb := busyboxLayer(t)
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	cfg := func(who string) *ocispec.ImageConfig {
		c := fixture.DefaultConfig()
		c.Env = append(c.Env, "WHO="+who)
		return &c
	}
	plat := func(arch string) *ocispec.Platform { return &ocispec.Platform{OS: "linux", Architecture: arch} }
	tests := []struct {
		name    string
		imgs    []fixture.Image
		want    string
		wantErr string
	}{
		{"one platform, another machine", []fixture.Image{{Layers: []fixture.Layer{bb}, Platform: plat(other)}},
			"", "the image is for linux/" + other + " only; this machine is linux/" + runtime.GOARCH},
		{"one platform, this machine", []fixture.Image{{Layers: []fixture.Layer{bb}, Config: cfg("here"), Platform: plat(runtime.GOARCH)}}, "here", ""},
		{"two platforms of one image", []fixture.Image{
			{Layers: []fixture.Layer{bb}, Config: cfg("there"), Platform: plat(other)},
			{Layers: []fixture.Layer{bb}, Config: cfg("here"), Platform: plat(runtime.GOARCH)},
		}, "here", ""},
		{"two platforms of one tagged image", []fixture.Image{
			{Layers: []fixture.Layer{bb}, Config: cfg("there"), Platform: plat(other), Tags: []string{"x:1"}},
			{Layers: []fixture.Layer{bb}, Config: cfg("here"), Platform: plat(runtime.GOARCH), Tags: []string{"x:1"}},
		}, "here", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			var buf bytes.Buffer
			if err := fixture.WriteOCIImagesTar(&buf, tt.imgs, fixture.ArchiveOptions{}); err != nil {
				t.Fatal(err)
			}
			img, err := e.load(t, e.writeBytes(t, "img.tar", buf.Bytes()))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("%v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Contains(img.Config.Env, "WHO="+tt.want) {
				t.Fatalf("%v %v, want WHO=%s", img, err, tt.want)
			}
		})
	}
}

func TestNotAnImage(t *testing.T) {
	bb := busyboxLayer(t)
	tests := []struct {
		name    string
		make    func(e *env, t *testing.T) string
		wantErr string
	}{
		{"source tarball with an inner tar", func(e *env, t *testing.T) string {
			var buf bytes.Buffer
			if err := fixture.WriteSourceTarball(&buf, false); err != nil {
				t.Fatal(err)
			}
			return e.writeBytes(t, "pkg.tar", buf.Bytes())
		}, "not an image: the tar has no manifest.json or index.json at its top"},
		{"source tarball with deep directories", func(e *env, t *testing.T) string {
			var buf bytes.Buffer
			if err := fixture.WriteSourceTarball(&buf, true); err != nil {
				t.Fatal(err)
			}
			return e.writeBytes(t, "pkg.tar", buf.Bytes())
		}, "not an image: the tar holds pkg-1.0/src/lib/util.c"},
		{"dir: layout in a tar", func(e *env, t *testing.T) string {
			var buf bytes.Buffer
			if err := fixture.WriteDirLayoutTar(&buf, []fixture.Layer{bb}, nil); err != nil {
				t.Fatal(err)
			}
			return e.writeBytes(t, "dir.tar", buf.Bytes())
		}, "this is a containers-image dir: layout packed in a tar, which is not an image archive; unpack it and convert it with skopeo copy dir:DIR oci-archive:IMAGE.tar"},
		{"dir: layout directory", func(e *env, t *testing.T) string {
			dir := filepath.Join(e.dir, "dirlayout")
			if err := fixture.WriteDirLayout(dir, []fixture.Layer{bb}, nil); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "is a containers-image dir: layout, which is not supported: convert it with skopeo copy dir:"},
		{"plain directory", func(e *env, t *testing.T) string { return e.canary }, "a directory must be an OCI image layout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			path := tt.make(e, t)
			_, err := e.load(t, path)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("%v, want one line containing %q", err, tt.wantErr)
			}
			for _, sub := range []string{"layers", "trees", "images", "tmp"} {
				if got := e.names(t, sub); len(got) != 0 {
					t.Errorf("%s/ holds %v after a refusal", sub, got)
				}
			}
		})
	}
}

func TestMatchRef(t *testing.T) {
	tests := []struct {
		ref, name string
		want      bool
	}{
		{"busybox", "busybox:latest", true},
		{"busybox", "docker.io/library/busybox:latest", true},
		{"busybox:latest", "docker.io/library/busybox", true},
		{"foo", "localhost/foo:latest", true},
		{"localhost/foo", "foo:latest", true},
		{"quay.io/x/foo:1", "quay.io/x/foo:1", true},
		{"quay.io/x/foo", "quay.io/x/foo:1", false},
		{"1", "quay.io/x/foo:1", true}, // a bare tag
		{"foo", "bar:foo", true},
		{"localhost:5000/foo:1", "localhost:5000/foo:1", true},
		{"localhost:5000/foo", "localhost:5000/foo:1", false},
		{"foo@sha256:abc", "foo@sha256:abc", true},
		{"bar", "foo:latest", false},
	}
	for _, tt := range tests {
		if got := matchRef(tt.ref, tt.name); got != tt.want {
			t.Errorf("matchRef(%q, %q) = %v, want %v", tt.ref, tt.name, got, tt.want)
		}
	}
}

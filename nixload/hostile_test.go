package nixload

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/fixture"
)

// TestHostileImagesAreRejected checks that each hostile image fails with a
// clear error, changes nothing outside the store and publishes nothing.
func TestHostileImagesAreRejected(t *testing.T) {
	bb := busyboxLayer(t)
	file := fixture.File
	tests := []struct {
		name    string
		entries func(canary string) []fixture.Entry
		opts    fixture.ArchiveOptions
		raw     func(t *testing.T, good []byte) []byte // replaces the archive
		limits  *Limits
		noBase  bool // the hostile layer alone, without busybox
		wantErr string
	}{
		{name: "dotdot escape", entries: func(string) []fixture.Entry {
			return []fixture.Entry{file("../../canary/file", []byte("pwned"), 0o644)}
		}, wantErr: `entry "../../canary/file": path escapes the image root`},
		{name: "dotdot inside path", entries: func(string) []fixture.Entry {
			return []fixture.Entry{file("a/../../canary/new", []byte("pwned"), 0o644)}
		}, wantErr: "path escapes the image root"},
		{name: "write through absolute symlink", entries: func(c string) []fixture.Entry {
			return []fixture.Entry{fixture.Symlink("link", c), file("link/pwned", []byte("pwned"), 0o644)}
		}, wantErr: `entry "link/pwned"`},
		{name: "write through relative symlink", entries: func(c string) []fixture.Entry {
			return []fixture.Entry{fixture.Symlink("link", strings.Repeat("../", 20)+strings.TrimPrefix(c, "/")), file("link/file", []byte("pwned"), 0o644)}
		}, wantErr: `entry "link/file"`},
		{name: "hardlink to host path", entries: func(c string) []fixture.Entry {
			return []fixture.Entry{fixture.Hardlink("h", filepath.Join(c, "file"))}
		}, wantErr: "is not an entry already in this layer"},
		{name: "hardlink via dotdot", entries: func(string) []fixture.Entry {
			return []fixture.Entry{fixture.Hardlink("h", "../../canary/file")}
		}, wantErr: "path escapes the image root"},
		{name: "hardlink through a symlinked dir", entries: func(c string) []fixture.Entry {
			return []fixture.Entry{fixture.Symlink("s", c), fixture.Hardlink("h", "s/file")}
		}, wantErr: "is not an entry already in this layer"},
		{name: "whiteout of the directory itself", entries: func(string) []fixture.Entry {
			return []fixture.Entry{file("etc/.wh..", nil, 0o644)}
		}, wantErr: `entry "etc/.wh..": invalid whiteout`},
		{name: "whiteout of the parent", entries: func(string) []fixture.Entry {
			return []fixture.Entry{file("etc/.wh...", nil, 0o644)}
		}, wantErr: `entry "etc/.wh...": invalid whiteout`},
		{name: "whiteout named as a directory", entries: func(string) []fixture.Entry {
			return []fixture.Entry{fixture.Dir("etc/.wh../", 0o755)}
		}, wantErr: `entry "etc/.wh../": invalid whiteout`},
		{name: "header claims 1 TiB", entries: func(string) []fixture.Entry {
			return []fixture.Entry{{Name: "big", Type: tar.TypeReg, Mode: 0o644, Body: []byte("x"), Size: 1 << 40}}
		}, wantErr: "the image unpacks to more than 32GiB, the limit"},
		{name: "too many entries", entries: func(string) []fixture.Entry {
			return []fixture.Entry{file("a", nil, 0o644), file("b", nil, 0o644), file("c", nil, 0o644)}
		}, limits: &Limits{MaxTotalBytes: 1 << 30, MaxEntries: 2}, noBase: true, wantErr: "more entries than the limit"},
		{name: "too many bytes", entries: func(string) []fixture.Entry {
			return []fixture.Entry{file("a", make([]byte, 600), 0o644), file("b", make([]byte, 600), 0o644)}
		}, limits: &Limits{MaxTotalBytes: 1000, MaxEntries: 100}, noBase: true, wantErr: "the image unpacks to more than 1000 bytes, the limit for one image"},
		{name: "diff_id mismatch", opts: fixture.ArchiveOptions{CorruptDiffID: true}, wantErr: "does not match diff_id"},
		{name: "diff_id mismatch manifest first", opts: fixture.ArchiveOptions{CorruptDiffID: true, ManifestFirst: true}, wantErr: "does not match diff_id"},
		{name: "manifest names a missing layer", opts: fixture.ArchiveOptions{OmitLayer: true}, wantErr: "is not in the image"},
		{name: "oci index names a missing layer", raw: func(t *testing.T, _ []byte) []byte {
			var buf bytes.Buffer
			if err := fixture.WriteOCITar(&buf, []fixture.Layer{bb}, nil, fixture.ArchiveOptions{OmitLayer: true}); err != nil {
				t.Fatal(err)
			}
			return buf.Bytes()
		}, wantErr: "is not in the image"},
		{name: "truncated archive", raw: func(_ *testing.T, good []byte) []byte { return good[:len(good)/2] }, wantErr: "unexpected EOF"},
		{name: "truncated gzip archive", raw: func(t *testing.T, _ []byte) []byte {
			var buf bytes.Buffer
			if err := fixture.WriteDockerArchive(&buf, []fixture.Layer{bb}, nil, fixture.ArchiveOptions{Compression: fixture.Gzip}); err != nil {
				t.Fatal(err)
			}
			return buf.Bytes()[:buf.Len()*2/3]
		}, wantErr: "unexpected EOF"},
		{name: "garbage", raw: func(_ *testing.T, _ []byte) []byte { return fixture.Garbage(100000) }, wantErr: "not a supported image"},
		{name: "empty file", raw: func(_ *testing.T, _ []byte) []byte { return nil }, wantErr: "not a supported image"},
		{name: "tar without manifest", raw: func(t *testing.T, _ []byte) []byte {
			b, err := bb.Tar()
			if err != nil {
				t.Fatal(err)
			}
			return b
		}, wantErr: "no manifest.json or index.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []Option
			if tt.limits != nil {
				opts = append(opts, WithLimits(*tt.limits))
			}
			e := newEnv(t, opts...)
			layers := []fixture.Layer{bb}
			if tt.noBase {
				layers = nil
			}
			if tt.entries != nil {
				layers = append(layers, fixture.Layer{Entries: tt.entries(e.canary)})
			}
			var buf bytes.Buffer
			if err := fixture.WriteDockerArchive(&buf, layers, nil, tt.opts); err != nil {
				t.Fatal(err)
			}
			archive := buf.Bytes()
			if tt.raw != nil {
				archive = tt.raw(t, archive)
			}
			path := e.writeBytes(t, "img.tar", archive)
			before := e.snapshot(t)
			start := time.Now()
			img, err := e.load(t, path)
			if err == nil {
				t.Fatalf("loaded %+v, want an error containing %q", img, tt.wantErr)
			}
			msg := err.Error()
			t.Logf("rejected: %s", msg)
			if !strings.Contains(msg, tt.wantErr) || !strings.HasPrefix(msg, "load "+path+": ") || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line starting with %q and containing %q", msg, "load "+path+": ", tt.wantErr)
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("rejecting took %v", d) // a bomb must not be written out
			}
			if after := e.snapshot(t); after != before {
				t.Errorf("files outside the store changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			for _, sub := range []string{"layers", "trees", "images", "tmp"} {
				if got := e.names(t, sub); len(got) != 0 {
					t.Errorf("%s/ holds %v after a rejected image", sub, got)
				}
			}
		})
	}
}

// TestAbsoluteAndLinkedPathsStayInside checks hostile-looking images that
// are valid: their paths resolve inside the image root, never on the host.
func TestAbsoluteAndLinkedPathsStayInside(t *testing.T) {
	e := newEnv(t)
	c := strings.TrimPrefix(e.canary, "/")
	layers := []fixture.Layer{{Entries: []fixture.Entry{
		fixture.File("/"+c+"/abs", []byte("inside"), 0o644),
		fixture.Symlink("link", e.canary),
		fixture.File("link/through-abs", []byte("inside"), 0o644),
		fixture.Symlink("rel", strings.Repeat("../", 20)+c),
		fixture.File("rel/through-rel", []byte("inside"), 0o644),
		// A hardlink to a symlink links the symlink itself, never its target.
		fixture.Symlink("s", filepath.Join(e.canary, "file")),
		fixture.Hardlink("h", "s"),
	}}}
	path := e.writeArchive(t, "img", layers, fixture.ArchiveOptions{})
	before := e.snapshot(t)
	img, err := e.load(t, path)
	if err != nil {
		t.Fatal(err)
	}
	if after := e.snapshot(t); after != before {
		t.Fatalf("files outside the store changed:\n%s\n%s", before, after)
	}
	if target, err := os.Readlink(filepath.Join(img.Rootfs, "h")); err != nil || target != filepath.Join(e.canary, "file") {
		t.Errorf("h -> %q, %v; want the symlink s, verbatim", target, err)
	}
	for _, n := range []string{"abs", "through-abs", "through-rel"} {
		if b, err := os.ReadFile(filepath.Join(img.Rootfs, c, n)); err != nil || string(b) != "inside" {
			t.Errorf("%s not inside the image root: %q %v", n, b, err)
		}
	}
}

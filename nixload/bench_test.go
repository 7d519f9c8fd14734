package nixload

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/fixture"
)

// benchImage writes the benchmark image (~200 MB in ~10k files) as one
// uncompressed docker-archive and as separate layer tars for tar(1).
func benchImage(b *testing.B) (archive string, layerTars []string) {
	b.Helper()
	layers, err := fixture.LargeImage(busybox(b), 200<<20, 10000)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	var buf bytes.Buffer
	if err := fixture.WriteDockerArchive(&buf, layers, nil, fixture.ArchiveOptions{}); err != nil {
		b.Fatal(err)
	}
	archive = filepath.Join(dir, "image.tar")
	if err := os.WriteFile(archive, buf.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	for i, l := range layers {
		t, err := l.Tar()
		if err != nil {
			b.Fatal(err)
		}
		p := filepath.Join(dir, fmt.Sprintf("layer%d.tar", i))
		if err := os.WriteFile(p, t, 0o644); err != nil {
			b.Fatal(err)
		}
		layerTars = append(layerTars, p)
	}
	b.SetBytes(int64(buf.Len()))
	return archive, layerTars
}

// BenchmarkUnpack loads the image into an empty store: sniffing, digest
// verification, extraction of every layer, and rootfs assembly.
func BenchmarkUnpack(b *testing.B) {
	archive, _ := benchImage(b)
	work := b.TempDir()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := Open(filepath.Join(work, fmt.Sprint(i)))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.LoadFile(context.Background(), archive, LoadOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(s.Root())
		b.StartTimer()
	}
}

// BenchmarkUnpackTar is the baseline: GNU tar extracting each layer tar
// into its own directory plus sha256sum of each, i.e. the same data
// written and the same digests computed, without assembly.
func BenchmarkUnpackTar(b *testing.B) {
	_, tars := benchImage(b)
	_, errTar := exec.LookPath("tar")
	_, errSum := exec.LookPath("sha256sum")
	need(b, errTar == nil && errSum == nil, "tar and sha256sum are needed for the baseline")
	work := b.TempDir()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j, t := range tars {
			dst := filepath.Join(work, fmt.Sprintf("%d-%d", i, j))
			if err := os.Mkdir(dst, 0o700); err != nil {
				b.Fatal(err)
			}
			if out, err := exec.Command("tar", "-xf", t, "-C", dst).CombinedOutput(); err != nil {
				b.Fatalf("tar: %v: %s", err, out)
			}
		}
		if out, err := exec.Command("sha256sum", tars...).CombinedOutput(); err != nil {
			b.Fatalf("sha256sum: %v: %s", err, out)
		}
		b.StopTimer()
		os.RemoveAll(work)
		os.Mkdir(work, 0o700)
		b.StartTimer()
	}
}

// BenchmarkCacheHit is what a call pays to recognise an unchanged image
// file it loaded before: its identity (resolve, stat), the source cache
// entry and the image record. The file is reached through a `result`
// symlink, as a nix out-link is.
func BenchmarkCacheHit(b *testing.B) {
	e := newEnv(b)
	e.store.now = func() time.Time { return time.Now().Add(racyWindow) } // an old file
	path := e.writeArchive(b, "image.tar", []fixture.Layer{busyboxLayer(b)}, fixture.ArchiveOptions{})
	result := filepath.Join(e.dir, "result")
	if err := os.Symlink(path, result); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	src := FileSource{Path: result}
	first, err := e.store.LoadFileCached(ctx, src, LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		img, err := e.store.LoadFileCached(ctx, src, LoadOptions{})
		if err != nil || img.ID != first.ID || img.UnpackedLayers != 0 {
			b.Fatalf("not a hit: %+v %v", img, err)
		}
	}
}

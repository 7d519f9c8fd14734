package nixload

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/fixture"
)

func TestGC(t *testing.T) {
	e := newEnv(t)
	base := busyboxLayer(t)
	mk := func(name string) []fixture.Layer {
		return []fixture.Layer{base, {Entries: []fixture.Entry{fixture.File(name, bytes.Repeat([]byte(name), 1000), 0o644)}}}
	}
	load := func(name string, layers []fixture.Layer, env string) *Image {
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
	kept, sourced, dropped := load("kept", mk("kept"), "A=1"), load("sourced", mk("sourced"), "A=1"), load("dropped", mk("dropped"), "A=1")
	// A config-only twin of the sourced image: its record goes, the tree
	// it shares with the sourced image stays.
	twin := load("twin", mk("sourced"), "A=2")
	entry := filepath.Join(e.store.Root(), "sources", "flake-x.json")
	if err := os.WriteFile(entry, []byte(`{"ref":"path:/x","image_id":"`+sourced.ID+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	meta, err := os.Stat(filepath.Join(filepath.Dir(dropped.Rootfs), "tree.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	// A warm container keeps a tree by its chain id.
	st, err := e.store.GC([]string{kept.ChainID}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if want := 7000 + meta.Size(); st.Images != 3 || st.Trees != 1 || st.Layers != 1 || st.Bytes != want {
		t.Errorf("GC stats %+v, want 3 images (kept's record, dropped, twin), 1 tree, 1 layer, %d bytes", st, want)
	}
	if !strings.Contains(out.String(), "removed 3 images, 1 image trees, 1 layers") {
		t.Errorf("GC output %q", out.String())
	}
	if _, err := e.store.Lookup(sourced.ID); err != nil {
		t.Errorf("GC removed an image a source names: %v", err)
	}
	for _, img := range []*Image{dropped, twin, kept} {
		if _, err := e.store.Lookup(img.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("image %s (%s) still there: %v", img.ID, img.Rootfs, err)
		}
	}
	for _, img := range []*Image{kept, sourced} {
		if _, err := os.Stat(img.Rootfs); err != nil {
			t.Errorf("GC removed a tree in use: %v", err)
		}
	}
	if got := len(e.names(t, "trees")); got != 2 {
		t.Errorf("%d trees left, want 2", got)
	}
	if got := len(e.names(t, "layers")); got != 6 {
		t.Errorf("%d layer entries left, want 6 (shared base + 2, each with its record)", got)
	}
	os.Remove(entry)
	st, err = e.store.GC(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Images != 1 || st.Trees != 2 || st.Layers != 3 {
		t.Errorf("GC of everything: %+v", st)
	}
	for _, sub := range []string{"images", "trees", "layers"} {
		if got := e.names(t, sub); len(got) != 0 {
			t.Errorf("%s/ left: %v", sub, got)
		}
	}
}

func TestGCWaitsForLoads(t *testing.T) {
	e := newEnv(t)
	share, err := e.store.shareStore()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.store.GC(nil, nil)
		done <- err
	}()
	select {
	case <-done:
		t.Fatal("GC ran while a load held the store")
	default:
	}
	share.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestGCDropsStaleFileEntries: a file source entry keeps its image only
// while the file is unchanged; once the file is gone, the entry could never
// hit again, so GC removes it and the image with it.
func TestGCDropsStaleFileEntries(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, path string)
		kept   bool
	}{
		{"unchanged", func(*testing.T, string) {}, true},
		{"removed", func(t *testing.T, p string) {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"rewritten", func(t *testing.T, p string) {
			if err := os.WriteFile(p, []byte("replaced"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			path := e.writeArchive(t, "img", []fixture.Layer{busyboxLayer(t)}, fixture.ArchiveOptions{})
			img, err := e.store.LoadFileCached(context.Background(), FileSource{Path: path}, LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tt.change(t, path)
			if _, err := e.store.GC(nil, nil); err != nil {
				t.Fatal(err)
			}
			_, err = e.store.Lookup(img.ID)
			if kept := err == nil; kept != tt.kept {
				t.Fatalf("image kept = %v, want %v (%v)", kept, tt.kept, err)
			}
		})
	}
}

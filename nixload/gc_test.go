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
	load := func(name string) *Image {
		img, err := e.load(t, e.writeArchive(t, name, mk(name), fixture.ArchiveOptions{}))
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	kept, sourced, dropped := load("kept"), load("sourced"), load("dropped")
	entry := filepath.Join(e.store.Root(), "sources", "flake-x.json")
	if err := os.WriteFile(entry, []byte(`{"ref":"path:/x","chain_id":"`+sourced.ChainID+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	meta, err := os.Stat(filepath.Join(filepath.Dir(dropped.Rootfs), "image.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	st, err := e.store.GC([]string{kept.ChainID}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if want := 7000 + meta.Size(); st.Rootfs != 1 || st.Layers != 1 || st.Bytes != want {
		t.Errorf("GC stats %+v, want 1 tree, 1 layer, %d bytes", st, want)
	}
	if !strings.Contains(out.String(), "removed 1 image trees and 1 layers") {
		t.Errorf("GC output %q", out.String())
	}
	for _, img := range []*Image{kept, sourced} {
		if _, err := e.store.Lookup(img.ChainID); err != nil {
			t.Errorf("GC removed an image in use: %v", err)
		}
	}
	if _, err := e.store.Lookup(dropped.ChainID); !errors.Is(err, ErrNotFound) {
		t.Errorf("dropped image still there: %v", err)
	}
	if got := len(e.names(t, "layers")); got != 3 {
		t.Errorf("%d layers left, want 3 (shared base + 2)", got)
	}
	os.Remove(entry)
	st, err = e.store.GC(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Rootfs != 2 || st.Layers != 3 || len(e.names(t, "rootfs")) != 0 || len(e.names(t, "layers")) != 0 {
		t.Errorf("GC of everything: %+v, left %v %v", st, e.names(t, "rootfs"), e.names(t, "layers"))
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
			img, err := e.store.LoadFileCached(context.Background(), path, nil)
			if err != nil {
				t.Fatal(err)
			}
			tt.change(t, path)
			if _, err := e.store.GC(nil, nil); err != nil {
				t.Fatal(err)
			}
			_, err = e.store.Lookup(img.ChainID)
			if kept := err == nil; kept != tt.kept {
				t.Fatalf("image kept = %v, want %v (%v)", kept, tt.kept, err)
			}
		})
	}
}

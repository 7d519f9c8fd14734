package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/testenv"
)

// needBusybox skips without busybox-static, except in CI where its absence
// is a broken environment.
func needBusybox(t *testing.T) {
	t.Helper()
	if _, err := findBusybox(); err != nil {
		testenv.Missing(t, "needs busybox-static: "+err.Error())
	}
}

func TestWriteBenchImage(t *testing.T) {
	needBusybox(t)
	path := filepath.Join(t.TempDir(), "image.tar")
	const size = 3 << 20
	if err := writeBenchImage(context.Background(), path, size); err != nil {
		t.Fatal(err)
	}
	members := readTar(t, path)
	var manifest []struct {
		Config string
		Layers []string
	}
	if err := json.Unmarshal(members["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("manifest.json = %s (%v)", members["manifest.json"], err)
	}
	var config struct {
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(members[manifest[0].Config], &config); err != nil {
		t.Fatalf("config %s: %v", manifest[0].Config, err)
	}
	if len(config.RootFS.DiffIDs) != 3 || len(manifest[0].Layers) != 3 {
		t.Fatalf("want 3 layers, got diff_ids %v and layers %v", config.RootFS.DiffIDs, manifest[0].Layers)
	}
	var content int64
	for i, name := range manifest[0].Layers {
		layer := members[name]
		sum := sha256.Sum256(layer)
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != config.RootFS.DiffIDs[i] {
			t.Errorf("layer %s digest %s, config says %s", name, got, config.RootFS.DiffIDs[i])
		}
		content += layerContent(t, layer, i == 0)
	}
	if content < size || content > size+4<<20 {
		t.Errorf("image holds %d bytes of files, want about %d plus busybox", content, size)
	}
}

func readTar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[hdr.Name] = b
	}
}

// layerContent returns the bytes of regular files in a layer; for the base
// layer it also checks busybox and its `true` and `sh` links are there.
func layerContent(t *testing.T, layer []byte, base bool) int64 {
	t.Helper()
	members := map[string]*tar.Header{}
	var total int64
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		members[hdr.Name] = hdr
		if hdr.Typeflag == tar.TypeReg {
			total += hdr.Size
		}
	}
	if base {
		if h := members["bin/busybox"]; h == nil || h.Mode&0o111 == 0 {
			t.Error("base layer lacks an executable bin/busybox")
		}
		for _, a := range []string{"bin/true", "bin/sh", "bin/sleep"} {
			if h := members[a]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
				t.Errorf("base layer lacks %s -> busybox", a)
			}
		}
	}
	return total
}

package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// imageTag is the name podman gives the generated image.
const imageTag = "localhost/lns-bench:latest"

// imageEpoch is the mtime of every generated entry, so two runs with the
// same size produce byte-identical archives.
var imageEpoch = time.Unix(1700000000, 0)

// findBusybox returns the host's static busybox, the only executable the
// generated image needs.
func findBusybox() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("busybox not found in /bin or /usr/bin; install busybox-static or pass -image PATH")
}

// writeBenchImage writes a docker-archive of about totalBytes: busybox with
// its applet links, then a layer of many small files and a layer of a few
// large ones, the mix a Nix-built toolbox image has. Content is
// pseudo-random so compression and dedup cannot shortcut the unpack.
func writeBenchImage(ctx context.Context, path string, totalBytes int64) error {
	busybox, err := findBusybox()
	if err != nil {
		return err
	}
	applets, err := busyboxApplets(ctx, busybox)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".image-")
	if err != nil {
		return fmt.Errorf("make image temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	small := totalBytes * 3 / 5
	layers := []func(*tar.Writer) error{
		func(tw *tar.Writer) error { return writeBaseLayer(tw, busybox, applets) },
		func(tw *tar.Writer) error { return writeSmallFiles(tw, small) },
		func(tw *tar.Writer) error { return writeLargeFiles(tw, totalBytes-small) },
	}
	var files []layerFile
	for i, fill := range layers {
		lf, err := writeLayerFile(filepath.Join(tmp, fmt.Sprintf("layer%d.tar", i)), fill)
		if err != nil {
			return fmt.Errorf("write image layer %d: %w", i, err)
		}
		files = append(files, lf)
	}
	return writeDockerArchive(path, files)
}

func busyboxApplets(ctx context.Context, busybox string) ([]string, error) {
	out, err := exec.CommandContext(ctx, busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("list busybox applets: %w", err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" && !strings.Contains(a, "/") {
			applets = append(applets, a)
		}
	}
	return applets, nil
}

type layerFile struct {
	path   string
	diffID string // "sha256:<hex>" of the uncompressed tar
	size   int64
}

func writeLayerFile(path string, fill func(*tar.Writer) error) (layerFile, error) {
	f, err := os.Create(path)
	if err != nil {
		return layerFile{}, err
	}
	defer f.Close()
	h := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(f, h)}
	tw := tar.NewWriter(cw)
	if err := fill(tw); err != nil {
		return layerFile{}, err
	}
	if err := tw.Close(); err != nil {
		return layerFile{}, err
	}
	if err := f.Close(); err != nil {
		return layerFile{}, err
	}
	return layerFile{path: path, diffID: digest(h), size: cw.n}, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func digest(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

func writeBaseLayer(tw *tar.Writer, busybox string, applets []string) error {
	for _, d := range []struct {
		name string
		mode int64
	}{{"bin", 0o755}, {"dev", 0o755}, {"etc", 0o755}, {"proc", 0o755}, {"root", 0o700},
		{"sys", 0o755}, {"tmp", 0o1777}, {"usr", 0o755}, {"usr/bin", 0o755}, {"var", 0o755}, {"var/tmp", 0o1777}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name + "/", Mode: d.mode, ModTime: imageEpoch}); err != nil {
			return err
		}
	}
	if err := copyIntoTar(tw, busybox, "bin/busybox"); err != nil {
		return err
	}
	for _, a := range applets {
		hdr := &tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: imageEpoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
	}
	return nil
}

func copyIntoTar(tw *tar.Writer, src, name string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: fi.Size(), ModTime: imageEpoch}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

// writeSmallFiles spreads total bytes over files of 1–64 KiB in packages of
// 50, like a store path full of libraries and scripts.
func writeSmallFiles(tw *tar.Writer, total int64) error {
	rng := rand.NewChaCha8([32]byte{1})
	var written int64
	for i := 0; written < total; i++ {
		if i%50 == 0 {
			dir := fmt.Sprintf("usr/lib/pkg%04d/", i/50)
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: imageEpoch}); err != nil {
				return err
			}
		}
		size := min(int64(1024+rng.Uint64()%(63*1024)), total-written)
		name := fmt.Sprintf("usr/lib/pkg%04d/file%02d.so", i/50, i%50)
		if err := writeRandomFile(tw, rng, name, size); err != nil {
			return err
		}
		written += size
	}
	return nil
}

// writeLargeFiles writes total bytes as 8 MiB files, the shape of the few
// big binaries and data files an image also carries.
func writeLargeFiles(tw *tar.Writer, total int64) error {
	rng := rand.NewChaCha8([32]byte{2})
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "usr/share/", Mode: 0o755, ModTime: imageEpoch}); err != nil {
		return err
	}
	const chunk = 8 << 20
	for i := 0; total > 0; i++ {
		size := min(total, chunk)
		if err := writeRandomFile(tw, rng, fmt.Sprintf("usr/share/blob%02d.bin", i), size); err != nil {
			return err
		}
		total -= size
	}
	return nil
}

func writeRandomFile(tw *tar.Writer, rng *rand.ChaCha8, name string, size int64) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: imageEpoch}); err != nil {
		return err
	}
	buf := make([]byte, 32<<10)
	for size > 0 {
		n := min(size, int64(len(buf)))
		_, _ = rng.Read(buf[:n]) // never fails
		if _, err := tw.Write(buf[:n]); err != nil {
			return err
		}
		size -= n
	}
	return nil
}

// writeDockerArchive assembles `docker save` layout: layers, config named
// by its digest, manifest.json last (as streamLayeredImage does).
func writeDockerArchive(path string, layers []layerFile) error {
	var diffIDs, names []string
	for i, l := range layers {
		diffIDs = append(diffIDs, l.diffID)
		names = append(names, fmt.Sprintf("%d/layer.tar", i))
	}
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      imageEpoch.UTC().Format(time.RFC3339),
		"config":       map[string]any{"Env": []string{"PATH=/bin:/usr/bin"}, "Cmd": []string{"/bin/sh"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	if err != nil {
		return err
	}
	sum := sha256.Sum256(config)
	configName := hex.EncodeToString(sum[:]) + ".json"
	manifest, err := json.Marshal([]map[string]any{{"Config": configName, "RepoTags": []string{imageTag}, "Layers": names}})
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := writeArchiveFile(tmp, layers, names, configName, config, manifest); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write image %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

func writeArchiveFile(path string, layers []layerFile, names []string, configName string, config, manifest []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for i, l := range layers {
		if err := copyLayer(tw, l, names[i]); err != nil {
			return err
		}
	}
	for _, m := range []struct {
		name string
		data []byte
	}{{configName, config}, {"manifest.json", manifest}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: m.name, Mode: 0o644, Size: int64(len(m.data)), ModTime: imageEpoch}); err != nil {
			return err
		}
		if _, err := tw.Write(m.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

func copyLayer(tw *tar.Writer, l layerFile, name string) error {
	f, err := os.Open(l.path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: l.size, ModTime: imageEpoch}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

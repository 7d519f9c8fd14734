package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"time"
)

// The image store's own costs, beside what the same work costs with the
// standard tools:
//
//	unpack       `--load IMAGE` into an empty cache: read, hash (digests
//	             verified), unpack and assemble the tree
//	unpack_tar   `tar -xf` of each of the image's layers into an empty
//	             directory, then `sha256sum` of the layers: the same data
//	             written and the same digests computed
//	load_cached  `--load IMAGE` of the unchanged, cached image: what a call
//	             pays to recognise its image (compare client_startup)

// unpack times --load into a fresh cache each iteration.
func (b *bench) unpack(ctx context.Context) Result {
	r := Result{Name: "unpack", Kind: kindSandbox, Counterpart: []string{"unpack_tar"},
		Note: "--load into an empty cache each time: digests verified, every layer unpacked, the tree assembled"}
	b.logf("unpack")
	step := func(i int) (time.Duration, error) {
		state := filepath.Join(b.work, fmt.Sprintf("unpack-%d", i))
		p := b.sandbox("--load", b.image)
		p.env = b.sandboxEnv(state)
		defer removeAll(state)
		r.Command = shellJoin(p.argv[1:])
		return b.l.Time(p)
	}
	samples, err := b.measure(ctx, b.plan.Slow, step)
	return b.record(r, samples, err)
}

// unpackTar is unpack's baseline over the same layers, split out of the
// image once, untimed.
func (b *bench) unpackTar(ctx context.Context) Result {
	r := Result{Name: "unpack_tar", Kind: kindBare,
		Note: "tar -xf of each layer of the image into an empty directory, then sha256sum of the layers: the baseline for unpack"}
	b.logf("unpack_tar")
	for _, tool := range []string{"tar", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			return missing(r, tool+" is not installed")
		}
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		return missing(r, "sh is not installed")
	}
	layers, err := splitLayers(b.image, filepath.Join(b.work, "layers"))
	if err != nil {
		return missing(r, "cannot split the image into layer tars (an uncompressed docker-archive is needed): "+oneLine(err.Error()))
	}
	script := `set -e; out=$1; shift; i=0; for l in "$@"; do i=$((i+1)); mkdir "$out/$i"; tar -xf "$l" -C "$out/$i"; done; sha256sum "$@" >/dev/null`
	step := func(i int) (time.Duration, error) {
		out := filepath.Join(b.work, fmt.Sprintf("untar-%d", i))
		if err := os.Mkdir(out, 0o700); err != nil {
			return 0, err
		}
		defer removeAll(out)
		p := proc{argv: append([]string{sh, "-c", script, "sh", out}, layers...), env: []string{"PATH=/usr/bin:/bin"}, dir: b.work}
		r.Command = "tar -xf LAYER -C DIR (each of " + fmt.Sprint(len(layers)) + " layers); sha256sum LAYERS"
		return b.l.Time(p)
	}
	samples, err := b.measure(ctx, b.plan.Slow, step)
	return b.record(r, samples, err)
}

// loadCached times --load of the unchanged image once it is cached and
// old enough for its identity to be trusted.
func (b *bench) loadCached(ctx context.Context) Result {
	p := b.sandbox("--load", b.image)
	r := Result{Name: "load_cached", Kind: kindSandbox, Command: shellJoin(p.argv[1:]),
		Note: "the unchanged image file recognised from the source cache without reading it; compare client_startup, the process start-up it includes"}
	b.logf("load_cached")
	if err := b.settle(ctx, b.image); err != nil {
		return b.record(r, nil, err)
	}
	out, err := Output(ctx, p, nil)
	if err == nil {
		out, err = Output(ctx, p, nil)
	}
	if err != nil {
		return b.record(r, nil, err)
	}
	var lr loadResult
	if err := json.Unmarshal([]byte(lastLine([]byte(out))), &lr); err != nil || lr.UnpackedLayers != 0 {
		return b.record(r, nil, fmt.Errorf("--load of the cached image printed %q, want nothing unpacked", oneLine(out)))
	}
	samples, err := b.measure(ctx, b.plan.Fast, b.timed(p))
	return b.record(r, samples, err)
}

// splitLayers writes the layer tars of an uncompressed docker-archive
// into dir, in the manifest's order.
func splitLayers(image, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.Open(image)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var manifest []struct{ Layers []string }
	written := map[string]string{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		name := path.Clean(h.Name)
		switch {
		case name == "manifest.json":
			if err := json.NewDecoder(tr).Decode(&manifest); err != nil {
				return nil, fmt.Errorf("manifest.json: %w", err)
			}
		case h.Typeflag == tar.TypeReg && path.Base(name) == "layer.tar":
			p := filepath.Join(dir, fmt.Sprintf("layer%d.tar", len(written)))
			if err := copyToFile(p, tr); err != nil {
				return nil, err
			}
			written[name] = p
		}
	}
	if len(manifest) != 1 {
		return nil, fmt.Errorf("want one image in manifest.json, found %d", len(manifest))
	}
	var out []string
	for _, l := range manifest[0].Layers {
		p, ok := written[path.Clean(l)]
		if !ok {
			return nil, fmt.Errorf("layer %s is not a plain member of the archive", l)
		}
		out = append(out, p)
	}
	return out, nil
}

func copyToFile(p string, r io.Reader) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

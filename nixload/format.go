package nixload

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// decompress sniffs gzip and zstd by magic; anything else passes through.
func decompress(r *bufio.Reader) (io.Reader, func(), error) {
	head, _ := r.Peek(4)
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	}
	return r, func() {}, nil
}

// looksTar accepts a first block with a valid header checksum, or an empty
// archive (a zero block).
func looksTar(r *bufio.Reader) bool {
	blk, err := r.Peek(512)
	if err != nil {
		return false
	}
	if bytes.Equal(blk, make([]byte, 512)) {
		return true
	}
	return tarChecksumOK(blk)
}

func tarChecksumOK(blk []byte) bool {
	var sum int64
	for i, c := range blk {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int64(c)
	}
	field := strings.TrimRight(strings.TrimLeft(string(blk[148:156]), " \x00"), " \x00")
	var want int64
	if _, err := fmt.Sscanf(field, "%o", &want); err != nil {
		return false
	}
	return want == sum
}

func isRegular(t byte) bool { return t == tar.TypeReg || t == tar.TypeRegA }

// plan is what an image's manifest and config say it is made of.
type plan struct {
	layerNames []string // member names (docker) or blob paths (OCI)
	diffIDs    []string
	config     ocispec.ImageConfig
	id         string // the config's digest: the image's identity
}

// blobGetter returns a JSON member by normalised name.
type blobGetter func(name string) ([]byte, error)

func (l *load) archiveBlob(name string) ([]byte, error) {
	b, ok := l.jsons[name]
	if !ok {
		return nil, fmt.Errorf("%s is not in the image: %w", name, fs.ErrNotExist)
	}
	return b, nil
}

// plan reads the docker manifest.json or, failing that, the OCI index.
func (l *load) plan(get blobGetter) (*plan, error) {
	switch {
	case l.docker != nil:
		return dockerPlan(l.docker, get, l.ref)
	case l.index != nil:
		return ociPlan(l.index, get, l.ref)
	}
	return nil, errNotImage
}

var (
	errNotImage = errors.New("not an image: the tar has no manifest.json or index.json at its top, " +
		"as a docker-archive or an OCI image layout has; pass an image file (docker save, podman save, nix build of a dockerTools image)")
	errDirLayoutTar = errors.New("this is a containers-image dir: layout packed in a tar, which is not an image archive; " +
		"unpack it and convert it with skopeo copy dir:DIR oci-archive:IMAGE.tar (or docker-archive:IMAGE.tar), then pass IMAGE.tar")
)

// checkImageRef refuses early, as soon as the top-level manifest is read,
// an archive whose images the user did not choose among: nothing of it
// needs unpacking.
func (l *load) checkImageRef() error {
	switch {
	case l.docker != nil:
		ms, err := parseDockerManifest(l.docker)
		if err != nil {
			return err
		}
		_, err = chooseDocker(ms, l.ref)
		return err
	case l.index != nil:
		var idx ocispec.Index
		if err := json.Unmarshal(l.index, &idx); err != nil {
			return fmt.Errorf("index.json: %w", err)
		}
		_, err := chooseOCI(idx, l.ref)
		return err
	}
	return nil
}

func (l *load) expectations() map[string]expectation {
	if l.expect != nil {
		return l.expect
	}
	p, err := l.plan(l.archiveBlob)
	if err != nil {
		return nil
	}
	l.expect = map[string]expectation{}
	for i, n := range p.layerNames {
		if i < len(p.diffIDs) {
			l.expect[n] = expectation{diffID: p.diffIDs[i], index: i}
		}
	}
	return l.expect
}

type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// parseDockerManifest reads manifest.json: a list, one entry per image.
// A single object is the manifest of a containers-image dir: layout.
func parseDockerManifest(manifest []byte) ([]dockerManifest, error) {
	if looksJSONObject(manifest) {
		return nil, errDirLayoutTar
	}
	var ms []dockerManifest
	if err := json.Unmarshal(manifest, &ms); err != nil {
		return nil, fmt.Errorf("manifest.json: %w", err)
	}
	if len(ms) == 0 {
		return nil, errors.New("manifest.json lists no image")
	}
	return ms, nil
}

func looksJSONObject(b []byte) bool {
	t := bytes.TrimLeft(b, " \t\r\n")
	return len(t) > 0 && t[0] == '{'
}

// chooseDocker picks the image ref names among a docker-archive's.
func chooseDocker(ms []dockerManifest, ref string) (dockerManifest, error) {
	imgs := make([]candidate, len(ms))
	for i, m := range ms {
		imgs[i] = candidate{names: m.RepoTags}
	}
	i, err := choose(imgs, ref)
	if err != nil {
		return dockerManifest{}, err
	}
	return ms[i], nil
}

func dockerPlan(manifest []byte, get blobGetter, ref string) (*plan, error) {
	ms, err := parseDockerManifest(manifest)
	if err != nil {
		return nil, err
	}
	m, err := chooseDocker(ms, ref)
	if err != nil {
		return nil, err
	}
	cb, err := get(normMember(m.Config))
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	p, err := configPlan(cb)
	if err != nil {
		return nil, err
	}
	for _, n := range m.Layers {
		p.layerNames = append(p.layerNames, normMember(n))
	}
	return p, nil
}

func configPlan(b []byte) (*plan, error) {
	var img ocispec.Image
	if err := json.Unmarshal(b, &img); err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	p := &plan{config: img.Config, id: digestOf(b)}
	for _, d := range img.RootFS.DiffIDs {
		if d.Algorithm() != "sha256" || !isHex64(d.Encoded()) {
			return nil, fmt.Errorf("image config: unsupported diff_id %q", d)
		}
		p.diffIDs = append(p.diffIDs, string(d))
	}
	return p, nil
}

func blobPath(d ocispec.Descriptor) (string, error) {
	if d.Digest.Algorithm() != "sha256" || !isHex64(d.Digest.Encoded()) {
		return "", fmt.Errorf("unsupported digest %q", d.Digest)
	}
	return "blobs/sha256/" + d.Digest.Encoded(), nil
}

// verifiedBlob fetches a JSON blob and checks it against its descriptor.
func verifiedBlob(d ocispec.Descriptor, get blobGetter) ([]byte, error) {
	p, err := blobPath(d)
	if err != nil {
		return nil, err
	}
	b, err := get(p)
	if err != nil {
		return nil, err
	}
	if got := digestOf(b); got != string(d.Digest) {
		return nil, fmt.Errorf("blob %s has digest %s", short(string(d.Digest)), short(got))
	}
	return b, nil
}

func ociPlan(index []byte, get blobGetter, ref string) (*plan, error) {
	desc, err := pickManifest(index, get, ref)
	if err != nil {
		return nil, err
	}
	mb, err := verifiedBlob(desc, get)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	cb, err := verifiedBlob(m.Config, get)
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	p, err := configPlan(cb)
	if err != nil {
		return nil, err
	}
	for _, ld := range m.Layers {
		n, err := blobPath(ld)
		if err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
		p.layerNames = append(p.layerNames, n)
	}
	return p, nil
}

// pickManifest chooses the image ref names, then this machine's manifest
// of it, following nested indexes.
func pickManifest(index []byte, get blobGetter, ref string) (ocispec.Descriptor, error) {
	var idx ocispec.Index
	if err := json.Unmarshal(index, &idx); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("index.json: %w", err)
	}
	variants, err := chooseOCI(idx, ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	for depth := 0; ; depth++ {
		d, err := pickPlatform(variants)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		if !isIndex(d.MediaType) {
			return d, nil
		}
		if depth >= 4 {
			return ocispec.Descriptor{}, errors.New("index.json: indexes nested too deeply")
		}
		nb, err := verifiedBlob(d, get)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("nested index: %w", err)
		}
		var nested ocispec.Index
		if err := json.Unmarshal(nb, &nested); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("nested index: %w", err)
		}
		variants = imageDescriptors(nested.Manifests)
		if len(variants) == 0 {
			return ocispec.Descriptor{}, errors.New("nested index lists no image manifest")
		}
	}
}

// readLayoutDir loads an OCI image layout directory. Blobs are opened
// through an os.Root so a symlinked blob cannot point outside the layout.
func (l *load) readLayoutDir(ctx context.Context, dir string) (*plan, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open image directory: %w", err)
	}
	defer root.Close()
	if _, err := root.Stat("oci-layout"); err != nil {
		if isDirLayout(root) {
			return nil, fmt.Errorf("%s is a containers-image dir: layout, which is not supported: convert it with skopeo copy dir:%s oci:NEWDIR and pass NEWDIR", dir, dir)
		}
		return nil, errors.New("a directory must be an OCI image layout (no oci-layout file found)")
	}
	get := func(name string) ([]byte, error) { return readRootFile(root, name) }
	index, err := get("index.json")
	if err != nil {
		return nil, err
	}
	l.index = index
	p, err := ociPlan(index, get, l.ref)
	if err != nil {
		return nil, err
	}
	l.expect = map[string]expectation{}
	for i, n := range p.layerNames {
		if i < len(p.diffIDs) {
			l.expect[n] = expectation{diffID: p.diffIDs[i], index: i}
		}
	}
	for _, n := range p.layerNames {
		if _, done := l.members[n]; done {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := l.layoutLayer(root, n); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (l *load) layoutLayer(root *os.Root, name string) error {
	f, err := root.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // reported by verify, naming the layer
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	defer f.Close()
	return l.layer(name, bufio.NewReaderSize(f, 1<<20))
}

// dirLayoutVersion starts the "version" file of a containers-image dir:
// layout (skopeo copy … dir:DIR).
const dirLayoutVersion = "Directory Transport Version"

func isDirLayout(root *os.Root) bool {
	b, err := readRootFile(root, "version")
	return err == nil && strings.HasPrefix(string(b), dirLayoutVersion)
}

func readRootFile(root *os.Root, name string) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJSON+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(b) > maxJSON {
		return nil, fmt.Errorf("%s is too large for image metadata", name)
	}
	return b, nil
}

// runStream runs an image script (streamLayeredImage) and reads the
// docker-archive it prints. The script runs in its own process group, which
// is killed if loading fails or is cancelled.
func (l *load) runStream(ctx context.Context, file string) (*plan, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, file)
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	stderr := &tailWriter{max: 4096}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("run image script: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run image script: %w", err)
	}
	rerr := l.readArchive(ctx, bufio.NewReaderSize(out, 1<<20))
	if rerr == nil {
		rerr = drain(out)
	} else {
		// Closing the pipe ends a script still writing; one that ignores
		// that is killed shortly after.
		out.Close()
		stop := time.AfterFunc(2*time.Second, cancel)
		defer stop.Stop()
	}
	werr := cmd.Wait()
	var exit *exec.ExitError
	if errors.As(werr, &exit) && exit.ExitCode() > 0 {
		return nil, fmt.Errorf("image script failed (%v): %s", werr, stderr.lastLine())
	}
	if rerr != nil {
		return nil, rerr
	}
	if werr != nil {
		return nil, fmt.Errorf("image script: %w", werr)
	}
	return l.plan(l.archiveBlob)
}

// tailWriter keeps the end of a child's stderr for error messages.
type tailWriter struct {
	max int
	buf []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tailWriter) lastLine() string {
	lines := strings.Split(strings.TrimSpace(string(t.buf)), "\n")
	if s := strings.TrimSpace(lines[len(lines)-1]); s != "" {
		return s
	}
	return "no error output"
}

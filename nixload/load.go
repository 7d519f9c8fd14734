package nixload

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// layerRec is what the archive held under one member name.
type layerRec struct {
	diffID string // sha256 of the uncompressed layer tar
	notTar bool   // the member is no (compressed) tar; an error only if a layer
}

// expectation is what the manifest and config say a member must be.
type expectation struct {
	diffID string
	index  int
}

// load is the state of one LoadFile call.
type load struct {
	ctx      context.Context
	s        *Store
	tmp      *tempDir
	progress io.Writer
	bar      *progress // while a bar is drawn, messages go through it
	b        budget
	buf      []byte

	members map[string]*layerRec // by normalised member name
	aliases map[string]string    // link member -> its target (docker save links duplicate layers)
	jsons   map[string][]byte    // small JSON members, by normalised name
	docker  []byte               // manifest.json
	index   []byte               // index.json (OCI)

	expect   map[string]expectation // nil until manifest and config are known
	found    map[string]string      // diff_id -> extracted temp dir, not yet published
	held     map[string]*os.File    // diff_id -> layer lock held since extraction began
	nextDir  int
	unpacked int
}

func (s *Store) newLoad(ctx context.Context, tmp *tempDir, progress io.Writer) *load {
	return &load{
		ctx: ctx, s: s, tmp: tmp, progress: progress,
		b:       budget{lim: s.lim},
		buf:     make([]byte, 1<<20),
		members: map[string]*layerRec{},
		aliases: map[string]string{},
		jsons:   map[string][]byte{},
		found:   map[string]string{},
		held:    map[string]*os.File{},
	}
}

func (l *load) releaseLocks() {
	for d, f := range l.held {
		f.Close()
		delete(l.held, d)
	}
}

func (l *load) say(format string, args ...any) {
	w := l.progress
	if l.bar != nil {
		// Printed above the bar, which the bar library redraws below.
		w = l.bar
	}
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// LoadFile loads an image file of any supported format, sniffed by content:
// a docker-archive (plain, gzip or zstd), an OCI image layout (directory or
// tar), or an executable that prints a docker-archive (streamLayeredImage).
func (s *Store) LoadFile(ctx context.Context, file string, progress io.Writer) (*Image, error) {
	img, err := s.loadFile(ctx, file, progress)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", file, err)
	}
	return img, nil
}

func (s *Store) loadFile(ctx context.Context, file string, progress io.Writer) (*Image, error) {
	st, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("cannot read the image: %w", err)
	}
	share, err := s.shareStore()
	if err != nil {
		return nil, err
	}
	defer share.Close()
	tmp, err := s.newTemp()
	if err != nil {
		return nil, err
	}
	defer tmp.remove()
	l := s.newLoad(ctx, tmp, progress)
	defer l.releaseLocks()
	p, err := l.read(ctx, file, st)
	if err != nil {
		return nil, err
	}
	return l.finish(p)
}

func (l *load) read(ctx context.Context, file string, st os.FileInfo) (*plan, error) {
	if st.IsDir() {
		return l.readLayoutDir(ctx, file)
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("cannot read the image: %w", err)
	}
	defer f.Close()
	head := make([]byte, 4)
	n, _ := f.ReadAt(head, 0)
	if st.Mode()&0o111 != 0 && st.Mode().IsRegular() && isExecutable(head[:n]) {
		return l.runStream(ctx, file)
	}
	var in io.Reader = f
	if IsTerminal(l.progress) {
		l.bar = newByteBar(l.progress, st.Size(), "unpacking "+filepath.Base(file))
		defer func() {
			l.bar.Finish()
			l.bar = nil
		}()
		in = l.bar.Reader(f)
	}
	br := bufio.NewReaderSize(in, 1<<20)
	if err := l.readArchive(ctx, br); err != nil {
		return nil, err
	}
	return l.plan(l.archiveBlob)
}

func isExecutable(head []byte) bool {
	return strings.HasPrefix(string(head), "#!") || strings.HasPrefix(string(head), "\x7fELF")
}

// finish checks every layer against the plan, publishes the new layers and
// assembles the rootfs.
func (l *load) finish(p *plan) (*Image, error) {
	if err := l.verify(p); err != nil {
		return nil, err
	}
	if err := l.publish(p.diffIDs); err != nil {
		return nil, err
	}
	chain := chainID(p.diffIDs)
	img, err := l.s.assemble(l.tmp, chain, p.diffIDs, imageFile{ChainID: chain, Layers: p.diffIDs, Config: p.config})
	if err != nil {
		return nil, err
	}
	img.UnpackedLayers = l.unpacked
	if l.b.skipped > 0 {
		l.say("skipped %d device or fifo entries", l.b.skipped)
	}
	return img, nil
}

func (l *load) verify(p *plan) error {
	if len(p.layerNames) == 0 {
		return errors.New("the image has no layers")
	}
	if len(p.layerNames) != len(p.diffIDs) {
		return fmt.Errorf("the manifest lists %d layers but the config has %d diff_ids", len(p.layerNames), len(p.diffIDs))
	}
	for i, name := range p.layerNames {
		rec, ok := l.member(name)
		switch {
		case !ok:
			return fmt.Errorf("layer %d (%s) named by the manifest is not in the image", i+1, shortName(name))
		case rec.notTar:
			return fmt.Errorf("layer %d (%s) is not a tar archive", i+1, shortName(name))
		case rec.diffID != p.diffIDs[i]:
			return fmt.Errorf("layer %d (%s): content digest %s does not match diff_id %s in the image config", i+1, shortName(name), short(rec.diffID), short(p.diffIDs[i]))
		}
	}
	return nil
}

// shortName abbreviates the digests in member names for error messages.
func shortName(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		if isHex64(p) {
			parts[i] = p[:12] + "…"
		}
	}
	return strings.Join(parts, "/")
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19] + "…"
	}
	return d
}

// member finds a layer record by name, following a few link members.
func (l *load) member(name string) (*layerRec, bool) {
	for hops := 0; hops < 8; hops++ {
		if rec, ok := l.members[name]; ok {
			return rec, true
		}
		next, ok := l.aliases[name]
		if !ok {
			return nil, false
		}
		name = next
	}
	return nil, false
}

// readArchive reads a (possibly compressed) tar of a docker-archive or OCI
// layout in one pass.
func (l *load) readArchive(ctx context.Context, r *bufio.Reader) error {
	dec, closeDec, err := decompress(r)
	if err != nil {
		return err
	}
	defer closeDec()
	br := bufio.NewReaderSize(dec, 64<<10)
	if !looksTar(br) {
		return errors.New("not a supported image: expected a docker-archive, an OCI image layout, or a streamLayeredImage script")
	}
	return l.readMembers(ctx, br)
}

func (l *load) readMembers(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		switch {
		case h.Typeflag == tar.TypeSymlink:
			l.aliases[normMember(h.Name)] = normMember(path.Join(path.Dir(normMember(h.Name)), h.Linkname))
			continue
		case h.Typeflag == tar.TypeLink:
			l.aliases[normMember(h.Name)] = normMember(h.Linkname)
			continue
		case !isRegular(h.Typeflag):
			continue
		}
		if err := l.readMember(normMember(h.Name), h.Size, tr); err != nil {
			return err
		}
	}
}

// normMember accepts "name", "./name" and "/name" alike.
func normMember(name string) string { return strings.TrimPrefix(path.Clean("/"+name), "/") }

const maxJSON = 8 << 20

func (l *load) readMember(name string, size int64, r io.Reader) error {
	switch name {
	case "manifest.json", "index.json":
		b, err := readSmall(r, size, name)
		if err != nil {
			return err
		}
		if name == "manifest.json" {
			l.docker = b
		} else {
			l.index = b
		}
		l.expect = nil
		return nil
	case "oci-layout", "repositories":
		return nil
	}
	br := bufio.NewReaderSize(r, 64<<10)
	if size <= maxJSON && !looksLayer(br) && looksJSON(br) {
		b, err := readSmall(br, size, name)
		if err != nil {
			return err
		}
		l.jsons[name] = b
		l.expect = nil
		return nil
	}
	return l.layer(name, br)
}

func readSmall(r io.Reader, size int64, name string) ([]byte, error) {
	if size > maxJSON {
		return nil, fmt.Errorf("%s is %d bytes, too large for image metadata", name, size)
	}
	b, err := io.ReadAll(io.LimitReader(r, maxJSON))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}

// looksLayer tells a (compressed) tar from JSON whose first bytes could
// also start a tar member name.
func looksLayer(br *bufio.Reader) bool {
	head, _ := br.Peek(4)
	if bytes.HasPrefix(head, []byte{0x1f, 0x8b}) || bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		return true
	}
	blk, err := br.Peek(512)
	return err == nil && tarChecksumOK(blk)
}

func looksJSON(br *bufio.Reader) bool {
	head, _ := br.Peek(64)
	for _, c := range head {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{', '[':
			return true
		}
		return false
	}
	return false
}

// layer unpacks one layer member while hashing its uncompressed stream.
// When the manifest already said what it must be, the layer's lock is taken
// first so concurrent loaders unpack it once; otherwise it is unpacked
// speculatively and matched to a diff_id at the end.
func (l *load) layer(name string, r *bufio.Reader) error {
	dec, closeDec, err := decompress(r)
	if err != nil {
		return fmt.Errorf("layer %s: %w", name, err)
	}
	defer closeDec()
	h := sha256.New()
	tee := bufio.NewReaderSize(io.TeeReader(dec, h), 256<<10)
	if !looksTar(tee) {
		if err := drain(tee); err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		l.members[name] = &layerRec{notTar: true}
		return nil
	}
	exp, known := l.expectations()[name]
	label := "layer " + shortName(name)
	if known {
		label = fmt.Sprintf("layer %d (%s)", exp.index+1, short(exp.diffID))
	}
	var dir string
	var lock *os.File
	hint := l.cachedHint(name, known)
	if hint == "" {
		dir, lock, err = l.claim(exp.diffID)
		if err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
	}
	if dir != "" {
		l.say("unpacking %s", label)
	}
	diff, err := l.unpack(tee, h, dir)
	switch {
	case err != nil:
	case known && diff != exp.diffID:
		err = fmt.Errorf("content digest %s does not match diff_id %s in the image config", short(diff), short(exp.diffID))
	case hint != "" && diff != hint:
		err = fmt.Errorf("its name promises content %s but it holds %s", short(hint), short(diff))
	}
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		return fmt.Errorf("%s: %w", label, err)
	}
	l.members[name] = &layerRec{diffID: diff}
	l.keep(diff, dir, lock)
	return nil
}

// cachedHint returns the diff_id a member's name announces when the store
// already holds that layer. streamLayeredImage (and OCI layouts with
// uncompressed layers) name layers by their digest and put the manifest
// last; trusting the name to skip extraction, and verifying it by hashing,
// keeps an image that shares layers with a cached one from unpacking them.
func (l *load) cachedHint(name string, known bool) string {
	if known {
		return ""
	}
	for _, part := range strings.Split(name, "/") {
		if isHex64(part) && exists(l.s.layerDir(part)) {
			return "sha256:" + part
		}
	}
	return ""
}

// claim decides whether a layer must be unpacked: it returns the temp dir to
// unpack into ("" when the store already holds the layer) and the layer lock
// when one was taken.
func (l *load) claim(diffID string) (string, *os.File, error) {
	if diffID != "" && exists(l.s.layerDir(diffID)) {
		return "", nil, nil
	}
	var lock *os.File
	if diffID != "" {
		var err error
		lock, err = l.lockLayer(diffID)
		if err != nil {
			return "", nil, err
		}
		if lock != nil && exists(l.s.layerDir(diffID)) {
			lock.Close()
			return "", nil, nil
		}
	}
	l.nextDir++
	dir := filepath.Join(l.tmp.path, fmt.Sprintf("layer%d", l.nextDir))
	if err := os.Mkdir(dir, 0o700); err != nil {
		if lock != nil {
			lock.Close()
		}
		return "", nil, fmt.Errorf("create temp layer dir: %w", err)
	}
	return dir, lock, nil
}

// lockLayer waits for the layer's lock only while holding no other layer
// lock, so two loaders meeting the same layers in different orders cannot
// deadlock; otherwise it returns nil and the layer is unpacked speculatively.
func (l *load) lockLayer(diffID string) (*os.File, error) {
	p := l.s.lockPath("layer-" + hexPart(diffID))
	lock, err := flockFile(p, unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, errBusy) {
		if len(l.held) > 0 {
			return nil, nil
		}
		l.say("waiting for another process unpacking layer %s", short(diffID))
		return flockFile(p, unix.LOCK_EX)
	}
	return lock, err
}

// unpack extracts the tar in r into dir (or only hashes it when dir is
// ""), then reads to the end so the digest covers the whole stream.
func (l *load) unpack(r *bufio.Reader, h hash.Hash, dir string) (string, error) {
	if dir != "" {
		x, err := newExtractor(l.ctx, dir, &l.b, l.buf)
		if err != nil {
			return "", err
		}
		err = x.extract(r)
		x.close()
		if err != nil {
			return "", err
		}
	}
	if err := drain(r); err != nil {
		return "", fmt.Errorf("read layer: %w", err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func (l *load) keep(diff, dir string, lock *os.File) {
	if dir == "" {
		return
	}
	if _, dup := l.found[diff]; dup {
		os.RemoveAll(dir)
		if lock != nil {
			lock.Close()
		}
		return
	}
	l.found[diff] = dir
	if lock != nil {
		l.held[diff] = lock
	}
}

func drain(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// publish renames verified layers into layers/. Layers whose lock is held
// go first and their locks are released before waiting for any other.
func (l *load) publish(diffIDs []string) error {
	for diff, lock := range l.held {
		err := l.rename(diff)
		lock.Close()
		delete(l.held, diff)
		if err != nil {
			return err
		}
	}
	for _, diff := range diffIDs {
		if exists(l.s.layerDir(diff)) {
			continue
		}
		if err := l.publishLocked(diff); err != nil {
			return err
		}
	}
	return nil
}

func (l *load) publishLocked(diff string) error {
	lock, err := flockFile(l.s.lockPath("layer-"+hexPart(diff)), unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer lock.Close()
	if exists(l.s.layerDir(diff)) {
		return nil
	}
	return l.rename(diff)
}

func (l *load) rename(diff string) error {
	dir, ok := l.found[diff]
	if !ok {
		return fmt.Errorf("layer %s disappeared from the cache while loading; run the command again", short(diff))
	}
	if err := os.Rename(dir, l.s.layerDir(diff)); err != nil {
		return fmt.Errorf("publish layer %s: %w", short(diff), err)
	}
	delete(l.found, diff)
	l.unpacked++
	return nil
}

func chainID(diffIDs []string) string {
	chain := diffIDs[0]
	for _, d := range diffIDs[1:] {
		sum := sha256.Sum256([]byte(chain + " " + d))
		chain = "sha256:" + hex.EncodeToString(sum[:])
	}
	return chain
}

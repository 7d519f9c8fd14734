package nixload

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
	// bad is why a member read before the manifest could not be unpacked
	// as a layer: an error only if the manifest names it (a tar that is
	// not an image may well hold tars that are not layers).
	bad error
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
	ref      string // which image of a multi-image archive
	progress io.Writer
	notices  io.Writer
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

func (s *Store) newLoad(ctx context.Context, tmp *tempDir, o LoadOptions) *load {
	return &load{
		ctx: ctx, s: s, tmp: tmp, ref: o.Ref, progress: o.Progress, notices: o.Notices,
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

// LoadOptions say how to load an image file.
type LoadOptions struct {
	// Ref names the image to load from an archive that holds several
	// (see refs.go); "" loads the only one.
	Ref string
	// Progress receives bars and per-layer lines; pass it only when it
	// is a terminal.
	Progress io.Writer
	// Notices receives the one-line notices a user must see wherever
	// stderr goes (device nodes that were not made).
	Notices io.Writer
	// Refresh makes LoadFileCached read the file even when unchanged.
	Refresh bool
}

// LoadFile loads an image file of any supported format, sniffed by content:
// a docker-archive (plain, gzip or zstd), an OCI image layout (directory or
// tar), or an executable that prints a docker-archive (streamLayeredImage).
func (s *Store) LoadFile(ctx context.Context, file string, o LoadOptions) (*Image, error) {
	img, err := s.loadFile(ctx, file, o)
	if err != nil {
		var ce *ImageRefError
		if errors.As(err, &ce) {
			ce.File = file
		}
		return nil, fmt.Errorf("load %s: %w", file, err)
	}
	return img, nil
}

func (s *Store) loadFile(ctx context.Context, file string, o LoadOptions) (*Image, error) {
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
	l := s.newLoad(ctx, tmp, o)
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

// finish checks every layer against the plan, publishes the new layers,
// assembles the tree (shared by every image of the same layers) and
// records the image.
func (l *load) finish(p *plan) (*Image, error) {
	if err := l.verify(p); err != nil {
		return nil, err
	}
	if err := l.publish(p.diffIDs); err != nil {
		return nil, err
	}
	chain := chainID(p.diffIDs)
	tree, err := l.s.assemble(l.tmp, chain, p.diffIDs)
	if err != nil {
		return nil, err
	}
	img, err := l.s.writeImage(imageFile{ID: p.id, ChainID: chain, Tree: tree, Layers: p.diffIDs, Config: p.config})
	if err != nil {
		return nil, err
	}
	img.UnpackedLayers = l.unpacked
	l.noticeDevices()
	return img, nil
}

// noticeDevices says, in one line wherever stderr goes, which device
// nodes the image has that the container lacks: a rootless loader cannot
// make them, and a command needing one should be told why it is missing.
func (l *load) noticeDevices() {
	d := l.b.devices
	if len(d) == 0 || l.notices == nil {
		return
	}
	names := d
	if len(names) > 3 {
		names = append(names[:3:3], "…")
	}
	fmt.Fprintf(l.notices, "lectic-nix-sandbox: note: the image has %d device node(s) (%s) that a rootless sandbox cannot create; they are left out\n",
		len(d), strings.Join(names, ", "))
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
		case rec.bad != nil:
			return fmt.Errorf("layer %d (%s): %w", i+1, shortName(name), rec.bad)
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

// maxMemberDepth is the deepest member an image archive has
// (blobs/sha256/<digest>); anything deeper means the tar is no image.
const maxMemberDepth = 3

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
		return l.checkImageRef()
	case "oci-layout", "repositories":
		return nil
	}
	if path.Base(name) == "version" && strings.Count(name, "/") <= 1 && size < 256 {
		// A containers-image dir: layout (perhaps under one directory).
		b, err := readSmall(r, size, name)
		if err == nil && strings.HasPrefix(string(b), dirLayoutVersion) {
			return errDirLayoutTar
		}
		return err
	}
	if strings.Count(name, "/") >= maxMemberDepth {
		return fmt.Errorf("not an image: the tar holds %s, which no docker-archive or OCI image layout has; pass an image file (docker save, podman save, nix build of a dockerTools image)", shortName(name))
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
		if !known && hint == "" && speculativeFailure(err) {
			// Maybe no layer at all: only an error if the manifest says so.
			removeAllForce(dir)
			os.Remove(dir + ".json")
			// The archive's reader skips the rest of the member.
			l.members[name] = &layerRec{bad: err}
			return nil
		}
		return fmt.Errorf("%s: %w", label, err)
	}
	l.members[name] = &layerRec{diffID: diff}
	l.keep(diff, dir, lock)
	return nil
}

// speculativeFailure is an error of a member's own content, which does
// not stop the reading of the archive: an entry that cannot be unpacked,
// or a tar that ends early. Limits, cancellation and the archive's own
// read errors still do.
func speculativeFailure(err error) bool {
	var ee *entryError
	var le *LimitError
	switch {
	case errors.As(err, &le), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.As(err, &ee):
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, tar.ErrHeader)
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
		if isHex64(part) && l.s.hasLayer(part) {
			return "sha256:" + part
		}
	}
	return ""
}

// claim decides whether a layer must be unpacked: it returns the temp dir to
// unpack into ("" when the store already holds the layer) and the layer lock
// when one was taken.
func (l *load) claim(diffID string) (string, *os.File, error) {
	if diffID != "" && l.s.hasLayer(diffID) {
		return "", nil, nil
	}
	var lock *os.File
	if diffID != "" {
		var err error
		lock, err = l.lockLayer(diffID)
		if err != nil {
			return "", nil, err
		}
		if lock != nil && l.s.hasLayer(diffID) {
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
		if err == nil {
			err = writeLayerRecord(dir+".json", x.record())
		}
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
		removeAllForce(dir)
		os.Remove(dir + ".json")
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
		if l.s.hasLayer(diff) {
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
	if l.s.hasLayer(diff) {
		return nil
	}
	return l.rename(diff)
}

func (l *load) rename(diff string) error {
	dir, ok := l.found[diff]
	if !ok {
		return fmt.Errorf("layer %s disappeared from the cache while loading; run the command again", short(diff))
	}
	// The record goes first: a layer dir without one is not taken as
	// published. A dir left without a record (by a store that kept none)
	// is replaced; trees made from it keep their own links.
	final := l.s.layerDir(diff)
	if err := os.Rename(dir+".json", l.s.layerRecordPath(diff)); err != nil {
		return fmt.Errorf("publish layer %s: %w", short(diff), err)
	}
	if exists(final) {
		if err := removeAllForce(final); err != nil {
			return fmt.Errorf("replace layer %s: %w", short(diff), err)
		}
	}
	if err := os.Rename(dir, final); err != nil {
		return fmt.Errorf("publish layer %s: %w", short(diff), err)
	}
	delete(l.found, diff)
	l.unpacked++
	return nil
}

func writeLayerRecord(path string, r *layerRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode layer record: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write layer record: %w", err)
	}
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

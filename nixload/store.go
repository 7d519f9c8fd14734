package nixload

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Image is a loaded image: a complete, read-only root filesystem in the
// cache and its config.
//
// An image is what its config says it is: ID is the digest of the config,
// which names the layers (diff_ids) and everything else (Env, Cmd, User…).
// Images with the same layers and different configs share one tree
// (ChainID names it) and never a config.
type Image struct {
	ID             string              `json:"id"`       // "sha256:<hex>" of the image config
	ChainID        string              `json:"chain_id"` // "sha256:<hex>" of the layers: the tree it shares
	Rootfs         string              `json:"rootfs"`   // absolute path of the complete tree
	Layers         int                 `json:"layers"`
	UnpackedLayers int                 `json:"unpacked_layers"` // how many this call unpacked
	Config         ocispec.ImageConfig `json:"-"`
	HostBinds      []string            `json:"-"` // host image only: paths to bind read-only at the same path
}

// ErrNotFound is returned (wrapped) by Lookup when no such image is cached.
var ErrNotFound = errors.New("image not in the cache")

// Store is the content-addressed cache of layers and root filesystems.
// Several processes may use one store at once; they coordinate with flock.
type Store struct {
	root string
	lim  Limits
	now  func() time.Time // the clock the source caches' racy rule reads
	// cleaned is what Open found left by loaders that died, for GC to
	// report.
	cleaned tempCleaned
}

// Option configures a Store.
type Option func(*Store)

// WithLimits replaces DefaultLimits.
func WithLimits(l Limits) Option { return func(s *Store) { s.lim = l } }

// storeDirs are created by Open.
func storeDirs() []string {
	return []string{"layers", "trees", "images", "sources", "gcroots", "home", "tmp", "locks"}
}

// Open creates the store layout under root (0700) and removes temp dirs
// left by loaders that died.
func Open(root string, opts ...Option) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("cache directory %s: %w", root, err)
	}
	s := &Store{root: abs, lim: DefaultLimits(), now: time.Now}
	for _, o := range opts {
		o(s)
	}
	for _, d := range storeDirs() {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o700); err != nil {
			return nil, fmt.Errorf("create cache directory %s: %w (check permissions, or set LECTIC_CACHE)", abs, err)
		}
	}
	if err := s.cleanTemp(&s.cleaned); err != nil {
		return nil, err
	}
	return s, nil
}

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

func (s *Store) layerDir(diffID string) string {
	return filepath.Join(s.root, "layers", "sha256-"+hexPart(diffID))
}

// layerRecordPath is the layer's record beside its tree: what the tree
// itself cannot hold (the image's own directory modes).
func (s *Store) layerRecordPath(diffID string) string { return s.layerDir(diffID) + ".json" }

// treeDir is trees/<name>: root/ (the image's tree) and tree.json.
func (s *Store) treeDir(name string) string { return filepath.Join(s.root, "trees", name) }

func (s *Store) imagePath(id string) string {
	return filepath.Join(s.root, "images", hexPart(id)+".json")
}

func hexPart(digest string) string { return strings.TrimPrefix(digest, "sha256:") }

// treeFile is trees/<name>/tree.json: which layers the tree was built from,
// so GC keeps them while the tree is kept.
type treeFile struct {
	ChainID string   `json:"chain_id"`
	Layers  []string `json:"layers"`
}

// imageFile is images/<id hex>.json: one image.
type imageFile struct {
	ID        string              `json:"id"`
	ChainID   string              `json:"chain_id"`
	Tree      string              `json:"tree"` // the name under trees/
	Layers    []string            `json:"layers"`
	Config    ocispec.ImageConfig `json:"config"`
	HostBinds []string            `json:"host_binds,omitempty"`
}

// Lookup returns the cached image with the given id.
func (s *Store) Lookup(id string) (*Image, error) {
	if !isHex64(hexPart(id)) || !strings.HasPrefix(id, "sha256:") {
		return nil, fmt.Errorf("image %q: not a sha256 image id", id)
	}
	img, err := s.readImage(id)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image %s: %w", id, ErrNotFound)
	}
	return img, err
}

func (s *Store) readImage(id string) (*Image, error) {
	p := s.imagePath(id)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var f imageFile
	if err := json.Unmarshal(b, &f); err != nil || f.ID != id || !validTreeName(f.Tree) {
		return nil, fmt.Errorf("cached image %s is damaged: remove it with --gc or delete %s", short(id), p)
	}
	root := filepath.Join(s.treeDir(f.Tree), "root")
	if _, err := os.Lstat(root); err != nil {
		// The tree went away (a GC racing this call, or a hand-made
		// deletion): the image must be loaded again.
		return nil, err
	}
	return &Image{
		ID:        f.ID,
		ChainID:   f.ChainID,
		Rootfs:    root,
		Layers:    len(f.Layers),
		Config:    f.Config,
		HostBinds: f.HostBinds,
	}, nil
}

// writeImage records an image whose tree is published. The record of an
// id is always the same bytes, so concurrent writers agree.
func (s *Store) writeImage(f imageFile) (*Image, error) {
	p := s.imagePath(f.ID)
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode image record: %w", err)
	}
	if old, err := os.ReadFile(p); err != nil || string(old) != string(b) {
		if err := atomicWrite(p, b); err != nil {
			return nil, fmt.Errorf("write image record: %w", err)
		}
	}
	return s.readImage(f.ID)
}

func validTreeName(name string) bool {
	return isHex64(name) || (strings.HasPrefix(name, hostPrefix) && isHex64(strings.TrimPrefix(name, hostPrefix)))
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

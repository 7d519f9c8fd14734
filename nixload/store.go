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

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Image is a loaded image: a complete, read-only root filesystem in the
// cache and its config.
type Image struct {
	ChainID        string              `json:"chain_id"` // "sha256:<hex>"
	Rootfs         string              `json:"rootfs"`   // absolute path of the complete tree
	Layers         int                 `json:"layers"`
	UnpackedLayers int                 `json:"unpacked_layers"` // how many this call unpacked
	Config         ocispec.ImageConfig `json:"-"`
	HostBinds      []string            `json:"-"` // host image only: paths to bind read-only at the same path
}

// ErrNotFound is returned (wrapped) by Lookup when no such rootfs is cached.
var ErrNotFound = errors.New("image not in the cache")

// Store is the content-addressed cache of layers and root filesystems.
// Several processes may use one store at once; they coordinate with flock.
type Store struct {
	root string
	lim  Limits
}

// Option configures a Store.
type Option func(*Store)

// WithLimits replaces DefaultLimits.
func WithLimits(l Limits) Option { return func(s *Store) { s.lim = l } }

// storeDirs are created by Open.
func storeDirs() []string {
	return []string{"layers", "rootfs", "sources", "gcroots", "home", "tmp", "locks"}
}

// Open creates the store layout under root (0700) and removes temp dirs
// left by loaders that died.
func Open(root string, opts ...Option) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("cache directory %s: %w", root, err)
	}
	s := &Store{root: abs, lim: DefaultLimits()}
	for _, o := range opts {
		o(s)
	}
	for _, d := range storeDirs() {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o700); err != nil {
			return nil, fmt.Errorf("create cache directory %s: %w (check permissions, or set LECTIC_CACHE)", abs, err)
		}
	}
	if err := s.cleanTemp(); err != nil {
		return nil, err
	}
	return s, nil
}

// Root returns the store's directory.
func (s *Store) Root() string { return s.root }

func (s *Store) layerDir(diffID string) string {
	return filepath.Join(s.root, "layers", "sha256-"+hexPart(diffID))
}

func (s *Store) rootfsDir(name string) string { return filepath.Join(s.root, "rootfs", name) }

func hexPart(digest string) string { return strings.TrimPrefix(digest, "sha256:") }

// imageFile is rootfs/<name>/image.json.
type imageFile struct {
	ChainID   string              `json:"chain_id"`
	Layers    []string            `json:"layers"`
	Config    ocispec.ImageConfig `json:"config"`
	HostBinds []string            `json:"host_binds,omitempty"`
}

// Lookup returns the cached image with chainID.
func (s *Store) Lookup(chainID string) (*Image, error) {
	h := hexPart(chainID)
	if !isHex64(h) {
		return nil, fmt.Errorf("image %q: not a sha256 chain id", chainID)
	}
	for _, name := range []string{h, hostPrefix + h} {
		img, err := s.readImage(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		return img, err
	}
	return nil, fmt.Errorf("image %s: %w", chainID, ErrNotFound)
}

func (s *Store) readImage(name string) (*Image, error) {
	dir := s.rootfsDir(name)
	b, err := os.ReadFile(filepath.Join(dir, "image.json"))
	if err != nil {
		return nil, err
	}
	var f imageFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("cached image %s is damaged (%v): remove it with --gc or delete %s", name, err, dir)
	}
	return &Image{
		ChainID:   f.ChainID,
		Rootfs:    filepath.Join(dir, "root"),
		Layers:    len(f.Layers),
		Config:    f.Config,
		HostBinds: f.HostBinds,
	}, nil
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

package nixload

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

const hostPrefix = "host-"

// hostTop are the host paths shared with the host image: symlinks are
// recreated, directories are bind-mounted read-only.
func hostTop() []string {
	return []string{"/usr", "/bin", "/lib", "/lib32", "/lib64", "/libx32", "/sbin", "/nix/store"}
}

// hostEtc are the /etc files copied (dereferenced) into the host image.
func hostEtc() []string {
	return []string{
		"passwd", "group", "nsswitch.conf", "hosts", "resolv.conf", "host.conf",
		"localtime", "timezone", "os-release", "ld.so.cache", "ld.so.conf",
		"ssl/certs/ca-certificates.crt",
	}
}

// hostEtcLinkDirs are /etc directories whose symlinks are recreated
// (Debian's alternatives, the hashed certificate links).
func hostEtcLinkDirs() []string { return []string{"alternatives", "ssl/certs"} }

// hostDir is created empty in the host image.
type hostDir struct {
	path string
	mode fs.FileMode
}

func hostDirs() []hostDir {
	return []hostDir{
		{"tmp", 0o1777}, {"var", 0o755}, {"var/tmp", 0o1777}, {"root", 0o700}, {"home", 0o755},
		{"dev", 0o755}, {"proc", 0o755}, {"sys", 0o755}, {"run", 0o755}, {"etc", 0o755},
	}
}

// hostItem is one element of the host image's description; its hash is the
// image's chain id, so any host change yields a new image.
type hostItem struct {
	Path    string      `json:"path"`
	Kind    string      `json:"kind"` // symlink, bind, file
	Target  string      `json:"target,omitempty"`
	Mode    fs.FileMode `json:"mode,omitempty"`
	Content []byte      `json:"-"`
	Sum     string      `json:"sum,omitempty"`
}

// Host returns the `host` image: the host's /usr (and friends) bound
// read-only, with a small private /etc. Cheap when nothing changed.
func (s *Store) Host() (*Image, error) {
	// The full description reads every /etc/alternatives link (hundreds on
	// Debian); a stat fingerprint of the same sources recognises an
	// unchanged host with a few dozen stats.
	fp := hostFingerprint()
	if img, ok := s.cachedHost(fp); ok {
		return img, nil
	}
	items, err := describeHost()
	if err != nil {
		return nil, fmt.Errorf("host image: %w", err)
	}
	b, err := json.Marshal(items)
	if err != nil {
		return nil, fmt.Errorf("host image: %w", err)
	}
	sum := sha256.Sum256(b)
	h := hex.EncodeToString(sum[:])
	img, err := s.readImage("sha256:" + h)
	if err != nil {
		if img, err = s.buildHost(h, items); err != nil {
			return nil, fmt.Errorf("host image: %w", err)
		}
	}
	s.rememberHost(fp, img.ID)
	return img, nil
}

// hostEntry is sources/host.json: the fingerprint of the host's sources
// when the host image was described, and the rootfs it described.
type hostEntry struct {
	Fingerprint string `json:"fingerprint"`
	ImageID     string `json:"image_id"` // also keeps the image from --gc
}

// hostFingerprint hashes the lstat of every source of the host image: the
// top-level dirs and links, the copied /etc files, and the link dirs
// (adding, removing or retargeting a link renames within the dir and so
// changes its mtime).
func hostFingerprint() string {
	h := sha256.New()
	paths := append([]string(nil), hostTop()...)
	for _, name := range hostEtc() {
		paths = append(paths, filepath.Join("/etc", name))
	}
	for _, d := range hostEtcLinkDirs() {
		paths = append(paths, filepath.Join("/etc", d))
	}
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			fmt.Fprintf(h, "%s absent\n", p)
			continue
		}
		fmt.Fprintf(h, "%s %d %d %d %d %d\n", p, st.Mode, st.Size, st.Mtim.Nano(), st.Ino, st.Dev)
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			// Follow one level for the copied files: their content is what
			// the image holds.
			if err := unix.Stat(p, &st); err == nil {
				fmt.Fprintf(h, "-> %d %d %d\n", st.Size, st.Mtim.Nano(), st.Ino)
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (s *Store) hostEntryPath() string { return filepath.Join(s.root, "sources", "host.json") }

func (s *Store) cachedHost(fp string) (*Image, bool) {
	b, err := os.ReadFile(s.hostEntryPath())
	if err != nil {
		return nil, false
	}
	var e hostEntry
	if json.Unmarshal(b, &e) != nil || e.Fingerprint != fp {
		return nil, false
	}
	img, err := s.Lookup(e.ImageID)
	if err != nil {
		return nil, false
	}
	return img, true
}

func (s *Store) rememberHost(fp, id string) {
	b, err := json.Marshal(hostEntry{Fingerprint: fp, ImageID: id})
	if err != nil {
		return
	}
	// A failed write only costs a full description next time.
	_ = atomicWrite(s.hostEntryPath(), b)
}

func describeHost() ([]hostItem, error) {
	var items []hostItem
	for _, p := range hostTop() {
		st, err := os.Lstat(p)
		switch {
		case err != nil:
			continue
		case st.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return nil, err
			}
			items = append(items, hostItem{Path: p, Kind: "symlink", Target: t})
		case st.IsDir():
			items = append(items, hostItem{Path: p, Kind: "bind"})
		}
	}
	for _, name := range hostEtc() {
		b, err := os.ReadFile(filepath.Join("/etc", name))
		if err != nil {
			continue // absent on this host
		}
		sum := sha256.Sum256(b)
		items = append(items, hostItem{Path: "/etc/" + name, Kind: "file", Mode: 0o644, Content: b, Sum: hex.EncodeToString(sum[:])})
	}
	for _, d := range hostEtcLinkDirs() {
		items = append(items, etcLinks(d)...)
	}
	return items, nil
}

func etcLinks(dir string) []hostItem {
	ents, err := os.ReadDir(filepath.Join("/etc", dir))
	if err != nil {
		return nil
	}
	var items []hostItem
	for _, e := range ents {
		if e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		p := filepath.Join("/etc", dir, e.Name())
		if t, err := os.Readlink(p); err == nil {
			items = append(items, hostItem{Path: p, Kind: "symlink", Target: t})
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].Path < items[j].Path })
	return items
}

// buildHost makes the host image: its tree, trees/host-<h>, and its
// record, whose id (the hash of the host's description) is also its
// chain id, as nothing else describes it.
func (s *Store) buildHost(h string, items []hostItem) (*Image, error) {
	share, err := s.shareStore()
	if err != nil {
		return nil, err
	}
	defer share.Close()
	name := hostPrefix + h
	lock, err := flockFile(s.lockPath("tree-"+name), unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if !exists(s.treeDir(name)) {
		tmp, err := s.newTemp()
		if err != nil {
			return nil, err
		}
		defer tmp.remove()
		build := filepath.Join(tmp.path, "host")
		binds, err := writeHostTree(filepath.Join(build, "root"), items)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(binds)
		if err == nil {
			err = os.WriteFile(filepath.Join(build, "binds.json"), b, 0o600)
		}
		if err != nil {
			return nil, fmt.Errorf("write binds.json: %w", err)
		}
		if err := sealTree(filepath.Join(build, "root")); err != nil {
			return nil, fmt.Errorf("make the host tree read-only: %w", err)
		}
		if err := publishTree(build, s.treeDir(name), treeFile{ChainID: "sha256:" + h}); err != nil {
			return nil, err
		}
	}
	var binds []string
	if b, err := os.ReadFile(filepath.Join(s.treeDir(name), "binds.json")); err != nil || json.Unmarshal(b, &binds) != nil {
		return nil, fmt.Errorf("host tree %s is damaged: remove it with --gc", name)
	}
	return s.writeImage(imageFile{
		ID:        "sha256:" + h,
		ChainID:   "sha256:" + h,
		Tree:      name,
		Config:    ocispec.ImageConfig{Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}, WorkingDir: "/"},
		HostBinds: binds,
	})
}

func writeHostTree(root string, items []hostItem) ([]string, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	for _, d := range hostDirs() {
		p := filepath.Join(root, d.path)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return nil, err
		}
		if err := os.Chmod(p, d.mode|0o700); err != nil {
			return nil, err
		}
	}
	var binds []string
	for _, it := range items {
		p := filepath.Join(root, it.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		var err error
		switch it.Kind {
		case "symlink":
			err = os.Symlink(it.Target, p)
		case "bind":
			err = os.MkdirAll(p, 0o755)
			binds = append(binds, it.Path)
		case "file":
			err = os.WriteFile(p, it.Content, it.Mode)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", it.Path, err)
		}
	}
	return binds, nil
}

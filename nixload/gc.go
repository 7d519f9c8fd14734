package nixload

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// GCStats says what a GC removed.
type GCStats struct {
	Images int   // image records removed
	Trees  int   // image trees removed
	Layers int   // layers removed
	Temp   int   // temp dirs of loaders that died
	Bytes  int64 // file data freed (last links only)
}

// GC removes the images that are neither in keep nor named by a source
// cache entry, then the trees no remaining image (or keep) uses, then the
// layers no remaining tree uses, and the temp dirs of loaders that died;
// it reports what it freed to out. keep holds image ids, or chain ids of
// trees in use (a warm container needs only its tree). GC waits for
// running loads to finish and blocks new ones while it runs.
func (s *Store) GC(keep []string, out io.Writer) (GCStats, error) {
	var st GCStats
	lock, err := flockFile(s.lockPath("store"), unix.LOCK_EX)
	if err != nil {
		return st, err
	}
	defer lock.Close()
	// Every loader holds the store lock shared, so none runs now; a temp
	// dir's own lock still decides, as for Open, which already removed
	// what it found.
	if err := s.cleanTemp(&s.cleaned); err != nil {
		return st, err
	}
	st.Temp, st.Bytes = s.cleaned.dirs, s.cleaned.bytes
	s.cleaned = tempCleaned{}
	kept := map[string]bool{}
	for _, k := range append(keep, s.sourceImageIDs()...) {
		kept[hexPart(k)] = true
	}
	trees, err := s.gcImages(kept, &st)
	if err != nil {
		return st, err
	}
	used, err := s.gcTrees(kept, trees, &st)
	if err != nil {
		return st, err
	}
	if err := s.gcLayers(used, &st); err != nil {
		return st, err
	}
	if out != nil {
		fmt.Fprintf(out, "gc: removed %d images, %d image trees, %d layers and %d temp dirs of interrupted loads, freed %.1f MiB\n",
			st.Images, st.Trees, st.Layers, st.Temp, float64(st.Bytes)/(1<<20))
	}
	return st, nil
}

// sourceImageIDs lists the images the current source caches point at.
// A file entry whose image file is gone or changed is stale: it could
// never hit again, so it is removed rather than keeping its image alive.
func (s *Store) sourceImageIDs() []string {
	files, _ := filepath.Glob(filepath.Join(s.root, "sources", "*.json"))
	var ids []string
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f), "file-") && s.staleFileEntry(f) {
			os.Remove(f)
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var e struct {
			ImageID string `json:"image_id"`
		}
		if json.Unmarshal(b, &e) == nil && e.ImageID != "" {
			ids = append(ids, e.ImageID)
		}
	}
	return ids
}

func (s *Store) staleFileEntry(path string) bool {
	e, ok := readFileEntry(path)
	if !ok {
		return true
	}
	cur, err := fileIdentity(FileSource{Path: e.Path, Ref: e.Ref}, s.now())
	return err != nil || !sameIdentity(e, cur)
}

// gcImages removes the image records not kept and returns the trees the
// kept ones use.
func (s *Store) gcImages(kept map[string]bool, st *GCStats) (map[string]bool, error) {
	ents, err := os.ReadDir(filepath.Join(s.root, "images"))
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	trees := map[string]bool{}
	for _, e := range ents {
		h, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !isHex64(h) {
			continue
		}
		if kept[h] {
			if f, err := s.readImageFile("sha256:" + h); err == nil {
				trees[f.Tree] = true
				continue
			}
		}
		if err := os.Remove(filepath.Join(s.root, "images", e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("gc: %w", err)
		}
		st.Images++
	}
	return trees, nil
}

// gcTrees removes the trees neither a kept image uses nor keep names (by
// chain id), and returns the layers the remaining ones use; nil means
// "all", when a kept tree's record cannot be read. Trees under rootfs/,
// kept by stores of an earlier layout, go the same way.
func (s *Store) gcTrees(kept, trees map[string]bool, st *GCStats) (map[string]bool, error) {
	used := map[string]bool{}
	for _, dir := range []struct{ sub, meta string }{{"trees", "tree.json"}, {"rootfs", "image.json"}} {
		ents, err := os.ReadDir(filepath.Join(s.root, dir.sub))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("gc: %w", err)
		}
		for _, e := range ents {
			name := e.Name()
			p := filepath.Join(s.root, dir.sub, name)
			if trees[name] || kept[strings.TrimPrefix(name, hostPrefix)] {
				if !markUsed(filepath.Join(p, dir.meta), used) {
					used = nil
				}
				continue
			}
			if err := s.removeTree(p, "tree-"+name, st); err != nil {
				return nil, err
			}
			os.Remove(s.lockPath("rootfs-" + name))
			st.Trees++
		}
	}
	return used, nil
}

// markUsed adds the layers a tree record lists.
func markUsed(record string, used map[string]bool) bool {
	b, err := os.ReadFile(record)
	if err != nil {
		return false
	}
	var f treeFile
	if json.Unmarshal(b, &f) != nil {
		return false
	}
	if used != nil {
		for _, l := range f.Layers {
			used[hexPart(l)] = true
		}
	}
	return true
}

func (s *Store) gcLayers(used map[string]bool, st *GCStats) error {
	if used == nil {
		return nil
	}
	ents, err := os.ReadDir(filepath.Join(s.root, "layers"))
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	for _, e := range ents {
		name, record := strings.CutSuffix(e.Name(), ".json")
		h := strings.TrimPrefix(name, "sha256-")
		if used[h] {
			continue
		}
		p := filepath.Join(s.root, "layers", e.Name())
		if record {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("gc: %w", err)
			}
			continue
		}
		if err := s.removeTree(p, "layer-"+h, st); err != nil {
			return err
		}
		st.Layers++
	}
	return nil
}

// removeTree deletes a published tree and its lock file; safe because GC
// holds the store lock exclusively, so nobody waits on that lock.
func (s *Store) removeTree(dir, lockName string, st *GCStats) error {
	st.Bytes += lastLinkBytes(dir)
	if err := removeAllForce(dir); err != nil {
		return fmt.Errorf("gc: remove %s: %w", dir, err)
	}
	os.Remove(s.lockPath(lockName))
	return nil
}

// lastLinkBytes sums the files whose data goes away with dir.
func lastLinkBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if sys, ok := info.Sys().(*syscall.Stat_t); ok && sys.Nlink == 1 {
			n += info.Size()
		}
		return nil
	})
	return n
}

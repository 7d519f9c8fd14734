package nixload

import (
	"encoding/json"
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
	Rootfs int   // image trees removed
	Layers int   // layers removed
	Bytes  int64 // file data freed (last links only)
}

// GC removes image trees that are neither in keep nor named by a source
// cache entry, then layers no remaining image uses, and reports what it
// freed to out. It waits for running loads to finish and blocks new ones
// while it runs.
func (s *Store) GC(keep []string, out io.Writer) (GCStats, error) {
	var st GCStats
	lock, err := flockFile(s.lockPath("store"), unix.LOCK_EX)
	if err != nil {
		return st, err
	}
	defer lock.Close()
	kept := map[string]bool{}
	for _, k := range append(keep, s.sourceChainIDs()...) {
		kept[hexPart(k)] = true
	}
	used, err := s.gcRootfs(kept, &st)
	if err != nil {
		return st, err
	}
	if err := s.gcLayers(used, &st); err != nil {
		return st, err
	}
	if out != nil {
		fmt.Fprintf(out, "gc: removed %d image trees and %d layers, freed %.1f MiB\n", st.Rootfs, st.Layers, float64(st.Bytes)/(1<<20))
	}
	return st, nil
}

// sourceChainIDs lists the chain ids the current source caches point at.
// A file entry whose image file is gone or changed is stale: it could never
// hit again, so it is removed rather than keeping its image alive.
func (s *Store) sourceChainIDs() []string {
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
			ChainID string `json:"chain_id"`
		}
		if json.Unmarshal(b, &e) == nil && e.ChainID != "" {
			ids = append(ids, e.ChainID)
		}
	}
	return ids
}

func (s *Store) staleFileEntry(path string) bool {
	e, ok := readFileEntry(path)
	if !ok {
		return true
	}
	st, err := os.Stat(e.Path)
	return err != nil || !sameStat(e, statEntry(e.Path, st))
}

// gcRootfs removes unkept trees and returns the layers the kept ones use;
// nil means "all", when a kept tree's image.json cannot be read.
func (s *Store) gcRootfs(kept map[string]bool, st *GCStats) (map[string]bool, error) {
	ents, err := os.ReadDir(filepath.Join(s.root, "rootfs"))
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	used := map[string]bool{}
	for _, e := range ents {
		name := e.Name()
		if kept[strings.TrimPrefix(name, hostPrefix)] {
			if !s.markUsed(name, used) {
				used = nil
			}
			continue
		}
		if err := s.removeTree(s.rootfsDir(name), "rootfs-"+name, st); err != nil {
			return nil, err
		}
		st.Rootfs++
	}
	return used, nil
}

func (s *Store) markUsed(name string, used map[string]bool) bool {
	b, err := os.ReadFile(filepath.Join(s.rootfsDir(name), "image.json"))
	if err != nil {
		return false
	}
	var f imageFile
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
		h := strings.TrimPrefix(e.Name(), "sha256-")
		if used[h] {
			continue
		}
		if err := s.removeTree(filepath.Join(s.root, "layers", e.Name()), "layer-"+h, st); err != nil {
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
	if err := os.RemoveAll(dir); err != nil {
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

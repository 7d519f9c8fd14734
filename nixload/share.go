package nixload

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Sharing is what an image has in common with the other images in the
// store: --load prints it, so that one can see that two images are the
// same tree with different configs, or how much a rebuild reused.
type Sharing struct {
	// Tree lists the other images with the same layers: they share the
	// tree on disk, and differ in their configs only.
	Tree []string `json:"tree"`
	// Layers counts, per other image, the layers it shares with this one.
	Layers map[string]int `json:"layers"`
}

// Sharing compares img with every image the store records.
func (s *Store) Sharing(img *Image) (Sharing, error) {
	sh := Sharing{Tree: []string{}, Layers: map[string]int{}}
	own, err := s.readImageFile(img.ID)
	if err != nil {
		return sh, err
	}
	mine := map[string]bool{}
	for _, l := range own.Layers {
		mine[l] = true
	}
	ents, err := os.ReadDir(filepath.Join(s.root, "images"))
	if err != nil {
		return sh, fmt.Errorf("list images: %w", err)
	}
	for _, e := range ents {
		h, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !isHex64(h) || "sha256:"+h == img.ID {
			continue
		}
		other, err := s.readImageFile("sha256:" + h)
		if err != nil {
			continue // removed meanwhile, or damaged: nothing shared
		}
		if other.Tree == own.Tree {
			sh.Tree = append(sh.Tree, other.ID)
		}
		theirs := map[string]bool{}
		for _, l := range other.Layers {
			if mine[l] {
				theirs[l] = true // a layer listed twice counts once
			}
		}
		if n := len(theirs); n > 0 {
			sh.Layers[other.ID] = n
		}
	}
	sort.Strings(sh.Tree)
	return sh, nil
}

func (s *Store) readImageFile(id string) (imageFile, error) {
	var f imageFile
	b, err := os.ReadFile(s.imagePath(id))
	if err != nil {
		return f, err
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("image record %s: %w", short(id), err)
	}
	return f, nil
}

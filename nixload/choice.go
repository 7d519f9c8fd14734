package nixload

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Image choices for a default source: the flake it names, or the host
// image standing in when that flake cannot be built.
const (
	ChoiceFlake = "flake"
	ChoiceHost  = "host"
)

// Choice is the image a default flake source last ended up with, and why.
// The sandbox tells the user when the choice changes, once, rather than
// in every new container's first tool result.
type Choice struct {
	Ref   string    `json:"ref"`
	Image string    `json:"image"` // ChoiceFlake or ChoiceHost
	Why   string    `json:"why,omitempty"`
	Since time.Time `json:"since"`
}

func (s *Store) choicePath(ref string) (path, lock string) {
	sum := sha256.Sum256([]byte(ref))
	name := "choice-" + hex.EncodeToString(sum[:8])
	return filepath.Join(s.root, "sources", name+".json"), s.lockPath(name)
}

// NoteChoice records c.Image (and Why) for c.Ref and reports whether that
// differs from the image recorded before: the user is to be told. Callers
// that race agree under a lock, so exactly one of them sees changed.
func (s *Store) NoteChoice(c Choice) (changed bool, err error) {
	path, lockPath := s.choicePath(c.Ref)
	if old, ok := readChoice(path); ok && old.Image == c.Image && old.Why == c.Why {
		return false, nil // the common case: no lock, no write
	}
	lock, err := flockFile(lockPath, unix.LOCK_EX)
	if err != nil {
		return false, err
	}
	defer lock.Close()
	old, ok := readChoice(path)
	if ok && old.Image == c.Image {
		if old.Why == c.Why {
			return false, nil
		}
		// The same image for another reason: kept quietly for --doctor.
		c.Since = old.Since
		return false, writeChoice(path, c)
	}
	if c.Since.IsZero() {
		c.Since = time.Now().UTC()
	}
	return true, writeChoice(path, c)
}

// LastChoice is the choice recorded for ref.
func (s *Store) LastChoice(ref string) (Choice, bool) {
	path, _ := s.choicePath(ref)
	return readChoice(path)
}

func readChoice(path string) (Choice, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Choice{}, false
	}
	var c Choice
	if json.Unmarshal(b, &c) != nil || c.Image == "" {
		return Choice{}, false
	}
	return c, true
}

func writeChoice(path string, c Choice) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := atomicWrite(path, append(b, '\n')); err != nil {
		return fmt.Errorf("record the image choice: %w", err)
	}
	return nil
}

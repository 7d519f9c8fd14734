package nixload

import (
	"sync"
	"testing"
)

// The user is told about the image choice once per change: a first
// choice, then a different image; the same image again, even for another
// reason, says nothing, and racing callers agree on who says it.
func TestNoteChoice(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		image, why string
		changed    bool
	}{
		{ChoiceHost, "nix is not installed", true},
		{ChoiceHost, "nix is not installed", false},
		{ChoiceHost, "the default flake could not be built (offline)", false},
		{ChoiceFlake, "", true},
		{ChoiceFlake, "", false},
		{ChoiceHost, "nix is not installed", true},
	}
	for i, st := range steps {
		changed, err := s.NoteChoice(Choice{Ref: "path:/p", Image: st.image, Why: st.why})
		if err != nil || changed != st.changed {
			t.Fatalf("step %d (%s, %q): changed %v, %v; want %v", i, st.image, st.why, changed, err, st.changed)
		}
		got, ok := s.LastChoice("path:/p")
		if !ok || got.Image != st.image || got.Why != st.why || got.Since.IsZero() {
			t.Fatalf("step %d: LastChoice = %+v, %v", i, got, ok)
		}
	}
	if _, ok := s.LastChoice("path:/other"); ok {
		t.Fatal("a ref never chosen has a choice")
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	told := 0
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			changed, err := s.NoteChoice(Choice{Ref: "path:/race", Image: ChoiceHost, Why: "offline"})
			if err != nil {
				t.Error(err)
			}
			if changed {
				mu.Lock()
				told++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if told != 1 {
		t.Fatalf("%d racing callers were told of the choice, want exactly 1", told)
	}
}

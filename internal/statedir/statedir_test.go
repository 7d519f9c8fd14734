package statedir

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/testenv"
)

// other is a uid no test user has.
const other = 12345

func needRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		testenv.Missing(t, "only root can make a directory another user owns")
	}
}

func mkdir(t *testing.T, p string, mode os.FileMode, owner int) string {
	t.Helper()
	if err := os.MkdirAll(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	if owner >= 0 {
		if err := os.Lchown(p, owner, owner); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func TestMake(t *testing.T) {
	me := os.Getuid()
	tests := []struct {
		name     string
		root     bool
		setup    func(t *testing.T, base string) string // the dir to make
		wantErr  string
		wantReal func(base string) string
	}{
		{name: "created when missing", setup: func(t *testing.T, base string) string {
			return filepath.Join(base, "a", "b", "nix-sandbox")
		}},
		{name: "an existing private dir", setup: func(t *testing.T, base string) string {
			return mkdir(t, filepath.Join(base, "mine"), 0o700, -1)
		}},
		{name: "through a symlink, judged and returned as the real path", setup: func(t *testing.T, base string) string {
			mkdir(t, filepath.Join(base, "real"), 0o700, -1)
			os.Symlink("real", filepath.Join(base, "link"))
			return filepath.Join(base, "link", "nix-sandbox")
		}, wantReal: func(base string) string { return filepath.Join(base, "real", "nix-sandbox") }},
		{name: "a file in the way", setup: func(t *testing.T, base string) string {
			os.WriteFile(filepath.Join(base, "f"), nil, 0o600)
			return filepath.Join(base, "f")
		}, wantErr: "is not a directory"},
		{name: "under a file", setup: func(t *testing.T, base string) string {
			os.WriteFile(filepath.Join(base, "f"), nil, 0o600)
			return filepath.Join(base, "f", "x")
		}, wantErr: "not a directory"},
		{name: "group-writable itself", setup: func(t *testing.T, base string) string {
			return mkdir(t, filepath.Join(base, "g"), 0o770, -1)
		}, wantErr: "writable by other users"},
		{name: "in a dir anyone may write", setup: func(t *testing.T, base string) string {
			mkdir(t, filepath.Join(base, "shared"), 0o777, -1)
			return filepath.Join(base, "shared", "nix-sandbox")
		}, wantErr: "shared is writable by other users"},
		{name: "in a sticky dir of root, as /tmp", root: true, setup: func(t *testing.T, base string) string {
			mkdir(t, filepath.Join(base, "tmp"), 0o777|os.ModeSticky, 0)
			return filepath.Join(base, "tmp", "lectic", "nix-sandbox")
		}},
		{name: "in a sticky dir another user made", root: true, setup: func(t *testing.T, base string) string {
			mkdir(t, filepath.Join(base, "lectic"), 0o777|os.ModeSticky, other)
			return filepath.Join(base, "lectic", "nix-sandbox")
		}, wantErr: "belongs to uid 12345"},
		{name: "in a sticky dir of the caller's own", setup: func(t *testing.T, base string) string {
			if me == 0 {
				t.Skip("root's own sticky dir is root's")
			}
			mkdir(t, filepath.Join(base, "lectic"), 0o777|os.ModeSticky, -1)
			return filepath.Join(base, "lectic", "nix-sandbox")
		}, wantErr: "writable by other users"},
		{name: "another user's dir", root: true, setup: func(t *testing.T, base string) string {
			return mkdir(t, filepath.Join(base, "theirs"), 0o700, other)
		}, wantErr: "belongs to uid 12345, not to you"},
		{name: "a symlink another user may repoint, to a dir of theirs", root: true, setup: func(t *testing.T, base string) string {
			mkdir(t, filepath.Join(base, "tmp"), 0o777|os.ModeSticky, 0)
			mkdir(t, filepath.Join(base, "decoy"), 0o700, other)
			os.Symlink(filepath.Join(base, "decoy"), filepath.Join(base, "tmp", "lectic"))
			os.Lchown(filepath.Join(base, "tmp", "lectic"), other, other)
			return filepath.Join(base, "tmp", "lectic", "nix-sandbox")
		}, wantErr: "decoy belongs to uid 12345"},
		{name: "a dir another user slipped in where ours would go", root: true, setup: func(t *testing.T, base string) string {
			mkdir(t, filepath.Join(base, "tmp"), 0o777|os.ModeSticky, 0)
			mkdir(t, filepath.Join(base, "tmp", "lectic"), 0o700, other)
			return filepath.Join(base, "tmp", "lectic")
		}, wantErr: "belongs to uid 12345, not to you"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root {
				needRoot(t)
			}
			base := t.TempDir()
			dir := tt.setup(t, base)
			got, err := Make(dir, me)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Make(%s) = %q, %v; want an error with %q", dir, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Make(%s): %v", dir, err)
			}
			want := dir
			if tt.wantReal != nil {
				want = tt.wantReal(base)
			}
			if got != want {
				t.Fatalf("Make(%s) = %s, want %s", dir, got, want)
			}
			st, err := os.Lstat(got)
			if err != nil || !st.IsDir() || st.Mode().Perm()&0o022 != 0 {
				t.Fatalf("made %s: %v %v", got, st, err)
			}
			if again, err := Check(dir, me); err != nil || again != got {
				t.Fatalf("Check after Make = %q, %v", again, err)
			}
		})
	}
}

func TestCheckDoesNotCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	if _, err := Check(dir, os.Getuid()); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Check of a missing dir = %v", err)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Check created %s", dir)
	}
}

func TestPickTemp(t *testing.T) {
	me := os.Getuid()
	base := t.TempDir()
	shared := mkdir(t, filepath.Join(base, "shared"), 0o777, -1)
	good := filepath.Join(base, "good", "nix-sandbox")
	long := filepath.Join(base, strings.Repeat("x", MaxTempRoot), "nix-sandbox")
	tests := []struct {
		name    string
		cands   []Candidate
		want    string
		wantErr []string
	}{
		{"the given one when it is safe", []Candidate{{Dir: good}, {Dir: filepath.Join(base, "never")}}, good, nil},
		{"the next when the given one lies in a shared dir", []Candidate{{Dir: filepath.Join(shared, "nix-sandbox")}, {Dir: good}}, good, nil},
		{"the next when a needed dir is missing", []Candidate{{Dir: filepath.Join(base, "run", "x"), Needs: filepath.Join(base, "run", "1000")}, {Dir: good}}, good, nil},
		{"the next when sockets would not fit", []Candidate{{Dir: long}, {Dir: good}}, good, nil},
		{"none", []Candidate{{Dir: ""}, {Dir: filepath.Join(shared, "nix-sandbox")}, {Dir: long}},
			"", []string{"no safe directory", "not set", "shared is writable by other users", "too long for unix sockets"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PickTemp(tt.cands, me)
			if tt.wantErr != nil {
				var nt *NoTempError
				if !errors.As(err, &nt) {
					t.Fatalf("PickTemp = %q, %v; want a NoTempError", got, err)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("PickTemp = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if _, err := os.Lstat(filepath.Join(base, "never")); err == nil {
		t.Error("a candidate after the chosen one was created")
	}
	if ents, _ := os.ReadDir(shared); len(ents) != 0 {
		t.Errorf("an unsafe candidate gained %d entries", len(ents))
	}
}

func TestTempCandidates(t *testing.T) {
	got := TempCandidates("/tmp/lectic/nix-sandbox", "/home/u/.cache/lectic/nix-sandbox", 1000)
	want := []Candidate{
		{Dir: "/tmp/lectic/nix-sandbox"},
		{Dir: "/run/user/1000/lectic/nix-sandbox", Needs: "/run/user/1000"},
		{Dir: "/home/u/.cache/lectic/nix-sandbox/temp"},
		{Dir: "/tmp/lectic-1000/nix-sandbox"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("candidate %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

func TestHostConfigCovers(t *testing.T) {
	base, _ := filepath.EvalSymlinks(t.TempDir())
	wd := filepath.Join(base, "w")
	for _, d := range []string{".git/hooks", "sub", "nix", "cfg/lectic"} {
		os.MkdirAll(filepath.Join(wd, d), 0o755)
	}
	for _, f := range []string{"lectic.yaml", "chat.lec", ".git/config", "sub/conv.lec", "nix/flake.nix", "notes.txt", "image.tar"} {
		os.WriteFile(filepath.Join(wd, f), nil, 0o644)
	}
	os.Symlink("chat.lec", filepath.Join(wd, "link.lec"))
	env := map[string]string{"HOME": filepath.Join(base, "home"), "LECTIC_FILE": filepath.Join(wd, "sub", "conv.lec"),
		"LECTIC_CONFIG": filepath.Join(wd, "cfg", "lectic")}
	getenv := func(k string) string { return env[k] }
	hc := hostConfigCovers(options{}, []string{wd}, imageSource{file: filepath.Join(wd, "image.tar"), flakeDir: filepath.Join(wd, "nix")}, getenv, nil)
	var covers []string
	for _, c := range hc.covers {
		covers = append(covers, c.Path)
	}
	sort.Strings(covers)
	want := []string{".git/config", ".git/hooks", "cfg/lectic", "chat.lec", "image.tar", "lectic.yaml", "nix", "sub/conv.lec"}
	for i := range want {
		want[i] = filepath.Join(wd, want[i])
	}
	if !slices.Equal(covers, want) {
		t.Errorf("covers:\n got %q\nwant %q", covers, want)
	}
	wantGuards := []string{filepath.Join(wd, ".envrc"), filepath.Join(wd, "sub", "lectic.yaml")}
	for _, g := range wantGuards {
		if !slices.Contains(hc.guards, g) {
			t.Errorf("guards %q lack %s", hc.guards, g)
		}
	}
	if len(hc.created()) != 0 {
		t.Errorf("created before anything was: %q", hc.created())
	}
	os.WriteFile(filepath.Join(wd, ".envrc"), nil, 0o644)
	os.WriteFile(filepath.Join(wd, "new.lec"), nil, 0o644)
	os.WriteFile(filepath.Join(wd, "other.txt"), nil, 0o644)
	if got, want := hc.created(), []string{filepath.Join(wd, ".envrc"), filepath.Join(wd, "new.lec")}; !slices.Equal(got, want) {
		t.Errorf("created = %q, want %q", got, want)
	}
	if off := hostConfigCovers(options{allowHostConfig: true}, []string{wd}, imageSource{}, getenv, nil); len(off.covers)+len(off.guards) != 0 {
		t.Errorf("--allow-host-config-writes still protects %+v", off)
	}
}

// TestHostConfigNested: below the top of a bind, what git and Lectic run
// is found too: a nested repository's hooks and config, the hooks dir
// core.hooksPath names (husky), a submodule's git dir, .lec files and
// their lectic.yaml; not in package trees, hidden state dirs, or deeper
// than nestedDepth.
func TestHostConfigNested(t *testing.T) {
	tests := []struct {
		name       string
		files      map[string]string // relative path -> content ("/" suffix: a dir)
		covers     []string          // that must be covered
		notCovered []string
		guards     []string // that must be watched
	}{
		{name: "a repository below the top (workdir = $HOME)",
			files:  map[string]string{"src/proj/.git/hooks/": "", "src/proj/.git/config": "", "src/proj/.git/objects/": "", "src/proj/main.go": ""},
			covers: []string{"src/proj/.git/hooks", "src/proj/.git/config"}, notCovered: []string{"src/proj/.git/objects", "src/proj/main.go"}},
		{name: "a repository without hooks: watched",
			files:  map[string]string{"proj/.git/config": ""},
			covers: []string{"proj/.git/config"}, guards: []string{"proj/.git/hooks"}},
		{name: "core.hooksPath, relative to the work tree (husky)",
			files:  map[string]string{".git/config": "[core]\n\tbare = false\n\thooksPath = .husky ; husky\n", ".husky/pre-commit": ""},
			covers: []string{".husky", ".git/config"}},
		{name: "core.hooksPath not made yet: watched",
			files:  map[string]string{"app/.git/config": "[Core] HooksPath = \"git hooks\"\n"},
			guards: []string{"app/git hooks"}},
		{name: "core.hooksPath with ~",
			files:  map[string]string{".git/config": "[core]\nhooksPath = ~/hooks\n", "home/hooks/": ""},
			covers: []string{"home/hooks"}},
		{name: "a submodule: its .git file and git dir",
			files: map[string]string{".git/config": "", ".git/modules/lib/HEAD": "", ".git/modules/lib/config": "",
				".git/modules/lib/hooks/": "", ".git/modules/lib/objects/": "", "lib/.git": "gitdir: ../.git/modules/lib\n"},
			covers: []string{"lib/.git", ".git/modules/lib/hooks", ".git/modules/lib/config"}, notCovered: []string{".git/modules/lib/objects"}},
		{name: "a worktree shares its main git dir's hooks",
			files: map[string]string{"main/.git/config": "", "main/.git/hooks/": "", "main/.git/worktrees/wt/HEAD": "",
				"main/.git/worktrees/wt/commondir": "../..\n", "wt/.git": "gitdir: ../main/.git/worktrees/wt"},
			covers: []string{"wt/.git", "main/.git/hooks", "main/.git/config"}},
		{name: "nested .lec files and the lectic.yaml a run of them reads",
			files:  map[string]string{"notes/a.lec": "", "notes/deep/b.lec": "", "notes/deep/lectic.yaml": "", "docs/.envrc": ""},
			covers: []string{"notes/a.lec", "notes/deep/b.lec", "notes/deep/lectic.yaml", "docs/.envrc"}, guards: []string{"notes/lectic.yaml"}},
		{name: "deeper than nestedDepth",
			files:      map[string]string{"a/b/c/x.lec": "", "a/b/c/d/y.lec": ""},
			covers:     []string{"a/b/c/x.lec"},
			notCovered: []string{"a/b/c/d/y.lec"}},
		{name: "package trees and the sandbox's hidden state are not searched",
			files:      map[string]string{"node_modules/p/.git/hooks/": "", "state/q/.git/hooks/": "", "ok/.git/hooks/": ""},
			covers:     []string{"ok/.git/hooks"},
			notCovered: []string{"node_modules/p/.git/hooks", "state/q/.git/hooks"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base, _ := filepath.EvalSymlinks(t.TempDir())
			wd := filepath.Join(base, "w")
			os.Mkdir(wd, 0o755)
			for rel, content := range tc.files {
				p := filepath.Join(wd, rel)
				if strings.HasSuffix(rel, "/") {
					os.MkdirAll(p, 0o755)
					continue
				}
				os.MkdirAll(filepath.Dir(p), 0o755)
				os.WriteFile(p, []byte(content), 0o644)
			}
			env := map[string]string{"HOME": filepath.Join(wd, "home")}
			state := []oci.Cover{{Path: filepath.Join(wd, "state"), Hide: true}}
			hc := hostConfigCovers(options{}, []string{wd}, imageSource{}, func(k string) string { return env[k] }, state)
			var covers []string
			for _, c := range hc.covers {
				covers = append(covers, c.Path)
			}
			for _, rel := range tc.covers {
				if !slices.Contains(covers, filepath.Join(wd, rel)) {
					t.Errorf("%s is not covered; covers %q", rel, covers)
				}
			}
			for _, rel := range tc.notCovered {
				if slices.Contains(covers, filepath.Join(wd, rel)) {
					t.Errorf("%s is covered", rel)
				}
			}
			for _, rel := range tc.guards {
				if !slices.Contains(hc.guards, filepath.Join(wd, rel)) {
					t.Errorf("%s is not watched; guards %q", rel, hc.guards)
				}
			}
		})
	}
}

// TestHostConfigScanBudget: a tree larger than the budget costs at most
// scanBudget directory reads, breadth first: every directory of a level
// is searched before any of the next.
func TestHostConfigScanBudget(t *testing.T) {
	base, _ := filepath.EvalSymlinks(t.TempDir())
	wd := filepath.Join(base, "w")
	const wide = 100
	for i := 0; i < wide; i++ {
		for j := 0; j < scanBudget/wide+1; j++ {
			os.MkdirAll(filepath.Join(wd, fmt.Sprintf("d%03d", i), fmt.Sprintf("e%03d", j)), 0o755)
		}
	}
	// Sorted last at their levels: a repository one level down, which is
	// searched, and one three levels down, past the budget.
	shallow := filepath.Join(wd, "zz", ".git", "hooks")
	deep := filepath.Join(wd, "zz", "y", "x", ".git", "hooks")
	os.MkdirAll(shallow, 0o755)
	os.MkdirAll(deep, 0o755)
	hc := hostConfigCovers(options{}, []string{wd}, imageSource{}, func(string) string { return "" }, nil)
	var covers []string
	for _, c := range hc.covers {
		covers = append(covers, c.Path)
	}
	if !slices.Contains(covers, shallow) {
		t.Errorf("a repository one level down was missed: %q", covers)
	}
	if slices.Contains(covers, deep) {
		t.Errorf("the scan read more than %d directories", scanBudget)
	}
}

func TestGitConfigValue(t *testing.T) {
	for _, tc := range []struct{ config, want string }{
		{"[core]\n\thooksPath = .husky\n", ".husky"},
		{"[core]\n\thookspath=a\n[core]\n\tHOOKSPATH = b # later wins\n", "b"},
		{"[core] hooksPath = inline\n", "inline"},
		{"[remote \"origin\"]\n\thooksPath = no\n", ""},
		{"[core]\n\t# hooksPath = commented\n", ""},
		{"[core]\n\thooksPath = \"with space\\\\x\" ; comment\n", "with space\\x"},
		{"[core.sub]\n\thooksPath = no\n", ""},
	} {
		p := filepath.Join(t.TempDir(), "config")
		os.WriteFile(p, []byte(tc.config), 0o644)
		if got := gitConfigValue(p, "core", "hookspath"); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.config, got, tc.want)
		}
	}
}

// BenchmarkHostConfigScan is the cost of the search a call makes in the
// worst case: a tree that uses up the whole budget.
func BenchmarkHostConfigScan(b *testing.B) {
	base, _ := filepath.EvalSymlinks(b.TempDir())
	wd := filepath.Join(base, "w")
	for i := 0; i < 64; i++ {
		for j := 0; j < scanBudget/64+1; j++ {
			os.MkdirAll(filepath.Join(wd, fmt.Sprintf("d%03d", i), fmt.Sprintf("e%03d", j)), 0o755)
			os.WriteFile(filepath.Join(wd, fmt.Sprintf("d%03d", i), fmt.Sprintf("f%03d", j)), nil, 0o644)
		}
	}
	getenv := func(string) string { return "" }
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		hostConfigCovers(options{}, []string{wd}, imageSource{}, getenv, nil)
	}
}

package main

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
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
	hc := hostConfigCovers(options{}, []string{wd}, imageSource{file: filepath.Join(wd, "image.tar"), flakeDir: filepath.Join(wd, "nix")}, getenv)
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
	if off := hostConfigCovers(options{allowHostConfig: true}, []string{wd}, imageSource{}, getenv); len(off.covers)+len(off.guards) != 0 {
		t.Errorf("--allow-host-config-writes still protects %+v", off)
	}
}

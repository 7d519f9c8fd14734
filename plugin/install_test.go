package plugin

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	lecticnixsandbox "github.com/lectic-nix-sandbox/lectic-nix-sandbox"
)

func fakeExe(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "lectic-nix-sandbox-build")
	if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func install(t *testing.T, dir, exe string) string {
	t.Helper()
	var out bytes.Buffer
	// dir is under a root Lectic searches for plugins by name.
	if err := Install(dir, exe, []string{filepath.Dir(filepath.Dir(dir))}, &out); err != nil {
		t.Fatalf("Install: %v\n%s", err, out.String())
	}
	return out.String()
}

type fileState struct {
	ino   uint64
	mtime time.Time
	mode  fs.FileMode
}

func snapshot(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]fileState{}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = fileState{ino: info.Sys().(*syscall.Stat_t).Ino, mtime: info.ModTime(), mode: info.Mode()}
	}
	return out
}

func TestInstallWritesThePlugin(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "plugins", "nix-sandbox")
	exe := fakeExe(t, "binary v1")
	out := install(t, dir, exe)

	want := map[string]fs.FileMode{BinaryName: 0o700}
	for _, name := range lecticnixsandbox.PluginFiles() {
		want[name] = 0o600
	}
	for _, name := range []string{"lectic.yaml", "flake.nix", "flake.lock", "packages.example.nix"} {
		if _, ok := want[name]; !ok {
			t.Fatalf("embedded plugin files %v lack %s", lecticnixsandbox.PluginFiles(), name)
		}
	}
	got := snapshot(t, dir)
	if len(got) != len(want) {
		t.Fatalf("installed %v, want exactly %v (no temp files left)", got, want)
	}
	for name, mode := range want {
		st, ok := got[name]
		if !ok {
			t.Fatalf("%s not installed", name)
		}
		if st.mode.Perm() != mode || !st.mode.IsRegular() {
			t.Fatalf("%s mode %v, want regular %v", name, st.mode, mode)
		}
		if !strings.Contains(out, "installed "+filepath.Join(dir, name)) {
			t.Fatalf("output does not report %s:\n%s", name, out)
		}
	}
	body, _ := os.ReadFile(filepath.Join(dir, BinaryName))
	if string(body) != "binary v1" {
		t.Fatalf("binary content %q", body)
	}
	for _, name := range lecticnixsandbox.PluginFiles() {
		embedded, err := fs.ReadFile(lecticnixsandbox.Assets(), name)
		if err != nil {
			t.Fatal(err)
		}
		onDisk, _ := os.ReadFile(filepath.Join(dir, name))
		if !bytes.Equal(embedded, onDisk) {
			t.Fatalf("%s differs from the embedded copy", name)
		}
	}
	// The plugin pins the nixpkgs the repository pins.
	repoLock, err := os.ReadFile(filepath.Join("..", "flake.lock"))
	if err != nil {
		t.Fatal(err)
	}
	if installed, _ := os.ReadFile(filepath.Join(dir, "flake.lock")); !bytes.Equal(installed, repoLock) {
		t.Fatalf("installed flake.lock differs from the repository's")
	}
	for _, hint := range []string{"imports:\n    - plugin: nix-sandbox\n", "imports:\n    - \"" + dir + "\"", "lectic nix-sandbox --doctor"} {
		if !strings.Contains(out, hint) {
			t.Fatalf("output lacks %q:\n%s", hint, out)
		}
	}
}

func TestInstallIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	exe := fakeExe(t, "binary v1")
	install(t, dir, exe)
	before := snapshot(t, dir)
	out := install(t, dir, exe)
	if !strings.Contains(out, "nothing changed") || strings.Contains(out, "installed ") || strings.Contains(out, "updated ") {
		t.Fatalf("second install output:\n%s", out)
	}
	after := snapshot(t, dir)
	for name, st := range before {
		if after[name] != st {
			t.Fatalf("second install touched %s: %+v -> %+v", name, st, after[name])
		}
	}
}

func TestInstallReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	exe := fakeExe(t, "binary v1")
	install(t, dir, exe)
	before := snapshot(t, dir)

	// A running old binary keeps its file open; it must keep reading v1.
	old, err := os.Open(filepath.Join(dir, BinaryName))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := os.WriteFile(exe, []byte("binary v2, longer"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := install(t, dir, exe)
	if !strings.Contains(out, "updated   "+filepath.Join(dir, BinaryName)) {
		t.Fatalf("binary not reported as updated:\n%s", out)
	}
	after := snapshot(t, dir)
	if after[BinaryName].ino == before[BinaryName].ino {
		t.Fatal("the binary was rewritten in place, not replaced by rename")
	}
	for name, st := range before {
		if name != BinaryName && after[name] != st {
			t.Fatalf("%s changed although only the binary differs", name)
		}
	}
	oldBody := make([]byte, 64)
	n, _ := old.ReadAt(oldBody, 0)
	if string(oldBody[:n]) != "binary v1" {
		t.Fatalf("the open old binary now reads %q", oldBody[:n])
	}
	newBody, _ := os.ReadFile(filepath.Join(dir, BinaryName))
	if string(newBody) != "binary v2, longer" {
		t.Fatalf("new binary content %q", newBody)
	}
}

func TestInstallRepairs(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
		file   string
	}{
		{"edited config", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "lectic.yaml"), []byte("sandbox: other\n"), 0o600)
		}, "lectic.yaml"},
		{"same length edit", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "flake.nix")
			b, _ := os.ReadFile(p)
			b[0] ^= 0x20
			os.WriteFile(p, b, 0o600)
		}, "flake.nix"},
		{"wrong mode", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, "packages.example.nix"), 0o644)
		}, "packages.example.nix"},
		{"binary not executable", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, BinaryName), 0o600)
		}, BinaryName},
		{"deleted", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "lectic.yaml"))
		}, "lectic.yaml"},
		{"replaced by a symlink", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "flake.nix")
			os.Remove(p)
			os.Symlink("/etc/hostname", p)
		}, "flake.nix"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			exe := fakeExe(t, "binary v1")
			install(t, dir, exe)
			c.damage(t, dir)
			out := install(t, dir, exe)
			if !strings.Contains(out, filepath.Join(dir, c.file)) || strings.Contains(out, "nothing changed") {
				t.Fatalf("repair not reported:\n%s", out)
			}
			if strings.Count(out, "unchanged") != len(snapshot(t, dir))-1 {
				t.Fatalf("more than %s was rewritten:\n%s", c.file, out)
			}
			if again := install(t, dir, exe); !strings.Contains(again, "nothing changed") {
				t.Fatalf("install after repair still changes things:\n%s", again)
			}
		})
	}
}

func TestInstallRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, tempPrefix+"flake.nix-1.tmp")
	fresh := filepath.Join(dir, tempPrefix+"flake.nix-2.tmp")
	other := filepath.Join(dir, "notes.tmp")
	for _, p := range []string{stale, fresh, other} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-time.Hour)
	for _, p := range []string{stale, other} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	install(t, dir, fakeExe(t, "bin"))
	for p, wantExist := range map[string]bool{stale: false, fresh: true, other: true} {
		_, err := os.Stat(p)
		if (err == nil) != wantExist {
			t.Fatalf("%s exists=%v, want %v", p, err == nil, wantExist)
		}
	}
}

func TestInstallErrors(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, dir, exe, want string
	}{
		{"missing program", t.TempDir(), "/nonexistent/lectic-nix-sandbox", "the program to install"},
		{"program is a directory", t.TempDir(), t.TempDir(), "is not a regular file"},
		{"directory is a file", notDir, fakeExe(t, "bin"), "create " + notDir},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			err := Install(c.dir, c.exe, nil, &out)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

// The closing advice gives forms that find the plugin from where it was
// installed: by name under a root Lectic searches, else by path or with
// LECTIC_RUNTIME naming the parent directory.
func TestInstallSaysHowToImport(t *testing.T) {
	data := t.TempDir()
	outside := filepath.Join(t.TempDir(), "my tools", "nix-sandbox")
	cases := []struct {
		name, dir string
		want      []string
		notWant   []string
	}{
		{name: "under LECTIC_DATA", dir: filepath.Join(data, "plugins", "nix-sandbox"),
			want: []string{"    - plugin: nix-sandbox\n", "lectic nix-sandbox --doctor"}, notWant: []string{"LECTIC_RUNTIME="}},
		{name: "outside", dir: outside,
			want: []string{"by its path:\n  imports:\n    - \"" + outside + "\"\n",
				"  export LECTIC_RUNTIME='" + filepath.Dir(outside) + "'\nand import\n  imports:\n    - plugin: nix-sandbox\n",
				filepath.Join(outside, BinaryName) + " --doctor"},
			notWant: []string{"lectic nix-sandbox --doctor"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := Install(c.dir, fakeExe(t, "bin"), []string{filepath.Join(data, "config"), data}, &out); err != nil {
				t.Fatal(err)
			}
			for _, w := range c.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			for _, w := range c.notWant {
				if strings.Contains(out.String(), w) {
					t.Errorf("output has %q:\n%s", w, out.String())
				}
			}
		})
	}
}

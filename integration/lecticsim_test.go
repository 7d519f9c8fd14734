package integration

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// A model of the parts of Lectic that decide how the plugin is found and
// how its sandbox line becomes argv, written from Lectic's source
// (src/utils/configDiscovery.ts, localPath.ts, execHelpers.ts): Lectic
// itself is a Bun program this machine does not have.

// lecticLocal rewrites a config string value the way Lectic's local:
// resolution does. Unquoted, everything after "local:" is one path, joined
// to the config file's directory and normalized: a space in that
// directory splits the line later, and "https://" becomes "https:/". A
// value that starts with a quoted local: path ("'local:./x' --opt" or
// "\"local:./x\"") has only that path resolved, inside its quotes.
func lecticLocal(value, baseDir string) (string, error) {
	for _, q := range []string{"'", `"`} {
		if rest, ok := strings.CutPrefix(value, q+"local:"); ok {
			end := strings.Index(rest, q)
			if end < 0 {
				return "", errors.New("unterminated quoted local: path")
			}
			p, err := lecticLocalPath(rest[:end], baseDir)
			if err != nil {
				return "", err
			}
			return q + p + q + rest[end+1:], nil
		}
	}
	if rest, ok := strings.CutPrefix(value, "local:"); ok {
		return lecticLocalPath(rest, baseDir)
	}
	return value, nil
}

// lecticLocalPath is node's path.normalize(path.resolve(base, p)) for a
// p that starts with ./ or ../, as local: requires.
func lecticLocalPath(p, baseDir string) (string, error) {
	if !strings.HasPrefix(p, "./") && !strings.HasPrefix(p, "../") {
		return "", errors.New("local: paths must start with ./ or ../")
	}
	return path.Clean(path.Join(baseDir, p)), nil
}

// lecticWords splits a command line as Lectic's parseCommandToArgv does:
// a word is a "double-quoted" or 'single-quoted' run, or a run of
// non-space characters, and the quotes around a whole word are removed.
// No globbing, no variables, no backslash escapes.
var lecticWord = regexp.MustCompile(`"[^"]*"|'[^']*'|\S+`)

func lecticWords(line string) []string {
	var argv []string
	for _, w := range lecticWord.FindAllString(line, -1) {
		if len(w) >= 2 && (w[0] == '"' && w[len(w)-1] == '"' || w[0] == '\'' && w[len(w)-1] == '\'') {
			w = w[1 : len(w)-1]
		}
		argv = append(argv, w)
	}
	return argv
}

// lecticPathImport is where Lectic reads an `imports: - PATH` entry: the
// path itself, or PATH/lectic.yaml when PATH is a directory.
func lecticPathImport(p string) string {
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		return filepath.Join(p, "lectic.yaml")
	}
	return filepath.Clean(p)
}

// lecticPluginImport finds `imports: - plugin: NAME` as Lectic does: in
// each of $LECTIC_RUNTIME's dirs (colon-separated), then LECTIC_CONFIG,
// then LECTIC_DATA, a lectic.yaml at any depth whose directory is named
// NAME; more than one in the same root is an error.
func lecticPluginImport(name string, runtime, config, data string) (string, error) {
	var roots []string
	for _, d := range strings.Split(runtime, ":") {
		if d = strings.TrimSpace(d); d != "" {
			roots = append(roots, d)
		}
	}
	roots = append(roots, config, data)
	for _, root := range roots {
		var found []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && d.Name() == "lectic.yaml" && filepath.Base(filepath.Dir(p)) == name {
				found = append(found, p)
			}
			return nil
		})
		switch len(found) {
		case 0:
			continue
		case 1:
			return filepath.EvalSymlinks(found[0])
		default:
			return "", errors.New("multiple plugins named " + name)
		}
	}
	return "", errors.New("plugin " + name + " could not be found in LECTIC_RUNTIME, LECTIC_CONFIG, or LECTIC_DATA")
}

// yamlScalar reads the value of a one-line `key: value` YAML entry: plain,
// 'single-quoted' or "double-quoted" (with \" and \\ escapes).
func yamlScalar(v string) string {
	v = strings.TrimSpace(v)
	switch {
	case len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'':
		return strings.ReplaceAll(v[1:len(v)-1], "''", "'")
	case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
		return strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(v[1 : len(v)-1])
	}
	return v
}

// sandboxLine is the resolved argv of the active sandbox: line of the
// lectic.yaml at path, as Lectic builds it.
func sandboxLine(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "sandbox:"); ok {
			line, err := lecticLocal(yamlScalar(v), filepath.Dir(path))
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			return lecticWords(line)
		}
	}
	t.Fatalf("%s has no sandbox: line", path)
	return nil
}

// TestPluginLineWithSpaces: installed under a path with a space, the
// plugin's sandbox line, resolved and split as Lectic does, names the
// installed binary as one word, and the result runs; so do its examples.
// Unquoted, the same line would split at the space.
func TestPluginLineWithSpaces(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		data := filepath.Join(wd, "lectic data")
		r := u.run(context.Background(), t, runOpts{env: []string{"LECTIC_DATA=" + data}}, "--install")
		wantOK(t, r)
		dir := filepath.Join(data, "plugins", "nix-sandbox")
		yaml := filepath.Join(dir, "lectic.yaml")
		argv := sandboxLine(t, yaml)
		bin := filepath.Join(dir, "lectic-nix-sandbox")
		if len(argv) != 1 || argv[0] != bin {
			t.Fatalf("the plugin's sandbox line becomes %q, want [%q]", argv, bin)
		}
		cmd := exec.Command(argv[0], append(argv[1:], "--image", suite.images["busybox"], "-d", wd, "sh", "-c", "echo ran in $(pwd)")...)
		run := u.command(context.Background(), runOpts{dir: wd}, "x")
		cmd.Env, cmd.Dir, cmd.SysProcAttr = run.Env, wd, run.SysProcAttr
		out, err := cmd.CombinedOutput()
		if err != nil || string(out) != "ran in "+wd+"\n" {
			t.Fatalf("running the plugin's sandbox line: %v\n%s", err, out)
		}

		// Unquoted, Lectic's local: rewriting takes the rest of the line as
		// one path and the split breaks it at the space.
		unquoted, err := lecticLocal("local:./lectic-nix-sandbox", dir)
		if err != nil {
			t.Fatal(err)
		}
		if words := lecticWords(unquoted); len(words) < 2 || words[0] == bin {
			t.Fatalf("the unquoted line did not split at the space: %q", words)
		}
		if normalized, _ := lecticLocal("local:./lectic-nix-sandbox --flake git+https://example.org/r", dir); !strings.Contains(normalized, "git+https:/example.org") {
			t.Fatalf("unquoted local: is expected to normalize the whole line: %q", normalized)
		}

		// Every example in the installed file, uncommented, keeps the
		// binary one word and its options as written.
		b, _ := os.ReadFile(yaml)
		n := 0
		for _, l := range strings.Split(string(b), "\n") {
			v, ok := strings.CutPrefix(l, "# sandbox:")
			if !ok {
				continue
			}
			n++
			line, err := lecticLocal(yamlScalar(v), dir)
			if err != nil {
				t.Fatalf("example %q: %v", l, err)
			}
			words := lecticWords(line)
			if len(words) < 2 || words[0] != bin || !strings.HasPrefix(words[1], "--") {
				t.Fatalf("example %q becomes %q", l, words)
			}
		}
		if n < 5 {
			t.Fatalf("only %d examples in the installed lectic.yaml", n)
		}
	})
}

// TestInstallOutsideLecticDirs: installed to a DIR outside LECTIC_DATA and
// LECTIC_CONFIG, the forms --install gives (a path import, LECTIC_RUNTIME
// with a plugin import) find the plugin as Lectic resolves imports; the
// plugin import alone would not.
func TestInstallOutsideLecticDirs(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		parent := filepath.Join(wd, "opt tools")
		dir := filepath.Join(parent, "nix-sandbox")
		r := u.run(context.Background(), t, runOpts{}, "--install", dir)
		wantOK(t, r)
		config := filepath.Join(u.home, ".config", "lectic")
		want := filepath.Join(dir, "lectic.yaml")

		var pathImport, runtime string
		for _, l := range strings.Split(r.stdout, "\n") {
			if v, ok := strings.CutPrefix(l, "    - \""); ok && pathImport == "" {
				if err := json.Unmarshal([]byte("\""+v), &pathImport); err != nil {
					t.Fatalf("path import %q: %v", l, err)
				}
			}
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "export LECTIC_RUNTIME="); ok {
				runtime = strings.ReplaceAll(strings.Trim(v, "'"), `'\''`, "'")
			}
		}
		if got := lecticPathImport(pathImport); got != want {
			t.Fatalf("the path import %q resolves to %q, want %q; output:\n%s", pathImport, got, want, r.stdout)
		}
		if runtime != parent {
			t.Fatalf("LECTIC_RUNTIME=%q, want the parent %q; output:\n%s", runtime, parent, r.stdout)
		}
		if got, err := lecticPluginImport("nix-sandbox", runtime, config, u.data); err != nil || got != want {
			t.Fatalf("plugin import with LECTIC_RUNTIME: %q, %v; want %q", got, err, want)
		}
		if got, err := lecticPluginImport("nix-sandbox", "", config, filepath.Join(wd, "empty data")); err == nil {
			t.Fatalf("without LECTIC_RUNTIME the plugin import found %q; the advice would be needless", got)
		}
		if argv := sandboxLine(t, want); len(argv) != 1 || argv[0] != filepath.Join(dir, "lectic-nix-sandbox") {
			t.Fatalf("the installed sandbox line becomes %q", argv)
		}
	})
}

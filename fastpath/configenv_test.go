package fastpath

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// A variable the CLI reads to build its request but that is missing from
// a ticket's name would let a ticket serve a call it does not fit. These
// tests tie the name's variables to the code that reads them.

var envRead = regexp.MustCompile(`(?:Getenv|LookupEnv|getenv|xdg)\("([A-Za-z_][A-Za-z0-9_]*)"`)

// TestConfigEnvCoversTheClient: every variable named in a literal read by
// the packages a call goes through is in configEnv, or is one of the
// sandbox's own hand-off variables (which make the constructor step aside).
func TestConfigEnvCoversTheClient(t *testing.T) {
	var files []string
	for _, dir := range []string{"../cmd/lectic-nix-sandbox", "../nixload", "../warm", "../oci", "../namespace", "../plugin"} {
		got, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(got) == 0 {
			t.Fatalf("no Go files in %s: %v", dir, err)
		}
		files = append(files, got...)
	}
	seen := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range envRead.FindAllStringSubmatch(string(src), -1) {
			name := m[1]
			seen++
			internal := strings.HasPrefix(name, "_LECTIC_NIX_SANDBOX_") || strings.HasPrefix(name, "_LIBCONTAINER_")
			if !internal && !slices.Contains(configEnv, name) {
				t.Errorf("%s reads $%s, which is not in configEnv (ticket.go) and config_env (fastpath.c)", f, name)
			}
		}
	}
	if seen < 5 {
		t.Fatalf("found only %d environment reads; the pattern no longer matches the code", seen)
	}
}

// TestConfigEnvMatchesC: fastpath.c names the same variables in the same
// order, or the two sides would name tickets differently.
func TestConfigEnvMatchesC(t *testing.T) {
	src, err := os.ReadFile("fastpath.c")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)config_env\[\] = \{(.*?)\};`).FindSubmatch(src)
	if m == nil {
		t.Fatal("config_env not found in fastpath.c")
	}
	var names []string
	for _, q := range regexp.MustCompile(`"([^"]+)"`).FindAllSubmatch(m[1], -1) {
		names = append(names, string(q[1]))
	}
	if !slices.Equal(names, configEnv) {
		t.Fatalf("fastpath.c config_env = %q\nticket.go configEnv = %q", names, configEnv)
	}
}

package lecticnixsandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// flakeLock is the part of a flake.lock (version 7) that pins inputs.
type flakeLock struct {
	Version int    `json:"version"`
	Root    string `json:"root"`
	Nodes   map[string]struct {
		Inputs map[string]json.RawMessage `json:"inputs"`
		Locked *struct {
			Rev          string `json:"rev"`
			NarHash      string `json:"narHash"`
			LastModified int64  `json:"lastModified"`
		} `json:"locked"`
		Original map[string]any `json:"original"`
	} `json:"nodes"`
}

// lockProblems lists every input of the flake that the lock does not pin
// to a revision and a NAR hash. An input that follows another (a JSON
// array in the lock) is pinned by the input it follows.
func lockProblems(inputs []string, lockText []byte) []string {
	var lock flakeLock
	if err := json.Unmarshal(lockText, &lock); err != nil {
		return []string{"flake.lock does not parse: " + err.Error()}
	}
	var problems []string
	if lock.Version != 7 {
		problems = append(problems, fmt.Sprintf("flake.lock is version %d, want 7", lock.Version))
	}
	root, ok := lock.Nodes[lock.Root]
	if !ok {
		return append(problems, fmt.Sprintf("flake.lock has no root node %q", lock.Root))
	}
	for _, in := range inputs {
		ref, ok := root.Inputs[in]
		if !ok {
			problems = append(problems, fmt.Sprintf("input %q is not in flake.lock", in))
			continue
		}
		var name string
		if err := json.Unmarshal(ref, &name); err != nil {
			continue // follows another input
		}
		node, ok := lock.Nodes[name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("input %q names node %q, which flake.lock lacks", in, name))
		case node.Locked == nil || node.Locked.Rev == "" || !strings.HasPrefix(node.Locked.NarHash, "sha256-"):
			problems = append(problems, fmt.Sprintf("input %q is not locked to a rev and a narHash", in))
		case node.Original == nil:
			problems = append(problems, fmt.Sprintf("input %q has no original ref, so `nix flake update` cannot move it", in))
		}
	}
	for in := range root.Inputs {
		if !contains(inputs, in) {
			problems = append(problems, fmt.Sprintf("flake.lock locks %q, which flake.nix no longer has", in))
		}
	}
	sort.Strings(problems)
	return problems
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// flakeInputs evaluates flake.nix's inputs, as nix itself reads them.
func flakeInputs(t *testing.T, flake string) []string {
	t.Helper()
	nixInstantiate := needTool(t, "nix-instantiate")
	abs, err := filepath.Abs(flake)
	if err != nil {
		t.Fatal(err)
	}
	out, errText, err := stdoutOnly(exec.Command(nixInstantiate, "--eval", "--strict", "--json", "-E",
		`builtins.attrNames ((import `+abs+`).inputs or { })`))
	if err != nil {
		t.Fatalf("read the inputs of %s: %v\n%s", flake, err, errText)
	}
	var names []string
	if err := json.Unmarshal(out, &names); err != nil {
		t.Fatalf("inputs of %s: %v", flake, err)
	}
	return names
}

// TestFlakeLockPinsEveryInput keeps the image reproducible: every input of
// flake.nix is pinned in the shipped flake.lock.
func TestFlakeLockPinsEveryInput(t *testing.T) {
	lock, err := os.ReadFile("flake.lock")
	if err != nil {
		t.Fatalf("flake.lock must be shipped: %v", err)
	}
	inputs := flakeInputs(t, "flake.nix")
	if len(inputs) == 0 {
		t.Fatal("flake.nix has no inputs; the evaluation is wrong")
	}
	if p := lockProblems(inputs, lock); len(p) > 0 {
		t.Fatalf("flake.lock does not pin flake.nix:\n%s", strings.Join(p, "\n"))
	}
}

// TestLockProblems shows that the check above can fail: an input added to
// flake.nix without a lock, a lock without a hash, a lock that is not JSON.
func TestLockProblems(t *testing.T) {
	shipped, err := os.ReadFile("flake.lock")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		inputs []string
		lock   string
		want   string // "" = no problem
	}{
		{"shipped", []string{"nixpkgs"}, string(shipped), ""},
		{"an input added but not locked", []string{"nixpkgs", "flake-utils"}, string(shipped), `input "flake-utils" is not in flake.lock`},
		{"an input removed", nil, string(shipped), `locks "nixpkgs", which flake.nix no longer has`},
		{"no narHash", []string{"nixpkgs"}, strings.Replace(string(shipped), `"narHash"`, `"nar_hash"`, 1), "not locked to a rev and a narHash"},
		{"no rev", []string{"nixpkgs"}, strings.Replace(string(shipped), `"rev"`, `"revision"`, 1), "not locked to a rev and a narHash"},
		{"not JSON", []string{"nixpkgs"}, "{", "does not parse"},
		{"old version", []string{"nixpkgs"}, strings.Replace(string(shipped), `"version": 7`, `"version": 5`, 1), "version 5"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := strings.Join(lockProblems(c.inputs, []byte(c.lock)), "\n")
			if c.want == "" && got != "" || !strings.Contains(got, c.want) {
				t.Fatalf("problems = %q, want %q", got, c.want)
			}
		})
	}
}

// TestFlakeInputsSeesAnAddedInput ties flakeInputs to flake.nix's syntax:
// a second input written the way flakes write them is found.
func TestFlakeInputsSeesAnAddedInput(t *testing.T) {
	text, err := os.ReadFile("flake.nix")
	if err != nil {
		t.Fatal(err)
	}
	const line = `inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";`
	if !strings.Contains(string(text), line) {
		t.Fatalf("flake.nix lacks %q", line)
	}
	added := strings.Replace(string(text), line, line+"\n  inputs.flake-utils.url = \"github:numtide/flake-utils\";", 1)
	f := filepath.Join(t.TempDir(), "flake.nix")
	if err := os.WriteFile(f, []byte(added), 0o644); err != nil {
		t.Fatal(err)
	}
	lock, err := os.ReadFile("flake.lock")
	if err != nil {
		t.Fatal(err)
	}
	got := lockProblems(flakeInputs(t, f), lock)
	if len(got) != 1 || !strings.Contains(got[0], `"flake-utils" is not in flake.lock`) {
		t.Fatalf("an unlocked input went unnoticed: %q", got)
	}
}

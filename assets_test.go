package lecticnixsandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/testenv"
)

// needTool skips when a tool is missing, except in CI, where it must exist.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		testenv.Missing(t, name+" is not installed")
	}
	return p
}

func TestEmbeddedFilesMatchTheRepository(t *testing.T) {
	for _, name := range PluginFiles() {
		embedded, err := fs.ReadFile(Assets(), name)
		if err != nil {
			t.Fatal(err)
		}
		onDisk, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if string(embedded) != string(onDisk) {
			t.Fatalf("embedded %s differs from the repository's", name)
		}
	}
	_, err := os.Stat("flake.lock")
	hasLock := err == nil
	embedsLock := false
	for _, n := range PluginFiles() {
		embedsLock = embedsLock || n == "flake.lock"
	}
	if hasLock != embedsLock {
		t.Fatalf("flake.lock present=%v but embedded=%v", hasLock, embedsLock)
	}
}

// activeSandboxLine is the plugin's sandbox line. The single quotes inside
// YAML's double quotes keep the binary's path one word when Lectic splits
// the line after resolving local:, even when the plugin's path has a space.
const activeSandboxLine = `sandbox: "'local:./lectic-nix-sandbox'"`

func TestLecticYAML(t *testing.T) {
	b, err := fs.ReadFile(Assets(), "lectic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	active := 0
	examples := map[string]bool{"--persist": false, "--volume": false, "--warm-ttl-seconds": false, "--nix-packages-file": false,
		"--allow-domain": false, "--add-host": false, "--allow-net": false,
		"--timeout": false, "--max-warm": false, "--env": false, "--no-keep-warm": false,
		"--allow-host-config-writes": false}
	toolsBind := false
	const example = `# sandbox: "'local:./lectic-nix-sandbox' `
	for i, l := range lines {
		if strings.HasSuffix(strings.TrimSpace(l), `\`) {
			t.Fatalf("line %d ends in a backslash; Lectic would keep it as an argument: %q", i+1, l)
		}
		if l == activeSandboxLine {
			active++
		}
		if strings.HasPrefix(l, "# sandbox:") && !strings.HasPrefix(l, example) {
			t.Fatalf("line %d: an example must quote the local: path as the active line does: %q", i+1, l)
		}
		if rest, ok := strings.CutPrefix(l, example); ok {
			if !strings.HasSuffix(rest, `"`) || strings.Count(rest, `"`) != 1 || strings.Contains(rest, "'") {
				t.Fatalf("line %d: an example must be one double-quoted YAML string: %q", i+1, l)
			}
			for flag := range examples {
				if rest == flag+`"` || strings.HasPrefix(rest, flag+" ") || strings.HasPrefix(rest, flag+"=") {
					examples[flag] = true
				}
			}
			if strings.Contains(rest, "--volume $LECTIC_CONFIG/tools:$LECTIC_CONFIG/tools:ro") {
				toolsBind = true
			}
			// A read-write bind there is refused: Lectic runs what it finds.
			for _, w := range strings.Fields(strings.TrimSuffix(rest, `"`)) {
				for _, dir := range []string{"$LECTIC_DATA", "$LECTIC_CONFIG", "$LECTIC_RUNTIME"} {
					if strings.HasPrefix(w, dir) && !strings.HasSuffix(w, ":ro") {
						t.Fatalf("line %d binds %s read-write, which the sandbox refuses: %q", i+1, dir, l)
					}
				}
			}
		}
		if !strings.HasPrefix(l, "#") && l != "" && !strings.HasPrefix(l, "sandbox:") {
			t.Fatalf("line %d is neither a comment nor the sandbox key: %q", i+1, l)
		}
	}
	if active != 1 {
		t.Fatalf("want exactly one active %s line, found %d", activeSandboxLine, active)
	}
	for flag, seen := range examples {
		if !seen {
			t.Fatalf("no one-line commented example for %s", flag)
		}
	}
	if !toolsBind {
		t.Fatal("no example binds a config-dir tools folder read-only")
	}
}

func TestNixFilesParse(t *testing.T) {
	nixInstantiate := needTool(t, "nix-instantiate")
	for _, f := range []string{"flake.nix", "packages.example.nix"} {
		out, err := exec.Command(nixInstantiate, "--parse", f).CombinedOutput()
		if err != nil {
			t.Fatalf("%s does not parse: %v\n%s", f, err, out)
		}
	}
}

// fakeNixpkgs stands in for the nixpkgs input, so the real flake's image
// definition can be evaluated offline: packages are their names, and
// streamLayeredImage returns its arguments for inspection.
const fakeNixpkgs = `
let
  names = [ "bashInteractive" "coreutils" "findutils" "gnugrep" "gnused" "gawk" "git" "jq" "curl" "cacert" "util-linux" "ripgrep" "fd" "python3" ];
  pkgs = builtins.listToAttrs (map (n: { name = n; value = n; }) names) // {
    callPackage = f: args: f args;
    go_1_26 = "go_1_26"; gnumake = "gnumake"; gcc = "gcc"; nix = "nix"; zstd = "zstd"; hyperfine = "hyperfine"; bubblewrap = "bubblewrap"; podman = "podman";
    pkgsStatic = { busybox = "/busybox"; buildGo126Module = a: a // { outPath = "/nix/store/x-lectic-nix-sandbox"; }; };
    mkShell = a: a;
    runCommand = name: env: script: name;
    dockerTools = {
      usrBinEnv = "usrBinEnv"; binSh = "binSh"; caCertificates = "caCertificates"; fakeNss = "fakeNss";
      streamLayeredImage = args: args;
    };
  };
in {
  lib = {
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    platforms.linux = [ "x86_64-linux" "aarch64-linux" ];
    fileset = {
      toSource = a: { src = a; };
      unions = l: l;
      maybeMissing = p: p;
      fileFilter = f: p: "go files";
    };
  };
  legacyPackages = { x86_64-linux = pkgs; aarch64-linux = pkgs; };
}`

// evalImage evaluates the real flake's containerImage arguments with the
// packages file (or none) and returns them as JSON.
func evalImage(t *testing.T, packagesFile string) (map[string]any, string) {
	t.Helper()
	nixInstantiate := needTool(t, "nix-instantiate")
	abs, err := filepath.Abs("flake.nix")
	if err != nil {
		t.Fatal(err)
	}
	expr := `let flake = import ` + abs + `; out = flake.outputs { self = { }; nixpkgs = ` + fakeNixpkgs + `; };
	  img = out.packages.x86_64-linux.containerImage;
	in { inherit (img) name contents extraCommands config; }`
	cmd := exec.Command(nixInstantiate, "--eval", "--strict", "--json", "-E", expr)
	cmd.Env = append(os.Environ(), "LECTIC_NIX_SANDBOX_EXTRA_PKGS_FILE="+packagesFile)
	out, errText, err := stdoutOnly(cmd)
	if err != nil {
		return nil, errText
	}
	var v map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("eval output %q: %v", out, err)
	}
	return v, ""
}

// stdoutOnly runs cmd and returns its stdout, which is all a caller parses:
// nix writes "warning:" lines (an untrusted flake dir, a dirty tree) to
// stderr, and those must never reach the JSON decoder.
func stdoutOnly(cmd *exec.Cmd) (stdout []byte, stderr string, err error) {
	var errBuf bytes.Buffer
	cmd.Stderr = &errBuf
	stdout, err = cmd.Output()
	return stdout, errBuf.String(), err
}

func TestFlakeImageAndPackagesShapes(t *testing.T) {
	dir := t.TempDir()
	example, err := filepath.Abs("packages.example.nix")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, file string // file "" = no packages file; a path = use as is
		text       string
		extra      []string
		wantErr    string
	}{
		{name: "no packages file"},
		{name: "list", text: `[ "ripgrep" ]`, extra: []string{"ripgrep"}},
		{name: "attrset", text: `{ packages = [ "fd" ]; }`, extra: []string{"fd"}},
		{name: "function returning a list", text: `{ pkgs, callPackage }: [ pkgs.ripgrep (callPackage ({ name }: name) { name = "local"; }) ]`, extra: []string{"ripgrep", "local"}},
		{name: "function returning an attrset", text: `{ pkgs, callPackage }: { packages = [ pkgs.python3 ]; }`, extra: []string{"python3"}},
		{name: "packages.example.nix", file: example, extra: []string{"ripgrep", "fd", "python3"}},
		{name: "wrong shape", text: `42`, wantErr: "a packages file must be a list of packages"},
		{name: "packages not a list", text: `{ packages = "fd"; }`, wantErr: "a packages file must be a list of packages"},
	}
	base := []string{"bashInteractive", "coreutils", "findutils", "gnugrep", "gnused", "gawk", "git", "jq", "curl", "cacert", "util-linux"}
	helpers := []string{"usrBinEnv", "binSh", "caCertificates", "fakeNss"}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file := c.file
			if c.text != "" {
				file = filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".nix")
				if err := os.WriteFile(file, []byte(c.text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			img, errText := evalImage(t, file)
			if c.wantErr != "" {
				if img != nil || !strings.Contains(errText, c.wantErr) || !strings.Contains(errText, file) {
					t.Fatalf("want an error naming %s and saying %q, got %v / %s", file, c.wantErr, img, errText)
				}
				return
			}
			if img == nil {
				t.Fatalf("evaluation failed:\n%s", errText)
			}
			var contents []string
			for _, v := range img["contents"].([]any) {
				contents = append(contents, v.(string))
			}
			want := append(append(append([]string{}, base...), c.extra...), helpers...)
			if strings.Join(contents, " ") != strings.Join(want, " ") {
				t.Fatalf("contents = %v, want %v", contents, want)
			}
			if !strings.Contains(img["extraCommands"].(string), "mkdir -m 1777 tmp") {
				t.Fatalf("extraCommands lack /tmp: %q", img["extraCommands"])
			}
			env, _ := json.Marshal(img["config"].(map[string]any)["Env"])
			for _, v := range []string{"PATH=/bin:/usr/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt"} {
				if !strings.Contains(string(env), v) {
					t.Fatalf("config Env %s lacks %s", env, v)
				}
			}
		})
	}
}

// TestVendorHashIsCurrent keeps flake.nix buildable: buildGoModule fails
// when vendorHash is not the hash of `go mod vendor`.
func TestVendorHashIsCurrent(t *testing.T) {
	needTool(t, "nix")
	needTool(t, "go")
	out, err := exec.Command("scripts/vendor-hash.sh", "--check").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// TestFlakeProgramOutputs evaluates the static binary's package, the app
// and the dev shell against the stand-in nixpkgs.
func TestFlakeProgramOutputs(t *testing.T) {
	nixInstantiate := needTool(t, "nix-instantiate")
	abs, err := filepath.Abs("flake.nix")
	if err != nil {
		t.Fatal(err)
	}
	expr := `let flake = import ` + abs + `; out = flake.outputs { self = { }; nixpkgs = ` + fakeNixpkgs + `; };
	  pkg = out.packages.aarch64-linux.default;
	in {
	  systems = builtins.attrNames out.packages;
	  inherit (pkg) pname subPackages tags ldflags vendorHash doCheck;
	  cgo = pkg.env.CGO_ENABLED;
	  main = pkg.meta.mainProgram;
	  app = out.apps.x86_64-linux.default.program;
	  shell = out.devShells.x86_64-linux.default.packages;
	}`
	out, errText, err := stdoutOnly(exec.Command(nixInstantiate, "--eval", "--strict", "--json", "-E", expr))
	if err != nil {
		t.Fatalf("evaluation failed: %v\n%s", err, errText)
	}
	var v struct {
		Systems     []string
		Pname       string
		SubPackages []string
		Tags        []string
		Ldflags     []string
		VendorHash  string
		DoCheck     bool
		Cgo         int
		Main        string
		App         string
		Shell       []string
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		what      string
		got, want string
	}{
		{"systems", strings.Join(v.Systems, " "), "aarch64-linux x86_64-linux"},
		{"pname", v.Pname, "lectic-nix-sandbox"},
		{"subPackages", strings.Join(v.SubPackages, " "), "cmd/lectic-nix-sandbox"},
		{"tags", strings.Join(v.Tags, " "), "netgo osusergo"},
		{"ldflags", strings.Join(v.Ldflags, " "), "-s -w -extldflags -static"},
		{"CGO_ENABLED", fmt.Sprint(v.Cgo), "1"},
		{"mainProgram", v.Main, "lectic-nix-sandbox"},
		{"app", v.App, "/nix/store/x-lectic-nix-sandbox/bin/lectic-nix-sandbox"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
	if !strings.HasPrefix(v.VendorHash, "sha256-") {
		t.Errorf("vendorHash %q is not an SRI sha256", v.VendorHash)
	}
	for _, tool := range []string{"go_1_26", "gnumake", "nix", "busybox-static-only"} {
		if !strings.Contains(strings.Join(v.Shell, " "), tool) {
			t.Errorf("dev shell %v lacks %s", v.Shell, tool)
		}
	}
}

package namespace

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runDoctorStage prints Doctor's checks as JSON for the test that runs it
// as another uid.
func runDoctorStage() int {
	dir := os.Getenv(jobEnv)
	checks := Doctor(context.Background(), filepath.Join(dir, "temp"), filepath.Join(dir, "cache"))
	if err := json.NewEncoder(os.Stdout).Encode(checks); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func TestDoctor(t *testing.T) {
	requireUserns(t)
	bin := testBinary(t)
	for _, id := range identities(t) {
		t.Run(id.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "nstest-doctor-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			chownTree(t, dir, id)
			checks := doctorAs(t, bin, id, dir)
			byName := map[string]Check{}
			for _, c := range checks {
				byName[c.Name] = c
				if !c.OK && (c.Detail == "" || c.Fix == "") {
					t.Errorf("failed check %q lacks a detail or a fix: %+v", c.Name, c)
				}
			}
			// The test binary is built with cgo and no -static, so it is
			// dynamic: the check must say so.
			for name, wantOK := range map[string]bool{
				"user namespaces": true, "overlay root": true, "overlay on tmpfs": true,
				"cache directory": true, "temp directory": true, "socket path length": true,
				"static binary": isStatic(t, bin), "network by name (--allow-domain)": true,
			} {
				c, found := byName[name]
				if !found {
					t.Errorf("no check %q", name)
					continue
				}
				if c.OK != wantOK {
					t.Errorf("check %q OK = %v, want %v (%s; %s)", name, c.OK, wantOK, c.Detail, c.Fix)
				}
			}
		})
	}
}

func isStatic(t *testing.T, path string) bool {
	out, err := exec.Command("file", "-L", path).Output()
	if err != nil {
		missing(t, "file(1) is needed to cross-check the static binary check: "+err.Error())
	}
	return strings.Contains(string(out), "statically linked") || strings.Contains(string(out), "static-pie")
}

func doctorAs(t *testing.T, bin string, id identity, dir string) []Check {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = replaceEnv(replaceEnv(os.Environ(), stageEnv, "doctor"), jobEnv, dir)
	cmd.SysProcAttr = asIdentity(id)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("doctor as %s: %v\n%s", id.name, err, stderr.String())
	}
	var checks []Check
	if err := json.Unmarshal(stdout.Bytes(), &checks); err != nil {
		t.Fatalf("doctor output: %v\n%s", err, stdout.String())
	}
	return checks
}

func TestSocketPathCheck(t *testing.T) {
	tests := []struct {
		root string
		ok   bool
	}{
		{"/tmp/lectic/nix-sandbox", true},
		// 107 bytes exactly: the limit itself is allowed.
		{"/" + strings.Repeat("a", 107-len("/warm/0123456789abcdef/agent.sock")-1), true},
		{"/" + strings.Repeat("a", 107-len("/warm/0123456789abcdef/agent.sock")), false},
	}
	for _, tt := range tests {
		c := socketPathCheck(tt.root)
		if c.OK != tt.ok || !c.Required {
			t.Errorf("socketPathCheck(%d-byte root) = %+v, want OK %v", len(tt.root), c, tt.ok)
		}
	}
}

func TestUsernsFix(t *testing.T) {
	tests := []struct {
		sysctls map[string]string
		want    string
	}{
		{map[string]string{"kernel/unprivileged_userns_clone": "0"}, "kernel.unprivileged_userns_clone=1"},
		{map[string]string{"user/max_user_namespaces": "0"}, "user.max_user_namespaces="},
		{map[string]string{"kernel/apparmor_restrict_unprivileged_userns": "1"}, "apparmor_restrict_unprivileged_userns=0"},
		{map[string]string{"user/max_user_namespaces": "100"}, "check kernel.unprivileged_userns_clone"},
	}
	for _, tt := range tests {
		got := usernsFix(func(n string) string { return tt.sysctls[n] })
		if !strings.Contains(got, tt.want) {
			t.Errorf("usernsFix(%v) = %q, want it to mention %q", tt.sysctls, got, tt.want)
		}
	}
}

func TestHasSubidEntry(t *testing.T) {
	f := filepath.Join(t.TempDir(), "subuid")
	if err := os.WriteFile(f, []byte("alice:100000:65536\n1002:200000:65536\nbob:300000:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, uid string
		want      bool
	}{
		{"alice", "1001", true},
		{"carol", "1002", true},
		{"bob", "1003", false},
		{"dave", "1004", false},
	}
	for _, tt := range tests {
		if got := hasSubidEntry(f, tt.name, tt.uid); got != tt.want {
			t.Errorf("hasSubidEntry(%s, %s) = %v, want %v", tt.name, tt.uid, got, tt.want)
		}
	}
}

func TestStaticBinaryCheck(t *testing.T) {
	tests := []struct {
		path string
		ok   bool
	}{
		{"/bin/busybox", true},
		{"/bin/ls", false},
		{"/nonexistent/binary", false},
	}
	for _, tt := range tests {
		if tt.path != "/nonexistent/binary" {
			requireTool(t, tt.path)
		}
		c := staticBinaryCheck(tt.path)
		if c.OK != tt.ok || (!c.OK && c.Fix == "") {
			t.Errorf("staticBinaryCheck(%s) = %+v, want OK %v", tt.path, c, tt.ok)
		}
	}
}

// TestProbeFailureReported: a probe that fails in the child must come back
// as an error carrying the child's reason.
func TestProbeFailureReported(t *testing.T) {
	requireUserns(t)
	err := runProbeChild(context.Background(), "no-such-probe", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), `unknown probe "no-such-probe"`) {
		t.Errorf("runProbeChild(no-such-probe) = %v, want the child's reason", err)
	}
	// A probe directory that is a file makes the overlay probe fail.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := runProbeChild(context.Background(), probeOverlay, file); err == nil {
		t.Errorf("overlay probe in a file path passed")
	}
}

func TestNixBuildUsersCheck(t *testing.T) {
	lookup := func(exists bool, members int) func(string) (bool, int) {
		return func(string) (bool, int) { return exists, members }
	}
	cases := []struct {
		name   string
		n      nixBuildUsers
		wantOK bool
		want   string // in Detail
		fix    string // in Fix
	}{
		{"no multi-user install", nixBuildUsers{installed: false, group: "nixbld", lookup: lookup(false, 0)}, true, "nothing to check", ""},
		{"empty group", nixBuildUsers{installed: true, group: "", lookup: lookup(false, 0)}, true, "builds as itself", ""},
		{"group missing", nixBuildUsers{installed: true, group: "nixbld", lookup: lookup(false, 0)}, false, `"nixbld"`, "groupadd -f -r nixbld"},
		{"group without users", nixBuildUsers{installed: true, group: "nixbld", lookup: lookup(true, 0)}, false, "has no users", "useradd -r -g nixbld"},
		{"other group missing", nixBuildUsers{installed: true, group: "builders", lookup: lookup(false, 0)}, false, `"builders"`, "groupadd -f -r builders"},
		{"ready", nixBuildUsers{installed: true, group: "nixbld", lookup: lookup(true, 10)}, true, "10 build users", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := nixBuildUsersCheck(c.n)
			if got.OK != c.wantOK || !strings.Contains(got.Detail, c.want) || !strings.Contains(got.Fix, c.fix) {
				t.Fatalf("got %+v, want OK=%v, detail with %q, fix with %q", got, c.wantOK, c.want, c.fix)
			}
			if !got.OK && strings.Contains(got.Fix, "\n") {
				t.Fatalf("fix is not one line: %q", got.Fix)
			}
		})
	}
}

func TestBuildUsersGroup(t *testing.T) {
	cases := []struct{ conf, want string }{
		{"", "nixbld"},
		{"sandbox = false\n", "nixbld"},
		{"build-users-group = builders\n", "builders"},
		{"build-users-group =\n", ""},
		{"# build-users-group = x\nbuild-users-group = y # note\n", "y"},
	}
	for _, c := range cases {
		if got := buildUsersGroup(c.conf); got != c.want {
			t.Errorf("buildUsersGroup(%q) = %q, want %q", c.conf, got, c.want)
		}
	}
}

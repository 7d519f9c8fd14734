package warm

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A withheld name is reported once per container, on the stderr of the
// call that first withheld it, whether the agent runs the command itself
// (root) or hands it to an identity helper (caller); a value never is.
func TestWithheldNoticeOncePerContainer(t *testing.T) {
	tools := toolDir(t)
	for _, user := range []UserSpec{{Mode: "root"}, {Mode: "caller", UID: 1234, GID: 2345}} {
		t.Run(user.Mode, func(t *testing.T) {
			a := startTestAgent(t, agentOpts{})
			call := func(withheld ...string) string {
				t.Helper()
				_, serr, code, err := pipeRun(t, a, Request{Argv: []string{"true"}, Env: []string{"PATH=" + tools},
					Withheld: withheld, User: user}, "")
				if code != 0 || err != nil {
					t.Fatalf("call: code %d err %v stderr %q", code, err, serr)
				}
				return serr
			}
			first := call("GH_TOKEN", "NPM_TOKEN")
			if strings.Count(first, "\n") != 1 || !strings.HasPrefix(first, "lectic-nix-sandbox: withheld GH_TOKEN, NPM_TOKEN ") ||
				!strings.Contains(first, "--env NAME") || !strings.Contains(first, "LECTIC_NIX_SANDBOX_PASS_ENV=GH_TOKEN,NPM_TOKEN") {
				t.Fatalf("first call's notice: %q", first)
			}
			if again := call("GH_TOKEN", "NPM_TOKEN"); again != "" {
				t.Fatalf("the notice was repeated: %q", again)
			}
			if more := call("GH_TOKEN", "DB_PASSWORD"); !strings.Contains(more, "withheld DB_PASSWORD from") || strings.Contains(more, "GH_TOKEN") {
				t.Fatalf("a newly withheld name: %q", more)
			}
			if none := call(); none != "" {
				t.Fatalf("nothing withheld, yet: %q", none)
			}
		})
	}
}

func TestWithheldTextListsAtMostTen(t *testing.T) {
	var names []string
	for i := range 13 {
		names = append(names, "T"+strconv.Itoa(i)+"_TOKEN")
	}
	got := withheldText(names)
	if !strings.Contains(got, "T9_TOKEN and 3 more from") || strings.Contains(got, "T10_TOKEN") || strings.Contains(got, "\n") {
		t.Fatalf("withheldText: %q", got)
	}
}

func TestMissingScript(t *testing.T) {
	dir := t.TempDir()
	here := filepath.Join(dir, "here.py")
	if err := os.WriteFile(here, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(dir, "tools dir", "gone.py")
	cases := []struct {
		argv []string
		want string
	}{
		{[]string{"python3", gone}, gone},
		{[]string{"/usr/bin/python3.12", "-u", gone, "arg"}, gone},
		{[]string{"/usr/bin/env", "python3", gone}, gone},
		{[]string{"env", "-i", "A=1", "bash", gone}, gone},
		{[]string{"bash", here}, ""},
		{[]string{"bash", "relative.sh"}, ""},
		{[]string{"bash", "-c", "echo hi", gone}, ""},
		{[]string{"ls", gone}, ""},
		{[]string{"env", gone}, ""},
		{[]string{"python3"}, ""},
	}
	for _, c := range cases {
		path, hint := missingScript(c.argv)
		if path != c.want {
			t.Errorf("missingScript(%q) = %q, want %q", c.argv, path, c.want)
		}
		if path != "" && !strings.Contains(hint, "--volume '"+filepath.Dir(gone)+":"+filepath.Dir(gone)+":ro'") {
			t.Errorf("hint %q lacks the quoted read-only bind of the script's directory", hint)
		}
	}
	if p, h := missingCommand([]string{gone}, "command not found: "+gone); p != gone || !strings.HasPrefix(h, "command not found: "+gone+": it is on the host but not visible") {
		t.Errorf("missingCommand: %q %q", p, h)
	}
	if p, _ := missingCommand([]string{"gone.py"}, "command not found: gone.py"); p != "" {
		t.Errorf("a relative argv[0] got a missing path %q", p)
	}
}

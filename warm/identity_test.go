package warm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// procStatusField extracts "Name:\tvalue" lines from a command's output.
func fieldOf(out, name string) string {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

const identityScript = `grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status; echo "uid: $(id -u)"; echo "gid: $(id -g)"; touch "$1/created"`

// Each user mode runs the command as the expected uid/gid, without
// capabilities except in root mode, and files it creates belong to the
// agent's own uid on the host (the caller, in a real container). The agent
// runs as root and as an unprivileged uid.
func TestIdentity(t *testing.T) {
	tools := toolDir(t)
	type agentAs struct {
		name string
		cred *syscall.Credential
	}
	agents := []agentAs{{"agent as self", nil}}
	if os.Getuid() == 0 {
		uid, gid := unprivileged(t)
		agents = append(agents, agentAs{"agent unprivileged", &syscall.Credential{Uid: uid, Gid: gid}})
	}
	cases := []struct {
		name     string
		user     UserSpec
		uid, gid string
		noCaps   bool
		nnp      bool // dropping capabilities as the command starts also sets no_new_privs
	}{
		{"caller", UserSpec{Mode: "caller", UID: 1234, GID: 2345}, "1234", "2345", true, false},
		{"caller is root", UserSpec{Mode: "caller", UID: 0, GID: 0}, "0", "0", true, true},
		{"id numeric", UserSpec{Mode: "id", Name: "4321:99"}, "4321", "99", true, false},
		{"id name", UserSpec{Mode: "id", Name: "nobody"}, "65534", "65534", true, false},
		{"id zero", UserSpec{Mode: "id", Name: "0"}, "0", "0", true, true},
		{"image user", UserSpec{Mode: "image", Name: "nobody:root"}, "65534", "0", true, false},
	}
	for _, ag := range agents {
		t.Run(ag.name, func(t *testing.T) {
			a := startTestAgent(t, agentOpts{cred: ag.cred})
			hostUID := os.Getuid()
			if ag.cred != nil {
				hostUID = int(ag.cred.Uid)
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					work := shortTempDir(t)
					if err := os.Chmod(work, 0o777); err != nil {
						t.Fatal(err)
					}
					out, serr, code, err := pipeRun(t, a, Request{Argv: []string{"sh", "-c", identityScript, "sh", work},
						Env: []string{"PATH=" + tools}, User: c.user}, "")
					if err != nil || code != 0 {
						t.Fatalf("code %d err %v stderr %q", code, err, serr)
					}
					if fieldOf(out, "uid") != c.uid || fieldOf(out, "gid") != c.gid {
						t.Errorf("ran as %s:%s, want %s:%s\n%s", fieldOf(out, "uid"), fieldOf(out, "gid"), c.uid, c.gid, out)
					}
					if c.noCaps {
						for _, f := range []string{"CapEff", "CapPrm", "CapAmb"} {
							if v := fieldOf(out, f); strings.Trim(v, "0") != "" {
								t.Errorf("%s = %s, want 0", f, v)
							}
						}
					}
					if c.nnp && (fieldOf(out, "NoNewPrivs") != "1" || strings.Trim(fieldOf(out, "CapBnd"), "0") != "") {
						t.Errorf("uid 0 command has NoNewPrivs %s CapBnd %s", fieldOf(out, "NoNewPrivs"), fieldOf(out, "CapBnd"))
					}
					fi, err := os.Stat(filepath.Join(work, "created"))
					if err != nil {
						t.Fatal(err)
					}
					if owner := int(fi.Sys().(*syscall.Stat_t).Uid); owner != hostUID {
						t.Errorf("created file owned by host uid %d, want %d", owner, hostUID)
					}
				})
			}
		})
	}
}

func TestRootModeKeepsAgentIdentity(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	out, _, code, err := pipeRun(t, a, Request{Argv: []string{"sh", "-c", "echo uid: $(id -u)"}, Env: []string{"PATH=" + tools}, User: UserSpec{Mode: "root"}}, "")
	if err != nil || code != 0 || fieldOf(out, "uid") != "0" {
		t.Fatalf("code %d err %v out %q", code, err, out)
	}
}

func TestUnknownUser(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	_, _, code, err := pipeRun(t, a, Request{Argv: []string{"true"}, Env: []string{"PATH=" + tools}, User: UserSpec{Mode: "id", Name: "no-such-user"}}, "")
	if code != 125 || err == nil || !strings.Contains(err.Error(), "no-such-user") {
		t.Fatalf("code %d err %v, want 125 naming the user", code, err)
	}
}

// Commands of one identity are forked by that identity's helper, which
// stays for later calls; a helper that dies takes its commands along and
// the next call gets a new one.
func TestIdentityHelper(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	user := UserSpec{Mode: "caller", UID: 1234, GID: 1234}
	parent := func() int {
		out, serr, code, err := pipeRun(t, a, Request{Argv: []string{"sh", "-c", "echo $PPID"}, Env: []string{"PATH=" + tools}, User: user}, "")
		if err != nil || code != 0 {
			t.Fatalf("code %d err %v stderr %q", code, err, serr)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	h1 := parent()
	if h1 == a.proc.Pid {
		t.Fatal("the agent forked the command itself, not a helper")
	}
	if h2 := parent(); h2 != h1 {
		t.Fatalf("second call used helper %d, first %d", h2, h1)
	}

	args := testClientArgs{TempRoot: a.tempRoot, Spec: a.spec(), Argv: []string{"sh", "-c", "sleep 1000 & echo $!; echo $$; echo $PPID; sleep 1000"},
		Env: []string{"PATH=" + tools}, Cwd: "/", User: user}
	c2, rd2 := clientWith(t, args)
	pids := readPids(t, rd2, 3)
	if pids[2] != h1 {
		t.Fatalf("command's parent %d, want helper %d", pids[2], h1)
	}
	if err := syscall.Kill(h1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := c2.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 125 {
		t.Fatalf("client after its helper died: %v, want exit 125", err)
	}
	deadline := time.Now().Add(time.Second)
	for _, p := range pids[:2] {
		for procAlive(p) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if procAlive(p) {
			t.Errorf("command process %d survived its helper", p)
		}
	}
	if h3 := parent(); h3 == h1 {
		t.Fatal("the dead helper is still in use")
	}
}

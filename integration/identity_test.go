package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestCallerIdentity: by default a command runs as the caller's own uid and
// gid, with no capabilities, and what it writes belongs to the caller.
func TestCallerIdentity(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		for _, mode := range []string{"warm", "one-shot"} {
			t.Run(mode, func(t *testing.T) {
				var pre []string
				if mode == "one-shot" {
					pre = []string{"--no-keep-warm"}
				}
				r := u.sandbox(t, wd, runOpts{}, append(pre, "sh", "-c",
					`id -u; id -g; whoami; grep CapEff /proc/self/status; echo hi > "$HOME/h" && cat "$HOME/h"; touch owned; ls -ln owned; stat -c %U "$HOME"`)...)
				wantOK(t, r)
				lines := strings.Split(r.stdout, "\n")
				if len(lines) < 7 {
					t.Fatalf("short output: %v", r)
				}
				if lines[0] != strconv.Itoa(u.uid) || lines[1] != strconv.Itoa(u.gid) {
					t.Errorf("id -u/-g = %s/%s, want %d/%d", lines[0], lines[1], u.uid, u.gid)
				}
				if lines[2] != u.loginName() {
					t.Errorf("whoami = %q, want %q", lines[2], u.loginName())
				}
				if !strings.HasSuffix(lines[3], "0000000000000000") {
					t.Errorf("default user has capabilities: %q", lines[3])
				}
				if lines[4] != "hi" {
					t.Errorf("HOME not writable: %v", r)
				}
				fi, err := os.Stat(filepath.Join(wd, "owned"))
				if err != nil {
					t.Fatal(err)
				}
				if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != u.uid || int(st.Gid) != u.gid {
					t.Errorf("created file owned by %d:%d on the host, want %d:%d", st.Uid, st.Gid, u.uid, u.gid)
				}
				if f := strings.Fields(lines[5]); len(f) < 4 || f[2] != strconv.Itoa(u.uid) {
					t.Errorf("inside, the file is not the caller's: %q", lines[5])
				}
				if lines[6] != u.loginName() {
					t.Errorf("$HOME's owner shows as %q inside, want %q", lines[6], u.loginName())
				}
			})
		}
	})
}

func TestUserRoot(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		r := u.sandbox(t, wd, runOpts{}, "--user", "root", "sh", "-c", "id -u; whoami; touch by-root")
		wantOK(t, r)
		if r.stdout != "0\nroot\n" {
			t.Fatalf("--user root: %v", r)
		}
		fi, err := os.Stat(filepath.Join(wd, "by-root"))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != u.uid {
			t.Errorf("root in the sandbox must still be the caller on the host: file owned by %d", st.Uid)
		}
	})
}

func TestUserByID(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		tests := []struct {
			user, want string
		}{
			{"4242:4343", "4242\n4343\n"},
			{"nobody", "65534\n65534\n"}, // from the image's passwd, merged
			{"root", "0\n0\n"},
		}
		for _, tt := range tests {
			r := u.sandbox(t, wd, runOpts{}, "--user", tt.user, "sh", "-c", "id -u; id -g")
			wantOK(t, r)
			if r.stdout != tt.want {
				t.Errorf("--user %s: %v", tt.user, r)
			}
		}
		wantSandboxError(t, u.sandbox(t, wd, runOpts{}, "--user", "no-such-user", "true"), "no-such-user")
	})
}

// TestHomePersists: $HOME survives between calls for the same workdir and
// is a different one for another workdir.
func TestHomePersists(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd, other := u.workdir(t), u.workdir(t)
		wantOK(t, u.sandbox(t, wd, runOpts{}, "--no-keep-warm", "sh", "-c", `echo kept > "$HOME/.note"`))
		r := u.sandbox(t, wd, runOpts{}, "sh", "-c", `cat "$HOME/.note"`)
		wantOK(t, r)
		if r.stdout != "kept\n" {
			t.Fatalf("home did not persist: %v", r)
		}
		r = u.sandbox(t, other, runOpts{}, "sh", "-c", `cat "$HOME/.note" 2>/dev/null || echo absent`)
		if r.stdout != "absent\n" {
			t.Fatalf("another workdir shares the home: %v", r)
		}
	})
}

// TestAgentNotWritable: the agent binary (PID 1) is the host's program; no
// user inside may open it for writing.
func TestAgentNotWritable(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		for _, user := range []string{"caller", "root"} {
			r := u.sandbox(t, wd, runOpts{}, "--user", user, "sh", "-c",
				`for f in /proc/1/exe /.lectic-nix-sandbox/agent; do (echo x >> $f) 2>/dev/null && echo WROTE $f; done; mount -o remount,rw /.lectic-nix-sandbox/agent 2>/dev/null && echo REMOUNTED; true`)
			wantOK(t, r)
			if strings.Contains(r.stdout, "WROTE") || strings.Contains(r.stdout, "REMOUNTED") {
				t.Fatalf("as %s: %q", user, r.stdout)
			}
		}
	})
}

package spawn

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/seccomp"
)

// run starts a with stdout and stderr on a pipe (and stdin on /dev/null
// unless a.Files says otherwise), waits, and returns what it wrote.
func run(t *testing.T, a Attr) (out string, status unix.WaitStatus, listener int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	std := []int{int(null.Fd()), int(w.Fd()), int(w.Fd())}
	if len(a.Files) == 0 {
		a.Files = std
	} else {
		for i := range a.Files {
			if a.Files[i] == -100 { // placeholder for the output pipe
				a.Files[i] = int(w.Fd())
			}
		}
	}
	pid, listener, err := Start(&a)
	w.Close()
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	b, _ := io.ReadAll(r)
	if _, err := unix.Wait4(pid, &status, 0, nil); err != nil {
		t.Fatal(err)
	}
	return string(b), status, listener
}

func sh(script string, args ...string) []string {
	return append([]string{"sh", "-c", script}, args...)
}

func statusField(out, name string) string {
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "<missing " + name + ">"
}

func TestStart(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the identity cases map uid 0 of the host; run as root")
	}
	leak, err := unix.Open(os.DevNull, unix.O_RDONLY, 0) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(leak)
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	b := filepath.Join(dir, "b")
	os.WriteFile(a, []byte("A"), 0o644)
	os.WriteFile(b, []byte("B"), 0o644)
	fa, _ := os.Open(a)
	fb, _ := os.Open(b)
	defer fa.Close()
	defer fb.Close()
	stdoutTarget, _ := os.Readlink("/proc/self/fd/1")

	tests := []struct {
		name  string
		attr  Attr
		check func(t *testing.T, out string)
	}{{
		name: "argv, env and dir",
		attr: Attr{Path: "/bin/sh", Argv: sh(`echo "$0 $FOO $(pwd)"`, "zero"), Env: []string{"FOO=bar"}, Dir: dir},
		check: func(t *testing.T, out string) {
			if want := "zero bar " + dir + "\n"; out != want {
				t.Errorf("got %q, want %q", out, want)
			}
		},
	}, {
		name: "fds are placed, swapped and from low numbers",
		// fd 3 gets the parent's fd 1 while fd 1 itself is replaced:
		// a naive dup2 sequence would give fd 3 the pipe instead.
		attr: Attr{Path: "/bin/sh", Argv: sh(`cat <&5; cat <&4; readlink /proc/self/fd/3`),
			Files: []int{-1, -100, -100, 1, int(fa.Fd()), int(fb.Fd())}},
		check: func(t *testing.T, out string) {
			if want := "BA" + stdoutTarget + "\n"; out != want {
				t.Errorf("got %q, want %q", out, want)
			}
		},
	}, {
		name: "an fd without O_CLOEXEC does not reach the command",
		attr: Attr{Path: "/bin/sh", Argv: sh(fmt.Sprintf(`test -e /proc/self/fd/%d && echo leaked || echo closed`, leak))},
		check: func(t *testing.T, out string) {
			if out != "closed\n" {
				t.Errorf("got %q, want closed", out)
			}
		},
	}, {
		// Signals are blocked from before clone; the command gets the
		// calling thread's mask back (a Go thread's: empty).
		name: "the signal mask is the caller's",
		attr: Attr{Path: "/bin/cat", Argv: []string{"cat", "/proc/self/status"}},
		check: func(t *testing.T, out string) {
			if v := statusField(out, "SigBlk"); v != "0000000000000000" {
				t.Errorf("SigBlk %s, want none", v)
			}
		},
	}, {
		name: "identity in a new user namespace",
		attr: Attr{Path: "/bin/sh", Argv: sh(`id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups`),
			User: &Identity{UID: 1234, GID: 2345, HostUID: 0, HostGID: 0}, Setpgid: true},
		check: func(t *testing.T, out string) {
			f := strings.Fields(out)
			want := []string{"1234", "2345", "1234", "0", "1", "2345", "0", "1", "deny"}
			if strings.Join(f, " ") != strings.Join(want, " ") {
				t.Errorf("got %q, want %q", f, want)
			}
		},
	}, {
		name: "uid 0 without capabilities",
		attr: Attr{Path: "/bin/grep", Argv: []string{"grep", "-E", "^(Cap|NoNewPrivs|Uid)", "/proc/self/status"},
			User: &Identity{HostUID: 0, HostGID: 0}, DropCaps: true},
		check: func(t *testing.T, out string) {
			for _, f := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
				if v := statusField(out, f); v != "0000000000000000" {
					t.Errorf("%s %s, want none", f, v)
				}
			}
			if v := statusField(out, "NoNewPrivs"); v != "1" {
				t.Errorf("NoNewPrivs %s, want 1", v)
			}
			if v := strings.Fields(statusField(out, "Uid")); len(v) == 0 || v[0] != "0" {
				t.Errorf("Uid %v, want 0", v)
			}
		},
	}, {
		name: "RLIMIT_AS",
		attr: Attr{Path: "/bin/grep", Argv: []string{"grep", "address space", "/proc/self/limits"}, RlimitAS: 3 << 30},
		check: func(t *testing.T, out string) {
			if f := strings.Fields(out); len(f) < 5 || f[3] != "3221225472" || f[4] != "3221225472" {
				t.Errorf("got %q, want soft and hard 3221225472", out)
			}
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, st, l := run(t, tc.attr)
			if l != -1 {
				t.Errorf("listener %d without a filter", l)
			}
			if !st.Exited() || st.ExitStatus() != 0 {
				t.Errorf("status %v; output %q", st, out)
			}
			tc.check(t, out)
		})
	}
}

func TestStartUnderFilter(t *testing.T) {
	arch, err := seccomp.Native()
	if err != nil {
		t.Skip(err)
	}
	f, err := seccomp.DefaultFilter(arch)
	if err != nil {
		t.Fatal(err)
	}
	r, w, _ := os.Pipe()
	defer r.Close()
	pid, l, err := Start(&Attr{
		Path:   "/bin/sh",
		Argv:   sh(`grep ^Seccomp: /proc/self/status; grep ^NoNewPrivs /proc/self/status; unshare -U true 2>/dev/null && echo unshared || echo refused`),
		Files:  []int{-1, int(w.Fd()), int(w.Fd())},
		Filter: f.Program(),
	})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if l < 0 {
		t.Fatal("no listener")
	}
	notified := make(chan string, 8)
	go f.Serve(l, func(n *seccomp.Notification, d seccomp.Decision) { notified <- f.Name(&n.Data) })
	out, _ := io.ReadAll(r)
	var ws unix.WaitStatus
	unix.Wait4(pid, &ws, 0, nil)
	if got := strings.Fields(string(out)); strings.Join(got, " ") != "Seccomp: 2 NoNewPrivs: 1 refused" {
		t.Errorf("got %q", got)
	}
	if name := <-notified; name != "unshare" {
		t.Errorf("listener saw %s, want unshare", name)
	}
}

func TestStartErrors(t *testing.T) {
	arch, _ := seccomp.Native()
	f, _ := seccomp.DefaultFilter(arch)
	missing := filepath.Join(t.TempDir(), "missing")
	tests := []struct {
		name  string
		attr  Attr
		step  string
		errno syscall.Errno
	}{
		{"no such command", Attr{Path: missing, Argv: []string{"x"}}, "exec", syscall.ENOENT},
		{"no such command under a filter", Attr{Path: missing, Argv: []string{"x"}, Filter: f.Program()}, "exec", syscall.ENOENT},
		{"not executable", Attr{Path: "/etc/passwd", Argv: []string{"x"}}, "exec", syscall.EACCES},
		{"no such dir", Attr{Path: "/bin/true", Argv: []string{"true"}, Dir: missing}, "chdir", syscall.ENOENT},
		{"a closed fd", Attr{Path: "/bin/true", Argv: []string{"true"}, Files: []int{999}}, "place the command's fds", syscall.EBADF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := openFDs(t)
			pid, l, err := Start(&tc.attr)
			var se *Error
			if !errors.As(err, &se) || se.Step != tc.step || !errors.Is(err, tc.errno) {
				t.Fatalf("Start = %d, %d, %v; want step %q %v", pid, l, err, tc.step, tc.errno)
			}
			if pid != -1 || l != -1 {
				t.Errorf("pid %d listener %d after a failure", pid, l)
			}
			if after := openFDs(t); after != before {
				t.Errorf("%d fds open before, %d after", before, after)
			}
			var ws unix.WaitStatus
			if _, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil); err != unix.ECHILD {
				t.Errorf("a child is left to reap: %v", err)
			}
		})
	}
	for _, a := range []Attr{
		{Path: "/bin/true"},
		{Path: "/bin/true", Argv: []string{"a\x00b"}},
		{Path: "/bin/true", Argv: []string{"true"}, Files: make([]int, MaxFiles+1)},
	} {
		if _, _, err := Start(&a); err == nil {
			t.Errorf("Start(%+v) succeeded", a)
		}
	}
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

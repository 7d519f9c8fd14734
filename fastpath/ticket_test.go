package fastpath

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestObserve(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	link := filepath.Join(dir, "l")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", link); err != nil {
		t.Fatal(err)
	}
	var fst, lst unix.Stat_t
	unix.Stat(file, &fst)
	unix.Lstat(link, &lst)
	tests := []struct {
		kind Kind
		path string
		want string
	}{
		{Stat, filepath.Join(dir, "missing"), "absent"},
		{Stat, filepath.Join(file, "under-a-file"), "absent"},
		{Identity, dir + "/l", "100000:" + u(fst.Ino) + ":" + u(fst.Dev)},
		{Stat, link, strings.Join([]string{"100644", "1", i(fst.Mtim.Nano()), i(fst.Ctim.Nano()), u(fst.Ino), u(fst.Dev)}, ":")},
		{Lstat, link, strings.Join([]string{"120777", "1", i(lst.Mtim.Nano()), i(lst.Ctim.Nano()), u(lst.Ino), u(lst.Dev)}, ":")},
	}
	for _, tt := range tests {
		c, err := Observe(tt.kind, tt.path)
		if err != nil {
			t.Fatalf("Observe(%s, %s): %v", tt.kind, tt.path, err)
		}
		if c.State != tt.want {
			t.Errorf("Observe(%s, %s) = %q, want %q", tt.kind, tt.path, c.State, tt.want)
		}
		if !holds(c) {
			t.Errorf("Observe(%s, %s) does not hold right away", tt.kind, tt.path)
		}
	}
	c, _ := Observe(Stat, file)
	os.WriteFile(file, []byte("yy"), 0o644)
	if holds(c) {
		t.Error("a check still holds after its file was rewritten")
	}
	// Real: what a path resolves to, the same for every way to it.
	r1, err1 := Observe(Real, link)
	r2, err2 := Observe(Real, file)
	r3, err3 := Observe(Real, filepath.Join(dir, "missing"))
	if err1 != nil || err2 != nil || err3 != nil || r1.State != r2.State || len(r1.State) != 32 || r3.State != "absent" {
		t.Errorf("Observe(Real): %q %q %q (%v %v %v)", r1.State, r2.State, r3.State, err1, err2, err3)
	}
	other := filepath.Join(dir, "g")
	os.WriteFile(other, nil, 0o644)
	os.Remove(link)
	os.Symlink("g", link)
	if holds(r1) {
		t.Error("a real check still holds after its symlink was pointed elsewhere")
	}
	if _, err := Observe("readdir", file); err == nil {
		t.Error("an unknown kind was accepted")
	}
}

// holds is what fastpath.c asks of a check: the path is still in the
// recorded state.
func holds(c Check) bool {
	now, err := Observe(c.Kind, c.Path)
	return err == nil && now.State == c.State
}

func u(v uint64) string { return strconv.FormatUint(v, 10) }
func i(v int64) string  { return strconv.FormatInt(v, 10) }

func TestWriteRefuses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fast")
	fresh := filepath.Join(t.TempDir(), "fresh")
	os.WriteFile(fresh, []byte("x"), 0o644)
	c, err := Observe(Stat, fresh)
	if err != nil {
		t.Fatal(err)
	}
	ok := []byte(`{"type":"run"}`)
	tests := []struct {
		name string
		t    Ticket
		want error
	}{
		{"a file changed just now", Ticket{Socket: "/s", Request: ok, Checks: []Check{c}}, ErrRacy},
		{"a request that is not an object", Ticket{Socket: "/s", Request: []byte(`["run"]`)}, nil},
		{"an empty request", Ticket{Socket: "/s", Request: []byte(`{}`)}, nil},
		{"a NUL in a record", Ticket{Socket: "/s\x00x", Request: ok}, nil},
	}
	for _, tt := range tests {
		err := Write(dir, Invocation{}, tt.t)
		if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("%s: Write = %v, want an error (%v)", tt.name, err, tt.want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("refused writes left %d files", len(ents))
	}
	// A dir others can write to is not used.
	shared := filepath.Join(t.TempDir(), "shared")
	os.Mkdir(shared, 0o777)
	os.Chmod(shared, 0o777)
	if err := Write(shared, Invocation{}, Ticket{Socket: "/s", Request: ok}); err == nil {
		t.Error("Write used a world-writable dir")
	}
}

func TestPrune(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "fast")
	live := filepath.Join(tmp, "live.sock")
	os.WriteFile(live, nil, 0o600)
	for _, tc := range []struct {
		opts []string
		sock string
	}{{[]string{"a"}, live}, {[]string{"b"}, filepath.Join(tmp, "gone.sock")}} {
		if err := Write(dir, Invocation{Options: tc.opts}, Ticket{Socket: tc.sock, Request: []byte(`{"type":"run"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	// A temp file left behind goes; one a writer may still rename does not.
	old := filepath.Join(dir, ".tmp-123")
	os.WriteFile(old, nil, 0o600)
	os.Chtimes(old, time.Now().Add(-2*staleTemp), time.Now().Add(-2*staleTemp))
	fresh := filepath.Join(dir, ".tmp-456")
	os.WriteFile(fresh, nil, 0o600)
	// A FIFO named like a ticket is neither read nor waited on.
	unix.Mkfifo(filepath.Join(dir, "0123456789abcdef0123456789abcdef"), 0o600)
	done := make(chan struct{})
	var removed int
	var err error
	go func() { removed, err = Prune(dir); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Prune hung on a FIFO")
	}
	if err != nil || removed != 3 {
		t.Fatalf("Prune = %d, %v; want 3 removed (a dead ticket, a temp file, a FIFO)", removed, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("%d files left, want the live ticket and the fresh temp file", len(ents))
	}
	if _, err := os.Lstat(fresh); err != nil {
		t.Fatalf("Prune removed a temp file a writer may still rename: %v", err)
	}
	if n, err := Prune(filepath.Join(tmp, "none")); n != 0 || err != nil {
		t.Errorf("Prune of a missing dir = %d, %v", n, err)
	}
}

func TestNameCoversOptionSplit(t *testing.T) {
	p, err := currentProcess()
	if err != nil {
		t.Fatal(err)
	}
	a := name(p, Invocation{Options: []string{"-e", "--"}})
	b := name(p, Invocation{Options: []string{"-e", "--"}, Terminated: true})
	c := name(p, Invocation{Options: []string{"-e--"}})
	if a == b || a == c || b == c {
		t.Errorf("different splits share a name: %s %s %s", a, b, c)
	}
	if a != name(p, Invocation{Options: []string{"-e", "--"}}) {
		t.Error("the name is not stable")
	}
}

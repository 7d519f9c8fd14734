package warm

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestKey(t *testing.T) {
	cases := []struct {
		a, b []string
		same bool
	}{
		{[]string{"x", "y"}, []string{"x", "y"}, true},
		{[]string{"x", "y"}, []string{"y", "x"}, false},
		{[]string{"ab", "c"}, []string{"a", "bc"}, false},
		{[]string{"a"}, []string{"a", ""}, false},
	}
	for _, c := range cases {
		ka, kb := Key(c.a...), Key(c.b...)
		if len(ka) != 16 || !validKey(ka) {
			t.Errorf("Key(%q) = %q, want 16 hex digits", c.a, ka)
		}
		if (ka == kb) != c.same {
			t.Errorf("Key(%q)=%s Key(%q)=%s, same=%v", c.a, ka, c.b, kb, c.same)
		}
	}
}

func TestBuildIDFollowsTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(p, []byte("one"), 0o755); err != nil {
		t.Fatal(err)
	}
	id1, err := BuildID(p)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := BuildID(p); again != id1 {
		t.Fatalf("build id not stable: %s then %s", id1, again)
	}
	// A reinstall writes a new file (new inode) even when the size matches.
	tmp := p + ".new"
	if err := os.WriteFile(tmp, []byte("two"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	if id2, _ := BuildID(p); id2 == id1 {
		t.Fatal("build id unchanged after the file was replaced")
	}
	if _, err := BuildID(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("no error for a missing executable")
	}
}

func TestAgentBinary(t *testing.T) {
	cache := t.TempDir()
	var wg sync.WaitGroup
	paths := make([]string, 4)
	errs := make([]error, 4)
	for i := range paths {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			paths[i], errs[i] = AgentBinary(cache)
		}(i)
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil || paths[i] != paths[0] {
			t.Fatalf("AgentBinary #%d = %q, %v; want %q", i, paths[i], errs[i], paths[0])
		}
	}
	fi, err := os.Stat(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Stat("/proc/self/exe")
	if fi.Size() != self.Size() || fi.Mode().Perm()&0o222 != 0 {
		t.Fatalf("copy has size %d mode %v; want size %d and no write bits", fi.Size(), fi.Mode(), self.Size())
	}
	ents, _ := os.ReadDir(filepath.Join(cache, "bin"))
	if len(ents) != 1 {
		t.Fatalf("bin dir holds %d entries, want 1 (no temp dirs left)", len(ents))
	}
	// Its dir cannot gain a file either, and stays removable.
	dir := filepath.Dir(paths[0])
	if di, err := os.Stat(dir); err != nil || di.Mode().Perm()&0o222 != 0 {
		t.Fatalf("the copy's dir: %v %v; want no write bits", di, err)
	}
	if err := removeWarmDir(dir); err != nil {
		t.Fatal(err)
	}
}

// plainSpec is a warm spec whose agent runs without namespaces, so the
// registry can be tested without containers.
func plainSpec(t *testing.T, build string) Spec {
	return Spec{Key: Key(t.Name()), BuildID: build, TTL: time.Hour, Plain: true, Image: "test-image"}
}

// agentPidOf runs `echo $PPID` (the agent, for a plain spec) through Run.
func agentPidOf(t *testing.T, tempRoot string, s Spec, tools string) int {
	t.Helper()
	out, _, code, err := pipeRun(t, &testAgent{tempRoot: tempRoot}, Request{Argv: []string{"sh", "-c", "echo $PPID"}, Env: []string{"PATH=" + tools}}, "", s)
	if err != nil || code != 0 {
		t.Fatalf("run: code %d err %v", code, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("agent pid from %q: %v", out, err)
	}
	return pid
}

func TestColdStartAndReuse(t *testing.T) {
	tools := toolDir(t)
	tempRoot := shortTempDir(t)
	s := plainSpec(t, "b1")
	t.Cleanup(func() { _ = Stop(tempRoot, "all") })
	pid1 := agentPidOf(t, tempRoot, s, tools)
	pid2 := agentPidOf(t, tempRoot, s, tools)
	if pid1 != pid2 {
		t.Fatalf("second call used agent %d, first %d: the warm agent was not reused", pid2, pid1)
	}
	m, err := readMeta(warmDir(tempRoot, s.Key))
	if err != nil {
		t.Fatal(err)
	}
	if m.AgentPid != pid1 || m.Key != s.Key || m.BuildID != "b1" || m.Image != "test-image" || m.TTLSeconds != 3600 {
		t.Fatalf("meta %+v, agent pid %d", m, pid1)
	}
	if at, err := startTime(m.SupervisorPid); err != nil || at != m.SupervisorAt {
		t.Fatalf("supervisor %d start time %d (%v), meta says %d", m.SupervisorPid, at, err, m.SupervisorAt)
	}
}

// Callers started at the same moment in separate processes share one
// container: exactly one supervisor, one agent.
func TestConcurrentColdCalls(t *testing.T) {
	tools := toolDir(t)
	tempRoot := shortTempDir(t)
	s := plainSpec(t, "b1")
	t.Cleanup(func() { _ = Stop(tempRoot, "all") })
	const n = 8
	pids := make(chan int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		cmd, rd := clientCmd(t, tempRoot, s, tools, "sh", "-c", "echo $PPID")
		wg.Add(1)
		go func() {
			defer wg.Done()
			line, _ := rd.ReadString('\n')
			pid, err := strconv.Atoi(strings.TrimSpace(line))
			if err != nil {
				t.Errorf("client output %q", line)
			}
			if err := cmd.Wait(); err != nil {
				t.Errorf("client: %v", err)
			}
			pids <- pid
		}()
	}
	wg.Wait()
	close(pids)
	seen := map[int]bool{}
	for p := range pids {
		seen[p] = true
	}
	if len(seen) != 1 {
		t.Fatalf("commands ran under %d different agents %v, want 1", len(seen), seen)
	}
}

// makeStaleDir leaves what a crashed supervisor leaves: a dir with an
// unlocked alive file, meta.json naming a dead process, a socket nobody
// listens on, and an overlay work dir without permissions.
func makeStaleDir(t *testing.T, tempRoot, key string) {
	t.Helper()
	dir := warmDir(tempRoot, key)
	for _, d := range []string{dir, filepath.Join(dir, "work", "work"), filepath.Join(dir, "upper")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "work", "work"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, aliveName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeMeta(dir, &meta{Key: key, SupervisorPid: 1 << 22, AgentPid: 1<<22 + 1}); err != nil {
		t.Fatal(err)
	}
	fd, err := listen(filepath.Join(dir, sockName))
	if err != nil {
		t.Fatal(err)
	}
	_ = unix.Close(fd)
}

func TestStaleDirHealed(t *testing.T) {
	tools := toolDir(t)
	tempRoot := shortTempDir(t)
	s := plainSpec(t, "b1")
	t.Cleanup(func() { _ = Stop(tempRoot, "all") })
	makeStaleDir(t, tempRoot, s.Key)
	pid := agentPidOf(t, tempRoot, s, tools)
	m, err := readMeta(warmDir(tempRoot, s.Key))
	if err != nil || m.AgentPid != pid {
		t.Fatalf("meta %+v (%v), want agent pid %d", m, err, pid)
	}
	if _, err := os.Stat(filepath.Join(warmDir(tempRoot, s.Key), "work")); err == nil {
		t.Fatal("the stale overlay work dir survived")
	}
}

// An agent of another build under the same key is replaced, not used.
func TestOtherBuildReplaced(t *testing.T) {
	tools := toolDir(t)
	tempRoot := shortTempDir(t)
	t.Cleanup(func() { _ = Stop(tempRoot, "all") })
	old := plainSpec(t, "b1")
	pid1 := agentPidOf(t, tempRoot, old, tools)
	cur := old
	cur.BuildID = "b2"
	pid2 := agentPidOf(t, tempRoot, cur, tools)
	if pid1 == pid2 {
		t.Fatal("the agent of the old build ran the command")
	}
	if procAlive(pid1) {
		t.Fatal("the old agent is still running")
	}
	if m, err := readMeta(warmDir(tempRoot, cur.Key)); err != nil || m.BuildID != "b2" {
		t.Fatalf("meta %+v (%v), want build b2", m, err)
	}
}

func TestOneShotLeavesNothing(t *testing.T) {
	tools := toolDir(t)
	tempRoot := shortTempDir(t)
	s := plainSpec(t, "b1")
	s.OneShot = true
	pid := agentPidOf(t, tempRoot, s, tools)
	if procAlive(pid) {
		t.Fatal("one-shot agent still running after the call")
	}
	ents, _ := os.ReadDir(warmRoot(tempRoot))
	if len(ents) != 0 {
		t.Fatalf("%d entries left in %s, want none", len(ents), warmRoot(tempRoot))
	}
}

func TestListStopPrune(t *testing.T) {
	tools := toolDir(t)
	tempRoot := shortTempDir(t)
	t.Cleanup(func() { _ = Stop(tempRoot, "all") })
	s := plainSpec(t, "b1")
	s.Create.Config.Workdir = "/some/workdir"
	pid := agentPidOf(t, tempRoot, s, tools)
	staleKey := Key("stale")
	makeStaleDir(t, tempRoot, staleKey)

	infos, err := List(tempRoot)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 {
		t.Fatalf("List = %+v, want the one live container", infos)
	}
	got := infos[0]
	if got.Key != s.Key || got.Pid != pid || got.Image != "test-image" || got.Workdir != "/some/workdir" || got.TTLSeconds != 3600 || got.RunningRequests != 0 {
		t.Fatalf("List entry %+v", got)
	}
	if _, err := time.Parse(time.RFC3339, got.Created); err != nil {
		t.Fatalf("created %q: %v", got.Created, err)
	}
	if _, err := os.Stat(warmDir(tempRoot, staleKey)); err == nil {
		t.Fatal("List left the stale dir in place")
	}

	makeStaleDir(t, tempRoot, staleKey)
	removed, err := Prune(tempRoot)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != staleKey {
		t.Fatalf("Prune removed %v, want only the stale %s", removed, staleKey)
	}
	if _, err := os.Stat(keyLockPath(tempRoot, staleKey)); err == nil {
		t.Fatal("Prune left the lock file of a removed key")
	}
	if _, err := os.Stat(keyLockPath(tempRoot, s.Key)); err != nil {
		t.Fatalf("Prune removed the lock of a live key: %v", err)
	}
	if !procAlive(pid) {
		t.Fatal("Prune stopped a container within its TTL")
	}

	if err := Stop(tempRoot, s.Key); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(warmDir(tempRoot, s.Key)); err == nil {
		t.Fatal("Stop returned before the dir was gone")
	}
	deadline := time.Now().Add(time.Second)
	for procAlive(pid) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if procAlive(pid) {
		t.Fatal("the agent survived Stop")
	}
	if infos, _ := List(tempRoot); len(infos) != 0 {
		t.Fatalf("List after Stop = %+v", infos)
	}
}

func TestMountsCovered(t *testing.T) {
	exec := MountItems([]string{"bind=/w=1:2", "cover=/w/lectic.yaml=1:3", "cover=/w/sub/chat.lec=1:4"})
	mcp := MountItems([]string{"bind=/w=1:2", "cover=/w/lectic.yaml=1:3"})
	moved := MountItems([]string{"bind=/w=1:9", "cover=/w/lectic.yaml=1:3"})
	tests := []struct {
		want, have string
		ok         bool
	}{
		{exec, exec, true},
		{mcp, exec, true},    // an MCP server's call in an exec tool's container
		{exec, mcp, false},   // an exec tool's call needs its conversation covered
		{moved, exec, false}, // the workdir was made again
		{"", exec, true},
	}
	for i, tt := range tests {
		if got := MountsCovered(tt.want, tt.have); got != tt.ok {
			t.Errorf("%d: MountsCovered = %v, want %v", i, got, tt.ok)
		}
	}
}

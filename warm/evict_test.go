package warm

import (
	"sort"
	"strconv"
	"testing"
	"time"
)

// liveKeys waits until the live containers under tempRoot settle on want
// (stopping an evicted one takes up to a second) and returns them.
func liveKeys(t *testing.T, tempRoot string, want int) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		infos, err := List(tempRoot)
		if err != nil {
			t.Fatal(err)
		}
		var ks []string
		for _, i := range infos {
			ks = append(ks, i.Key)
		}
		sort.Strings(ks)
		if len(ks) == want || time.Now().After(deadline) {
			return ks
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sameKeys(a []string, b ...string) bool {
	sort.Strings(b)
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// With --max-warm 3, a new container stops the least recently used idle
// ones beyond it, and a container used again is no longer the least
// recently used.
func TestMaxWarmStopsLeastRecentlyUsed(t *testing.T) {
	tools := toolDir(t)
	tempRoot := shortTempDir(t)
	t.Cleanup(func() { _ = Stop(tempRoot, "all") })
	specs := make([]Spec, 5)
	for i := range specs {
		specs[i] = plainSpec(t, "b1")
		specs[i].Key = Key(t.Name(), strconv.Itoa(i))
		specs[i].Family = Key("family", strconv.Itoa(i))
		specs[i].MaxWarm = 3
	}
	for _, s := range specs[:3] {
		agentPidOf(t, tempRoot, s, tools)
	}
	if got := liveKeys(t, tempRoot, 3); !sameKeys(got, specs[0].Key, specs[1].Key, specs[2].Key) {
		t.Fatalf("three containers under a cap of three: %v", got)
	}
	time.Sleep(20 * time.Millisecond) // distinct idle times
	agentPidOf(t, tempRoot, specs[0], tools)
	agentPidOf(t, tempRoot, specs[3], tools)
	if got := liveKeys(t, tempRoot, 3); !sameKeys(got, specs[0].Key, specs[2].Key, specs[3].Key) {
		t.Fatalf("after a fourth, want #1 (used again), #3 and #4; got %v (keys %s %s %s %s)", got,
			specs[0].Key, specs[1].Key, specs[2].Key, specs[3].Key)
	}
	agentPidOf(t, tempRoot, specs[4], tools)
	if got := liveKeys(t, tempRoot, 3); !sameKeys(got, specs[0].Key, specs[3].Key, specs[4].Key) {
		t.Fatalf("after a fifth, want #1, #4 and #5; got %v", got)
	}
}

// A container whose image was replaced for the same workdir and options
// (same family, another key) is stopped as soon as it is idle, not while
// a command runs in it.
func TestReplacedContainerStopsWhenIdle(t *testing.T) {
	tools := toolDir(t)
	tempRoot := shortTempDir(t)
	t.Cleanup(func() { _ = Stop(tempRoot, "all") })
	old, repl := plainSpec(t, "b1"), plainSpec(t, "b1")
	old.Key, repl.Key = Key(t.Name(), "old image"), Key(t.Name(), "new image")
	old.Family, repl.Family = Key("same shape"), Key("same shape")
	oldPid := agentPidOf(t, tempRoot, old, tools)

	// A command that runs across the replacement.
	cmd, _ := clientWith(t, testClientArgs{TempRoot: tempRoot, Spec: old, Argv: []string{"sh", "-c", "sleep 2"},
		Env: []string{"PATH=" + tools}, Cwd: "/", User: UserSpec{Mode: "root"}})
	waitRunning(t, tempRoot, old.Key)
	agentPidOf(t, tempRoot, repl, tools)
	time.Sleep(1500 * time.Millisecond)
	if !procAlive(oldPid) {
		t.Fatal("the replaced container was stopped while a command ran in it")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the command in the replaced container: %v", err)
	}
	if got := liveKeys(t, tempRoot, 1); !sameKeys(got, repl.Key) {
		t.Fatalf("once idle, the replaced container must stop; live: %v", got)
	}
}

// waitRunning waits until the container of key runs a request.
func waitRunning(t *testing.T, tempRoot, key string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := askStatus(socketPath(tempRoot, key)); err == nil && st.Running > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the request never started")
}

// An expire request lets the agent go once idle; a run request that comes
// first withdraws it.
func TestExpireWithdrawnByARun(t *testing.T) {
	a := newAgent("b", time.Hour, false)
	a.expire = true
	if got := a.pollTimeout(); got != 0 {
		t.Fatalf("idle with expire: poll timeout %d, want 0 (exit)", got)
	}
	a.inflight = 1
	if got := a.pollTimeout(); got != 1000 {
		t.Fatalf("a connection in flight: poll timeout %d, want 1000", got)
	}
	a.classified(true)
	a.end()
	if a.expire || a.pollTimeout() == 0 {
		t.Fatal("a run request did not withdraw the expire request")
	}

	b := startTestAgent(t, agentOpts{ttl: 3600})
	if err := askExpire(socketPath(b.tempRoot, b.key)); err != nil {
		t.Fatal(err)
	}
	b.waitExit(t, 10*time.Second)
}

package warm

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// benchRun measures Run of `true` against a warm agent, in process: the
// connect, the request with three fds, fork/exec in the agent, and the
// exit status. The process start of a real client comes on top.
func benchRun(b *testing.B, tempRoot string, s Spec, r Request) {
	b.Helper()
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	r.Stdin, r.Stdout, r.Stderr = devnull, devnull, devnull
	if code, err := Run(context.Background(), tempRoot, s, r); err != nil || code != 0 {
		b.Fatalf("warm-up: code %d err %v", code, err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if code, err := Run(context.Background(), tempRoot, s, r); err != nil || code != 0 {
			b.Fatalf("code %d err %v", code, err)
		}
	}
	b.StopTimer()
}

// reportRSS adds the agent's resident memory to the benchmark's output.
func reportRSS(b *testing.B, pid int) {
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.Fields(v)[0])
			b.ReportMetric(float64(kb), "agent-RSS-kB")
		}
	}
}

// BenchmarkWarmCallPlain is the warm call against an agent without a
// container: the cost of the protocol and the agent alone.
func BenchmarkWarmCallPlain(b *testing.B) {
	bb, err := lookBusybox()
	if err != nil {
		b.Skip("busybox not found")
	}
	tempRoot, err := os.MkdirTemp("/tmp", "wb")
	if err != nil {
		b.Fatal(err)
	}
	defer removeWarmDir(tempRoot)
	s := Spec{Key: Key(b.Name()), BuildID: "bench", Plain: true}
	defer Stop(tempRoot, "all")
	benchRun(b, tempRoot, s, Request{Argv: []string{bb, "true"}, Cwd: "/", User: UserSpec{Mode: "root"}})
	if m, err := readMeta(warmDir(tempRoot, s.Key)); err == nil {
		reportRSS(b, m.AgentPid)
	}
}

// BenchmarkWarmCallContainer is the warm call into a real container, as
// the caller's uid (nested user namespace) and as root mode.
func BenchmarkWarmCallContainer(b *testing.B) {
	cases := []struct {
		name string
		user UserSpec
	}{
		// uid 1000 takes the nested user namespace; uid 0 in caller mode
		// also drops its capabilities as it starts (package spawn).
		{"caller-uid1000", UserSpec{Mode: "caller", UID: 1000, GID: 1000}},
		{"caller-uid0", UserSpec{Mode: "caller", UID: 0, GID: 0}},
		{"root", UserSpec{Mode: "root"}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			requireUserns(b)
			w := newContainerWorld(b, testIdentity{"self", uint32(os.Getuid()), uint32(os.Getgid())})
			user := c.user
			benchRun(b, w.temp, w.spec, Request{Argv: []string{"true"}, Env: []string{"PATH=/bin"}, Cwd: "/", User: user})
			if m, err := readMeta(warmDir(w.temp, w.spec.Key)); err == nil {
				reportRSS(b, m.AgentPid)
			}
			_ = Stop(w.temp, "all")
		})
	}
}

// BenchmarkWarmCallParallel16 runs 16 clients at once against one warm
// container (caller mode, through the identity helper).
func BenchmarkWarmCallParallel16(b *testing.B) {
	requireUserns(b)
	w := newContainerWorld(b, testIdentity{"self", uint32(os.Getuid()), uint32(os.Getgid())})
	defer Stop(w.temp, "all")
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	r := Request{Argv: []string{"true"}, Env: []string{"PATH=/bin"}, Cwd: "/", User: UserSpec{Mode: "caller", UID: 1000, GID: 1000},
		Stdin: devnull, Stdout: devnull, Stderr: devnull}
	if code, err := Run(context.Background(), w.temp, w.spec, r); err != nil || code != 0 {
		b.Fatalf("warm-up: code %d err %v", code, err)
	}
	b.SetParallelism((16 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if code, err := Run(context.Background(), w.temp, w.spec, r); err != nil || code != 0 {
				b.Errorf("code %d err %v", code, err)
				return
			}
		}
	})
}

package namespace

import (
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

func benchJob(w workspace, loop int) job {
	warm := filepath.Join(w.dir, "warm")
	return job{
		Options: CreateOptions{
			ID:       "bench",
			StateDir: filepath.Join(warm, "state"),
			Config: oci.Config{
				Image:      oci.Image{Rootfs: w.rootfs},
				Workdir:    w.workdir,
				Home:       w.home,
				HomeTarget: "/home/tester",
				AgentPath:  w.agent,
			},
			UpperDir:  filepath.Join(warm, "upper"),
			WorkDir:   filepath.Join(warm, "work"),
			MergedDir: filepath.Join(warm, "merged"),
			Volatile:  true,
			InitArgs:  []string{"/bin/true"},
			InitEnv:   []string{"PATH=/bin"},
		},
		Output: filepath.Join(w.dir, "out"),
		Loop:   loop,
		Result: filepath.Join(w.dir, "result.json"),
	}
}

// BenchmarkCreate times Create alone (overlay mount, mountpoints, spec,
// libcontainer create and start, until the init runs) inside one
// supervisor; ns/op also includes Wait and Destroy.
//
//	go test ./namespace -run '^$' -bench Create -benchtime 50x
func BenchmarkCreate(b *testing.B) {
	requireTool(b, busybox)
	requireUserns(b)
	bin := testBinary(b)
	for _, id := range identities(b) {
		b.Run(id.name, func(b *testing.B) {
			w := newWorkspace(b, id)
			b.ResetTimer()
			res := runSupervisor(b, bin, id, benchJob(w, b.N))
			if res.Err != "" {
				b.Fatal(res.Err)
			}
			reportCreate(b, res.CreateNanos)
		})
	}
}

func reportCreate(b *testing.B, nanos []int64) {
	if len(nanos) == 0 {
		return
	}
	sort.Slice(nanos, func(i, j int) bool { return nanos[i] < nanos[j] })
	b.ReportMetric(float64(time.Duration(nanos[len(nanos)/2]).Microseconds())/1000, "create-p50-ms")
	b.ReportMetric(float64(time.Duration(nanos[len(nanos)*9/10]).Microseconds())/1000, "create-p90-ms")
}

// BenchmarkColdContainer is one whole cold container per op: start a
// supervisor process in its namespaces, Create, let the init exit,
// Destroy. This is the container's share of a cold call.
//
//	go test ./namespace -run '^$' -bench ColdContainer -benchtime 50x
func BenchmarkColdContainer(b *testing.B) {
	requireTool(b, busybox)
	requireUserns(b)
	bin := testBinary(b)
	for _, id := range identities(b) {
		b.Run(id.name, func(b *testing.B) {
			w := newWorkspace(b, id)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				res := runSupervisor(b, bin, id, benchJob(w, 1))
				if res.Err != "" {
					b.Fatal(res.Err)
				}
			}
		})
	}
}

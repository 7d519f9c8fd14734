package fastpath

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

// BenchmarkFastPathEnv measures a warm call served by the constructor with
// a caller environment of n extra variables, against an agent that answers
// at once. child-cpu-ms is the child's own CPU time (user + system: its
// exec and the constructor's work); the env=0 case is the baseline of the
// same run.
//
//	go test ./fastpath -run '^$' -bench FastPathEnv -benchtime 20x
func BenchmarkFastPathEnv(b *testing.B) {
	for _, n := range []int{0, 1000, 10000, 20000} {
		b.Run("env="+strconv.Itoa(n), func(b *testing.B) {
			extra := make([]string, n)
			for i := range extra {
				extra[i] = fmt.Sprintf("BENCH_VAR_%d=value %d", i, i)
			}
			benchCalls(b, extra, nil)
		})
	}
}

// BenchmarkFastPathTicketEnv: a ticket whose recipe holds n image
// variables (env_pre records).
//
//	go test ./fastpath -run '^$' -bench FastPathTicketEnv -benchtime 20x
func BenchmarkFastPathTicketEnv(b *testing.B) {
	for _, n := range []int{0, 40000} {
		b.Run("env_pre="+strconv.Itoa(n), func(b *testing.B) {
			pre := []string{"PATH=/bin"}
			for i := range n {
				pre = append(pre, fmt.Sprintf("IMG_%d=%d", i, i))
			}
			benchCalls(b, nil, pre)
		})
	}
}

func benchCalls(b *testing.B, extra, imageEnv []string) {
	tmp := shortTempDir(b)
	b.Setenv("LECTIC_TEMP", tmp)
	b.Setenv("USER", "tester")
	dir := Dir(goTempRoot(b, filepath.Join(tmp, "nix-sandbox"), filepath.Join(tmp, "cache", "nix-sandbox")))
	sock := filepath.Join(tmp, "agent.sock")
	if imageEnv == nil {
		imageEnv = []string{"PATH=/bin"}
	}
	recipe := oci.NewEnvRecipe(imageEnv, nil, "/home/tester", "tester")
	head := `{"type":"run","proto":2,"build":"b1","user":{"mode":"caller","uid":1,"gid":1},"ttl_seconds":900}`
	if err := Write(dir, Invocation{}, Ticket{Socket: sock, Request: []byte(head), Cwd: "/w", Env: recipe}); err != nil {
		b.Fatal(err)
	}
	seen := fakeAgent(b, sock, exitWith(0, 0))
	go func() {
		for range seen {
		}
	}()
	env := childEnviron(append([]string{ModeEnv + "=require"}, extra...))
	var cpu time.Duration
	b.ResetTimer()
	for range b.N {
		cmd := exec.Command(os.Args[0], "true")
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			b.Fatalf("%v: %s", err, out.Bytes())
		}
		cpu += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "child-cpu-ms/op")
}

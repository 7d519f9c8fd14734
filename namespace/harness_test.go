package namespace

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/testenv"
)

// The test binary plays every role of the product: the test itself, the
// unprivileged caller ("user" stage), the supervisor that calls Create
// ("supervisor" stage) and libcontainer's init. The stage is chosen by
// environment, like the product does.
const (
	stageEnv = "_NSTEST_STAGE"
	jobEnv   = "_NSTEST_JOB"
)

func TestMain(m *testing.M) {
	if IsInit() {
		if os.Args[0] == leaveMainThreadArg0 {
			// What a loaded machine's scheduler may do to the init
			// before Init: move main's goroutine to another thread.
			fmt.Fprintf(os.Stderr, "leave-main-thread: moved=%v\n", leaveMainThread())
		}
		Init()
	}
	if IsProbe() {
		os.Exit(RunProbe())
	}
	switch os.Getenv(stageEnv) {
	case "user":
		os.Exit(runUserStage())
	case "supervisor":
		os.Exit(runSupervisorStage())
	case "isinit":
		fmt.Println(IsInit())
		os.Exit(0)
	case "doctor":
		os.Exit(runDoctorStage())
	case "leave-main-thread":
		fmt.Printf("moved=%v\n", leaveMainThread())
		os.Exit(0)
	case "init-off-main":
		runInitOffMain()
	}
	os.Exit(m.Run())
}

// job is what a test asks the supervisor stage to do.
type job struct {
	Options CreateOptions
	Output  string // file receiving the init's stdout and stderr
	// DoneMarker: wait until Output contains it, then Destroy. Empty: wait
	// for the init to exit, then Destroy.
	DoneMarker string
	Loop       int    // >0: benchmark loop of Loop containers; the init must exit by itself
	ExtraFile  string // opened read-only and passed as the init's fd 3
	// LeaveMainThread makes the init try to move main's goroutine off
	// the main thread before Init and say on stderr whether it could.
	LeaveMainThread bool
	Result          string
}

type jobResult struct {
	Pid            int
	ExitCode       int
	Err            string
	PidGone        bool
	StateRemoved   bool
	DestroyTwiceOK bool
	CreateNanos    []int64
}

func runUserStage() int {
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = replaceEnv(os.Environ(), stageEnv, "supervisor")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = CreatorSysProcAttr(os.Getuid(), os.Getgid())
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "user stage:", err)
		return 125
	}
	return 0
}

func runSupervisorStage() int {
	var j job
	data, err := os.ReadFile(os.Getenv(jobEnv))
	if err == nil {
		err = json.Unmarshal(data, &j)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "supervisor: read job:", err)
		return 125
	}
	if j.LeaveMainThread {
		// libcontainer gives the init our argv[0]; it is the only word
		// the init can read before Init (its environment is
		// libcontainer's).
		os.Args[0] = leaveMainThreadArg0
	}
	res := runJob(j)
	out, _ := json.Marshal(res)
	if err := os.WriteFile(j.Result, out, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "supervisor: write result:", err)
		return 125
	}
	return 0
}

func runJob(j job) jobResult {
	if j.Loop > 0 {
		return runLoop(j)
	}
	var res jobResult
	out, err := os.OpenFile(j.Output, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer out.Close()
	j.Options.Stdio = [3]*os.File{nil, out, out}
	if j.ExtraFile != "" {
		f, err := os.Open(j.ExtraFile)
		if err != nil {
			res.Err = err.Error()
			return res
		}
		defer f.Close()
		j.Options.ExtraFiles = []*os.File{f}
	}
	c, err := Create(context.Background(), j.Options)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	res.Pid = c.Pid()
	if j.DoneMarker != "" {
		if err := waitForMarker(j.Output, j.DoneMarker, 20*time.Second); err != nil {
			res.Err = err.Error()
		}
	} else {
		res.ExitCode, _ = c.Wait()
	}
	if err := c.Destroy(); err != nil && res.Err == "" {
		res.Err = "destroy: " + err.Error()
	}
	res.DestroyTwiceOK = c.Destroy() == nil
	res.PidGone = errors.Is(syscall.Kill(res.Pid, 0), syscall.ESRCH)
	_, serr := os.Stat(filepath.Join(j.Options.StateDir, j.Options.ID))
	res.StateRemoved = errors.Is(serr, os.ErrNotExist)
	return res
}

// runLoop creates, waits for and destroys Loop containers, timing
// Create alone (until the init is running).
func runLoop(j job) jobResult {
	var res jobResult
	base := j.Options
	for i := 0; i < j.Loop; i++ {
		o := base
		o.ID = fmt.Sprintf("%s-%d", base.ID, i)
		for _, d := range []*string{&o.UpperDir, &o.WorkDir, &o.MergedDir} {
			*d = filepath.Join(filepath.Dir(*d), strconv.Itoa(i), filepath.Base(*d))
		}
		t0 := time.Now()
		c, err := Create(context.Background(), o)
		if err != nil {
			res.Err = err.Error()
			return res
		}
		res.CreateNanos = append(res.CreateNanos, time.Since(t0).Nanoseconds())
		c.Wait()
		if err := c.Destroy(); err != nil {
			res.Err = err.Error()
			return res
		}
		os.RemoveAll(filepath.Join(filepath.Dir(base.UpperDir), strconv.Itoa(i)))
	}
	return res
}

func waitForMarker(path, marker string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(path)
		if bytes.Contains(data, []byte(marker)) {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	data, _ := os.ReadFile(path)
	return fmt.Errorf("container never printed %q; output:\n%s", marker, data)
}

func replaceEnv(env []string, name, value string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return append(out, name+"="+value)
}

// identity is who runs the supervisor in a test.
type identity struct {
	name     string
	uid, gid int
}

func (id identity) root() bool { return id.uid == 0 }

// identities returns root and an unprivileged user when the test runs as
// root; otherwise just the current user.
func identities(t testing.TB) []identity {
	if os.Getuid() != 0 {
		return []identity{{"self", os.Getuid(), os.Getgid()}}
	}
	ids := []identity{{"root", 0, 0}}
	uid, gid := testenv.Unprivileged()
	return append(ids, identity{"unprivileged", uid, gid})
}

// requireTool skips (or fails under CI=true) when a host tool is missing.
func requireTool(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		missing(t, fmt.Sprintf("%s is not installed (apt-get install busybox-static)", path))
	}
}

func missing(t testing.TB, why string) {
	t.Helper()
	testenv.Missing(t, why)
}

// requireUserns skips (or fails under CI) when this kernel refuses user
// namespaces to the current user.
func requireUserns(t testing.TB) {
	t.Helper()
	cmd := exec.Command("/bin/true")
	cmd.SysProcAttr = CreatorSysProcAttr(os.Getuid(), os.Getgid())
	if err := cmd.Run(); err != nil {
		missing(t, "user namespaces are not available: "+err.Error())
	}
}

// testBinary copies the test binary to a 0755 directory every uid can
// read, so the unprivileged stage can execute it.
func testBinary(t testing.TB) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: its parent is 0700 and the other uid must get in.
	dir, err := os.MkdirTemp("", "nstest-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "namespace.test")
	copyFile(t, self, dst, 0o755)
	return dst
}

func copyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	if err := testenv.CopyFile(dst, src, mode); err != nil {
		t.Fatal(err)
	}
}

// runSupervisor runs j as id: root starts the supervisor directly in its
// new namespaces; an unprivileged id goes through the user stage, as the
// product's client does.
func runSupervisor(t testing.TB, bin string, id identity, j job) jobResult {
	t.Helper()
	jobFile := filepath.Join(filepath.Dir(j.Result), "job.json")
	data, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(jobFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	env := replaceEnv(os.Environ(), jobEnv, jobFile)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if id.root() {
		cmd.Env = replaceEnv(env, stageEnv, "supervisor")
		cmd.SysProcAttr = CreatorSysProcAttr(0, 0)
	} else {
		cmd.Env = replaceEnv(env, stageEnv, "user")
		cmd.SysProcAttr = asIdentity(id)
	}
	if err := cmd.Run(); err != nil {
		t.Fatalf("supervisor as %s: %v\n%s", id.name, err, stderr.String())
	}
	var res jobResult
	data, err = os.ReadFile(j.Result)
	if err == nil {
		err = json.Unmarshal(data, &res)
	}
	if err != nil {
		t.Fatalf("supervisor result: %v\n%s", err, stderr.String())
	}
	return res
}

// asIdentity drops to id when the test runs as root.
func asIdentity(id identity) *syscall.SysProcAttr {
	if os.Getuid() == id.uid {
		return nil
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(id.uid), Gid: uint32(id.gid)}}
}

// chownTree gives a test directory to the identity that runs the
// supervisor, as the cache and temp dirs belong to the caller.
func chownTree(t testing.TB, root string, id identity) {
	t.Helper()
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if os.Getuid() != 0 {
			return nil
		}
		return os.Lchown(p, id.uid, id.gid)
	})
	if err != nil {
		t.Fatal(err)
	}
}

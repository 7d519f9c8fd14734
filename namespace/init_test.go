package namespace

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// leaveMainThreadArg0 is the argv[0] that tells the test binary's init to
// try leaveMainThread before Init (see job.LeaveMainThread).
const leaveMainThreadArg0 = "nstest-init-leave-main-thread"

// leaveMainThread moves the calling goroutine off the process's main
// thread if it can, as the scheduler may at any preemption point: it
// blocks, so that the thread runs the helper goroutine it just made
// next, and the helper keeps the main thread for good. A goroutine locked
// to the main thread cannot be moved: the helper then runs elsewhere and
// gives up. Several tries, because another thread may take the helper
// first. It reports whether the caller is now on another thread.
func leaveMainThread() bool {
	for try := 0; try < 50 && onMainThread(); try++ {
		kept := make(chan bool)
		go func() {
			runtime.LockOSThread()
			if !onMainThread() {
				kept <- false
				return // and the thread ends with the goroutine
			}
			kept <- true
			select {}
		}()
		<-kept
	}
	return !onMainThread()
}

func onMainThread() bool { return unix.Gettid() == unix.Getpid() }

// runInitOffMain calls Init from a goroutine that cannot be on the main
// thread, since main's goroutine holds it.
func runInitOffMain() {
	runtime.LockOSThread()
	go Init()
	select {}
}

// TestInitKeepsMainThread: libcontainer's init stays on the main thread
// even when something tries to move it before Init. On another thread,
// musl's setgid fails (see init.go) and Create fails with "unable to
// setup user: operation not permitted", which a loaded machine did to
// about one container in a hundred.
func TestInitKeepsMainThread(t *testing.T) {
	requireTool(t, busybox)
	requireUserns(t)
	bin := testBinary(t)
	for _, id := range identities(t) {
		t.Run(id.name, func(t *testing.T) {
			w := newWorkspace(t, id)
			j := benchJob(w, 0)
			j.LeaveMainThread = true
			j.Options.InitArgs = []string{"/bin/sh", "-c", "echo ran=$(id -u)"}
			res := runSupervisor(t, bin, id, j)
			out, _ := os.ReadFile(j.Output)
			if res.Err != "" || res.ExitCode != 0 {
				t.Fatalf("result %+v\noutput:\n%s", res, out)
			}
			got := parseOutput(string(out))
			if got["leave-main-thread: moved"] != "false" {
				t.Errorf("the init's main goroutine could be moved off the main thread before Init\noutput:\n%s", out)
			}
			if got["ran"] != "0" {
				t.Errorf("ran = %q, want 0\noutput:\n%s", got["ran"], out)
			}
		})
	}
}

// TestLeaveMainThreadMovesUnlockedMain shows that leaveMainThread does move
// main's goroutine when nothing locks it (no libcontainer environment, so
// package namespace's init leaves it alone): TestInitKeepsMainThread's
// "moved=false" is the lock's doing.
func TestLeaveMainThreadMovesUnlockedMain(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = replaceEnv(os.Environ(), stageEnv, "leave-main-thread")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "moved=true" {
		t.Errorf("leaveMainThread on an unlocked main goroutine: %q, want moved=true", got)
	}
}

// TestInitRefusesAnotherThread: Init called off the main thread exits 125
// with the reason instead of running libcontainer's init there.
func TestInitRefusesAnotherThread(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = replaceEnv(os.Environ(), stageEnv, "init-off-main")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 125 {
		t.Fatalf("Init off the main thread: %v, want exit status 125\n%s", err, out)
	}
	if !strings.Contains(string(out), "must run on the main thread") || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Errorf("Init off the main thread said %q, want one line saying it must run on the main thread", out)
	}
}

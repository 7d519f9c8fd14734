package namespace

import (
	"fmt"
	"os"
	"runtime"

	"github.com/opencontainers/runc/libcontainer"
	// nsenter's C constructor joins the namespaces before the Go runtime
	// starts; it acts only when libcontainer's init environment is set.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
	"golang.org/x/sys/unix"
)

// init keeps libcontainer's init on the process's main thread, from package
// initialisation (where the runtime holds main's goroutine there) through
// main to Init: a goroutine locked in an init function runs main on that
// thread, and the runtime never moves it.
//
// libcontainer's init must run on the main thread when the binary is
// linked with musl (scripts/build.sh). musl records each thread's tid when
// the thread starts, and nsenter makes the init with clone(2), which musl
// does not see: in the init, the record of the main thread still holds the
// tid of the process that was exec'd, which does not exist in the
// container's pid namespace. From the main thread, musl's setgid notices
// and changes only that thread, the one that execs the command. From any
// other thread it first signals every thread it knows of, the stale tid
// fails with ESRCH, and musl gives up without calling setgid and returns
// 1, which Go reads as errno 1: setupUser's "operation not permitted".
// (glibc skips a thread it cannot signal, so a glibc build hides this.)
// An unlocked goroutine may be moved to another thread at any preemption
// point, which a loaded machine makes likely (runc calls Init from an init
// function, which avoids the same).
func init() {
	if IsInit() {
		runtime.LockOSThread()
	}
}

// IsInit reports whether this process is libcontainer's re-executed init.
// It looks only at the environment, never at argv, so a user command named
// "init" is never mistaken for it.
func IsInit() bool { return os.Getenv("_LIBCONTAINER_INITPIPE") != "" }

// Init runs libcontainer's init. It never returns: on success it execs the
// container's process, on failure it exits non-zero. It must be called
// from main's goroutine, which package namespace keeps on the main thread
// (see init); called from anywhere else it exits 125 with the reason
// rather than let libcontainer fail later with a bare EPERM.
func Init() {
	if err := requireMainThread(); err != nil {
		fmt.Fprintln(os.Stderr, "lectic-nix-sandbox: container init:", err)
		os.Exit(125)
	}
	libcontainer.Init()
	os.Exit(125)
}

// requireMainThread locks the calling goroutine to its thread and checks
// that the thread is the process's main thread (its tid is the pid).
func requireMainThread() error {
	runtime.LockOSThread()
	if tid, pid := unix.Gettid(), unix.Getpid(); tid != pid {
		return fmt.Errorf("libcontainer's init must run on the main thread (pid %d), not thread %d: call namespace.Init from main's goroutine", pid, tid)
	}
	return nil
}

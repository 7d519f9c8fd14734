package namespace

import (
	"os"

	"github.com/opencontainers/runc/libcontainer"
	// nsenter's C constructor joins the namespaces before the Go runtime
	// starts; it acts only when libcontainer's init environment is set.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
)

// IsInit reports whether this process is libcontainer's re-executed init.
// It looks only at the environment, never at argv, so a user command named
// "init" is never mistaken for it.
func IsInit() bool { return os.Getenv("_LIBCONTAINER_INITPIPE") != "" }

// Init runs libcontainer's init. It never returns: on success it execs the
// container's process, on failure it exits non-zero.
func Init() {
	libcontainer.Init()
	os.Exit(125)
}

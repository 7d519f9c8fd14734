package namespace

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

// CreateOptions describes one container. See Create.
type CreateOptions struct {
	ID                           string // container id (the warm key)
	StateDir                     string // libcontainer state root
	Config                       oci.Config
	UpperDir, WorkDir, MergedDir string // overlay dirs; see Volatile
	// Volatile marks the writable layer as throwaway: it then lives on a
	// tmpfs mounted at UpperDir in the supervisor's mount namespace only,
	// with libcontainer's state (WorkDir and StateDir unused, nothing
	// written to disk, what the container writes outside its binds costs
	// memory). Without it, or when the kernel
	// cannot put an overlay upper on tmpfs, UpperDir and WorkDir are the
	// on-disk upper and work dirs ("volatile" overlay when Volatile), and
	// the read-only bind of the image goes beside MergedDir ("lower").
	Volatile bool
	// StorageSize caps, in bytes, everything the container holds in
	// memory: its writable layer (when Volatile) and /tmp, /run, /var/tmp,
	// /dev and /dev/shm share one tmpfs of this size. A write past it gets
	// ENOSPC. 0 leaves the kernel's default (half of RAM).
	StorageSize int64
	// EtcFiles are written into the merged root before start, e.g.
	// "/etc/passwd". Merging with the image's files is the caller's job
	// (ReadRootFile + oci.MergePasswd): only it knows the users.
	EtcFiles   map[string][]byte
	InitArgs   []string
	InitEnv    []string
	ExtraFiles []*os.File  // fds 3.. in the init
	Stdio      [3]*os.File // nil entries become /dev/null
}

// Container is a started container whose init is running.
type Container struct {
	lc      *libcontainer.Container
	proc    *libcontainer.Process
	layout  rootLayout
	pid     int
	waitMu  sync.Mutex
	waited  bool
	code    int
	waitErr error

	destroyMu sync.Mutex
	destroyed bool
}

// Create mounts the overlay root, writes EtcFiles, builds the spec with
// oci.Spec and starts the container's init. It must run in a process that
// is alone in its own user and mount namespace (see CreatorSysProcAttr);
// the container shares that user namespace (see doc.go).
func Create(ctx context.Context, o CreateOptions) (*Container, error) {
	if err := checkOptions(o); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	layout, err := mountRoot(o)
	if err != nil {
		return nil, err
	}
	staged, mounts, err := stageCovers(o.Config, layout.stagingDir())
	layout.staged = mounts
	if err != nil {
		_ = unmountRoot(layout)
		return nil, err
	}
	c, err := start(o, layout, staged)
	if err != nil {
		_ = unmountRoot(layout)
		return nil, err
	}
	return c, nil
}

func checkOptions(o CreateOptions) error {
	if o.ID == "" || o.StateDir == "" {
		return errors.New("create container: ID and StateDir are required")
	}
	for _, p := range []string{o.Config.Image.Rootfs, o.UpperDir, o.WorkDir, o.MergedDir} {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("create container %s: path %q is not absolute", o.ID, p)
		}
	}
	if len(o.InitArgs) == 0 {
		return fmt.Errorf("create container %s: no init command", o.ID)
	}
	return nil
}

// start prepares the merged root and starts libcontainer; the overlay is
// already mounted.
func start(o CreateOptions, layout rootLayout, staged map[string]string) (*Container, error) {
	cfg := o.Config
	cfg.RootPath = o.MergedDir
	cfg.InitArgs, cfg.InitEnv = o.InitArgs, o.InitEnv
	cfg.Scratch = layout.mounts
	cfg = withCgroupPath(cfg, o.ID)
	spec, err := oci.Spec(cfg)
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", o.ID, err)
	}
	useStaged(spec.Mounts, staged)
	if err := prepareRoot(o.MergedDir, spec.Mounts, o.EtcFiles); err != nil {
		return nil, fmt.Errorf("container %s: %w", o.ID, err)
	}
	lcfg, err := libcontainerConfig(o.ID, spec)
	if err != nil {
		return nil, fmt.Errorf("container %s: convert spec: %w", o.ID, err)
	}
	lc, err := libcontainer.Create(layout.state, o.ID, lcfg)
	if err != nil {
		return nil, fmt.Errorf("container %s: create in %s: %w", o.ID, layout.state, err)
	}
	c := &Container{lc: lc, layout: layout}
	if err := c.run(o, spec.Process); err != nil {
		_ = lc.Destroy()
		return nil, fmt.Errorf("container %s: start init: %w", o.ID, err)
	}
	return c, nil
}

// withCgroupPath puts the container's cgroup, when it gets one under a
// delegated parent, in a child named after the container.
func withCgroupPath(cfg oci.Config, id string) oci.Config {
	if cfg.Limits.Cgroup && cfg.Limits.CgroupParent != "" {
		cfg.Limits.CgroupsPath = path.Join(cfg.Limits.CgroupParent, "lectic-nix-sandbox-"+id)
	}
	return cfg
}

func prepareRoot(merged string, mounts []specs.Mount, etc map[string][]byte) error {
	root, err := os.OpenFile(merged, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open container root: %w", err)
	}
	defer root.Close()
	if err := makeMountpoints(root, mounts); err != nil {
		return err
	}
	return writeRootFiles(root, etc)
}

// libcontainerConfig converts the spec. RootlessEUID follows runc: it is
// false at euid 0 even inside a user namespace (the supervisor's case),
// where the container shares that namespace. Cgroups are rootless: when
// the controllers are not writable (not delegated) libcontainer skips them.
//
// Device cgroup rules are dropped: from a user namespace they cannot be
// set (libcontainer would only pretend), and what the container may open
// is decided by the few host devices bound into its /dev.
func libcontainerConfig(id string, spec *specs.Spec) (*configs.Config, error) {
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName:      id,
		Spec:            spec,
		RootlessEUID:    os.Geteuid() != 0,
		RootlessCgroups: true,
		// Every container joins a session keyring of its own (named after
		// its id, which is unique): the caller's session keyring, which
		// the supervisor inherits, is never reachable from inside.
		NoNewKeyring: false,
	})
	if err != nil {
		return nil, err
	}
	cfg.Cgroups.Resources.Devices = nil
	// The container dies with its supervisor: libcontainer gives the init
	// this parent-death signal, restores it after changing credentials,
	// and then checks that its parent is still the one that started it.
	cfg.ParentDeathSignal = int(unix.SIGKILL)
	return cfg, nil
}

// run starts the init. runc's CLI, not specconv, turns spec.Process into a
// libcontainer.Process, so the per-process parts (rlimits in particular)
// are carried over here.
func (c *Container) run(o CreateOptions, sp *specs.Process) error {
	p, err := newProcess(sp)
	if err != nil {
		return err
	}
	p.ExtraFiles = o.ExtraFiles
	// Assigning a nil *os.File to the io interfaces would make them
	// non-nil; leave them unset so they become /dev/null.
	if o.Stdio[0] != nil {
		p.Stdin = o.Stdio[0]
	}
	if o.Stdio[1] != nil {
		p.Stdout = o.Stdio[1]
	}
	if o.Stdio[2] != nil {
		p.Stderr = o.Stdio[2]
	}
	if err := c.lc.Run(p); err != nil {
		return err
	}
	pid, err := p.Pid()
	if err != nil {
		return err
	}
	c.proc, c.pid = p, pid
	return nil
}

func newProcess(sp *specs.Process) (*libcontainer.Process, error) {
	nnp := sp.NoNewPrivileges
	p := &libcontainer.Process{
		Args:            sp.Args,
		Env:             sp.Env,
		Cwd:             sp.Cwd,
		UID:             int(sp.User.UID),
		GID:             int(sp.User.GID),
		NoNewPrivileges: &nnp,
		Init:            true,
	}
	if caps := sp.Capabilities; caps != nil {
		p.Capabilities = &configs.Capabilities{
			Bounding: caps.Bounding, Effective: caps.Effective, Permitted: caps.Permitted,
			Inheritable: caps.Inheritable, Ambient: caps.Ambient,
		}
	}
	for _, r := range sp.Rlimits {
		kind, ok := rlimitType(r.Type)
		if !ok {
			return nil, fmt.Errorf("unsupported rlimit %s", r.Type)
		}
		p.Rlimits = append(p.Rlimits, configs.Rlimit{Type: kind, Soft: r.Soft, Hard: r.Hard})
	}
	return p, nil
}

func rlimitType(name string) (int, bool) {
	switch name {
	case "RLIMIT_AS":
		return unix.RLIMIT_AS, true
	case "RLIMIT_CORE":
		return unix.RLIMIT_CORE, true
	case "RLIMIT_CPU":
		return unix.RLIMIT_CPU, true
	case "RLIMIT_DATA":
		return unix.RLIMIT_DATA, true
	case "RLIMIT_FSIZE":
		return unix.RLIMIT_FSIZE, true
	case "RLIMIT_MEMLOCK":
		return unix.RLIMIT_MEMLOCK, true
	case "RLIMIT_NOFILE":
		return unix.RLIMIT_NOFILE, true
	case "RLIMIT_NPROC":
		return unix.RLIMIT_NPROC, true
	case "RLIMIT_STACK":
		return unix.RLIMIT_STACK, true
	}
	return 0, false
}

// Pid is the init's pid as the supervisor sees it.
func (c *Container) Pid() int { return c.pid }

// Wait waits for the init to exit and returns its exit code (128+N when
// killed by signal N). Later calls return the same result.
func (c *Container) Wait() (int, error) {
	c.waitMu.Lock()
	defer c.waitMu.Unlock()
	if c.waited {
		return c.code, c.waitErr
	}
	st, err := c.proc.Wait()
	c.waited = true
	c.code, c.waitErr = exitCode(st, err)
	return c.code, c.waitErr
}

func exitCode(st *os.ProcessState, err error) (int, error) {
	if st == nil {
		return -1, fmt.Errorf("wait for container init: %w", err)
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return st.ExitCode(), nil
}

// Destroy kills the init (and with it every process in the container's pid
// namespace), reaps it, removes libcontainer's state and unmounts the
// overlay root. Calling it again does nothing.
func (c *Container) Destroy() error {
	c.destroyMu.Lock()
	defer c.destroyMu.Unlock()
	if c.destroyed {
		return nil
	}
	c.destroyed = true
	var errs []error
	if err := c.proc.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		errs = append(errs, fmt.Errorf("kill container init: %w", err))
	}
	if _, err := c.Wait(); err != nil {
		errs = append(errs, err)
	}
	if err := c.lc.Destroy(); err != nil {
		errs = append(errs, err)
	}
	if err := unmountRoot(c.layout); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

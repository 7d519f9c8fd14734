// Package namespace is the adapter to runc's libcontainer: it takes an OCI
// spec from package oci, mounts the per-container overlay root, and creates,
// starts and destroys the container. It also holds the libcontainer init
// re-exec entry (IsInit/Init) and the host capability probes behind
// --doctor (Doctor, and IsProbe/RunProbe for the probe children: main must
// run `if namespace.IsProbe() { os.Exit(namespace.RunProbe()) }` early,
// beside the IsInit check, or the doctor's namespace probes fail).
// Init must be called from main's goroutine, which the package keeps on
// the process's main thread in an init process (init.go says why).
//
// The --doctor probe of the allow-list's network runs package netfwd's
// Probe in the same kind of process the supervisor is.
//
// It does not decide what the container looks like (package oci) nor how
// commands reach it (package warm).
//
// # Where Create runs
//
// Create runs in the supervisor: a re-executed copy of the binary started
// with CreatorSysProcAttr, alone in a new user namespace (uid/gid 0 = the
// caller, size 1) and a new mount namespace. There it may mount the overlay
// root (libcontainer refuses an overlay at "/" and creates mountpoints in a
// read-only root, so the root it gets is the overlay's merged dir).
//
// # Covers
//
// Before the container is created, every user bind that holds something
// no command may reach or write (oci.CoverPlan: the sandbox's state,
// Lectic's directories, files the host runs later) is bound at a staging
// dir in the supervisor's mount namespace, where the plan's pins (a
// directory bound onto itself cannot be renamed), read-only self-binds and
// empty read-only tmpfs covers are mounted, each resolved by file
// descriptor below the staged root with no symlink allowed. The container
// then binds the staged dir recursively, covers included. Inside, the
// covers cannot be undone: the container holds no CAP_SYS_ADMIN, and a
// namespace made inside gets them locked.
//
// # Nesting and capabilities
//
// The container does not get a user namespace of its own: it shares the
// supervisor's. Levels are host -> supervisor/container -> the per-command
// namespace the agent makes to run as the caller's uid, one fewer than a
// nested container namespace; and the mapping is already what a container
// namespace would map (0 = the caller), so a nested one adds nothing.
// libcontainer treats this as "root in a user namespace" (RootlessEUID is
// false at euid 0, as in runc), which is how rootless Docker runs runc.
//
// The container's mount namespace is therefore owned by the supervisor's
// user namespace, and the init holds only podman's default capabilities
// there, with no CAP_SYS_ADMIN in effective, permitted or bounding sets and
// no_new_privs set. Nothing inside can mount or remount (so the read-only
// agent binary stays read-only, tested) and nothing can regain the
// capability by exec. A process that makes a new user namespace inside gets
// CAP_SYS_ADMIN only over namespaces it creates; mounts it inherits from
// ours are locked by the kernel and cannot be made writable there.
//
// # Root file system
//
// The cached rootfs is bound read-only and is the overlay's only lower
// layer; mountpoints and EtcFiles are created in the merged dir, so in the
// upper layer, with every path resolved inside the root (openat2
// RESOLVE_IN_ROOT), so an image symlink can never point Create at the
// host. A Volatile container keeps its upper layer on a tmpfs (see
// CreateOptions.Volatile): on disk, each directory the overlay and the
// mountpoints need is a journaled metadata write, about 1 ms each on the
// development VM, and that was half of a cold start.
//
// # Limits
//
// One tmpfs of CreateOptions.StorageSize holds everything the container
// keeps in memory: the writable layer (Volatile), libcontainer's state, and
// the dirs bound at /tmp, /run, /var/tmp and /dev/shm (oci.Config.Scratch),
// so a write past the size gets ENOSPC wherever it lands. /dev stays a
// 1 MiB tmpfs of its own: libcontainer sets up device nodes only on a
// tmpfs /dev.
//
// PlanLimits decides what holds the pids and memory limits: a cgroup of the
// container's own (cgroup v2 delegated to the caller, as in a systemd user
// session, or host root on v1 or v2; libcontainer's managers create it and
// Destroy removes it), else rlimits. Without a cgroup, libcontainer is
// rootless for cgroups (controllers it cannot write are skipped) and the
// spec carries no cgroup limits, which libcontainer would refuse. Device
// cgroup rules are always dropped: a user namespace cannot set them, and
// device access is limited by what is bound into /dev.
//
// # Dying with the supervisor
//
// The container's init is the agent, which sets its own parent-death
// signal (libcontainer's ParentDeathSignal does not survive nsexec's
// forks) and watches a pipe the supervisor holds (package warm). The
// supervisor creates the container from its main thread, which lives as
// long as it does, since the signal follows the thread that forked.
package namespace

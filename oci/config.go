package oci

import ocispec "github.com/opencontainers/image-spec/specs-go/v1"

// AgentTarget is where the sandbox binary appears inside the container.
const AgentTarget = "/.lectic-nix-sandbox/agent"

// DefaultHostname is used when Config.Hostname is empty.
const DefaultHostname = "sandbox"

// DefaultPath is the command PATH when the image does not set one.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Volume is one --volume: Source on the host bound at Target.
type Volume struct {
	Source, Target string
	ReadOnly       bool
}

// Image is the part of a loaded image the spec needs.
type Image struct {
	Rootfs    string
	Config    ocispec.ImageConfig
	HostBinds []string // absolute host paths bound read-only at the same path
}

// User is one /etc/passwd entry.
type User struct {
	Name     string
	UID, GID uint32
	Home     string
	Shell    string
}

// Group is one /etc/group entry.
type Group struct {
	Name    string
	GID     uint32
	Members []string
}

// Rlimit is a soft/hard resource limit pair. The zero value means "leave
// the limit as inherited".
type Rlimit struct{ Soft, Hard uint64 }

// Config describes one sandbox. Paths are host paths unless named Target.
type Config struct {
	Image      Image
	RootPath   string // the directory libcontainer gets as root (the merged overlay)
	Workdir    string // absolute host path, bound rw at the same path
	Home       string // host dir; bound rw at HomeTarget
	HomeTarget string // in-container path of $HOME
	// HomeIsOwn marks Home as the sandbox's own per-workdir home, which
	// lives inside its cache (a Hide cover) by design.
	HomeIsOwn bool
	Volumes   []Volume
	AllowNet  bool
	// NetNS, without AllowNet, is a network namespace the container joins
	// (a path that can be opened while the container starts): the
	// allow-list's namespace, which package netfwd made and serves. ""
	// gives the container a new one with only lo.
	NetNS     string
	AgentPath string // host path of the binary; bound read-only at AgentTarget
	// HostUID/HostGID are what container uid/gid 0 map to. They are only
	// used with NewUserNS and are ids of the namespace that creates the
	// container (0 in the supervisor), not of the host.
	HostUID, HostGID uint32
	Hostname         string

	// ResolvConf is a host file bound read-only at /etc/resolv.conf; only
	// used with AllowNet, since without a network it would only leak.
	ResolvConf string
	// InitArgs/InitEnv are the argv and environment of the container init.
	InitArgs []string
	InitEnv  []string
	// NoFile sets RLIMIT_NOFILE; the caller reads its own limits.
	NoFile Rlimit
	// Limits bound the whole container.
	Limits Limits
	// Scratch is a directory of the namespace that creates the container
	// whose subdirectories (ScratchDirs) are bound at /tmp, /run, /var/tmp
	// and /dev/shm instead of each getting a tmpfs of its own, so that one
	// size-limited tmpfs holds all of them (and the writable layer, see
	// package namespace). "" gives each its own tmpfs. /dev stays a tmpfs
	// of its own (libcontainer sets up device nodes only there), of
	// devSize.
	Scratch string
	// NewUserNS gives the container a nested user namespace (see doc.go).
	NewUserNS bool
	// Covers are what no command may reach or write, wherever the binds
	// expose them (CoverPlan); package namespace mounts them.
	Covers []Cover
}

// Limits are the resource limits of a container.
type Limits struct {
	// Pids bounds the container's tasks (threads count, as for pids.max):
	// RLIMIT_NPROC of every process, which the kernel counts per user
	// namespace, so for the whole container (see doc.go), and pids.max when
	// Cgroup. 0 = no limit.
	Pids int64
	// Memory in bytes: memory.max (memory.limit_in_bytes on cgroup v1) when
	// Cgroup; otherwise the caller applies it to each command as RLIMIT_AS.
	// 0 = no limit.
	Memory int64
	// Cgroup says the container gets a cgroup of its own that holds the
	// limits: cgroup v2 delegated to the caller, or v1 for host root.
	// CgroupsPath is where ("" = libcontainer's default place); package
	// namespace sets it to a child of CgroupParent named after the
	// container when CgroupParent is set.
	Cgroup       bool
	CgroupParent string
	CgroupsPath  string
}

// ScratchDirs are the subdirectories of Config.Scratch, by mount target,
// with the mode each is created with.
var ScratchDirs = []struct {
	Target, Dir string
	Mode        uint32
}{
	{"/dev/shm", "shm", 0o1777},
	{"/run", "run", 0o755},
	{"/tmp", "tmp", 0o1777},
	{"/var/tmp", "var-tmp", 0o1777},
}

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
	Volumes    []Volume
	AllowNet   bool
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
	// NewUserNS gives the container a nested user namespace (see doc.go).
	NewUserNS bool
}

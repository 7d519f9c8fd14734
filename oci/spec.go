package oci

import (
	"fmt"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// DefaultCaps returns the capability set of the init and of root commands:
// podman's default set. CAP_SYS_ADMIN is deliberately absent: without it
// nothing inside can remount the read-only agent binary.
func DefaultCaps() []string {
	return []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
		"CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
		"CAP_SETUID", "CAP_SYS_CHROOT",
	}
}

// maskedPaths and readonlyPaths are runc's defaults.
func maskedPaths() []string {
	return []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
		"/proc/sched_debug", "/sys/firmware", "/proc/scsi",
	}
}

func readonlyPaths() []string {
	return []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
}

// Spec builds the runtime spec of the container described by c.
func Spec(c Config) (*specs.Spec, error) {
	if err := checkConfig(c); err != nil {
		return nil, err
	}
	mounts, err := Mounts(c)
	if err != nil {
		return nil, err
	}
	s := &specs.Spec{
		Version:  specs.Version,
		Root:     &specs.Root{Path: c.RootPath, Readonly: false},
		Hostname: hostname(c),
		Mounts:   mounts,
		Process:  process(c),
		Linux:    linux(c),
	}
	return s, nil
}

func checkConfig(c Config) error {
	if !filepath.IsAbs(c.RootPath) {
		return fmt.Errorf("container root %q is not an absolute path", c.RootPath)
	}
	if len(c.InitArgs) == 0 {
		return fmt.Errorf("container init has no command")
	}
	if c.NetNS != "" && (c.AllowNet || !filepath.IsAbs(c.NetNS)) {
		return fmt.Errorf("network namespace %q: want an absolute path, and no host network", c.NetNS)
	}
	if c.AgentPath != "" && !filepath.IsAbs(c.AgentPath) {
		return fmt.Errorf("agent binary %q is not an absolute path", c.AgentPath)
	}
	return nil
}

func hostname(c Config) string {
	if c.Hostname == "" {
		return DefaultHostname
	}
	return c.Hostname
}

func process(c Config) *specs.Process {
	p := &specs.Process{
		Args:            append([]string(nil), c.InitArgs...),
		Env:             append([]string(nil), c.InitEnv...),
		Cwd:             "/",
		NoNewPrivileges: true,
		Capabilities: &specs.LinuxCapabilities{
			Bounding:  DefaultCaps(),
			Effective: DefaultCaps(),
			Permitted: DefaultCaps(),
		},
	}
	if c.NoFile != (Rlimit{}) {
		p.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: c.NoFile.Soft, Hard: c.NoFile.Hard}}
	}
	if n := c.Limits.Pids; n > 0 {
		p.Rlimits = append(p.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_NPROC", Soft: uint64(n), Hard: uint64(n)})
	}
	return p
}

func linux(c Config) *specs.Linux {
	l := &specs.Linux{
		Namespaces:    namespaces(c),
		MaskedPaths:   maskedPaths(),
		ReadonlyPaths: readonlyPaths(),
	}
	if lim := c.Limits; lim.Cgroup {
		l.CgroupsPath = lim.CgroupsPath
		l.Resources = &specs.LinuxResources{}
		if lim.Pids > 0 {
			l.Resources.Pids = &specs.LinuxPids{Limit: &lim.Pids}
		}
		if lim.Memory > 0 {
			mem, swap := lim.Memory, lim.Memory // no swap beyond the limit
			l.Resources.Memory = &specs.LinuxMemory{Limit: &mem, Swap: &swap}
		}
	}
	if c.NewUserNS {
		l.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: c.HostUID, Size: 1}}
		l.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: c.HostGID, Size: 1}}
	}
	return l
}

func namespaces(c Config) []specs.LinuxNamespace {
	var ns []specs.LinuxNamespace
	if c.NewUserNS {
		ns = append(ns, specs.LinuxNamespace{Type: specs.UserNamespace})
	}
	ns = append(ns,
		specs.LinuxNamespace{Type: specs.MountNamespace},
		specs.LinuxNamespace{Type: specs.PIDNamespace},
		specs.LinuxNamespace{Type: specs.IPCNamespace},
		specs.LinuxNamespace{Type: specs.UTSNamespace},
	)
	if !c.AllowNet {
		ns = append(ns, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: c.NetNS})
	}
	return ns
}

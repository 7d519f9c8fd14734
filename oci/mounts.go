package oci

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Mounts returns the container's mount table in the order it must be
// mounted: every target after the targets that contain it, and, at equal
// depth, in the order below, so a later mount on the same path wins.
func Mounts(c Config) ([]specs.Mount, error) {
	binds, err := userBinds(c)
	if err != nil {
		return nil, err
	}
	all := append(systemMounts(c), binds...)
	sort.SliceStable(all, func(i, j int) bool {
		return depth(all[i].Destination) < depth(all[j].Destination)
	})
	return all, nil
}

func depth(p string) int {
	if p == "/" {
		return 0
	}
	return strings.Count(filepath.Clean(p), "/")
}

// devSize bounds /dev, a tmpfs the container could otherwise fill.
const devSize = "1m"

func systemMounts(c Config) []specs.Mount {
	m := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		// Device nodes (bind mounts), symlinks and mountpoints only: a
		// small fixed size, outside Scratch.
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=" + devSize}},
		// No gid=5: the tty group is not mapped when rootless.
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		// The container owns its ipc namespace, so mqueue mounts rootless.
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		sysMount(c.AllowNet),
		tmpfs("/tmp", "1777"),
		tmpfs("/run", "0755"),
		tmpfs("/var/tmp", "1777"),
	}
	if c.Scratch == "" {
		return m
	}
	// One tmpfs for all of them: binds of the scratch dirs, which keep
	// the modes they were made with.
	for i := range m {
		for _, d := range ScratchDirs {
			if m[i].Destination != d.Target {
				continue
			}
			opts := []string{"rbind", "rw", "nosuid", "nodev"}
			if d.Target == "/dev/shm" {
				opts = append(opts, "noexec")
			}
			m[i] = specs.Mount{Destination: d.Target, Type: "bind", Source: filepath.Join(c.Scratch, d.Dir), Options: opts}
		}
	}
	return m
}

// sysMount mounts a fresh sysfs only with a network namespace of our own:
// the kernel refuses sysfs to a namespace that does not own its netns, so
// with the host network the host's /sys is bound read-only instead.
func sysMount(allowNet bool) specs.Mount {
	if allowNet {
		return specs.Mount{Destination: "/sys", Type: "bind", Source: "/sys", Options: []string{"rbind", "nosuid", "noexec", "nodev", "rro"}}
	}
	return specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}}
}

func tmpfs(target, mode string) specs.Mount {
	return specs.Mount{Destination: target, Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=" + mode}}
}

func bind(src, dst string, ro bool, extra ...string) specs.Mount {
	opts := []string{"rbind"}
	if ro {
		opts = append(opts, "ro")
	} else {
		opts = append(opts, "rw")
	}
	opts = append(opts, extra...)
	return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts}
}

// userBinds are the mounts that come from the caller: image host binds,
// home, workdir, volumes, the agent and resolv.conf, in that order.
func userBinds(c Config) ([]specs.Mount, error) {
	var m []specs.Mount
	for _, p := range c.Image.HostBinds {
		if err := checkTarget("image host bind", p); err != nil {
			return nil, err
		}
		m = append(m, bind(p, filepath.Clean(p), true, "nosuid", "nodev"))
	}
	if c.Home != "" {
		if err := checkBind("home", c.Home, c.HomeTarget); err != nil {
			return nil, err
		}
		m = append(m, bind(c.Home, filepath.Clean(c.HomeTarget), false))
	}
	if c.Workdir != "" {
		if err := checkBind("working directory", c.Workdir, c.Workdir); err != nil {
			return nil, err
		}
		m = append(m, bind(c.Workdir, filepath.Clean(c.Workdir), false))
	}
	for _, v := range c.Volumes {
		if err := checkBind("volume", v.Source, v.Target); err != nil {
			return nil, err
		}
		m = append(m, bind(v.Source, filepath.Clean(v.Target), v.ReadOnly))
	}
	if c.AgentPath != "" {
		m = append(m, bind(c.AgentPath, AgentTarget, true, "nosuid", "nodev"))
	}
	if c.AllowNet && c.ResolvConf != "" {
		if !filepath.IsAbs(c.ResolvConf) {
			return nil, fmt.Errorf("resolv.conf %q is not an absolute path", c.ResolvConf)
		}
		m = append(m, bind(c.ResolvConf, "/etc/resolv.conf", true, "nosuid", "nodev", "noexec"))
	}
	return m, nil
}

func checkBind(what, src, dst string) error {
	if !filepath.IsAbs(src) {
		return fmt.Errorf("%s %q is not an absolute host path", what, src)
	}
	return checkTarget(what, dst)
}

// checkTarget rejects targets that would hide or replace the container's
// own system mounts or its root.
func checkTarget(what, dst string) error {
	if !filepath.IsAbs(dst) {
		return fmt.Errorf("%s target %q is not an absolute path; use an absolute path", what, dst)
	}
	if hasDotDot(dst) {
		return fmt.Errorf("%s target %q contains \"..\"; use a plain absolute path", what, dst)
	}
	clean := filepath.Clean(dst)
	if clean == "/" {
		return fmt.Errorf("%s target is \"/\"; choose a directory below /", what)
	}
	for _, sys := range []string{"/proc", "/dev", "/sys", filepath.Dir(AgentTarget)} {
		if clean == sys || strings.HasPrefix(clean, sys+"/") {
			return fmt.Errorf("%s target %s is under %s; choose another target", what, clean, sys)
		}
	}
	return nil
}

func hasDotDot(p string) bool {
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

package oci

import (
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func baseConfig() Config {
	return Config{
		Image:      Image{Rootfs: "/cache/rootfs/abc/root"},
		RootPath:   "/t/warm/k/merged",
		Workdir:    "/home/u/project",
		Home:       "/cache/home/h",
		HomeTarget: "/home/u",
		AgentPath:  "/cache/bin/id/lectic-nix-sandbox",
		InitArgs:   []string{AgentTarget},
		InitEnv:    []string{"_LECTIC_NIX_SANDBOX_AGENT=1"},
	}
}

func nsTypes(s *specs.Spec) []specs.LinuxNamespaceType {
	var out []specs.LinuxNamespaceType
	for _, n := range s.Linux.Namespaces {
		out = append(out, n.Type)
	}
	return out
}

func TestSpecNamespaces(t *testing.T) {
	tests := []struct {
		name      string
		allowNet  bool
		newUserNS bool
		want      []specs.LinuxNamespaceType
	}{
		{"isolated", false, false, []specs.LinuxNamespaceType{specs.MountNamespace, specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.NetworkNamespace}},
		{"host network", true, false, []specs.LinuxNamespaceType{specs.MountNamespace, specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace}},
		{"nested user namespace", false, true, []specs.LinuxNamespaceType{specs.UserNamespace, specs.MountNamespace, specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.NetworkNamespace}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := baseConfig()
			c.AllowNet, c.NewUserNS = tt.allowNet, tt.newUserNS
			c.HostUID, c.HostGID = 7, 8
			s, err := Spec(c)
			if err != nil {
				t.Fatal(err)
			}
			if got := nsTypes(s); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("namespaces = %v, want %v", got, tt.want)
			}
			var wantUID, wantGID []specs.LinuxIDMapping
			if tt.newUserNS {
				wantUID = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 7, Size: 1}}
				wantGID = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 8, Size: 1}}
			}
			if !reflect.DeepEqual(s.Linux.UIDMappings, wantUID) || !reflect.DeepEqual(s.Linux.GIDMappings, wantGID) {
				t.Errorf("id maps = %v %v, want %v %v", s.Linux.UIDMappings, s.Linux.GIDMappings, wantUID, wantGID)
			}
		})
	}
}

// TestSpecJoinsPolicyNetwork: an allow-list's namespace is joined by path,
// and still counts as the container's own for /sys.
func TestSpecJoinsPolicyNetwork(t *testing.T) {
	c := baseConfig()
	c.NetNS = "/proc/42/fd/7"
	s, err := Spec(c)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	for _, n := range s.Linux.Namespaces {
		if n.Type == specs.NetworkNamespace {
			got = n.Path
		}
	}
	if got != c.NetNS {
		t.Errorf("network namespace path = %q, want %q", got, c.NetNS)
	}
	for _, m := range s.Mounts {
		if m.Destination == "/sys" && m.Type != "sysfs" {
			t.Errorf("/sys is %s, want a sysfs of the container's own network", m.Type)
		}
	}
}

func TestSpecProcessAndHardening(t *testing.T) {
	c := baseConfig()
	c.NoFile = Rlimit{Soft: 1024, Hard: 524288}
	s, err := Spec(c)
	if err != nil {
		t.Fatal(err)
	}
	p := s.Process
	if !reflect.DeepEqual(p.Args, c.InitArgs) || !reflect.DeepEqual(p.Env, c.InitEnv) || p.Cwd != "/" {
		t.Errorf("process = %+v", p)
	}
	if !p.NoNewPrivileges {
		t.Error("no_new_privs is off")
	}
	for name, set := range map[string][]string{"bounding": p.Capabilities.Bounding, "effective": p.Capabilities.Effective, "permitted": p.Capabilities.Permitted} {
		if !reflect.DeepEqual(set, DefaultCaps()) {
			t.Errorf("%s caps = %v", name, set)
		}
		for _, c := range set {
			if c == "CAP_SYS_ADMIN" {
				t.Errorf("%s caps hold CAP_SYS_ADMIN", name)
			}
		}
	}
	if len(p.Capabilities.Inheritable) != 0 || len(p.Capabilities.Ambient) != 0 {
		t.Errorf("inheritable/ambient caps = %v %v, want none", p.Capabilities.Inheritable, p.Capabilities.Ambient)
	}
	wantRlimits := []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 1024, Hard: 524288}}
	if !reflect.DeepEqual(p.Rlimits, wantRlimits) {
		t.Errorf("rlimits = %v, want %v", p.Rlimits, wantRlimits)
	}
	if s.Hostname != "sandbox" || s.Root.Path != c.RootPath || s.Root.Readonly {
		t.Errorf("hostname %q root %+v", s.Hostname, s.Root)
	}
	if !contains(s.Linux.MaskedPaths, "/proc/kcore") || !contains(s.Linux.ReadonlyPaths, "/proc/sys") {
		t.Errorf("masked %v readonly %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	if s.Linux.Resources != nil || s.Linux.CgroupsPath != "" {
		t.Errorf("spec asks for cgroups: %+v %q", s.Linux.Resources, s.Linux.CgroupsPath)
	}

	c.Hostname, c.NoFile = "box", Rlimit{}
	s, err = Spec(c)
	if err != nil {
		t.Fatal(err)
	}
	if s.Hostname != "box" || s.Process.Rlimits != nil {
		t.Errorf("hostname %q rlimits %v", s.Hostname, s.Process.Rlimits)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestSpecErrors(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"relative root", func(c *Config) { c.RootPath = "merged" }, "not an absolute path"},
		{"no init", func(c *Config) { c.InitArgs = nil }, "no command"},
		{"workdir under /proc", func(c *Config) { c.Workdir = "/proc/1" }, "is under /proc"},
		{"workdir is /", func(c *Config) { c.Workdir = "/" }, `target is "/"`},
		{"relative home", func(c *Config) { c.Home = "home" }, "not an absolute host path"},
		{"home target under /dev", func(c *Config) { c.HomeTarget = "/dev/x" }, "is under /dev"},
		{"volume under /sys", func(c *Config) { c.Volumes = []Volume{{Source: "/a", Target: "/sys/x"}} }, "is under /sys"},
		{"host bind over the agent dir", func(c *Config) { c.Image.HostBinds = []string{"/.lectic-nix-sandbox"} }, "is under /.lectic-nix-sandbox"},
		{"relative resolv.conf", func(c *Config) { c.AllowNet, c.ResolvConf = true, "resolv.conf" }, "not an absolute path"},
		{"relative network namespace", func(c *Config) { c.NetNS = "ns/net" }, "want an absolute path"},
		{"network namespace with the host network", func(c *Config) { c.AllowNet, c.NetNS = true, "/proc/1/ns/net" }, "no host network"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := baseConfig()
			tt.modify(&c)
			_, err := Spec(c)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Spec error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

package oci

import (
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func destinations(ms []specs.Mount) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Destination)
	}
	return out
}

func mountAt(t *testing.T, ms []specs.Mount, dst string) specs.Mount {
	t.Helper()
	var found []specs.Mount
	for _, m := range ms {
		if m.Destination == dst {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d mounts at %s, want 1", len(found), dst)
	}
	return found[0]
}

func TestMountsOrderAndOptions(t *testing.T) {
	c := baseConfig()
	c.Image.HostBinds = []string{"/nix/store", "/usr"}
	c.Volumes = []Volume{
		{Source: "/data", Target: "/home/u/project/data", ReadOnly: true},
		{Source: "/scratch", Target: "/scratch"},
	}
	c.AllowNet, c.ResolvConf = true, "/etc/resolv.conf"
	ms, err := Mounts(c)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"/proc", "/dev", "/sys", "/tmp", "/run", "/usr", "/scratch",
		"/dev/pts", "/dev/shm", "/dev/mqueue", "/var/tmp", "/nix/store", "/home/u",
		"/.lectic-nix-sandbox/agent", "/etc/resolv.conf",
		"/home/u/project",
		"/home/u/project/data",
	}
	if got := destinations(ms); !reflect.DeepEqual(got, want) {
		t.Fatalf("mount order:\n got %v\nwant %v", got, want)
	}
	tests := []struct {
		dst  string
		want specs.Mount
	}{
		{"/proc", specs.Mount{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}}},
		{"/dev/pts", specs.Mount{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}}},
		{"/sys", specs.Mount{Destination: "/sys", Type: "bind", Source: "/sys", Options: []string{"rbind", "nosuid", "noexec", "nodev", "rro"}}},
		{"/tmp", specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}}},
		{"/run", specs.Mount{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=0755"}}},
		{"/var/tmp", specs.Mount{Destination: "/var/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}}},
		{"/nix/store", specs.Mount{Destination: "/nix/store", Type: "bind", Source: "/nix/store", Options: []string{"rbind", "ro", "nosuid", "nodev"}}},
		{"/home/u", specs.Mount{Destination: "/home/u", Type: "bind", Source: "/cache/home/h", Options: []string{"rbind", "rw"}}},
		{"/home/u/project", specs.Mount{Destination: "/home/u/project", Type: "bind", Source: "/home/u/project", Options: []string{"rbind", "rw"}}},
		{"/home/u/project/data", specs.Mount{Destination: "/home/u/project/data", Type: "bind", Source: "/data", Options: []string{"rbind", "ro"}}},
		{"/scratch", specs.Mount{Destination: "/scratch", Type: "bind", Source: "/scratch", Options: []string{"rbind", "rw"}}},
		{"/.lectic-nix-sandbox/agent", specs.Mount{Destination: AgentTarget, Type: "bind", Source: c.AgentPath, Options: []string{"rbind", "ro", "nosuid", "nodev"}}},
		{"/etc/resolv.conf", specs.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: "/etc/resolv.conf", Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}}},
	}
	for _, tt := range tests {
		if got := mountAt(t, ms, tt.dst); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("mount at %s:\n got %+v\nwant %+v", tt.dst, got, tt.want)
		}
	}
}

func TestMountsNetworkChoices(t *testing.T) {
	tests := []struct {
		name       string
		allowNet   bool
		resolvConf string
		wantSys    string
		wantResolv bool
	}{
		{"own netns mounts sysfs; resolv.conf only leaks", false, "/etc/resolv.conf", "sysfs", false},
		{"host network binds /sys", true, "/etc/resolv.conf", "bind", true},
		{"host network without resolv.conf", true, "", "bind", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := baseConfig()
			c.AllowNet, c.ResolvConf = tt.allowNet, tt.resolvConf
			ms, err := Mounts(c)
			if err != nil {
				t.Fatal(err)
			}
			if got := mountAt(t, ms, "/sys").Type; got != tt.wantSys {
				t.Errorf("/sys type = %s, want %s", got, tt.wantSys)
			}
			if got := contains(destinations(ms), "/etc/resolv.conf"); got != tt.wantResolv {
				t.Errorf("resolv.conf mounted = %v, want %v", got, tt.wantResolv)
			}
		})
	}
}

// A volume on the same target as the workdir must come later, so it wins.
func TestMountsSameTargetLaterWins(t *testing.T) {
	c := baseConfig()
	c.Volumes = []Volume{{Source: "/other", Target: c.Workdir, ReadOnly: true}}
	ms, err := Mounts(c)
	if err != nil {
		t.Fatal(err)
	}
	var sources []string
	for _, m := range ms {
		if m.Destination == c.Workdir {
			sources = append(sources, m.Source)
		}
	}
	if want := []string{c.Workdir, "/other"}; !reflect.DeepEqual(sources, want) {
		t.Errorf("mounts at the workdir = %v, want %v", sources, want)
	}
}

func TestMountsWithoutOptionalParts(t *testing.T) {
	c := Config{RootPath: "/r", InitArgs: []string{"/x"}}
	ms, err := Mounts(c)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/proc", "/dev", "/sys", "/tmp", "/run", "/dev/pts", "/dev/shm", "/dev/mqueue", "/var/tmp"}
	if got := destinations(ms); !reflect.DeepEqual(got, want) {
		t.Errorf("mounts = %v, want %v", got, want)
	}
}

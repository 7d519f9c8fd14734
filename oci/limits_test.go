package oci

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestSpecLimits: the pids limit is always RLIMIT_NPROC; a cgroup's limits
// are in the spec only when a cgroup can hold them (libcontainer fails to
// start a container whose limits no cgroup takes).
func TestSpecLimits(t *testing.T) {
	for _, c := range []struct {
		name       string
		limits     Limits
		wantNproc  uint64
		wantCgroup bool
		wantPath   string
	}{
		{"none", Limits{}, 0, false, ""},
		{"rlimits only", Limits{Pids: 4096, Memory: 1 << 30}, 4096, false, ""},
		{"cgroup v1 as root", Limits{Pids: 100, Memory: 1 << 30, Cgroup: true}, 100, true, ""},
		{"delegated cgroup v2", Limits{Pids: 100, Memory: 1 << 30, Cgroup: true, CgroupsPath: "/user.slice/u/lectic-nix-sandbox-k"}, 100, true, "/user.slice/u/lectic-nix-sandbox-k"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.Limits = c.limits
			s, err := Spec(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var nproc uint64
			for _, r := range s.Process.Rlimits {
				if r.Type == "RLIMIT_NPROC" {
					if r.Soft != r.Hard {
						t.Errorf("RLIMIT_NPROC soft %d != hard %d: a command could raise it", r.Soft, r.Hard)
					}
					nproc = r.Hard
				}
			}
			if nproc != c.wantNproc {
				t.Errorf("RLIMIT_NPROC = %d, want %d", nproc, c.wantNproc)
			}
			res := s.Linux.Resources
			if !c.wantCgroup {
				if res != nil && (res.Pids != nil || res.Memory != nil) {
					t.Errorf("cgroup limits without a cgroup to hold them: %+v", res)
				}
				return
			}
			if res == nil || res.Pids == nil || *res.Pids.Limit != c.limits.Pids {
				t.Fatalf("pids.max missing: %+v", res)
			}
			if res.Memory == nil || *res.Memory.Limit != c.limits.Memory || *res.Memory.Swap != c.limits.Memory {
				t.Errorf("memory.max (and no swap beyond it) missing: %+v", res.Memory)
			}
			if s.Linux.CgroupsPath != c.wantPath {
				t.Errorf("cgroups path %q, want %q", s.Linux.CgroupsPath, c.wantPath)
			}
		})
	}
}

// TestScratchMounts: with a scratch dir, /tmp, /run, /var/tmp and /dev/shm
// are binds of its subdirectories (one tmpfs for all), and /dev is a small
// tmpfs of its own.
func TestScratchMounts(t *testing.T) {
	cfg := baseConfig()
	cfg.Scratch = "/t/warm/k/upper/mounts"
	ms, err := Mounts(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]specs.Mount{}
	for _, m := range ms {
		got[m.Destination] = m
	}
	for target, src := range map[string]string{"/tmp": "tmp", "/run": "run", "/var/tmp": "var-tmp", "/dev/shm": "shm"} {
		m := got[target]
		if m.Type != "bind" || m.Source != cfg.Scratch+"/"+src {
			t.Errorf("%s = %+v, want a bind of %s/%s", target, m, cfg.Scratch, src)
		}
		if !hasOption(m.Options, "nosuid") || !hasOption(m.Options, "nodev") {
			t.Errorf("%s options %v lack nosuid/nodev", target, m.Options)
		}
	}
	if dev := got["/dev"]; dev.Type != "tmpfs" || !hasOption(dev.Options, "size=1m") {
		t.Errorf("/dev = %+v, want a 1 MiB tmpfs", dev)
	}
	cfg.Scratch = ""
	ms, _ = Mounts(cfg)
	for _, m := range ms {
		if m.Destination == "/tmp" && m.Type != "tmpfs" {
			t.Errorf("without scratch /tmp is %+v", m)
		}
	}
}

func hasOption(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

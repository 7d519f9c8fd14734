package namespace

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

// fakeCgroup2 builds a cgroup v2 tree under a temp dir: each path gets a
// dir, and a subtree_control and cgroup.procs file.
func fakeCgroup2(t *testing.T, dirs map[string]string) string {
	t.Helper()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpu io memory pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for d, ctl := range dirs {
		p := filepath.Join(root, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		for f, data := range map[string]string{"cgroup.subtree_control": ctl, "cgroup.procs": ""} {
			if err := os.WriteFile(filepath.Join(p, f), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

// TestPlanLimits: the decision between a cgroup of the container's own and
// rlimits. This host is cgroup v1, so the v2 cases run on a stand-in tree.
func TestPlanLimits(t *testing.T) {
	me := os.Geteuid()
	const own = "/user.slice/user-1000.slice/user@1000.service/app.slice/run-1.scope"
	cases := []struct {
		name       string
		dirs       map[string]string
		self       string
		euid       int
		wantCgroup bool
		wantParent string
		wantWhy    string
	}{
		{name: "systemd user session delegates pids and memory",
			dirs: map[string]string{"/user.slice/user-1000.slice/user@1000.service": "cpu memory pids",
				"/user.slice/user-1000.slice/user@1000.service/app.slice": "", own: ""},
			self: "0::" + own + "\n", euid: me, wantCgroup: true,
			wantParent: "/user.slice/user-1000.slice/user@1000.service", wantWhy: "delegated"},
		{name: "delegated without the memory controller",
			dirs: map[string]string{"/user.slice/user-1000.slice/user@1000.service": "cpu pids", own: ""},
			self: "0::" + own + "\n", euid: me, wantWhy: "not delegated"},
		{name: "nothing of ours",
			dirs: map[string]string{"/user.slice/user-1000.slice/user@1000.service": "cpu memory pids", own: ""},
			self: "0::" + own + "\n", euid: me + 1, wantWhy: "not delegated"},
		{name: "no cgroup v2 line",
			dirs: map[string]string{}, self: "1:name=systemd:/x\n", euid: me + 1, wantWhy: "not delegated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := fakeCgroup2(t, c.dirs)
			p := planLimits(readCgroupHost(root, []byte(c.self), c.euid, false))
			if p.Cgroup != c.wantCgroup || p.Parent != c.wantParent || !strings.Contains(p.Why, c.wantWhy) {
				t.Errorf("plan = %+v, want cgroup=%v parent=%q why~%q", p, c.wantCgroup, c.wantParent, c.wantWhy)
			}
		})
	}
	// cgroup v1: only host root gets cgroups.
	v1 := t.TempDir()
	for _, d := range []string{"pids", "memory"} {
		if err := os.Mkdir(filepath.Join(v1, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if p := planLimits(cgroupHost{root: false, v1Writable: true}); p.Cgroup || !strings.Contains(p.Why, "RLIMIT_NPROC") {
		t.Errorf("v1 unprivileged: %+v", p)
	}
	if p := planLimits(cgroupHost{root: true, v1Writable: true}); !p.Cgroup || p.Parent != "" {
		t.Errorf("v1 as root: %+v", p)
	}
	if p := planLimits(cgroupHost{unified: true, root: true}); !p.Cgroup || p.Parent != "" {
		t.Errorf("v2 as root: %+v", p)
	}
	if h := readCgroupHost(v1, nil, me, me == 0); h.unified || (me == 0 && !h.v1Writable) {
		t.Errorf("a v1 tree read as %+v", h)
	}
}

// TestCgroupPathNamedAfterContainer: a delegated parent becomes the spec's
// cgroups path, one child per container; without one libcontainer chooses.
func TestCgroupPathNamedAfterContainer(t *testing.T) {
	cfg := withCgroupPath(oci.Config{Limits: oci.Limits{Cgroup: true, CgroupParent: "/user.slice/u", Pids: 64}}, "k-1")
	if cfg.Limits.CgroupsPath != "/user.slice/u/lectic-nix-sandbox-k-1" {
		t.Fatalf("cgroups path %q", cfg.Limits.CgroupsPath)
	}
	if cfg := withCgroupPath(oci.Config{Limits: oci.Limits{Cgroup: true}}, "k-1"); cfg.Limits.CgroupsPath != "" {
		t.Fatalf("cgroups path %q without a parent", cfg.Limits.CgroupsPath)
	}
}

package namespace

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

const busybox = "/bin/busybox"

// workspace is one test's cache, warm dir, workdir and volumes, owned by
// the identity that runs the supervisor.
type workspace struct {
	dir, rootfs, workdir, home, roVol, rwVol, agent string
}

func newWorkspace(t testing.TB, id identity) workspace {
	t.Helper()
	dir, err := os.MkdirTemp("", "nstest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w := workspace{
		dir:     dir,
		rootfs:  filepath.Join(dir, "cache", "rootfs"),
		workdir: filepath.Join(dir, "project"),
		home:    filepath.Join(dir, "home"),
		roVol:   filepath.Join(dir, "ro-vol"),
		rwVol:   filepath.Join(dir, "rw-vol"),
		agent:   filepath.Join(dir, "agent"),
	}
	for _, d := range []string{w.workdir, w.home, w.roVol, w.rwVol, filepath.Join(dir, "warm")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	buildRootfs(t, w.rootfs)
	if err := os.WriteFile(w.agent, []byte("#!/bin/sh\necho agent\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	chownTree(t, dir, id)
	return w
}

// buildRootfs makes a busybox image tree without /proc, /dev, /sys, /tmp
// and the agent's directory, so every mountpoint must be created.
func buildRootfs(t testing.TB, root string) {
	t.Helper()
	for _, d := range []string{"bin", "etc", "var"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, busybox, filepath.Join(root, "bin", "busybox"), 0o755)
	list, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(root, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"etc/passwd":        "image:x:1234:1234::/:/bin/sh\n",
		"etc/group":         "image:x:1234:\n",
		"etc/hostname-orig": "image\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// An absolute symlink pointing at the host's /etc: mountpoints and
	// files must resolve it inside the root, never on the host.
	if err := os.Symlink("/etc", filepath.Join(root, "var", "host-etc")); err != nil {
		t.Fatal(err)
	}
}

// snapshot records everything about a tree that a write could change.
func snapshot(t testing.TB, root string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		desc := fmt.Sprintf("%v %d %d:%d %d", fi.Mode(), fi.Size(), st.Uid, st.Gid, fi.ModTime().UnixNano())
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			desc += " " + hex.EncodeToString(sum[:])
		}
		rel, _ := filepath.Rel(root, p)
		snap[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

const probeScript = `
echo "hello=ok"
echo "fd3=$(cat <&3)"
echo "netdev=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ',')"
echo "pids=$(ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\n' ',')"
echo "nnp=$(grep NoNewPrivs /proc/self/status | tr -d ' \t')"
echo "capeff=$(grep CapEff /proc/self/status | tr -d ' \t')"
echo "capbnd=$(grep CapBnd /proc/self/status | tr -d ' \t')"
echo "hostname=$(hostname)"
echo "uid=$(id -u)"
echo "user=$(grep '^tester:' /etc/passwd)"
if touch /ro/x 2>/tmp/err; then echo "ro=writable"; else echo "ro=$(cat /tmp/err)"; fi
if echo data > /rw/file; then echo "rw=ok"; fi
echo "cwdfile=$(cat "$WORKDIR/seed")"
echo from-container > "$WORKDIR/from-container"
echo x > /newfile; echo y > /etc/newfile; rm /etc/hostname-orig; mkdir -p /a/b/c
echo "escfile=$(cat /etc/sandbox-escape-test)"
if [ -d /etc/sandbox-escape-mnt ]; then echo "escmnt=inside"; fi
if echo x >> /.lectic-nix-sandbox/agent 2>/dev/null; then echo "agent=writable"; else echo "agent=refused"; fi
mount -o remount,rw,bind /.lectic-nix-sandbox/agent 2>/dev/null; echo "remount=$?"
if echo x >> /.lectic-nix-sandbox/agent 2>/dev/null; then echo "agent2=writable"; else echo "agent2=refused"; fi
echo "tmp=$(stat -c %a /tmp) run=$(stat -c %a /run) vartmp=$(stat -c %a /var/tmp)"
if [ -c /dev/null ] && echo x > /dev/null; then echo "devnull=ok"; fi
if echo x > /dev/shm/x; then echo "shm=ok"; fi
echo "mqueue=$(awk '$2=="/dev/mqueue"{print $3}' /proc/mounts)"
echo "sysopts=$(awk '$2=="/sys"{print $4}' /proc/mounts | cut -d, -f1)"
echo "nofile=$(ulimit -n)/$(ulimit -Hn)"
echo DONE
exec sleep 1000
`

// capMask is the CapEff value of oci.DefaultCaps.
func capMask(t testing.TB) string {
	bits := map[string]uint{
		"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4,
		"CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
		"CAP_NET_BIND_SERVICE": 10, "CAP_SYS_CHROOT": 18, "CAP_SETFCAP": 31,
	}
	var m uint64
	for _, c := range oci.DefaultCaps() {
		b, ok := bits[c]
		if !ok {
			t.Fatalf("test has no bit for %s", c)
		}
		m |= 1 << b
	}
	return fmt.Sprintf("%016x", m)
}

func parseOutput(out string) map[string]string {
	kv := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			if _, dup := kv[k]; !dup {
				kv[k] = v
			}
		}
	}
	return kv
}

func hostInterfaces(t testing.TB) string {
	data, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(data), "\n")[2:] {
		if name, _, ok := strings.Cut(line, ":"); ok {
			names = append(names, strings.TrimSpace(name))
		}
	}
	sort.Strings(names)
	return strings.Join(names, ",") + ","
}

func TestContainer(t *testing.T) {
	requireTool(t, busybox)
	requireUserns(t)
	bin := testBinary(t)
	for _, id := range identities(t) {
		// Volatile puts the upper on tmpfs; the other case keeps it on disk.
		for _, c := range []struct{ allowNet, volatile bool }{{false, true}, {true, false}} {
			t.Run(fmt.Sprintf("%s/allowNet=%v/volatile=%v", id.name, c.allowNet, c.volatile), func(t *testing.T) {
				testContainer(t, bin, id, c.allowNet, c.volatile)
			})
		}
	}
}

func testContainer(t *testing.T, bin string, id identity, allowNet, volatile bool) {
	w := newWorkspace(t, id)
	if err := os.WriteFile(filepath.Join(w.workdir, "seed"), []byte("seed"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Lchown(filepath.Join(w.workdir, "seed"), id.uid, id.gid)
	if err := os.WriteFile(filepath.Join(w.dir, "extra"), []byte("passed"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, w.rootfs)
	warm := filepath.Join(w.dir, "warm")
	j := job{
		Options: CreateOptions{
			ID:       "nstest",
			StateDir: filepath.Join(warm, "state"),
			Config: oci.Config{
				Image:      oci.Image{Rootfs: w.rootfs},
				Workdir:    w.workdir,
				Home:       w.home,
				HomeTarget: "/home/tester",
				Volumes: []oci.Volume{
					{Source: w.roVol, Target: "/ro", ReadOnly: true},
					{Source: w.rwVol, Target: "/rw"},
					// Through the image's /var/host-etc -> /etc symlink.
					{Source: w.roVol, Target: "/var/host-etc/sandbox-escape-mnt", ReadOnly: true},
				},
				AllowNet:  allowNet,
				AgentPath: w.agent,
				NoFile:    oci.Rlimit{Soft: 1024, Hard: 4096},
			},
			UpperDir:  filepath.Join(warm, "upper"),
			WorkDir:   filepath.Join(warm, "work"),
			MergedDir: filepath.Join(warm, "merged"),
			Volatile:  volatile,
			EtcFiles: map[string][]byte{
				"/var/host-etc/sandbox-escape-test": []byte("in-root"),
				"/etc/passwd":                       oci.MergePasswd([]byte("image:x:1234:1234::/:/bin/sh\n"), oci.User{Name: "tester", UID: 1000, GID: 1000, Home: "/home/tester"}),
			},
			InitArgs: []string{"/bin/sh", "-c", probeScript},
			InitEnv:  []string{"PATH=/bin", "WORKDIR=" + w.workdir},
		},
		Output:     filepath.Join(w.dir, "out"),
		ExtraFile:  filepath.Join(w.dir, "extra"),
		DoneMarker: "DONE",
		Result:     filepath.Join(w.dir, "result.json"),
	}
	res := runSupervisor(t, bin, id, j)
	outData, _ := os.ReadFile(j.Output)
	if res.Err != "" {
		t.Fatalf("container: %s\noutput:\n%s", res.Err, outData)
	}
	got := parseOutput(string(outData))
	wantNet := "lo,"
	if allowNet {
		wantNet = hostInterfaces(t)
	}
	want := map[string]string{
		"hello":    "ok",
		"fd3":      "passed",
		"escfile":  "in-root",
		"escmnt":   "inside",
		"netdev":   wantNet,
		"nnp":      "NoNewPrivs:1",
		"capeff":   "CapEff:" + capMask(t),
		"capbnd":   "CapBnd:" + capMask(t),
		"hostname": "sandbox",
		"uid":      "0",
		"user":     "tester:x:1000:1000::/home/tester:/bin/sh",
		"ro":       "touch: /ro/x: Read-only file system",
		"rw":       "ok",
		"cwdfile":  "seed",
		"agent":    "refused",
		"agent2":   "refused",
		"tmp":      "1777 run=755 vartmp=1777",
		"devnull":  "ok",
		"shm":      "ok",
		"mqueue":   "mqueue",
		"sysopts":  "ro",
		"nofile":   "1024/4096",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if got["remount"] == "0" {
		t.Errorf("remount of the agent binary succeeded inside the container")
	}
	checkPids(t, got["pids"])
	checkOwned(t, filepath.Join(w.rwVol, "file"), id)
	checkOwned(t, filepath.Join(w.workdir, "from-container"), id)
	if after := snapshot(t, w.rootfs); !reflect.DeepEqual(before, after) {
		t.Errorf("cached rootfs changed:\n%s", diffSnap(before, after))
	}
	for _, p := range []string{"/etc/sandbox-escape-test", "/etc/sandbox-escape-mnt"} {
		if _, err := os.Lstat(p); err == nil {
			os.Remove(p)
			t.Errorf("Create followed the image's /var/host-etc -> /etc symlink to the host: %s exists", p)
		}
	}
	checkUpper(t, j.Options.UpperDir, volatile)
	// Overlay's own mode 000 work files would be undeletable by the caller.
	if left, _ := os.ReadDir(j.Options.WorkDir); len(left) != 0 {
		t.Errorf("overlay work files left behind in %s: %v", j.Options.WorkDir, left)
	}
	if !res.PidGone || !res.StateRemoved || !res.DestroyTwiceOK {
		t.Errorf("after Destroy: pid gone %v, state removed %v, second Destroy ok %v", res.PidGone, res.StateRemoved, res.DestroyTwiceOK)
	}
	if t.Failed() {
		t.Logf("output:\n%s", outData)
	}
}

// checkUpper: a volatile upper lives on a tmpfs that only the supervisor
// saw, so nothing may reach the host's UpperDir; otherwise the writes to /
// must be there.
func checkUpper(t *testing.T, upper string, volatile bool) {
	t.Helper()
	entries, err := os.ReadDir(upper)
	if err != nil {
		t.Fatalf("read upper dir: %v", err)
	}
	_, statErr := os.Stat(filepath.Join(upper, "newfile"))
	if volatile && len(entries) != 0 {
		t.Errorf("volatile upper left %d entries on disk in %s", len(entries), upper)
	}
	if !volatile && statErr != nil {
		t.Errorf("write to / did not land in the upper dir: %v", statErr)
	}
}

// checkPids wants only the container's own processes: pid 1 and the few
// the probe script runs at that moment, none of the host's.
func checkPids(t *testing.T, pids string) {
	t.Helper()
	list := strings.Split(strings.TrimSuffix(pids, ","), ",")
	if len(list) == 0 || list[0] != "1" || len(list) > 6 {
		t.Errorf("processes visible in the container: %q, want pid 1 and the probe's own few", pids)
	}
}

func checkOwned(t *testing.T, path string, id identity) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; int(uid) != id.uid {
		t.Errorf("%s is owned by uid %d on the host, want the caller %d", path, uid, id.uid)
	}
}

func diffSnap(a, b map[string]string) string {
	var out []string
	for k, v := range a {
		if b[k] != v {
			out = append(out, fmt.Sprintf("  %s: %q -> %q", k, v, b[k]))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			out = append(out, fmt.Sprintf("  %s: added %q", k, v))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// TestIsInitIgnoresArgv runs the binary with "init" as its first argument
// and no libcontainer environment: it must not take the init path.
func TestIsInitIgnoresArgv(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "init")
	cmd.Env = replaceEnv(os.Environ(), stageEnv, "isinit")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if strings.TrimSpace(string(out)) != "false" {
		t.Errorf("IsInit() with argv [init] = %q, want false", out)
	}
}

// TestInitExitCode: Wait returns the init's own exit status.
func TestInitExitCode(t *testing.T) {
	requireTool(t, busybox)
	requireUserns(t)
	bin := testBinary(t)
	for _, id := range identities(t) {
		for _, code := range []int{0, 7} {
			t.Run(fmt.Sprintf("%s/exit%d", id.name, code), func(t *testing.T) {
				w := newWorkspace(t, id)
				j := benchJob(w, 0)
				j.Options.InitArgs = []string{"/bin/sh", "-c", fmt.Sprintf("exit %d", code)}
				// On disk, so that removing libcontainer's state is visible.
				j.Options.Volatile = false
				res := runSupervisor(t, bin, id, j)
				if res.Err != "" || res.ExitCode != code || !res.StateRemoved {
					t.Errorf("result %+v, want exit code %d and state removed", res, code)
				}
			})
		}
	}
}

// TestNestedUserNamespace: with oci.Config.NewUserNS the container gets a
// user namespace of its own below the supervisor's, mapping 0 to its 0.
func TestNestedUserNamespace(t *testing.T) {
	requireTool(t, busybox)
	requireUserns(t)
	bin := testBinary(t)
	for _, id := range identities(t) {
		t.Run(id.name, func(t *testing.T) {
			w := newWorkspace(t, id)
			j := benchJob(w, 0)
			j.Options.Config.NewUserNS = true
			j.Options.InitArgs = []string{"/bin/sh", "-c", `echo "map=$(cat /proc/self/uid_map | tr -s ' ')"; echo "caps=$(grep CapEff /proc/self/status | tr -d ' \t')"`}
			res := runSupervisor(t, bin, id, j)
			out, _ := os.ReadFile(j.Output)
			if res.Err != "" || res.ExitCode != 0 {
				t.Fatalf("result %+v\n%s", res, out)
			}
			got := parseOutput(string(out))
			if got["map"] != " 0 0 1" {
				t.Errorf("uid_map = %q, want \" 0 0 1\"\n%s", got["map"], out)
			}
			if got["caps"] != "CapEff:"+capMask(t) {
				t.Errorf("caps = %q", got["caps"])
			}
		})
	}
}

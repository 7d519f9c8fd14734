package namespace

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

const coversScript = `
cd "$WORKDIR"
echo "statels=$(ls -A state | tr '\n' ,)"
echo "statewrite=$( (echo x > state/new) 2>&1 | sed 's/.*: //')"
echo "cfgwrite=$( (echo x >> cfg/lectic.yaml) 2>&1 | sed 's/.*: //')"
echo "cfgread=$(cat cfg/lectic.yaml)"
echo "cfgrename=$( (mv cfg cfg2) 2>&1 | sed 's/.*: //')"
echo "cfgrm=$( (rm -f cfg/lectic.yaml) 2>&1 | sed 's/.*: //')"
echo "datawrite=$( (echo x > data/new) 2>&1 | sed 's/.*: //')"
echo "deeprename=$( (mv a a2) 2>&1 | sed 's/.*: //')"
echo "deepls=$(ls -A a/b/c | tr '\n' ,)"
echo "rw=$(echo ok > free && cat free)"
echo "volhidden=$(ls -A /rw/sock | tr '\n' ,)"
echo "DONE"
sleep 60
`

// TestCovers: what a bind exposes of the sandbox's own state or of files
// the host runs later is hidden or read-only inside, and the directories
// on the way to it cannot be renamed; the rest of the bind stays writable.
func TestCovers(t *testing.T) {
	requireTool(t, busybox)
	requireUserns(t)
	bin := testBinary(t)
	for _, id := range identities(t) {
		t.Run(id.name, func(t *testing.T) {
			w := newWorkspace(t, id)
			for _, d := range []string{"state", "cfg", "data", "a/b/c"} {
				os.MkdirAll(filepath.Join(w.workdir, d), 0o755)
			}
			os.WriteFile(filepath.Join(w.workdir, "state", "ticket"), []byte("t"), 0o600)
			os.WriteFile(filepath.Join(w.workdir, "cfg", "lectic.yaml"), []byte("host config"), 0o644)
			os.WriteFile(filepath.Join(w.workdir, "a", "b", "c", "x"), []byte("x"), 0o644)
			os.MkdirAll(filepath.Join(w.rwVol, "sock"), 0o755)
			lfd, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
			unix.Bind(lfd, &unix.SockaddrUnix{Name: filepath.Join(w.rwVol, "sock", "agent.sock")})
			defer unix.Close(lfd)
			chownTree(t, w.dir, id)
			warm := filepath.Join(w.dir, "warm")
			j := job{
				Options: CreateOptions{
					ID:       "nscovers",
					StateDir: filepath.Join(warm, "state"),
					Config: oci.Config{
						Image:   oci.Image{Rootfs: w.rootfs},
						Workdir: w.workdir,
						Volumes: []oci.Volume{{Source: w.rwVol, Target: "/rw"}},
						Covers: []oci.Cover{
							{Path: filepath.Join(w.workdir, "state"), Hide: true},
							{Path: filepath.Join(w.workdir, "cfg", "lectic.yaml")},
							{Path: filepath.Join(w.workdir, "data")},
							{Path: filepath.Join(w.workdir, "a", "b", "c"), Hide: true},
							{Path: filepath.Join(w.rwVol, "sock"), Hide: true},
						},
					},
					UpperDir:  filepath.Join(warm, "upper"),
					WorkDir:   filepath.Join(warm, "work"),
					MergedDir: filepath.Join(warm, "merged"),
					Volatile:  true,
					InitArgs:  []string{"/bin/sh", "-c", coversScript},
					InitEnv:   []string{"PATH=/bin", "WORKDIR=" + w.workdir},
				},
				Output:     filepath.Join(w.dir, "out"),
				DoneMarker: "DONE",
				Result:     filepath.Join(w.dir, "result.json"),
			}
			res := runSupervisor(t, bin, id, j)
			outData, _ := os.ReadFile(j.Output)
			if res.Err != "" {
				t.Fatalf("container: %s\noutput:\n%s", res.Err, outData)
			}
			got := parseOutput(string(outData))
			want := map[string]string{
				"statels":    "",
				"statewrite": "Read-only file system",
				"cfgwrite":   "Read-only file system",
				"cfgread":    "host config",
				"cfgrename":  "Device or resource busy",
				"cfgrm":      "Device or resource busy",
				"datawrite":  "Read-only file system",
				"deeprename": "Device or resource busy",
				"deepls":     "",
				"rw":         "ok",
				"volhidden":  "",
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			if b, _ := os.ReadFile(filepath.Join(w.workdir, "cfg", "lectic.yaml")); string(b) != "host config" {
				t.Errorf("the host's file changed: %q", b)
			}
			if t.Failed() {
				t.Logf("output:\n%s", outData)
			}
		})
	}
}

package nixload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/testenv"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/fixture"
)

// need skips (or fails under CI=true) when a prerequisite is missing.
func need(t testing.TB, ok bool, why string) {
	t.Helper()
	if !ok {
		testenv.Missing(t, why)
	}
}

func busybox(t testing.TB) string {
	t.Helper()
	_, err := os.Stat("/bin/busybox")
	need(t, err == nil, "busybox-static is not installed at /bin/busybox")
	return "/bin/busybox"
}

func busyboxLayer(t testing.TB) fixture.Layer {
	t.Helper()
	l, err := fixture.BusyboxLayer(busybox(t))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// env is a store next to a canary directory that hostile images target.
type env struct {
	dir    string
	store  *Store
	canary string
}

func newEnv(t testing.TB, opts ...Option) *env {
	t.Helper()
	dir := t.TempDir()
	canary := filepath.Join(dir, "canary")
	if err := os.MkdirAll(canary, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(canary, "file"), []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(filepath.Join(dir, "cache"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return &env{dir: dir, store: s, canary: canary}
}

// snapshot describes every entry of the test dir outside the store.
func (e *env) snapshot(t testing.TB) string {
	t.Helper()
	var b bytes.Buffer
	err := filepath.WalkDir(e.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == e.store.Root() {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		b.WriteString(p + " " + info.Mode().String() + " " + strconv.FormatInt(info.Size(), 10))
		if info.Mode().IsRegular() {
			c, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(c)
			b.WriteString(" " + hex.EncodeToString(sum[:]))
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func (e *env) writeArchive(t testing.TB, name string, layers []fixture.Layer, opts fixture.ArchiveOptions) string {
	t.Helper()
	var buf bytes.Buffer
	if err := fixture.WriteDockerArchive(&buf, layers, nil, opts); err != nil {
		t.Fatal(err)
	}
	return e.writeBytes(t, name, buf.Bytes())
}

func (e *env) writeBytes(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *env) load(t testing.TB, path string) (*Image, error) {
	t.Helper()
	return e.store.LoadFile(context.Background(), path, LoadOptions{})
}

// names lists a store subdirectory.
func (e *env) names(t testing.TB, sub string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.store.Root(), sub))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, x := range ents {
		out = append(out, x.Name())
	}
	sort.Strings(out)
	return out
}

// layers lists the published layers (their dirs, not their records).
func (e *env) layers(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, n := range e.names(t, "layers") {
		if !strings.HasSuffix(n, ".json") {
			out = append(out, n)
		}
	}
	return out
}

func chainOf(t testing.TB, layers []fixture.Layer) string {
	t.Helper()
	c, err := fixture.ImageChainID(layers)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// unprivileged returns the uid/gid to drop to when the test runs as root.
func unprivileged() (uid, gid int, ok bool) {
	if os.Getuid() != 0 {
		return 0, 0, false
	}
	uid, gid = testenv.Unprivileged()
	return uid, gid, true
}

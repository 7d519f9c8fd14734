package nixload

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/fixture"
)

func TestLoadFileCachedSkipsUnchangedFiles(t *testing.T) {
	e := newEnv(t)
	layers := []fixture.Layer{busyboxLayer(t)}
	script := filepath.Join(e.dir, "stream")
	if err := fixture.WriteStreamScript(script, layers, nil, fixture.ArchiveOptions{}); err != nil {
		t.Fatal(err)
	}
	// Count the runs: the fast path must not run (or read) the image.
	counter := filepath.Join(e.dir, "runs")
	body := "#!/bin/sh\necho run >> '" + counter + "'\nexec cat '" + script + ".tar'\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	runs := func() int {
		b, _ := os.ReadFile(counter)
		return strings.Count(string(b), "run")
	}
	ctx := context.Background()
	first, err := e.store.LoadFileCached(ctx, script, nil)
	if err != nil || first.UnpackedLayers != 1 || runs() != 1 {
		t.Fatalf("first load: %+v %v, %d runs", first, err, runs())
	}
	second, err := e.store.LoadFileCached(ctx, script, nil)
	if err != nil || second.ChainID != first.ChainID || runs() != 1 {
		t.Fatalf("cached load: %+v %v, %d runs; want no run", second, err, runs())
	}
	if err := os.WriteFile(script, []byte(body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.LoadFileCached(ctx, script, nil); err != nil || runs() != 2 {
		t.Fatalf("changed file: %v, %d runs; want a re-read", err, runs())
	}
	os.RemoveAll(filepath.Join(e.store.Root(), "rootfs"))
	os.Mkdir(filepath.Join(e.store.Root(), "rootfs"), 0o700)
	if img, err := e.store.LoadFileCached(ctx, script, nil); err != nil || runs() != 3 || !exists(img.Rootfs) {
		t.Fatalf("removed rootfs: %v, %d runs; want a reload", err, runs())
	}
}

func TestStreamScriptFailure(t *testing.T) {
	e := newEnv(t)
	script := filepath.Join(e.dir, "broken")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'error: builder exploded' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := e.load(t, script)
	if err == nil || !strings.Contains(err.Error(), "builder exploded") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error %v: want one line quoting the script's stderr", err)
	}
}

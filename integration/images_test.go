package integration

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/fixture"
)

// makeImages writes the fixture images the tests run on: busybox, two
// layers (the second adds a command named init, which must stay a command,
// the probe, and whites out a file of the first), as a docker archive.
func (w *world) makeImages() error {
	bb, err := busyboxPath()
	if err != nil {
		return err
	}
	base, err := fixture.BusyboxLayer(bb)
	if err != nil {
		return err
	}
	base.Entries = append(base.Entries, fixture.File("etc/removed-by-upper", []byte("x"), 0o644))
	probe, err := os.ReadFile(w.probe)
	if err != nil {
		return err
	}
	top := fixture.Layer{Entries: []fixture.Entry{
		fixture.Dir("usr/local/", 0o755),
		fixture.Dir("usr/local/bin/", 0o755),
		fixture.File("usr/local/bin/init", []byte("#!/bin/sh\necho init ran \"$@\"\n"), 0o755),
		fixture.File("usr/local/bin/probe", probe, 0o755),
		fixture.Whiteout("etc/removed-by-upper"),
	}}
	cfg := fixture.DefaultConfig()
	cfg.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "FIXTURE=1"}
	dir := filepath.Join(w.root, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, "busybox.tar")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := fixture.WriteDockerArchive(f, []fixture.Layer{base, top}, &cfg, fixture.ArchiveOptions{}); err != nil {
		return fmt.Errorf("write fixture image: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	w.images["busybox"] = path
	return f.Close()
}

// busyboxPath finds Debian's busybox-static, which the fixtures are made of.
func busyboxPath() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("busybox not found: install Debian's busybox-static (apt-get install busybox-static)")
}

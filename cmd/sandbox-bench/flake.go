package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// flakeNix is an offline flake: no inputs, and a derivation whose builder is
// a busybox copied into the flake itself, so `nix build` needs neither the
// network nor nixpkgs. The busybox sits in a directory so that, as a store
// path, its basename is still "busybox" and it runs as the multi-call binary.
const flakeNix = `{
  outputs = { self }: {
    packages.%[1]s.containerImage = derivation {
      name = "lns-bench-image.tar";
      system = "%[1]s";
      builder = "${./tools}/busybox";
      args = [ "sh" ./build.sh "${./tools}/busybox" ];
    };
  };
}
`

// buildSh writes a one-layer docker-archive with busybox and a few applets,
// using only busybox.
const buildSh = `set -eu
bb=$1
$bb mkdir -p root/bin root/dev root/proc root/sys root/tmp root/etc
$bb cp "$bb" root/bin/busybox
for a in sh true echo cat ls env sleep; do $bb ln -s busybox root/bin/$a; done
cd root
$bb tar -cf ../layer.tar .
cd ..
d=$($bb sha256sum layer.tar | $bb cut -d' ' -f1)
echo "{\"architecture\":\"%[1]s\",\"os\":\"linux\",\"config\":{\"Env\":[\"PATH=/bin\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$d\"]}}" > config.json
echo "[{\"Config\":\"config.json\",\"RepoTags\":[\"lns-bench:flake\"],\"Layers\":[\"layer.tar\"]}]" > manifest.json
$bb tar -cf "$out" manifest.json config.json layer.tar
`

// nixSystem is the Nix system double for this machine.
func nixSystem() (string, error) {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64-linux", nil
	case "arm64":
		return "aarch64-linux", nil
	}
	return "", fmt.Errorf("no Nix system name known for %s", runtime.GOARCH)
}

// writeFixtureFlake creates the flake in dir and returns its ref.
func writeFixtureFlake(dir string) (string, error) {
	busybox, err := findBusybox()
	if err != nil {
		return "", err
	}
	system, err := nixSystem()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(dir, "tools"), 0o755); err != nil {
		return "", fmt.Errorf("make fixture flake: %w", err)
	}
	b, err := os.ReadFile(busybox)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", busybox, err)
	}
	arch := map[string]string{"x86_64-linux": "amd64", "aarch64-linux": "arm64"}[system]
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"tools/busybox", b, 0o755},
		{"flake.nix", []byte(fmt.Sprintf(flakeNix, system)), 0o644},
		{"build.sh", []byte(fmt.Sprintf(buildSh, arch)), 0o644},
	} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return "", fmt.Errorf("write fixture flake %s: %w", f.name, err)
		}
	}
	return "path:" + dir, nil
}

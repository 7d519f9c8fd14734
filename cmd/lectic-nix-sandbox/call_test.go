package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/nixload"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/warm"
)

func TestImageShell(t *testing.T) {
	withBash := t.TempDir()
	if err := os.MkdirAll(filepath.Join(withBash, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nix/store/x-bash/bin/bash", filepath.Join(withBash, "bin", "bash")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		img  nixload.Image
		want string
	}{
		{"nix image with bash (a dangling link on the host is fine)", nixload.Image{Rootfs: withBash}, "/bin/bash"},
		{"busybox image", nixload.Image{Rootfs: t.TempDir()}, "/bin/sh"},
	}
	for _, tt := range tests {
		if got := imageShell(&tt.img); got != tt.want {
			t.Errorf("%s: imageShell = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestParseUser(t *testing.T) {
	me := caller{uid: 1001, gid: 1002, name: "me"}
	tests := []struct {
		flag    string
		want    warm.UserSpec
		wantErr bool
	}{
		{"caller", warm.UserSpec{Mode: "caller", UID: 1001, GID: 1002}, false},
		{"", warm.UserSpec{Mode: "caller", UID: 1001, GID: 1002}, false},
		{"root", warm.UserSpec{Mode: "root"}, false},
		{"image", warm.UserSpec{Mode: "image"}, false},
		{"4242:4343", warm.UserSpec{Mode: "id", Name: "4242:4343"}, false},
		{"nobody", warm.UserSpec{Mode: "id", Name: "nobody"}, false},
		{"1000:", warm.UserSpec{}, true},
		{"a b", warm.UserSpec{}, true},
		{"../x", warm.UserSpec{}, true},
		{"caf\xe9", warm.UserSpec{}, true},
		{strings.Repeat("u", 257), warm.UserSpec{}, true},
	}
	for _, tt := range tests {
		got, err := parseUser(tt.flag, me)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseUser(%q) = %+v, %v; want %+v, error %v", tt.flag, got, err, tt.want, tt.wantErr)
		}
	}
}

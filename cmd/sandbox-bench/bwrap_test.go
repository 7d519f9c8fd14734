package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBwrapArgv(t *testing.T) {
	tests := []struct {
		name  string
		dirs  []string
		links map[string]string
		files []string
		want  string // the part between --die-with-parent and --proc
	}{
		{
			name: "tree with mount points is bound as root",
			dirs: []string{"bin", "proc", "dev", "tmp"},
			want: "--ro-bind ROOT /",
		},
		{
			name:  "nix-style tree without mount points is bound entry by entry",
			dirs:  []string{"nix", "etc"},
			links: map[string]string{"bin": "nix/store/x-busybox/bin"},
			files: []string{"init"},
			want:  "--symlink nix/store/x-busybox/bin /bin --ro-bind ROOT/etc /etc --ro-bind ROOT/init /init --ro-bind ROOT/nix /nix",
		},
		{
			name: "proc present but tmp missing takes the entry path and skips proc",
			dirs: []string{"bin", "proc", "dev"},
			want: "--ro-bind ROOT/bin /bin",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for _, d := range tt.dirs {
				if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for name, target := range tt.links {
				if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
					t.Fatal(err)
				}
			}
			for _, f := range tt.files {
				if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			argv, err := bwrapArgv("/usr/bin/bwrap", root)
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(argv, " ")
			want := "/usr/bin/bwrap --unshare-all --die-with-parent " + strings.ReplaceAll(tt.want, "ROOT", root) +
				" --proc /proc --dev /dev --tmpfs /tmp --setenv PATH /bin:/usr/bin -- true"
			if got != want {
				t.Errorf("argv =\n  %s\nwant\n  %s", got, want)
			}
		})
	}
}

func TestBwrapArgvMissingRootfs(t *testing.T) {
	if _, err := bwrapArgv("bwrap", filepath.Join(t.TempDir(), "absent")); err == nil {
		t.Fatal("bwrapArgv over a missing rootfs succeeded")
	}
}

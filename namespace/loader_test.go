package namespace

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestCheckAgentLoader(t *testing.T) {
	static := "/bin/busybox"
	if _, err := os.Stat(static); err != nil {
		missing(t, "busybox-static is not installed (apt-get install busybox-static)")
	}
	dynamic := "/bin/true" // Debian's coreutils: linked against glibc
	interp, err := interpreter(dynamic)
	if err != nil || interp == "" {
		t.Fatalf("%s should be dynamically linked: %q %v", dynamic, interp, err)
	}
	empty := t.TempDir()
	withLoader := t.TempDir()
	if err := os.MkdirAll(filepath.Join(withLoader, filepath.Dir(interp)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(withLoader, interp), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	// An absolute symlink in the image must resolve inside it, not on the
	// host, where the loader does exist.
	escaping := t.TempDir()
	realLoader, err := filepath.EvalSymlinks(interp)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(escaping, filepath.Dir(filepath.Dir(interp))), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(realLoader), filepath.Join(escaping, filepath.Dir(interp))); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		agent     string
		rootfs    string
		hostBinds []string
		wantErr   bool
	}{
		{"static agent, any image", static, empty, nil, false},
		{"dynamic agent, image without loader", dynamic, empty, nil, true},
		{"dynamic agent, image with loader", dynamic, withLoader, nil, false},
		{"dynamic agent, host image binds the loader", dynamic, empty, []string{"/usr", "/lib64", "/lib"}, false},
		{"dynamic agent, unrelated host bind", dynamic, empty, []string{"/nix/store"}, true},
		{"dynamic agent, image link to the host's dir", dynamic, escaping, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckAgentLoader(tt.agent, tt.rootfs, tt.hostBinds)
			if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, errDynamic)) {
				t.Fatalf("CheckAgentLoader = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

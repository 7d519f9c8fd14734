package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCopyFile(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	if err := os.WriteFile(src, []byte("content"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CopyFile(dst, src, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(dst)
	fi, _ := os.Stat(dst)
	if err != nil || string(b) != "content" || fi.Mode().Perm() != 0o755 {
		t.Fatalf("copy = %q, %v, mode %v", b, err, fi.Mode())
	}
	if err := CopyFile(filepath.Join(dir, "x"), filepath.Join(dir, "missing"), 0o644); err == nil {
		t.Fatal("copying a missing file succeeded")
	}
}

func TestUnprivilegedIsNotRoot(t *testing.T) {
	uid, gid := Unprivileged()
	if uid == 0 || gid == 0 {
		t.Fatalf("Unprivileged() = %d:%d", uid, gid)
	}
}

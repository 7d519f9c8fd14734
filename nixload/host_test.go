package nixload

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestHost(t *testing.T) {
	e := newEnv(t)
	img, err := e.store.Host()
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.store.Host()
	if err != nil || again.ID != img.ID || again.Rootfs != img.Rootfs {
		t.Fatalf("second Host: %+v %v", again, err)
	}
	for _, p := range hostTop() {
		st, err := os.Lstat(p)
		if err != nil {
			continue
		}
		inImg, err := os.Lstat(filepath.Join(img.Rootfs, p))
		if err != nil {
			t.Errorf("%s missing from the host image: %v", p, err)
			continue
		}
		if st.Mode()&os.ModeSymlink != 0 {
			want, _ := os.Readlink(p)
			if got, _ := os.Readlink(filepath.Join(img.Rootfs, p)); got != want {
				t.Errorf("%s -> %q, want %q", p, got, want)
			}
			continue
		}
		if !inImg.IsDir() || !slices.Contains(img.HostBinds, p) {
			t.Errorf("%s: want an empty dir listed in HostBinds %v", p, img.HostBinds)
		}
		if ents, _ := os.ReadDir(filepath.Join(img.Rootfs, p)); len(ents) != 0 {
			t.Errorf("%s is not empty in the host image", p)
		}
	}
	want, err := os.ReadFile("/etc/passwd")
	need(t, err == nil, "the host has no /etc/passwd")
	if got, err := os.ReadFile(filepath.Join(img.Rootfs, "etc/passwd")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("etc/passwd is not a copy of the host's: %v", err)
	}
	for _, d := range []string{"tmp", "proc", "dev", "sys", "run", "var/tmp", "root", "home"} {
		if st, err := os.Stat(filepath.Join(img.Rootfs, d)); err != nil || !st.IsDir() {
			t.Errorf("%s: %v", d, err)
		}
	}
	if looked, err := e.store.Lookup(img.ID); err != nil || !slices.Equal(looked.HostBinds, img.HostBinds) {
		t.Errorf("Lookup of the host image: %+v %v", looked, err)
	}
}

package seccomp

import (
	"bytes"
	"os"
	"testing"
)

// TestDefaultFiltersAreCurrent: the embedded default filters are what
// compiling Default gives now. Run `go test ./seccomp -run
// DefaultFiltersAreCurrent -update` after changing the profile.
func TestDefaultFiltersAreCurrent(t *testing.T) {
	for _, r := range Default().Syscalls {
		if (r.Includes != nil && r.Includes.MinKernel != nil) || (r.Excludes != nil && r.Excludes.MinKernel != nil) {
			t.Fatalf("rule %v depends on the kernel version: one precompiled filter cannot hold for every kernel", r.Names)
		}
	}
	for _, goarch := range []string{"amd64", "arm64"} {
		arch, _ := ArchFor(goarch)
		p, err := Resolve(Default(), Host{Arch: arch, Caps: ContainerCaps()})
		if err != nil {
			t.Fatal(err)
		}
		f, err := Compile(p, arch)
		if err != nil {
			t.Fatal(err)
		}
		want, err := f.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		file := "default_" + goarch + ".bpf"
		got, _ := os.ReadFile(file)
		if bytes.Equal(got, want) {
			continue
		}
		if *update {
			if err := os.WriteFile(file, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("%s is stale; run go test ./seccomp -run DefaultFiltersAreCurrent -update", file)
	}
	for _, goarch := range []string{"amd64", "arm64"} {
		arch, _ := ArchFor(goarch)
		f, err := DefaultFilter(arch)
		if err != nil {
			t.Fatal(err)
		}
		if got := verdict(f.Decide(call(t, f, "keyctl"))); got != eperm {
			t.Errorf("%s: the embedded filter allows keyctl: %s", goarch, got)
		}
	}
}

package warm

import (
	"slices"
	"testing"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/seccomp"
)

// TestPrecompiledFilterMatchesContainerCaps: containers get the embedded
// default filter only while it was resolved for the capabilities they
// hold.
func TestPrecompiledFilterMatchesContainerCaps(t *testing.T) {
	if !slices.Equal(oci.DefaultCaps(), seccomp.ContainerCaps()) {
		t.Fatal("oci.DefaultCaps and seccomp.ContainerCaps differ: every container start would compile the default profile")
	}
	f, err := SeccompPolicy{Mode: "default"}.Filter(oci.DefaultCaps())
	if err != nil || f == nil {
		t.Fatalf("default filter: %v", err)
	}
	if f, err := (SeccompPolicy{Mode: "off"}).Filter(oci.DefaultCaps()); f != nil || err != nil {
		t.Fatalf("off: %v %v", f, err)
	}
	if _, err := (SeccompPolicy{Mode: "file", Profile: []byte(`{"defaultAction":"SCMP_ACT_DANCE"}`)}).Filter(nil); err == nil {
		t.Fatal("a bad profile compiled")
	}
}

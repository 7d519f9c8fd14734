package seccomp

import (
	_ "embed"
	"fmt"
)

// The default profile compiled for each architecture, in MarshalBinary's
// form: compiling it takes milliseconds a container start should not pay.
// TestDefaultFiltersAreCurrent keeps them equal to a fresh compile of
// Default for ContainerCaps; the profile has no kernel-version rules, so
// one compile holds for every kernel.
var (
	//go:embed default_amd64.bpf
	defaultAMD64 []byte
	//go:embed default_arm64.bpf
	defaultARM64 []byte
)

// ContainerCaps is the bounding set the precompiled default filter was
// resolved for: podman's default capabilities, which the sandbox's
// containers hold (oci.DefaultCaps; warm checks that the two agree).
func ContainerCaps() []string {
	return []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
		"CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
		"CAP_SETUID", "CAP_SYS_CHROOT",
	}
}

// DefaultFilter returns the default profile compiled for arch and
// ContainerCaps.
func DefaultFilter(arch *Arch) (*Filter, error) {
	switch arch.Name {
	case "amd64":
		return unmarshalFor(arch, defaultAMD64)
	case "arm64":
		return unmarshalFor(arch, defaultARM64)
	}
	return nil, fmt.Errorf("no default seccomp filter for %s", arch.Name)
}

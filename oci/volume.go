package oci

import (
	"fmt"
	"path/filepath"
	"strings"
)

// ParseVolume parses HOST[:TARGET][:ro|:rw]. TARGET defaults to HOST.
// HOST must already be absolute (the caller resolves relative paths); paths
// containing ':' cannot be expressed.
func ParseVolume(s string) (Volume, error) {
	parts := strings.Split(s, ":")
	if len(parts) > 3 {
		return Volume{}, fmt.Errorf("volume %q: too many ':'; use HOST[:TARGET][:ro]", s)
	}
	v := Volume{Source: parts[0], Target: parts[0]}
	rest := parts[1:]
	if n := len(rest); n > 0 && isMode(rest[n-1]) {
		v.ReadOnly = rest[n-1] == "ro"
		rest = rest[:n-1]
	} else if n == 2 {
		return Volume{}, fmt.Errorf("volume %q: option %q is not ro or rw", s, rest[1])
	}
	if len(rest) == 1 {
		v.Target = rest[0]
	}
	if err := checkVolume(s, v); err != nil {
		return Volume{}, err
	}
	v.Source = filepath.Clean(v.Source)
	v.Target = filepath.Clean(v.Target)
	return v, nil
}

func isMode(s string) bool { return s == "ro" || s == "rw" }

func checkVolume(s string, v Volume) error {
	if v.Source == "" {
		return fmt.Errorf("volume %q: HOST is empty; use HOST[:TARGET][:ro]", s)
	}
	if !filepath.IsAbs(v.Source) {
		return fmt.Errorf("volume %q: HOST %s is not absolute; use an absolute path", s, v.Source)
	}
	if hasDotDot(v.Source) {
		return fmt.Errorf("volume %q: HOST %s contains \"..\"; use a plain absolute path", s, v.Source)
	}
	if v.Target == "" {
		return fmt.Errorf("volume %q: TARGET is empty; use HOST[:TARGET][:ro]", s)
	}
	if err := checkTarget("volume", v.Target); err != nil {
		return fmt.Errorf("volume %q: %w", s, err)
	}
	return nil
}

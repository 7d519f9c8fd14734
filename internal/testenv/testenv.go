// Package testenv holds what the tests of several packages share: which
// unprivileged user the rootless path is tested as, the rule that a missing
// tool skips on a laptop but fails in CI, and copying a test binary to where
// that user can run it.
package testenv

import (
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"testing"
)

// UserName is the unprivileged user .ci/run creates; tests running as root
// drop to it (or to nobody where it does not exist).
const UserName = "sandboxtest"

// Unprivileged returns the uid and gid tests drop to from root.
func Unprivileged() (uid, gid int) {
	if u, err := user.Lookup(UserName); err == nil {
		uid, errU := strconv.Atoi(u.Uid)
		gid, errG := strconv.Atoi(u.Gid)
		if errU == nil && errG == nil {
			return uid, gid
		}
	}
	return 65534, 65534
}

// InCI reports whether the tests run in CI, where nothing may skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing skips the test for why, or fails it in CI.
func Missing(t testing.TB, why string) {
	t.Helper()
	if InCI() {
		t.Fatalf("required in CI: %s", why)
	}
	t.Skip(why)
}

// CopyFile copies src to dst with mode, e.g. the test binary into a
// directory the unprivileged user can reach (go test builds into 0700
// dirs).
func CopyFile(dst, src string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return out.Close()
}

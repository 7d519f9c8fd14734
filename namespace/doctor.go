package namespace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// Check is one --doctor finding: OK, or what is wrong and the fix, in one
// line each. Required checks must pass for the sandbox to work.
type Check struct {
	Name     string
	OK       bool
	Detail   string
	Fix      string
	Required bool
}

// maxSocketPath is the longest unix socket path (sun_path minus the NUL).
const maxSocketPath = 107

// nixDaemonSocket is where a multi-user nix install listens.
const nixDaemonSocket = "/nix/var/nix/daemon-socket/socket"

// Doctor checks what the sandbox needs from this host. The namespace
// probes run in re-executed copies of this binary (see IsProbe).
func Doctor(ctx context.Context, tempRoot, cacheRoot string) []Check {
	checks := []Check{
		staticBinaryCheck("/proc/self/exe"),
		writableCheck("cache directory", cacheRoot),
		writableCheck("temp directory", tempRoot),
		socketPathCheck(tempRoot),
		usernsCheck(ctx),
	}
	checks = append(checks, overlayChecks(ctx, tempRoot)...)
	checks = append(checks, networkCheck(ctx))
	checks = append(checks, subidCheck(), limitsCheck(PlanLimits()), seccompCheck(), nixCheck(), nixDaemonCheck(), nixBuildUsersCheck(hostNixConf()))
	return checks
}

// limitsCheck says what holds --pids-limit and --memory here. Without a
// cgroup both still hold: the pids limit per container, memory per
// process.
func limitsCheck(p LimitPlan) Check {
	const name = "resource limits"
	if p.Cgroup {
		return ok(name, false, p.Why)
	}
	return problem(name, false, p.Why,
		"for a --memory limit of the whole container, run from a systemd user session with cgroup v2 (the user's cgroup is delegated there)")
}

// seccompCheck reports whether this kernel can filter system calls and
// answer refusals the way the sandbox does it.
func seccompCheck() Check {
	const name = "seccomp filter"
	b, err := os.ReadFile("/proc/sys/kernel/seccomp/actions_avail")
	if err != nil {
		return problem(name, false, "the kernel does not report its seccomp actions", "run with --seccomp off if calls fail to start")
	}
	if !strings.Contains(string(b), "user_notif") {
		return problem(name, true, "this kernel lacks SECCOMP_RET_USER_NOTIF (Linux 5.0)", "upgrade the kernel, or run with --seccomp off")
	}
	return ok(name, true, "default profile on every command; refusals are reported on stderr")
}

func ok(name string, required bool, detail string) Check {
	return Check{Name: name, OK: true, Detail: detail, Required: required}
}

func problem(name string, required bool, detail, fix string) Check {
	return Check{Name: name, Detail: detail, Fix: fix, Required: required}
}

// staticBinaryCheck reports RequireStatic for --doctor.
func staticBinaryCheck(path string) Check {
	const name = "static binary"
	if err := RequireStatic(path); err != nil {
		return problem(name, true, err.Error(), "build it with `make build` (static, cgo on for runc's nsenter)")
	}
	return ok(name, true, "no dynamic loader needed")
}

func writableCheck(name, dir string) Check {
	if !filepath.IsAbs(dir) {
		return problem(name, true, fmt.Sprintf("%q is not an absolute path", dir), "set LECTIC_CACHE / LECTIC_TEMP to absolute paths")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return problem(name, true, fmt.Sprintf("cannot create %s: %v", dir, err), "make the directory writable for your user, or point LECTIC_CACHE / LECTIC_TEMP elsewhere")
	}
	f, err := os.CreateTemp(dir, ".doctor-")
	if err != nil {
		return problem(name, true, fmt.Sprintf("cannot write in %s: %v", dir, err), "make the directory writable for your user, or point LECTIC_CACHE / LECTIC_TEMP elsewhere")
	}
	f.Close()
	os.Remove(f.Name())
	return ok(name, true, dir+" is writable")
}

// socketPathCheck uses the longest path the warm registry makes.
func socketPathCheck(tempRoot string) Check {
	const name = "socket path length"
	p := filepath.Join(tempRoot, "warm", strings.Repeat("0", 16), "agent.sock")
	if len(p) > maxSocketPath {
		return problem(name, true, fmt.Sprintf("agent socket paths like %s are %d bytes, over the %d-byte limit", p, len(p), maxSocketPath), "set LECTIC_TEMP to a shorter directory, e.g. /tmp/lectic")
	}
	return ok(name, true, fmt.Sprintf("%d of %d bytes", len(p), maxSocketPath))
}

// runProbeChild starts this binary in a new user+mount namespace running
// probe; the error carries the child's stderr.
func runProbeChild(ctx context.Context, probe, dir string) error {
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Env = append(os.Environ(), probeEnv+"="+probe, probeDirEnv+"="+dir)
	cmd.SysProcAttr = CreatorSysProcAttr(os.Getuid(), os.Getgid())
	cmd.SysProcAttr.Setsid = false
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if msg := strings.TrimSpace(stderr.String()); err != nil && msg != "" {
		return fmt.Errorf("%s", msg)
	}
	return err
}

// networkCheck runs what --allow-domain needs in a probe namespace: routes,
// DNS, a forwarded connection, a reported refusal.
func networkCheck(ctx context.Context) Check {
	const name = "network by name (--allow-domain)"
	if err := runProbeChild(ctx, probeNetwork, ""); err != nil {
		return problem(name, false, "the allow-list's network probe failed: "+err.Error(),
			"run without --allow-domain (no network) or with --allow-net (the host's whole network); the other checks above may say why")
	}
	return ok(name, false, "DNS, forwarding to an --add-host name and refusal reports work in a probe namespace")
}

func usernsCheck(ctx context.Context) Check {
	const name = "user namespaces"
	err := runProbeChild(ctx, probeUserns, "")
	if err == nil {
		return ok(name, true, "an unprivileged user namespace can be created")
	}
	return problem(name, true, "cannot create a user namespace: "+err.Error(), usernsFix(readSysctl))
}

// usernsFix names the setting that is off; readSysctl returns "" when a
// sysctl does not exist on this kernel.
func usernsFix(readSysctl func(string) string) string {
	switch {
	case readSysctl("kernel/unprivileged_userns_clone") == "0":
		return "enable them: sudo sysctl -w kernel.unprivileged_userns_clone=1 (persist it in /etc/sysctl.d)"
	case readSysctl("user/max_user_namespaces") == "0":
		return "allow them: sudo sysctl -w user.max_user_namespaces=15000 (persist it in /etc/sysctl.d)"
	case readSysctl("kernel/apparmor_restrict_unprivileged_userns") == "1":
		return "AppArmor restricts them (Ubuntu 23.10+): add an AppArmor profile with `userns,` for this binary, or sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"
	}
	return "check kernel.unprivileged_userns_clone, user.max_user_namespaces and kernel.apparmor_restrict_unprivileged_userns, and any seccomp policy of the calling program"
}

func readSysctl(name string) string {
	data, err := os.ReadFile(filepath.Join("/proc/sys", name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// overlayChecks try the overlay root the way Create mounts it: on disk
// (required) and with the upper on tmpfs (used for volatile containers;
// without it they fall back to disk, which is slower).
func overlayChecks(ctx context.Context, tempRoot string) []Check {
	if err := os.MkdirAll(tempRoot, 0o700); err != nil {
		return []Check{problem("overlay root", true, fmt.Sprintf("cannot create %s: %v", tempRoot, err), "make LECTIC_TEMP writable")}
	}
	disk := overlayCheck(ctx, tempRoot, probeOverlay, "overlay root", true,
		"upgrade to Linux 5.11 or newer (overlay in user namespaces with userxattr), or set LECTIC_TEMP to a local file system (ext4, xfs, btrfs, tmpfs) instead of NFS or overlay")
	tmpfs := overlayCheck(ctx, tempRoot, probeOverlayTmpfs, "overlay on tmpfs", false,
		"optional: Linux 6.6 or newer keeps throwaway container layers in memory; until then they go to LECTIC_TEMP")
	return []Check{disk, tmpfs}
}

func overlayCheck(ctx context.Context, tempRoot, probe, name string, required bool, fix string) Check {
	dir, err := os.MkdirTemp(tempRoot, "doctor-")
	if err != nil {
		return problem(name, required, fmt.Sprintf("cannot create a directory in %s: %v", tempRoot, err), "make LECTIC_TEMP writable")
	}
	defer os.RemoveAll(dir)
	if err := runProbeChild(ctx, probe, dir); err != nil {
		return problem(name, required, "overlay mount in a user namespace failed: "+err.Error(), fix)
	}
	return ok(name, required, "overlay with userxattr mounts in a user namespace")
}

// subidCheck is informational: without subordinate ids the agent maps only
// the caller, which is all the sandbox needs.
func subidCheck() Check {
	const name = "subordinate ids"
	u, err := user.Current()
	if err != nil {
		return problem(name, false, "cannot look up the current user: "+err.Error(), "not required")
	}
	var missing []string
	for _, tool := range []string{"newuidmap", "newgidmap"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		if !hasSubidEntry(f, u.Username, u.Uid) {
			missing = append(missing, f+" entry for "+u.Username)
		}
	}
	if len(missing) > 0 {
		return problem(name, false, "not available: "+strings.Join(missing, ", "), "optional: install uidmap and add ranges with `sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 "+u.Username+"`")
	}
	return ok(name, false, "newuidmap, newgidmap and ranges in /etc/subuid and /etc/subgid are present")
}

func hasSubidEntry(path, name, uid string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) == 3 && (f[0] == name || f[0] == uid) {
			if n, err := strconv.ParseUint(f[2], 10, 32); err == nil && n > 0 {
				return true
			}
		}
	}
	return false
}

func nixCheck() Check {
	const name = "nix"
	p, err := exec.LookPath("nix")
	if err != nil {
		return problem(name, false, "nix is not on PATH; flake images cannot be built", "install Nix (https://nixos.org/download) or pass an image file")
	}
	return ok(name, false, p)
}

func nixDaemonCheck() Check {
	const name = "nix daemon"
	st, err := os.Stat(nixDaemonSocket)
	if errors.Is(err, os.ErrNotExist) {
		return problem(name, false, "no daemon socket at "+nixDaemonSocket+"; nix must work single-user", "start nix-daemon (systemctl start nix-daemon) or use a single-user install")
	}
	if errors.Is(err, os.ErrPermission) {
		return problem(name, false, "no access to "+nixDaemonSocket, "add your user to the nix daemon's group (usually nix-users) and log in again")
	}
	if err != nil {
		return problem(name, false, fmt.Sprintf("cannot check %s: %v", nixDaemonSocket, err), "check the nix installation")
	}
	if st.Mode()&os.ModeSocket == 0 {
		return problem(name, false, nixDaemonSocket+" is not a socket", "restart nix-daemon")
	}
	return ok(name, false, nixDaemonSocket)
}

// nixBuildUsers is what a root nix-daemon builds as: the group named by
// build-users-group (Nix's default for a root daemon is "nixbld") and the
// users in it.
type nixBuildUsers struct {
	installed bool   // a multi-user install: /nix/var/nix/daemon-socket exists
	group     string // build-users-group; "" means builds run as the daemon
	lookup    func(group string) (exists bool, members int)
}

// hostNixConf reads what nixBuildUsersCheck needs from this machine. The
// daemon reads /etc/nix/nix.conf in its own environment, so the caller's
// NIX_CONF_DIR says nothing about it.
func hostNixConf() nixBuildUsers {
	_, err := os.Stat(filepath.Dir(nixDaemonSocket))
	data, _ := os.ReadFile("/etc/nix/nix.conf")
	return nixBuildUsers{
		installed: err == nil,
		group:     buildUsersGroup(string(data)),
		lookup:    groupMembers,
	}
}

// buildUsersGroup returns the build-users-group a root daemon uses with
// this nix.conf text.
func buildUsersGroup(conf string) string {
	group := "nixbld"
	for _, line := range strings.Split(conf, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		k, v, found := strings.Cut(line, "=")
		if found && strings.TrimSpace(k) == "build-users-group" {
			group = strings.TrimSpace(v)
		}
	}
	return group
}

// groupMembers counts the users whose primary or supplementary group is
// name, from /etc/passwd and /etc/group.
func groupMembers(name string) (bool, int) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return false, 0
	}
	members := map[string]bool{}
	if data, err := os.ReadFile("/etc/group"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Split(line, ":")
			if len(f) == 4 && f[0] == name && f[3] != "" {
				for _, m := range strings.Split(f[3], ",") {
					members[m] = true
				}
			}
		}
	}
	if data, err := os.ReadFile("/etc/passwd"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Split(line, ":")
			if len(f) >= 4 && f[3] == g.Gid {
				members[f[0]] = true
			}
		}
	}
	return true, len(members)
}

// nixBuildUsersFix creates what Debian's nix-setup-systemd would, in one
// line a user can paste.
const nixBuildUsersFix = "sudo sh -c 'groupadd -f -r nixbld && for n in $(seq 1 10); do id nixbld$n >/dev/null 2>&1 || useradd -r -g nixbld -G nixbld -M -d /var/empty -s /usr/sbin/nologin nixbld$n; done'"

// nixBuildUsersCheck finds a multi-user Nix whose daemon would fail every
// build with "the group 'nixbld' specified in 'build-users-group' does not
// exist": Debian's nix-bin installs the daemon but not its build users.
func nixBuildUsersCheck(n nixBuildUsers) Check {
	const name = "nix build users"
	switch {
	case !n.installed:
		return ok(name, false, "no multi-user nix install; nothing to check")
	case n.group == "":
		return ok(name, false, "build-users-group is empty: the daemon builds as itself")
	}
	exists, members := n.lookup(n.group)
	fix := nixBuildUsersFix
	if n.group != "nixbld" {
		fix = strings.ReplaceAll(fix, "nixbld", n.group)
	}
	if !exists {
		return problem(name, false, fmt.Sprintf("the group %q that nix's build-users-group names does not exist; every flake build will fail", n.group), fix)
	}
	if members == 0 {
		return problem(name, false, fmt.Sprintf("the group %q has no users; every flake build will fail", n.group), fix)
	}
	return ok(name, false, fmt.Sprintf("group %s with %d build users", n.group, members))
}

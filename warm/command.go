package warm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/spawn"
)

// cmdError is a failure to start a command, with the exit code the caller
// reports for it (125 sandbox, 126 not executable, 127 not found).
type cmdError struct {
	code int
	msg  string
}

func (e *cmdError) Error() string { return e.msg }

// cmdSpec is a command ready for ForkExec.
type cmdSpec struct {
	path  string
	argv  []string
	env   []string
	dir   string
	sys   *syscall.SysProcAttr
	stack *uint64 // soft RLIMIT_STACK for the command; nil: the agent's
	// dropCaps: the command is uid 0 of its own user namespace and must
	// lose the capabilities that come with it (package spawn does).
	dropCaps bool
	// confine, when set, starts the command through package spawn.
	confine *spawnConfinement
}

// spawnConfinement is what package spawn sets up in a command's process
// between fork and exec.
type spawnConfinement struct {
	rlimitAS uint64
	filter   []unix.SockFilter // nil: none, or inherited from this process
}

// attr is s as package spawn takes it, with the child's fds.
func (s *cmdSpec) attr(files []uintptr) *spawn.Attr {
	a := &spawn.Attr{
		Path:     s.path,
		Argv:     s.argv,
		Env:      s.env,
		Dir:      s.dir,
		Setpgid:  s.sys != nil && s.sys.Setpgid,
		User:     s.identity(),
		DropCaps: s.dropCaps,
		RlimitAS: s.confine.rlimitAS,
		Filter:   s.confine.filter,
	}
	for _, f := range files {
		a.Files = append(a.Files, int(f))
	}
	return a
}

// identity is the nested user namespace that s.sys describes, as package
// spawn takes it; nil in root mode.
func (s *cmdSpec) identity() *spawn.Identity {
	if s.sys == nil || s.sys.Cloneflags&syscall.CLONE_NEWUSER == 0 || s.sys.Credential == nil ||
		len(s.sys.UidMappings) != 1 || len(s.sys.GidMappings) != 1 {
		return nil
	}
	return &spawn.Identity{
		UID: s.sys.Credential.Uid, GID: s.sys.Credential.Gid,
		HostUID: uint32(s.sys.UidMappings[0].HostID), HostGID: uint32(s.sys.GidMappings[0].HostID),
	}
}

// prepare validates a run request and turns it into a cmdSpec.
func prepare(argv, env []string, cwd string, user UserSpec) (*cmdSpec, *cmdError) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, &cmdError{125, "empty command"}
	}
	if cwd == "" {
		cwd = "/"
	}
	if cerr := checkDir(cwd); cerr != nil {
		return nil, cerr
	}
	path, cerr := lookPath(argv[0], pathOf(env), cwd)
	if cerr != nil {
		return nil, cerr
	}
	s := &cmdSpec{path: path, argv: argv, env: env, dir: cwd}
	if cerr := s.setIdentity(user); cerr != nil {
		return nil, cerr
	}
	return s, nil
}

func checkDir(cwd string) *cmdError {
	if !filepath.IsAbs(cwd) {
		return &cmdError{125, fmt.Sprintf("working directory %q is not an absolute path", cwd)}
	}
	fi, err := os.Stat(cwd)
	if err != nil {
		return &cmdError{125, fmt.Sprintf("working directory %s does not exist in the sandbox; pass an existing directory", cwd)}
	}
	if !fi.IsDir() {
		return &cmdError{125, fmt.Sprintf("working directory %s is not a directory", cwd)}
	}
	return nil
}

// pathOf returns the request's PATH: the command is looked up the way the
// user's shell in the container would, not with the agent's own PATH.
func pathOf(env []string) string {
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	return path
}

// lookPath resolves argv[0]: a name with a slash is taken as it is (relative
// to cwd), a bare name is searched in path.
func lookPath(name, path, cwd string) (string, *cmdError) {
	if strings.Contains(name, "/") {
		full := name
		if !filepath.IsAbs(full) {
			full = filepath.Join(cwd, full)
		}
		switch err := executable(full); {
		case err == nil:
			return full, nil
		case errors.Is(err, os.ErrNotExist):
			return "", &cmdError{127, "command not found: " + shown(name)}
		default:
			return "", &cmdError{126, fmt.Sprintf("cannot execute %s: %v", shown(name), err)}
		}
	}
	var denied error
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = cwd
		} else if !filepath.IsAbs(dir) {
			dir = filepath.Join(cwd, dir)
		}
		full := filepath.Join(dir, name)
		err := executable(full)
		if err == nil {
			return full, nil
		}
		if denied == nil && !errors.Is(err, os.ErrNotExist) {
			denied = err
		}
	}
	if denied != nil {
		return "", &cmdError{126, fmt.Sprintf("cannot execute %s: %v", shown(name), denied)}
	}
	return "", &cmdError{127, "command not found: " + shown(name)}
}

var errNotExecutable = errors.New("permission denied")

// maxShown bounds a command name quoted in a message: an argument may be
// 128 KiB, a reply must stay one short packet and one line.
const maxShown = 256

// shown is name as a message quotes it, cut short when it is long.
func shown(name string) string {
	if len(name) <= maxShown {
		return name
	}
	return name[:maxShown] + "..."
}

// executable reports whether path is a regular file with an execute bit.
func executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return os.ErrNotExist
		}
		return err
	}
	if fi.IsDir() {
		return errors.New("is a directory")
	}
	if fi.Mode()&0o111 == 0 {
		return errNotExecutable
	}
	return nil
}

// execError maps a failed fork/exec to the caller's exit code.
func execError(name string, err error) *cmdError {
	var se *spawn.Error
	switch {
	case errors.As(err, &se) && se.Step != "exec":
		// The sandbox failed to confine the command, before its exec.
		return &cmdError{125, fmt.Sprintf("start %s: %v", shown(name), err)}
	case errors.Is(err, syscall.ENOENT):
		return &cmdError{127, fmt.Sprintf("command not found: %s (or its interpreter)", shown(name))}
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.ENOEXEC),
		errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.ETXTBSY), errors.Is(err, syscall.E2BIG):
		// E2BIG is 126, as a shell reports an argument list too long.
		return &cmdError{126, fmt.Sprintf("cannot execute %s: %v", shown(name), err)}
	default:
		return &cmdError{125, fmt.Sprintf("start %s: %v", shown(name), err)}
	}
}

// setIdentity chooses who the command runs as.
//
// Every mode but root puts the command in a nested user namespace that
// maps the target uid/gid to the agent's own ids (uid 0 of the container,
// which is the caller on the host). Files the caller owns then show as
// owned by the target uid, files the command creates belong to the caller
// on the host, and a non-zero uid loses every capability at exec. A target
// uid of 0 would keep them, so that path starts through package spawn,
// which drops them before exec. Supplementary groups are not supported: a
// nested namespace without a privileged helper must deny setgroups.
func (s *cmdSpec) setIdentity(u UserSpec) *cmdError {
	s.sys = &syscall.SysProcAttr{Setpgid: true}
	uid, gid, nested, cerr := target(u)
	if cerr != nil || !nested {
		return cerr
	}
	s.sys.Cloneflags = syscall.CLONE_NEWUSER
	s.sys.UidMappings = []syscall.SysProcIDMap{{ContainerID: int(uid), HostID: os.Getuid(), Size: 1}}
	s.sys.GidMappings = []syscall.SysProcIDMap{{ContainerID: int(gid), HostID: os.Getgid(), Size: 1}}
	s.sys.Credential = &syscall.Credential{Uid: uid, Gid: gid, NoSetGroups: true}
	s.dropCaps = uid == 0
	return nil
}

// target resolves whom a user spec runs as; nested is false when the
// command keeps the agent's own identity (root mode).
func target(u UserSpec) (uid, gid uint32, nested bool, cerr *cmdError) {
	switch u.Mode {
	case "root":
		return 0, 0, false, nil
	case "", "caller":
		return u.UID, u.GID, true, nil
	case "id", "image":
		uid, gid, cerr = resolveUser(u, "/etc/passwd", "/etc/group")
		return uid, gid, cerr == nil, cerr
	default:
		return 0, 0, false, &cmdError{125, fmt.Sprintf("unknown user mode %q", u.Mode)}
	}
}

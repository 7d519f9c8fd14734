package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/nixload"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

// caller is who runs the sandbox on the host.
type caller struct {
	uid, gid int
	name     string
}

func currentCaller() caller {
	c := caller{uid: os.Getuid(), gid: os.Getgid()}
	// $USER is what the caller calls themselves; fall back to the passwd
	// entry, then to a name made from the uid so whoami always resolves.
	if n := os.Getenv("USER"); validName(n) {
		c.name = n
	} else if u, err := user.LookupId(strconv.Itoa(c.uid)); err == nil && validName(u.Username) {
		c.name = u.Username
	} else if c.uid == 0 {
		c.name = "root"
	} else {
		c.name = "user" + strconv.Itoa(c.uid)
	}
	return c
}

func validName(n string) bool {
	return n != "" && !strings.ContainsAny(n, ":\n/ \t\x00")
}

// resolveWorkdir returns the real path of the workdir, which is bound at
// the same absolute path so the paths Lectic passes keep working.
func resolveWorkdir(flag string) (string, error) {
	dir := flag
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", fmt.Errorf("workdir: the current directory is not usable (%v); pass -d DIR", err)
		}
		dir = wd
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("workdir %s: %w", flag, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("workdir %s does not exist; pass an existing directory with -d", abs)
	}
	fi, err := os.Stat(real)
	if err != nil || !fi.IsDir() {
		return "", fmt.Errorf("workdir %s is not a directory; pass a directory with -d", abs)
	}
	return real, mountable("workdir", real)
}

// mountable refuses a path the container runtime cannot bind: runc's
// libcontainer hands mount paths to its init as JSON text, which turns
// bytes that are not UTF-8 into U+FFFD, so such a path would be looked
// for under another name. Arguments and environment carry any bytes;
// mount paths cannot.
func mountable(what, path string) error {
	if utf8.ValidString(path) {
		return nil
	}
	return fmt.Errorf("%s %q is not valid UTF-8, and the container runtime takes mount paths only as UTF-8 text; use a directory whose path is", what, path)
}

// resolveVolumes parses --volume and --persist. Host paths are resolved
// against the caller's cwd and must exist: binding a missing path would
// either fail late inside the runtime or silently create it.
func resolveVolumes(o options) ([]oci.Volume, error) {
	specs := append([]string(nil), o.volumes...)
	if o.persist != "" {
		// Unlike a volume, the persist dir is the sandbox's own storage
		// (often one per conversation), so it is created on first use.
		if err := mountable("--persist", o.persist); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(o.persist, 0o700); err != nil {
			return nil, fmt.Errorf("--persist %s: %w", o.persist, err)
		}
		specs = append(specs, o.persist+":/persist")
	}
	var vols []oci.Volume
	for _, s := range specs {
		host, rest, _ := strings.Cut(s, ":")
		if host == "" {
			return nil, fmt.Errorf("volume %q: the host path is empty; use HOST[:TARGET][:ro]", s)
		}
		abs, err := filepath.Abs(host)
		if err != nil {
			return nil, fmt.Errorf("volume %q: %w", s, err)
		}
		real, err := filepath.EvalSymlinks(abs)
		if err != nil {
			return nil, fmt.Errorf("volume %q: host path %s does not exist; create it or fix the path", s, abs)
		}
		spec := real
		if rest != "" {
			spec += ":" + rest
		}
		v, err := oci.ParseVolume(spec)
		if err != nil {
			return nil, fmt.Errorf("volume %q: %w", s, err)
		}
		if rest == "" || rest == "ro" || rest == "rw" {
			// TARGET defaulted: bind at the path the caller typed, made absolute.
			v.Target = abs
		}
		if err := mountable("volume", v.Source+":"+v.Target); err != nil {
			return nil, err
		}
		vols = append(vols, v)
	}
	return vols, nil
}

// resolveHome picks the host directory that becomes $HOME: --home, or one
// per workdir under the cache so each project keeps its own dotfiles.
func resolveHome(flag, workdir string, r roots) (string, error) {
	if flag != "" {
		abs, err := filepath.Abs(flag)
		if err != nil {
			return "", err
		}
		if err := mountable("--home", abs); err != nil {
			return "", err
		}
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return "", fmt.Errorf("--home %s: %w", flag, err)
		}
		return filepath.EvalSymlinks(abs)
	}
	sum := sha256.Sum256([]byte(workdir))
	dir := filepath.Join(r.cache, "home", hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create home %s: %w", dir, err)
	}
	return dir, nil
}

// homeTarget is where $HOME lives inside: the usual place for the user's
// name, so tools that guess home from the name agree with $HOME.
func homeTarget(c caller) string {
	if c.uid == 0 {
		return "/root"
	}
	return "/home/" + c.name
}

// commandArgv is the command to run: the given words, or the image's default
// (Entrypoint + Cmd) when none were given.
func commandArgv(o options, img *nixload.Image) ([]string, error) {
	if len(o.command) > 0 {
		return o.command, nil
	}
	argv := append(append([]string(nil), img.Config.Entrypoint...), img.Config.Cmd...)
	if len(argv) == 0 {
		return nil, errNoCommand
	}
	return argv, nil
}

func runCommand(ctx context.Context, args []string, o options, r roots, stderr io.Writer) (int, error) {
	named, err := namedEnv(o.env)
	if err != nil {
		return 0, err
	}
	fast := fastCallFor(args, o, r, stderr)
	workdir, err := resolveWorkdir(o.workdir)
	if err != nil {
		return 0, err
	}
	covers := stateCovers(r)
	// Binds that must stay read-only are refused before anything is
	// created (--persist makes its dir) or built.
	early := append(append([]oci.Cover(nil), covers...), lecticConfigCovers(o, os.Getenv)...)
	if err := checkPersist(o.persist, early); err != nil {
		return 0, err
	}
	vols, err := resolveVolumes(o)
	if err != nil {
		return 0, err
	}
	if _, err := oci.CoverPlan(oci.Config{Workdir: workdir, Volumes: vols, Covers: early}); err != nil {
		return 0, err
	}
	store, err := openStore(r, o)
	if err != nil {
		return 0, err
	}
	choice, err := resolveImage(ctx, o, r, store, stderr)
	if err != nil {
		return 0, err
	}
	argv, err := commandArgv(o, choice.img)
	if err != nil {
		return 0, err
	}
	home, err := resolveHome(o.home, workdir, r)
	if err != nil {
		return 0, err
	}
	return runInSandbox(ctx, sandboxCall{
		opts: o, roots: r, image: choice, workdir: workdir, home: home,
		volumes: vols, argv: argv, named: named, caller: currentCaller(), stderr: stderr, fast: fast,
		covers: covers,
	})
}

type sandboxCall struct {
	opts    options
	roots   roots
	image   imageChoice
	workdir string
	home    string
	volumes []oci.Volume
	covers  []oci.Cover // what no command may reach or write (stateCovers)
	argv    []string
	named   []string // --env values, after the names LECTIC_NIX_SANDBOX_PASS_ENV lists
	caller  caller
	stderr  io.Writer
	fast    *fastCall // nil: no fast-path ticket for this call
}

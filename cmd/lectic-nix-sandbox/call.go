package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/namespace"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/nixload"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/warm"
)

// runInSandbox turns the resolved call into a warm spec and a request, and
// hands them to the warm client.
func runInSandbox(ctx context.Context, c sandboxCall) (int, error) {
	userSpec, err := parseUser(c.opts.user, c.caller)
	if err != nil {
		return 0, err
	}
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("find this program: %w", err)
	}
	buildID, err := warm.BuildID(exe)
	if err != nil {
		return 0, err
	}
	filter, err := seccompPolicy(c.opts.seccomp)
	if err != nil {
		return 0, err
	}
	limits, storage, warning := containerLimits(c.opts)
	if warning != "" {
		fmt.Fprintln(c.stderr, "lectic-nix-sandbox: warning: "+warning)
		c.opts.warnings = append(c.opts.warnings, warning) // the fast path says it too
	}
	target := homeTarget(c.caller)
	hc := hostConfigCovers(c.opts, c.rwRoots(), c.imageSource(), os.Getenv, c.covers)
	covers := append(append([]oci.Cover(nil), c.covers...), hc.covers...)
	if _, err := oci.CoverPlan(oci.Config{Workdir: c.workdir, Home: c.home, HomeTarget: target,
		HomeIsOwn: c.opts.home == "", Volumes: c.volumes, Covers: covers}); err != nil {
		return 0, err
	}
	shape := append(shapeParts(c, target), "seccomp="+filter.id,
		fmt.Sprintf("limits=%d:%d:%d:%t:%s", limits.Pids, limits.Memory, storage, limits.Cgroup, limits.CgroupParent))
	key := warm.Key(append(imageParts(c, buildID), shape...)...)
	spec := warm.Spec{
		Key:     key,
		Family:  warm.Key(shape...),
		MaxWarm: c.opts.maxWarm,
		TTL:     time.Duration(c.opts.warmTTL) * time.Second,
		OneShot: !c.opts.keepWarm,
		BuildID: buildID,
		Mounts:  mountsDigest(c.bindSources(), c.covers, hc),
		Image:   c.image.label,
		ChainID: c.image.img.ChainID,
		Workdir: c.workdir,
		Seccomp: filter.policy,
		Users: []oci.User{{Name: c.caller.name, UID: uint32(c.caller.uid), GID: uint32(c.caller.gid),
			Home: target, Shell: imageShell(c.image.img)}},
		Groups: []oci.Group{{Name: c.caller.name, GID: uint32(c.caller.gid)}},
		Create: namespace.CreateOptions{Config: oci.Config{
			Image: oci.Image{Rootfs: c.image.img.Rootfs, Config: c.image.img.Config,
				HostBinds: c.image.img.HostBinds},
			Workdir:    c.workdir,
			Home:       c.home,
			HomeTarget: target,
			HomeIsOwn:  c.opts.home == "",
			Volumes:    c.volumes,
			Covers:     covers,
			AllowNet:   c.opts.allowNet,
			ResolvConf: resolvConf(c.opts.allowNet),
			NoFile:     noFileLimit(),
			Limits:     limits,
		}, StorageSize: storage},
		Net: c.opts.net,
	}
	// The agent binary is only needed when a container is created; warm
	// resolves it then (a read-only copy in the cache), keeping the warm
	// path free of file copies.
	spec.CacheRoot = c.roots.cache
	recipe := oci.NewEnvRecipe(c.image.img.Config.Env, c.named, target, userName(userSpec, c.caller))
	if c.opts.net != nil {
		// Assigned last, so the host's own proxy settings never reach
		// a command that could not use them.
		recipe.Post = append(recipe.Post, c.opts.net.ProxyEnv()...)
	}
	env, withheld := recipe.Build(os.Environ())
	req := warm.Request{
		Argv:     c.argv,
		Env:      env,
		Withheld: withheld,
		Cwd:      c.workdir,
		User:     userSpec,
		Timeout:  c.opts.timeout,
		// warm reads 0 as its default; --kill-after 0 means at once.
		KillAfter: c.opts.killAfter,
	}
	if req.KillAfter == 0 {
		req.KillAfter = -1
	}
	if c.fast != nil {
		spec.TicketDir = c.fast.dir
	}
	code, err := warm.Run(ctx, c.roots.temp, spec, req)
	reportCreated(c.stderr, hc.created())
	// The ticket is left once the call made it through the container: a
	// container replaced on the way (another build, outdated mounts) has
	// its tickets pruned by its supervisor as it goes, which must not
	// take this call's along.
	if c.fast != nil && err == nil {
		c.fast.write(c, spec, req, recipe, hc)
	}
	return code, err
}

// rwRoots are the read-write binds' sources, where the command may
// create or change what the host runs later.
func (c sandboxCall) rwRoots() []string {
	roots := []string{c.workdir}
	if c.opts.home != "" {
		roots = append(roots, c.home)
	}
	for _, v := range c.volumes {
		if !v.ReadOnly {
			roots = append(roots, v.Source)
		}
	}
	return roots
}

// bindSources are every user bind's source, whose identity the
// container's mounts depend on.
func (c sandboxCall) bindSources() []string {
	srcs := []string{c.workdir, c.home}
	for _, v := range c.volumes {
		srcs = append(srcs, v.Source)
	}
	return srcs
}

// imageSource names the files the image is made from.
func (c sandboxCall) imageSource() imageSource {
	var s imageSource
	switch {
	case c.opts.image == "host":
	case c.opts.image != "":
		s.file = c.opts.image
	default:
		if dir, ok := strings.CutPrefix(c.image.label, "path:"); ok {
			s.flakeDir, _, _ = strings.Cut(dir, "?")
		}
		s.packages = c.opts.packagesFile
	}
	return s
}

// namedEnv is the --env values after the names LECTIC_NIX_SANDBOX_PASS_ENV
// lists, which are kept from the host as --env NAME keeps them; an --env
// NAME=VALUE for the same name still sets it.
func namedEnv(flags []string) ([]string, error) {
	pass, err := oci.ParsePassEnv(os.Getenv("LECTIC_NIX_SANDBOX_PASS_ENV"))
	if err != nil {
		return nil, err
	}
	return append(pass, flags...), nil
}

// The warm key covers everything that shapes the container: its image and
// the binary (imageParts), and its workdir and options (shapeParts).
// Anything per request (argv, env, timeout, user) stays out so calls share
// a container; the user mode is in because caller and root modes see
// different /etc/passwd entries. The shape alone names the container's
// family: a new image for the same shape replaces the old container.
func imageParts(c sandboxCall, buildID string) []string {
	return []string{"image=" + c.image.img.ID, "chain=" + c.image.img.ChainID, "build=" + buildID}
}

func shapeParts(c sandboxCall, homeTarget string) []string {
	parts := []string{
		"workdir=" + c.workdir,
		"home=" + c.home + ":" + homeTarget,
		"net=" + strconv.FormatBool(c.opts.allowNet),
		"hostcfg=" + strconv.FormatBool(c.opts.allowHostConfig),
		"user=" + c.opts.user,
		"uid=" + strconv.Itoa(c.caller.uid) + ":" + strconv.Itoa(c.caller.gid) + ":" + c.caller.name,
	}
	for _, v := range c.volumes {
		parts = append(parts, fmt.Sprintf("vol=%s:%s:%t", v.Source, v.Target, v.ReadOnly))
	}
	if c.opts.net != nil {
		parts = append(parts, "allow="+c.opts.net.String())
	}
	return append(parts, coverKeyParts(c.covers)...)
}

// seccompChoice is --seccomp resolved: the policy and what the warm key
// says of it.
type seccompChoice struct {
	policy warm.SeccompPolicy
	id     string
}

// seccompPolicy reads --seccomp. A profile file is checked here, so a bad
// one fails the call with one line before any container is touched; its
// contents, not its name, shape the warm key.
func seccompPolicy(flag string) (seccompChoice, error) {
	switch flag {
	case "default", "off":
		return seccompChoice{policy: warm.SeccompPolicy{Mode: flag}, id: flag}, nil
	}
	data, err := os.ReadFile(flag)
	if err != nil {
		return seccompChoice{}, fmt.Errorf("--seccomp %s: %v; pass default, off or a readable profile file", flag, err)
	}
	p := warm.SeccompPolicy{Mode: "file", Profile: data}
	if _, err := p.Filter(oci.DefaultCaps()); err != nil {
		return seccompChoice{}, fmt.Errorf("--seccomp %s: %v", flag, err)
	}
	sum := sha256.Sum256(data)
	return seccompChoice{policy: p, id: "file:" + hex.EncodeToString(sum[:])}, nil
}

// imageShell is the login shell the caller's passwd entry names: bash when
// the image has it (Nix images do), else sh. The host image's /bin is the
// host's own, bound in at run time, so it is looked up on the host.
func imageShell(img *nixload.Image) string {
	root := img.Rootfs
	if len(img.HostBinds) > 0 {
		root = "/"
	}
	for _, sh := range []string{"/bin/bash", "/usr/bin/bash"} {
		if _, err := os.Lstat(filepath.Join(root, sh)); err == nil {
			return sh
		}
	}
	return "/bin/sh"
}

// parseUser maps --user to the agent's user modes.
func parseUser(flag string, c caller) (warm.UserSpec, error) {
	switch flag {
	case "", "caller":
		return warm.UserSpec{Mode: "caller", UID: uint32(c.uid), GID: uint32(c.gid)}, nil
	case "root":
		return warm.UserSpec{Mode: "root"}, nil
	case "image":
		return warm.UserSpec{Mode: "image"}, nil
	}
	name, group, hasGroup := strings.Cut(flag, ":")
	// A name travels in the request's JSON header: UTF-8 text of a sane
	// length (user and group names are at most 32 bytes on Linux).
	if name == "" || (hasGroup && group == "") || strings.ContainsAny(flag, " \t\n\x00/") ||
		len(flag) > 256 || !utf8.ValidString(flag) {
		return warm.UserSpec{}, fmt.Errorf("--user %q: want caller, root, image, NAME or UID[:GID]", flag)
	}
	return warm.UserSpec{Mode: "id", Name: flag}, nil
}

// userName is $USER inside: the caller's name in caller mode.
func userName(u warm.UserSpec, c caller) string {
	switch u.Mode {
	case "caller":
		return c.name
	case "root":
		return "root"
	}
	return ""
}

// resolvConf is the host's DNS configuration, bound in only when the
// sandbox shares the host's network.
func resolvConf(allowNet bool) string {
	if !allowNet {
		return ""
	}
	if _, err := os.Stat("/etc/resolv.conf"); err != nil {
		return ""
	}
	return "/etc/resolv.conf"
}

// containerLimits turns --pids-limit, --memory and --storage-size into the
// container's limits, with what can hold them here (namespace.PlanLimits),
// and a warning when --memory can only be a per-process limit.
func containerLimits(o options) (l oci.Limits, storage int64, warning string) {
	plan := namespace.PlanLimits()
	l = oci.Limits{Pids: o.pidsLimit, Memory: o.memory, Cgroup: plan.Cgroup, CgroupParent: plan.Parent}
	// RLIMIT_NPROC cannot be raised above the caller's own hard limit.
	var r unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NPROC, &r) == nil && r.Max < uint64(l.Pids) {
		l.Pids = int64(r.Max)
	}
	if o.memory > 0 && !plan.Cgroup {
		warning = "--memory is a per-process address-space limit (RLIMIT_AS) here, not a limit of the container: " + plan.Why
	}
	storage = o.storageSize
	if storage == 0 {
		storage = defaultStorageSize()
	}
	return l, storage, warning
}

// defaultStorageSize is a quarter of the machine's memory.
func defaultStorageSize() int64 {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil {
		return 0 // the kernel's default, half of RAM
	}
	return int64(si.Totalram) * int64(si.Unit) / 4
}

// noFileLimit passes the caller's open-file limit on, so tools behave in the
// sandbox as they do outside.
func noFileLimit() oci.Rlimit {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return oci.Rlimit{}
	}
	return oci.Rlimit{Soft: r.Cur, Hard: r.Max}
}

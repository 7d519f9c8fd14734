package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/fastpath"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/nixload"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/warm"
)

// fastCall is what this call's fast-path ticket needs besides the request:
// where tickets live, how the arguments split, and the files checked.
type fastCall struct {
	dir    string
	inv    fastpath.Invocation
	checks []fastpath.Check
	// host are the host image's checks, kept only if the call ends up on
	// the host image without asking for it (the fallback).
	host []fastpath.Check
}

// fastCallFor observes, before anything is resolved, the files a ticket
// for this call will depend on. Observing first means a change made while
// the call resolves makes the ticket fail its checks, never pass them
// wrongly. nil means the call gets no ticket.
func fastCallFor(args []string, o options, r roots, stderr io.Writer) *fastCall {
	if !o.keepWarm || o.refresh || len(o.command) == 0 {
		return nil
	}
	fc := &fastCall{dir: fastpath.Dir(r.temp), inv: fastpath.Invocation{Options: args[:o.optWords], Terminated: o.terminated}}
	// The mounts: what the paths the user gave resolve to, and the
	// current directory when it is the workdir (removed and made again,
	// it is another directory, which the container must bind anew).
	paths := mountPaths(o)
	if o.workdir == "" {
		wd, err := unix.Getwd()
		if err != nil {
			return nil
		}
		paths = append(paths, wd)
	}
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			continue
		}
		c, err := fastpath.Observe(fastpath.Identity, abs)
		if err != nil {
			return nil
		}
		fc.checks = append(fc.checks, c)
	}
	if o.seccomp != "default" && o.seccomp != "off" {
		// A profile file shapes the container: an edit must find no ticket.
		abs, err := filepath.Abs(o.seccomp)
		if err != nil {
			return nil
		}
		c, err := fastpath.Observe(fastpath.Stat, abs)
		if err != nil {
			return nil
		}
		fc.checks = append(fc.checks, c)
	}
	var inputs []nixload.Input
	switch {
	case o.image == "host":
		inputs = nixload.HostInputs()
	case o.image != "":
		src, err := nixload.ParseFileSource(o.image)
		if err != nil {
			return nil
		}
		inputs = nixload.FileInputs(src)
	default:
		src, _, err := flakeSource(o, r, stderr)
		if err != nil {
			return nil
		}
		flake, cacheable := nixload.FlakeInputs(src)
		if !cacheable {
			return nil
		}
		exe, _ := os.Executable()
		inputs = append(nixload.FlakeRefInputs(o.flake, os.Getenv("LECTIC_NIX_SANDBOX_FLAKE"), exe), flake...)
		if fc.host, err = observeInputs(nixload.HostInputs()); err != nil {
			return nil
		}
	}
	image, err := observeInputs(inputs)
	if err != nil {
		return nil
	}
	fc.checks = append(fc.checks, image...)
	return fc
}

// observeInputs records the current state of each input.
func observeInputs(inputs []nixload.Input) ([]fastpath.Check, error) {
	checks := make([]fastpath.Check, 0, len(inputs))
	for _, in := range inputs {
		kind := fastpath.Lstat
		switch {
		case in.Resolve:
			kind = fastpath.Real
		case in.Follow:
			kind = fastpath.Stat
		}
		c, err := fastpath.Observe(kind, in.Path)
		if err != nil {
			return nil, err
		}
		checks = append(checks, c)
	}
	return checks, nil
}

// mountPaths are the host paths the options bind into the container.
func mountPaths(o options) []string {
	var paths []string
	if o.workdir != "" {
		paths = append(paths, o.workdir)
	}
	for _, v := range o.volumes {
		host, _, _ := strings.Cut(v, ":")
		paths = append(paths, host)
	}
	for _, p := range []string{o.persist, o.home} {
		if p != "" {
			paths = append(paths, p)
		}
	}
	return paths
}

// write leaves the ticket for the next identical invocation. It is only an
// optimisation: when it cannot be written (a file changed too recently, a
// temp dir that is not private) the next call simply takes the slow path.
func (fc *fastCall) write(c sandboxCall, s warm.Spec, r warm.Request, env oci.EnvRecipe, hc hostConfig) {
	sock, msg, err := warm.FastRequest(c.roots.temp, s, r)
	if err != nil {
		return
	}
	checks := fc.checks
	if c.image.label == "host" {
		checks = append(checks, fc.host...) // empty unless the flake fell back
	}
	// A covered file replaced on the host (an editor's atomic save), or a
	// state dir made since (another temp root), is another mount: its
	// identity is checked like the binds'. Not the temp root's (the ticket
	// is found in it) nor the binary's (the ticket's name covers it).
	self, _ := os.Executable()
	self, _ = filepath.EvalSymlinks(self)
	for _, cv := range append(append([]oci.Cover(nil), c.covers...), hc.covers...) {
		if cv.Path == c.roots.temp || cv.Path == self {
			continue
		}
		ch, err := fastpath.Observe(fastpath.Identity, cv.Path)
		if err != nil {
			return
		}
		checks = append(checks, ch)
	}
	for _, dir := range tempCandidates(c.roots) {
		if slices.ContainsFunc(c.covers, func(cv oci.Cover) bool { return cv.Path == dir }) {
			continue // a cover already, checked above
		}
		// Unreachable (another user's), it is nothing to this call.
		if ch, err := fastpath.Observe(fastpath.Identity, dir); err == nil {
			checks = append(checks, ch)
		}
	}
	g := fastpath.Guard{Absent: hc.guards, Lecs: hc.lecs}
	for _, d := range hc.lecDirs {
		g.LecDirs = append(g.LecDirs, fastpath.LecDir{Path: d.path, Mtime: d.mtime})
	}
	_ = fastpath.Write(fc.dir, fc.inv, fastpath.Ticket{
		Socket: sock, Request: msg, Cwd: r.Cwd, Env: env, Timeout: r.Timeout, Warnings: c.opts.warnings, Checks: checks, Guard: g,
	})
}

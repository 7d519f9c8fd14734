package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"

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
	dir, ok := fastpath.Dir(os.Getenv)
	if !ok || !o.keepWarm || o.refresh || len(o.command) == 0 {
		return nil
	}
	fc := &fastCall{dir: dir, inv: fastpath.Invocation{Options: args[:o.optWords], Terminated: o.terminated}}
	var err error
	observe := func(kind fastpath.Kind, path string) {
		c, oerr := fastpath.Observe(kind, path)
		if oerr != nil && err == nil {
			err = oerr
		}
		fc.checks = append(fc.checks, c)
	}
	// The mounts: what the paths the user gave resolve to.
	for _, p := range mountPaths(o) {
		if abs, aerr := filepath.Abs(p); aerr == nil {
			observe(fastpath.Identity, abs)
		}
	}
	var inputs []nixload.Input
	switch {
	case o.image == "host":
		inputs = nixload.HostInputs()
	case o.image != "":
		abs, aerr := filepath.Abs(o.image)
		if aerr != nil {
			return nil
		}
		inputs = nixload.FileInputs(abs)
	default:
		src, _, serr := flakeSource(o, r, stderr)
		if serr != nil {
			return nil
		}
		exe, _ := os.Executable()
		inputs = nixload.FlakeRefInputs(o.flake, os.Getenv("LECTIC_NIX_SANDBOX_FLAKE"), exe)
		flake, cacheable := nixload.FlakeInputs(src)
		if !cacheable {
			return nil
		}
		inputs = append(inputs, flake...)
		for _, in := range nixload.HostInputs() {
			c, oerr := fastpath.Observe(kind(in), in.Path)
			if oerr != nil {
				return nil
			}
			fc.host = append(fc.host, c)
		}
	}
	for _, in := range inputs {
		observe(kind(in), in.Path)
	}
	if err != nil {
		return nil
	}
	return fc
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

func kind(in nixload.Input) fastpath.Kind {
	if in.Follow {
		return fastpath.Stat
	}
	return fastpath.Lstat
}

// write leaves the ticket for the next identical invocation. It is only an
// optimisation: when it cannot be written (a file changed too recently, a
// temp dir that is not private) the next call simply takes the slow path.
func (fc *fastCall) write(c sandboxCall, s warm.Spec, r warm.Request, env oci.EnvRecipe) {
	sock, msg, err := warm.FastRequest(c.roots.temp, s, r)
	if err != nil {
		return
	}
	checks := fc.checks
	if c.image.label == "host" && c.opts.image != "host" {
		checks = append(checks, fc.host...)
	}
	_ = fastpath.Write(fc.dir, fc.inv, fastpath.Ticket{
		Socket: sock, Request: msg, Env: env, Timeout: r.Timeout, Warnings: c.opts.warnings, Checks: checks,
	})
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/fastpath"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/statedir"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/namespace"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/nixload"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/plugin"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/warm"
)

// manage runs the management flags. None of them starts a container.
func manage(ctx context.Context, o options, r roots, stdout, stderr io.Writer) error {
	switch o.action {
	case "stop", "prune", "gc":
		// Tickets of containers that are gone would only cost a failed
		// connect, but nothing else removes them.
		defer pruneTickets(r.temp)
	}
	switch o.action {
	case "doctor":
		return doctor(ctx, r, stdout)
	case "list":
		return list(r, o.jsonOutput, stdout)
	case "stop":
		return warm.Stop(r.temp, o.actionArg)
	case "prune":
		stopped, err := warm.Prune(r.temp)
		for _, k := range stopped {
			fmt.Fprintln(stdout, "stopped", k)
		}
		return err
	case "gc":
		return gc(r, stdout)
	case "install":
		return install(o.actionArg, r, stdout)
	case "load":
		return load(ctx, o, r, stdout, stderr)
	}
	return fmt.Errorf("internal: unhandled action %q", o.action)
}

func pruneTickets(temp string) {
	_, _ = fastpath.Prune(fastpath.Dir(temp))
}

// load loads an image file (recording it, so that the next --image of the
// unchanged file finds it) and prints it with what it shares with the
// other cached images.
func load(ctx context.Context, o options, r roots, stdout, stderr io.Writer) error {
	store, err := openStore(r, o)
	if err != nil {
		return err
	}
	src, err := nixload.ParseFileSource(o.actionArg)
	if err != nil {
		return err
	}
	img, err := store.LoadFileCached(ctx, src, loadOptions(o, stderr))
	if err != nil {
		return err
	}
	shared, err := store.Sharing(img)
	if err != nil {
		return err
	}
	line, err := json.Marshal(struct {
		*nixload.Image
		Source string          `json:"source"`
		Shared nixload.Sharing `json:"shared"`
	}{img, src.String(), shared})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", line)
	return err
}

func list(r roots, asJSON bool, stdout io.Writer) error {
	infos, err := warm.List(r.temp)
	if err != nil {
		return err
	}
	if asJSON {
		if infos == nil {
			infos = []warm.Info{}
		}
		b, err := json.Marshal(infos)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tPID\tIDLE\tTTL\tRUNNING\tWORKDIR\tIMAGE")
	for _, i := range infos {
		ttl := "never"
		if i.TTLSeconds > 0 {
			ttl = (time.Duration(i.TTLSeconds) * time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\t%s\n", i.Key, i.Pid,
			(time.Duration(i.IdleSeconds) * time.Second).String(), ttl, i.RunningRequests, i.Workdir, i.Image)
	}
	return tw.Flush()
}

// gc keeps the tree every running warm container uses (by chain id); the
// store itself keeps the images its source caches point at.
func gc(r roots, stdout io.Writer) error {
	store, err := nixload.Open(r.cache)
	if err != nil {
		return err
	}
	infos, err := warm.List(r.temp)
	if err != nil {
		return err
	}
	var keep []string
	for _, i := range infos {
		keep = append(keep, i.ChainID)
	}
	_, err = store.GC(keep, stdout)
	return err
}

func install(dir string, r roots, stdout io.Writer) error {
	if dir == "" {
		dir = filepath.Join(r.data, "plugins", "nix-sandbox")
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("install: find this program: %w", err)
	}
	return plugin.Install(dir, exe, []string{r.config, r.data}, stdout)
}

func doctor(ctx context.Context, r roots, stdout io.Writer) error {
	checks := append(trustChecks(&r), namespace.Doctor(ctx, r.temp, r.cache)...)
	checks = append(checks, imageCheck(r), orphanCheck())
	failed := false
	for _, c := range checks {
		mark := "ok  "
		switch {
		case !c.OK && c.Required:
			mark, failed = "FAIL", true
		case !c.OK:
			mark = "warn"
		}
		fmt.Fprintf(stdout, "%s %s: %s\n", mark, c.Name, c.Detail)
		if !c.OK && c.Fix != "" {
			fmt.Fprintf(stdout, "     fix: %s\n", c.Fix)
		}
	}
	if failed {
		return fmt.Errorf("doctor: this machine cannot create a sandbox yet; apply the fixes above")
	}
	return nil
}

// trustChecks reports whether the cache and temp roots can be trusted
// (see statedir), and which temp root the fallback order chose; r gets
// the roots a call would use.
func trustChecks(r *roots) []namespace.Check {
	var checks []namespace.Check
	if err := checkCache(r); err != nil {
		checks = append(checks, namespace.Check{Name: "trusted cache directory", Required: true, Detail: err.Error()})
	} else {
		checks = append(checks, namespace.Check{Name: "trusted cache directory", Required: true, OK: true,
			Detail: r.cache + " and every directory above it are writable only by you or root"})
	}
	given := r.temp
	switch err := pickTemp(r); {
	case err != nil:
		checks = append(checks, namespace.Check{Name: "trusted temp directory", Required: true, Detail: err.Error()})
	case !sameDir(r.temp, given):
		why := "it cannot be used"
		if err := statedir.Inspect(given, os.Getuid()); err != nil {
			why = err.Error()
		}
		checks = append(checks, namespace.Check{Name: "trusted temp directory", Required: true, OK: true,
			Detail: fmt.Sprintf("%s, falling back from %s: %s", r.temp, given, why)})
	default:
		checks = append(checks, namespace.Check{Name: "trusted temp directory", Required: true, OK: true, Detail: r.temp})
	}
	return checks
}

func sameDir(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

func versionString() string {
	v := "devel"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
	}
	return "lectic-nix-sandbox " + v + " (warm protocol " + fmt.Sprint(warm.Proto) + ")"
}

// imageCheck says which image a call without --image or --flake gets, and
// why: the default flake, or the host image standing in for it. It builds
// nothing; it reports what the last calls chose.
func imageCheck(r roots) namespace.Check {
	c := namespace.Check{Name: "image"}
	src, explicit, err := flakeSource(defaultOptions(), r, io.Discard)
	if err != nil {
		c.Detail = "no default image source: " + err.Error()
		c.Fix = "pass --flake or --image, or run lectic-nix-sandbox --install"
		return c
	}
	store, err := nixload.Open(r.cache)
	if err != nil {
		c.Detail = err.Error()
		return c
	}
	last, ok := store.LastChoice(src.Ref)
	_, cached := store.CachedFlake(src)
	switch {
	case explicit || !ok && cached:
		c.OK = true
		c.Detail = "the flake " + src.Ref
		if cached {
			c.Detail += " (built and cached)"
		}
	case !ok:
		c.OK = true
		c.Detail = "the default flake " + src.Ref + " (not built yet: the first call builds it, or uses the host image if it cannot)"
	case last.Image == nixload.ChoiceHost:
		c.Detail = "the host image since " + last.Since.Local().Format(time.RFC3339) + ": " + last.Why
		c.Fix = "make " + src.Ref + "#containerImage buildable (nix build " + src.Ref + "#containerImage shows why it is not), or pass --flake or --image"
	default:
		c.OK = true
		c.Detail = "the default flake " + src.Ref + " since " + last.Since.Local().Format(time.RFC3339)
	}
	return c
}

// orphanCheck finds this user's warm containers whose temp root was
// deleted under them: nothing can reach them, and they end only by their
// TTL.
func orphanCheck() namespace.Check {
	c := namespace.Check{Name: "orphaned containers"}
	orphans, err := warm.Orphans()
	if err != nil {
		c.Detail = err.Error()
		return c
	}
	if len(orphans) == 0 {
		c.OK, c.Detail = true, "none (warm containers whose temp root was deleted)"
		return c
	}
	var list []string
	for _, o := range orphans {
		list = append(list, fmt.Sprintf("%s (supervisor pid %d, was %s)", o.Key, o.SupervisorPid, o.Dir))
	}
	c.Detail = fmt.Sprintf("%d warm container(s) whose temp root was deleted, unreachable until their TTL ends them: %s",
		len(orphans), strings.Join(list, ", "))
	c.Fix = "lectic-nix-sandbox --stop orphaned (or --stop KEY for one)"
	return c
}

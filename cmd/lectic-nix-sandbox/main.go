// Command lectic-nix-sandbox runs one command in a rootless container whose
// root file system comes from a Nix-built image. See README.md.
//
// The same static binary plays five parts, chosen by environment variables
// that only the sandbox itself sets (never by argv, so a user command named
// "init" stays a command): libcontainer's init, the --doctor probes, the
// supervisor that owns a container, the agent that is the container's PID 1,
// and the CLI.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/termtext"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/namespace"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/warm"
)

// exitSandboxFailure is the exit status for the sandbox's own failures,
// distinct from anything the command can return through us.
const exitSandboxFailure = 125

func main() {
	switch {
	case namespace.IsInit():
		namespace.Init() // never returns
	case namespace.IsProbe():
		os.Exit(namespace.RunProbe())
	case warm.IsAgent():
		os.Exit(warm.RunAgent())
	case warm.IsSupervisor():
		os.Exit(warm.RunSupervisor())
	}
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

// cli runs one invocation and returns its exit status. Errors are printed
// here, once, as a single line.
func cli(args []string, stdout, stderr io.Writer) int {
	code, err := dispatch(args, stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "lectic-nix-sandbox: "+oneLine(err.Error()))
		return exitSandboxFailure
	}
	return code
}

func dispatch(args []string, stdout, stderr io.Writer) (int, error) {
	o, err := parseArgs(args)
	if err != nil {
		return 0, err
	}
	for _, w := range o.warnings {
		fmt.Fprintln(stderr, "lectic-nix-sandbox: warning: "+termtext.Printable(w))
	}
	if o.action == "help" {
		fmt.Fprint(stdout, usageText)
		return 0, nil
	}
	if o.action == "version" {
		fmt.Fprintln(stdout, versionString())
		return 0, nil
	}
	r, err := resolveRoots(os.Getenv)
	if err != nil {
		return 0, err
	}
	switch o.action {
	case "", "gc", "load":
		if err := checkCache(&r); err != nil {
			return 0, err
		}
	}
	switch o.action {
	case "", "list", "stop", "prune", "gc":
		if err := pickTemp(&r); err != nil {
			return 0, err
		}
	}
	switch o.action {
	case "list", "stop", "prune":
		// Nothing to undo when these are interrupted (each step leaves a
		// consistent state): SIGTERM and SIGINT end them as usual.
		return 0, manage(context.Background(), o, r, stdout, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if o.action != "" {
		return 0, manage(ctx, o, r, stdout, stderr)
	}
	// The client forwards signals itself; the context above is only for the
	// management paths and image loading.
	return runCommand(ctx, args, o, r, stderr)
}

// oneLine keeps the 125 contract: whatever an error wraps (file names,
// command words), the user sees one line of text.
func oneLine(s string) string { return termtext.Printable(s) }

var errNoCommand = errors.New("no command given and the image has no default command; usage: lectic-nix-sandbox [OPTIONS] COMMAND [ARGS...]")

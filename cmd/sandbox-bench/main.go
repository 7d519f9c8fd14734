package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// options are the harness's flags.
type options struct {
	bin      string
	netprobe string
	image    string
	out      string
	user     string
	n        int
	quick    bool
	imageMB  int
	budget   time.Duration
	only     []string // scenario names; empty: all
	baseline string   // another build, for the *_baseline scenarios
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "sandbox-bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Geteuid() == 0 {
		err = runDropped(ctx, o, stdout, stderr)
	} else {
		err = runBench(ctx, o, stdout, stderr)
	}
	var exit exitError
	if errors.As(err, &exit) {
		return int(exit)
	}
	if err != nil {
		fmt.Fprintln(stderr, "sandbox-bench:", err)
		return 1
	}
	return 0
}

// exitError passes the dropped child's exit status through unchanged.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("sandbox-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.bin, "bin", "", "sandbox binary (default: build ./cmd/lectic-nix-sandbox from the module in the current directory)")
	fs.StringVar(&o.netprobe, "netprobe", "", "static network client of the network scenarios (default: build ./cmd/sandbox-bench/netprobe with CGO_ENABLED=0)")
	fs.StringVar(&o.baseline, "baseline", "", "another build of the sandbox (say, of the previous commit): cold_start and warm_exec are also measured with it, interleaved, as *_baseline")
	fs.StringVar(&o.image, "image", "", "image archive to run (default: a generated busybox docker-archive of -image-mb)")
	fs.StringVar(&o.out, "out", "bench-results", "directory for results.json and results.svg")
	fs.StringVar(&o.user, "user", "", "when started as root, measure as this user (default: sandboxtest if it exists, else nobody)")
	fs.IntVar(&o.n, "n", 100, "iterations of the fast scenarios; slow ones run fewer (see results.json machine.iterations)")
	fs.BoolVar(&o.quick, "quick", false, "a few iterations and a small image: a smoke test, not a measurement")
	fs.IntVar(&o.imageMB, "image-mb", 96, "size of the generated image in MiB")
	fs.DurationVar(&o.budget, "budget", 25*time.Second, "stop a scenario's iterations after this long (it keeps at least 2)")
	fs.Func("only", "measure only these scenarios, comma-separated (a group that gives several, such as the podman or network ones, runs whole)", func(v string) error {
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				o.only = append(o.only, n)
			}
		}
		return nil
	})
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sandbox-bench [-bin PATH] [-image PATH] [-out DIR] [-n N] [-quick]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q; all options are flags (see -h)", fs.Arg(0))
	}
	if o.n < 1 {
		return o, fmt.Errorf("-n must be at least 1, got %d", o.n)
	}
	if o.imageMB < 1 {
		return o, fmt.Errorf("-image-mb must be at least 1, got %d", o.imageMB)
	}
	if o.quick {
		o.n = min(o.n, 5)
		o.imageMB = min(o.imageMB, 16)
	}
	for _, p := range []*string{&o.bin, &o.netprobe, &o.image, &o.out} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return o, err
		}
		*p = abs
	}
	return o, nil
}

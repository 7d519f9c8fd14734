package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/nixload"
)

// imageChoice is the resolved image.
type imageChoice struct {
	img   *nixload.Image
	label string // for --list: the flake ref, file path or "host"
}

// resolveImage picks the image source in the documented order: --image,
// then a flake (--flake, $LECTIC_NIX_SANDBOX_FLAKE, the binary's own
// directory, the installed plugin). Without an explicit source and without a
// usable nix, the host image stands in.
func resolveImage(ctx context.Context, o options, r roots, store *nixload.Store, stderr io.Writer) (imageChoice, error) {
	switch {
	case o.image == "host":
		img, err := store.Host()
		return imageChoice{img: img, label: "host"}, err
	case o.image != "":
		src, err := nixload.ParseFileSource(o.image)
		if err != nil {
			return imageChoice{}, err
		}
		img, err := store.LoadFileCached(ctx, src, loadOptions(o, stderr))
		return imageChoice{img: img, label: src.String()}, err
	}
	src, explicit, err := flakeSource(o, r, stderr)
	if err != nil {
		return imageChoice{}, err
	}
	if img, ok := store.CachedFlake(src); ok {
		return flakeChosen(store, src, explicit, img), nil
	}
	if !explicit && !nixUsable(src.NixExe) {
		return hostFallback(store, src.Ref, "nix is not installed", stderr)
	}
	img, err := store.LoadFlake(ctx, src)
	if err != nil {
		if explicit {
			return imageChoice{}, err
		}
		return hostFallback(store, src.Ref, "the default flake could not be built ("+firstLine(err.Error())+")", stderr)
	}
	return flakeChosen(store, src, explicit, img), nil
}

// flakeChosen records that the default flake is in use again, so that a
// later fall-back to the host image is said again.
func flakeChosen(store *nixload.Store, src nixload.FlakeSource, explicit bool, img *nixload.Image) imageChoice {
	if !explicit {
		_, _ = store.NoteChoice(nixload.Choice{Ref: src.Ref, Image: nixload.ChoiceFlake})
	}
	return imageChoice{img: img, label: src.Ref}
}

// hostFallback stands in the host image for a default flake that cannot
// be built. The user is told once per change of that choice (the cache
// remembers it), not in the first tool result of every new container:
// Lectic hands stderr to the model.
func hostFallback(store *nixload.Store, ref, why string, stderr io.Writer) (imageChoice, error) {
	img, err := store.Host()
	if err != nil {
		return imageChoice{}, err
	}
	changed, err := store.NoteChoice(nixload.Choice{Ref: ref, Image: nixload.ChoiceHost, Why: why})
	if changed || err != nil {
		fmt.Fprintln(stderr, "lectic-nix-sandbox: "+hostNotice(why))
	}
	return imageChoice{img: img, label: "host"}, nil
}

func hostNotice(why string) string {
	return "using the host image: " + why + "; pass --flake or --image to choose an image (said once; lectic-nix-sandbox --doctor shows the choice)"
}

// flakeSource builds the Nix source from the options and the environment.
func flakeSource(o options, r roots, stderr io.Writer) (nixload.FlakeSource, bool, error) {
	exe, _ := os.Executable()
	flag := o.flake
	if flag != "" && !strings.Contains(flag, ":") {
		abs, err := filepath.Abs(flag)
		if err != nil {
			return nixload.FlakeSource{}, false, err
		}
		flag = abs
	}
	ref, explicit, err := nixload.ResolveFlakeRef(flag, os.Getenv("LECTIC_NIX_SANDBOX_FLAKE"), exe, r.data)
	if err != nil {
		return nixload.FlakeSource{}, false, err
	}
	src := nixload.FlakeSource{
		Ref:       ref,
		NixExe:    o.nixExe,
		ExtraArgs: strings.Fields(o.nixExtra),
		Refresh:   o.refresh,
		Progress:  stderr,
		Terminal:  nixload.IsTerminal(stderr),
	}
	if src.NixExe == "" {
		src.NixExe = "nix"
	}
	if o.packagesFile != "" {
		abs, err := filepath.Abs(o.packagesFile)
		if err != nil {
			return src, false, err
		}
		if _, err := os.Stat(abs); err != nil {
			return src, false, fmt.Errorf("--nix-packages-file %s: %w", o.packagesFile, err)
		}
		src.PackagesFile = abs
	}
	return src, explicit || o.packagesFile != "", nil
}

func nixUsable(exe string) bool {
	_, err := exec.LookPath(exe)
	return err == nil
}

// openStore opens the image cache with the limits the options set.
func openStore(r roots, o options) (*nixload.Store, error) {
	lim := nixload.DefaultLimits()
	if o.maxImage > 0 {
		lim.MaxTotalBytes = o.maxImage
	}
	return nixload.Open(r.cache, nixload.WithLimits(lim))
}

// loadOptions are how an image file is read for this call: progress on a
// terminal only, notices wherever stderr goes.
func loadOptions(o options, stderr io.Writer) nixload.LoadOptions {
	return nixload.LoadOptions{Progress: progressWriter(stderr), Notices: stderr, Refresh: o.refresh}
}

// progressWriter passes loader progress to stderr only on a terminal, so
// logs of non-interactive runs stay clean.
func progressWriter(stderr io.Writer) io.Writer {
	if nixload.IsTerminal(stderr) {
		return stderr
	}
	return nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/statedir"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

// stateCovers are what no command may reach or write, wherever a bind
// exposes them (a workdir of $HOME holds the default cache, one of $TMPDIR
// the default temp root): the temp root with the agents' sockets and the
// tickets, and the cache with the images, homes and agent copies, are
// hidden; the sandbox binary and LECTIC_DATA (the installed plugin, and
// what Lectic runs from there: lectic-NAME programs, lectic.yaml files)
// are read-only. Paths are real paths, as the binds' sources are.
func stateCovers(r roots) []oci.Cover {
	covers := []oci.Cover{
		{Path: r.temp, Hide: true, Why: "the sandbox's temp dir"},
		{Path: r.cache, Hide: true, Why: "the sandbox's cache"},
	}
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			covers = append(covers, oci.Cover{Path: real, Why: "the sandbox binary"})
		}
	}
	if r.data != "" {
		if real, err := statedir.RealPath(r.data); err == nil {
			covers = append(covers, oci.Cover{Path: real, Why: "LECTIC_DATA",
				Refuse: "choose a directory outside it (keep persistent data under $LECTIC_STATE, say)"})
		}
	}
	return covers
}

// checkPersist refuses a --persist dir that a cover contains before it is
// created there.
func checkPersist(dir string, covers []oci.Cover) error {
	if dir == "" {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("--persist %s: %w", dir, err)
	}
	real, err := statedir.RealPath(abs)
	if err != nil {
		return fmt.Errorf("--persist %s: %w", dir, err)
	}
	_, err = oci.CoverPlan(oci.Config{Volumes: []oci.Volume{{Source: real, Target: "/persist"}}, Covers: covers})
	if err != nil {
		return fmt.Errorf("--persist: %w", err)
	}
	return nil
}

// coverKeyParts name the covers in the warm key: a container made with
// other covers is another container.
func coverKeyParts(covers []oci.Cover) []string {
	var parts []string
	for _, c := range covers {
		parts = append(parts, "cover="+c.Path+":"+strconv.FormatBool(c.Hide))
	}
	return parts
}

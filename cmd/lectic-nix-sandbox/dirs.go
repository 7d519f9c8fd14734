package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/statedir"
)

// roots are the three directories the sandbox keeps state in. Packages get
// them as arguments; only this file reads the environment for them.
type roots struct {
	cache  string // $LECTIC_CACHE/nix-sandbox; its real path once checkCache ran
	temp   string // $LECTIC_TEMP/nix-sandbox; the one in use once pickTemp ran
	data   string // $LECTIC_DATA
	config string // $LECTIC_CONFIG: only for telling where Lectic finds plugins
}

// resolveRoots follows Lectic's own conventions, so the sandbox's state sits
// beside Lectic's and is found by the same variables.
func resolveRoots(getenv func(string) string) (roots, error) {
	home := getenv("HOME")
	xdg := func(name, fallback string) (string, error) {
		if v := getenv(name); v != "" {
			return v, nil
		}
		if home == "" {
			return "", errors.New("neither $" + name + " nor $HOME is set; set LECTIC_CACHE, LECTIC_TEMP and LECTIC_DATA")
		}
		return filepath.Join(home, fallback), nil
	}
	cache := getenv("LECTIC_CACHE")
	if cache == "" {
		base, err := xdg("XDG_CACHE_HOME", ".cache")
		if err != nil {
			return roots{}, err
		}
		cache = filepath.Join(base, "lectic")
	}
	data := getenv("LECTIC_DATA")
	if data == "" {
		base, err := xdg("XDG_DATA_HOME", ".local/share")
		if err != nil {
			return roots{}, err
		}
		data = filepath.Join(base, "lectic")
	}
	config := getenv("LECTIC_CONFIG")
	if config == "" {
		base, err := xdg("XDG_CONFIG_HOME", ".config")
		if err != nil {
			return roots{}, err
		}
		config = filepath.Join(base, "lectic")
	}
	temp := getenv("LECTIC_TEMP")
	if temp == "" {
		tmp := getenv("TMPDIR")
		if tmp == "" {
			tmp = "/tmp"
		}
		temp = filepath.Join(tmp, "lectic")
	}
	r := roots{cache: filepath.Join(cache, "nix-sandbox"), temp: filepath.Join(temp, "nix-sandbox"), data: data, config: config}
	for _, p := range []*string{&r.cache, &r.temp, &r.data, &r.config} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return roots{}, err
		}
		*p = abs
	}
	return r, nil
}

// pickTemp replaces r.temp, the temp root Lectic's variables name, with
// the one to use: the first trusted one in statedir's fallback order, as
// its real path. The default, $TMPDIR/lectic or /tmp/lectic, is one path
// for every user of the machine and belongs to whoever made it first; a
// dir someone else controls must never hold our sockets, locks and
// tickets, and Lectic overrides LECTIC_TEMP, so the fallback needs no
// setup. fastpath.c makes the same choice.
func pickTemp(r *roots) error {
	uid := os.Getuid()
	dir, err := statedir.PickTemp(statedir.TempCandidates(r.temp, r.cache, uid), uid)
	if err != nil {
		return fmt.Errorf("%w; %s", err, tempAdvice(r.cache))
	}
	r.temp = dir
	return nil
}

// tempAdvice says how to make the cache-based fallback usable, the one
// that works for every kind of Lectic call (Lectic sets LECTIC_TEMP for
// exec tools and passes MCP servers no TMPDIR at all).
func tempAdvice(cache string) string {
	fallback := filepath.Join(cache, "temp")
	var ue *statedir.UnsafeError
	if err := statedir.Inspect(fallback, os.Getuid()); errors.As(err, &ue) {
		switch {
		case strings.Contains(ue.Reason, "writable by other users"):
			return fmt.Sprintf("run chmod go-w %s, and the sandbox keeps warm containers in %s", ue.Dir, fallback)
		case strings.Contains(ue.Reason, "belongs to uid"):
			return fmt.Sprintf("%s %s: have it fixed, and the sandbox keeps warm containers in %s", ue.Dir, ue.Reason, fallback)
		}
	}
	// Lectic derives an exec tool's LECTIC_CACHE from XDG_CACHE_HOME, and
	// passes an MCP server only HOME, LOGNAME, PATH, SHELL, TERM, USER and
	// its spec's env: the setting must reach both.
	return fmt.Sprintf("make %s a directory only you can write, with a path of at most %d bytes: set XDG_CACHE_HOME to a shorter dir in the environment Lectic runs in, and in each MCP server's env:", fallback, statedir.MaxTempRoot)
}

// checkCache makes the cache root and replaces r.cache with its real path,
// refusing a cache another user could change: images, homes and the agent
// binary live there.
func checkCache(r *roots) error {
	dir, err := statedir.Make(r.cache, os.Getuid())
	if err != nil {
		return fmt.Errorf("cache dir %s cannot be trusted: %v; make it and every directory above it writable only by you (chmod go-w), or set LECTIC_CACHE", r.cache, err)
	}
	r.cache = dir
	return nil
}

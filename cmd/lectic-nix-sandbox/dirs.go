package main

import (
	"errors"
	"path/filepath"
)

// roots are the three directories the sandbox keeps state in. Packages get
// them as arguments; only this file reads the environment for them.
type roots struct {
	cache string // $LECTIC_CACHE/nix-sandbox
	temp  string // $LECTIC_TEMP/nix-sandbox
	data  string // $LECTIC_DATA
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
	temp := getenv("LECTIC_TEMP")
	if temp == "" {
		tmp := getenv("TMPDIR")
		if tmp == "" {
			tmp = "/tmp"
		}
		temp = filepath.Join(tmp, "lectic")
	}
	r := roots{cache: filepath.Join(cache, "nix-sandbox"), temp: filepath.Join(temp, "nix-sandbox"), data: data}
	for _, p := range []*string{&r.cache, &r.temp, &r.data} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return roots{}, err
		}
		*p = abs
	}
	return r, nil
}

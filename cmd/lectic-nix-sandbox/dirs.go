package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// roots are the three directories the sandbox keeps state in. Packages get
// them as arguments; only this file reads the environment for them.
type roots struct {
	cache  string // $LECTIC_CACHE/nix-sandbox
	temp   string // $LECTIC_TEMP/nix-sandbox
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

// checkTemp makes sure the temp root is this user's own before anything is
// created in it or connected to under it. The default, $TMPDIR/lectic as
// Lectic itself uses, is one path for every user of the machine: whoever
// ran first owns it, and a dir another user controls must never hold our
// sockets and locks.
func checkTemp(temp string) error {
	hint := "set LECTIC_TEMP to a directory of your own (for example export LECTIC_TEMP=$XDG_RUNTIME_DIR/lectic)"
	if err := os.MkdirAll(temp, 0o700); err != nil {
		return fmt.Errorf("cannot create the temp dir %s (%v); %s", temp, errors.Unwrap(err), hint)
	}
	var st unix.Stat_t
	if err := unix.Lstat(temp, &st); err != nil {
		return fmt.Errorf("temp dir %s: %w", temp, err)
	}
	uid := os.Getuid()
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("temp dir %s is not a directory; %s", temp, hint)
	case int(st.Uid) != uid:
		return fmt.Errorf("temp dir %s belongs to uid %d, not to you (uid %d); %s", temp, st.Uid, uid, hint)
	case st.Mode&0o022 != 0:
		return fmt.Errorf("temp dir %s is writable by other users; run chmod 700 %s, or %s", temp, temp, hint)
	}
	// Anyone who may rename the parent's entries could swap the dir: a
	// parent others can write needs the sticky bit, as /tmp has.
	parent := filepath.Dir(temp)
	if err := unix.Lstat(parent, &st); err == nil && st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return fmt.Errorf("temp dir %s lies in %s, which other users may write to; %s", temp, parent, hint)
	}
	return nil
}

package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/statedir"
)

// TestPickTemp: a temp root in a directory others may write is replaced,
// without a word, by the caller's own fallback; when none is safe the one
// line says what fixes the fallback that works under Lectic.
func TestPickTemp(t *testing.T) {
	if _, err := statedir.Check("/run/user/"+strconv.Itoa(os.Getuid()), os.Getuid()); err == nil {
		t.Skip("this machine has a runtime dir for the caller; the fallback would go there")
	}
	base := t.TempDir()
	shared := filepath.Join(base, "shared")
	os.Mkdir(shared, 0o777)
	os.Chmod(shared, 0o777)
	cache := filepath.Join(base, "cache", "nix-sandbox")

	r := roots{temp: filepath.Join(base, "mine", "nix-sandbox"), cache: cache}
	if err := pickTemp(&r); err != nil || r.temp != filepath.Join(base, "mine", "nix-sandbox") {
		t.Fatalf("a safe temp root: %q, %v", r.temp, err)
	}
	r = roots{temp: filepath.Join(shared, "nix-sandbox"), cache: cache}
	if err := pickTemp(&r); err != nil || r.temp != filepath.Join(cache, "temp") {
		t.Fatalf("a temp root in a shared dir: %q, %v; want the cache's fallback", r.temp, err)
	}
	if ents, _ := os.ReadDir(shared); len(ents) != 0 {
		t.Fatalf("the shared dir gained %d entries", len(ents))
	}
	// The advice, when nothing is safe, fixes the cache-based fallback:
	// the one that works for exec tools and MCP servers alike.
	if adv := tempAdvice(filepath.Join(shared, "c", "nix-sandbox")); !strings.Contains(adv, "chmod go-w "+shared) {
		t.Fatalf("advice %q does not say what to fix", adv)
	}
	// A fallback too long for socket paths: a shorter cache, set where
	// both kinds of Lectic call get it.
	long := filepath.Join(base, strings.Repeat("x", statedir.MaxTempRoot), "nix-sandbox")
	if adv := tempAdvice(long); !strings.Contains(adv, "XDG_CACHE_HOME") || !strings.Contains(adv, "MCP server's env:") {
		t.Fatalf("advice %q does not say how to shorten the fallback", adv)
	}
}

func TestCheckCache(t *testing.T) {
	base := t.TempDir()
	r := roots{cache: filepath.Join(base, "c", "nix-sandbox")}
	if err := checkCache(&r); err != nil || r.cache != filepath.Join(base, "c", "nix-sandbox") {
		t.Fatalf("checkCache = %q, %v", r.cache, err)
	}
	os.Chmod(filepath.Join(base, "c"), 0o777)
	r = roots{cache: filepath.Join(base, "c", "nix-sandbox")}
	if err := checkCache(&r); err == nil || !strings.Contains(err.Error(), "writable by other users") {
		t.Fatalf("a cache under a shared dir: %v", err)
	}
}

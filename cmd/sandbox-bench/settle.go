package main

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// fastPathAge is how old the files a warm call depends on must be before
// the sandbox writes a fast-path ticket for it (fastpath's racy rule).
const fastPathAge = 2100 * time.Millisecond

// settle waits until everything under paths is older than fastPathAge, so
// the warm scenarios measure the steady state of files that are not being
// edited, which is what a Lectic user's image and flake are.
func (b *bench) settle(ctx context.Context, paths ...string) error {
	var newest time.Time
	for _, root := range paths {
		err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return err
			}
			for _, ts := range []unix.Timespec{st.Mtim, st.Ctim} {
				if t := time.Unix(ts.Unix()); t.After(newest) {
					newest = t
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("settle %s: %w", root, err)
		}
	}
	wait := time.Until(newest.Add(fastPathAge))
	if wait <= 0 {
		return nil
	}
	b.logf("  waiting %.1fs for just-written files to age past the fast path's racy window", wait.Seconds())
	select {
	case <-time.After(wait):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fastPathNote says whether the fast path serves p: one untimed call that
// must be served by it. The scenario is measured either way; the note
// tells a reader which path the numbers are of.
func (b *bench) fastPathNote(ctx context.Context, p proc) string {
	p.env = append(append([]string(nil), p.env...), "_LECTIC_NIX_SANDBOX_FAST=require")
	if _, err := Output(ctx, p, nil); err != nil {
		msg := err.Error()
		if i := strings.Index(msg, "the fast path was not taken"); i >= 0 {
			msg = msg[i:]
		}
		b.logf("  NOTE: %s", msg)
		return "; NOT served by the fast path (" + msg + ")"
	}
	return "; served by the fast path"
}

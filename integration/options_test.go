package integration

import (
	"context"
	"testing"
)

// TestTimeoutValues: --timeout takes a positive duration from 1 ms to a
// year, as seconds or as a Go duration, and nothing that would quietly
// mean no timeout. A bad value is one line and 125 with the fast path on
// (the constructor finds no ticket for it) and off; a good one is served
// by the fast path once a ticket exists.
func TestTimeoutValues(t *testing.T) {
	bad := []string{"NaN", "nan", "inf", "+Inf", "-inf", "1e300", "1e10", "1e-10", "0", "0s", "-1", "-1s",
		"0.0001", "999us", "31536001", "8761h", "0x10", "1_000", " 5", "5x", "", "soon"}
	forEachUser(t, func(t *testing.T, u *testUser) {
		img := privateImage(t, u)
		wd := u.workdir(t)
		settle(t, img)
		call := func(env []string, args ...string) result {
			full := append([]string{"--image", img, "-d", wd}, args...)
			return u.run(context.Background(), t, runOpts{dir: wd, env: env}, full...)
		}
		for _, v := range bad {
			for _, env := range [][]string{nil, slow} {
				r := call(env, "--timeout", v, "true")
				wantSandboxError(t, r, `want a duration from 1ms to 1 year, in seconds (30, 0.5) or with a unit (250ms, 2m, 1h30m)`)
			}
			wantSandboxError(t, call(require, "--timeout="+v, "true"), "the fast path was not taken")
		}
		for _, v := range []string{"0.3", "300ms"} {
			for _, env := range [][]string{nil, require} {
				if r := call(env, "--timeout", v, "sleep", "30"); r.code != 124 {
					t.Fatalf("--timeout %s with %v: %v", v, env, r)
				}
			}
		}
		// The longest timeout reaches the fast path's ticket and is honoured
		// as a timeout (not an overflow that fires at once).
		for _, v := range []string{"31536000", "8760h"} {
			for _, env := range [][]string{nil, require} {
				if r := call(env, "--timeout", v, "sh", "-c", "sleep 1; echo done"); r.code != 0 || r.stdout != "done\n" {
					t.Fatalf("--timeout %s with %v: %v", v, env, r)
				}
			}
		}
	})
}

// TestWarmTTLValues: --warm-ttl-seconds is a whole number of seconds up to a
// year; past that it would overflow into a negative TTL.
func TestWarmTTLValues(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		for _, v := range []string{"-1", "1.5", "1e3", "NaN", "9223372037", "31536001", "+5", ""} {
			wantSandboxError(t, u.sandbox(t, wd, runOpts{}, "--warm-ttl-seconds", v, "true"),
				`want a whole number of seconds from 0 to 31536000`)
		}
		wantOK(t, u.sandbox(t, wd, runOpts{}, "--warm-ttl-seconds", "31536000", "true"))
	})
}

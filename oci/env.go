package oci

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// EnvPolicy is the environment policy as data, so the fast path (C, in
// package fastpath) applies the very rules this package does. Matching is
// on the name upper-cased.
type EnvPolicy struct {
	// HostOnly describe the host session and mean nothing (or something
	// wrong) inside the container, or name host paths of the sandbox's own
	// and Lectic's: exact names, and prefixes (all XDG_* base and session
	// dirs).
	HostOnly         []string
	HostOnlyPrefixes []string
	// InternalPrefixes are the sandbox's and libcontainer's own hand-off
	// variables. They are never passed, even when named: inside, they
	// would make our binary act as an init or agent.
	InternalPrefixes []string
	// SecretParts match a whole part of the name split on "_" (GH_PAT,
	// SENTRY_DSN, NPM_CONFIG__AUTH), so TOKENIZERS_PARALLELISM passes.
	SecretParts []string
	// SecretWords match anywhere in "_"+NAME (PGPASSWORD, MYSECRET), and
	// SecretPrefixes at its start (_AWS_ for AWS_*): the words that are
	// never innocent. Dropping an innocent variable costs an --env,
	// leaking a secret cannot be undone.
	SecretWords    []string
	SecretPrefixes []string
	// URLCredentials withholds any variable whose value holds a URL with
	// credentials (scheme://user:password@), whatever its name
	// (DATABASE_URL, REDIS_URL, a proxy with a password).
	URLCredentials bool
}

// Policy returns the environment policy.
func Policy() EnvPolicy {
	return EnvPolicy{
		HostOnly: []string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "HOSTNAME", "TMPDIR", "TMP", "TEMP",
			"DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "XAUTHORITY",
			"SSH_AUTH_SOCK", "SSH_AGENT_PID", "SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY", "GPG_AGENT_INFO",
			"KRB5CCNAME",
			"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT",
			"PWD", "OLDPWD", "SHLVL", "_", "MAIL",
			// Lectic's directories on the host: the command must not learn
			// where they are (it cannot reach them, see the mounts).
			"LECTIC_CACHE", "LECTIC_TEMP", "LECTIC_DATA", "LECTIC_CONFIG", "LECTIC_RUNTIME", "LECTIC_STATE",
			// The sandbox's own settings, for the host side only.
			PassEnvVar, "LECTIC_NIX_SANDBOX_FLAKE"},
		HostOnlyPrefixes: []string{"XDG_"},
		InternalPrefixes: []string{"_LIBCONTAINER_", "_LECTIC_NIX_SANDBOX_"},
		SecretParts: []string{"KEY", "KEYS", "APIKEY", "TOKEN", "TOKENS", "SECRET", "SECRETS",
			"PASSWORD", "PASSWORDS", "PASSWD", "PASS", "PASSPHRASE", "PWD", "PAT", "JWT", "DSN",
			"AUTH", "COOKIE", "COOKIES", "CREDENTIAL", "CREDENTIALS", "CREDS", "WEBHOOK", "PRIVATE", "SESSION"},
		SecretWords:    []string{"SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE_KEY", "APIKEY"},
		SecretPrefixes: []string{"_AWS_"},
		URLCredentials: true,
	}
}

func (p EnvPolicy) isHostOnly(name string) bool {
	for _, n := range p.HostOnly {
		if name == n {
			return true
		}
	}
	return hasAnyPrefix(strings.ToUpper(name), p.HostOnlyPrefixes)
}

func (p EnvPolicy) isInternal(name string) bool {
	return hasAnyPrefix(strings.ToUpper(name), p.InternalPrefixes)
}

func (p EnvPolicy) isSecret(name string) bool {
	up := "_" + strings.ToUpper(name)
	for _, part := range strings.Split(up, "_") {
		if part != "" && slices.Contains(p.SecretParts, part) {
			return true
		}
	}
	for _, word := range p.SecretWords {
		if strings.Contains(up, word) {
			return true
		}
	}
	return hasAnyPrefix(up, p.SecretPrefixes)
}

// secretValue reports whether the policy withholds a variable for its
// value: a URL with credentials in it.
func (p EnvPolicy) secretValue(value string) bool {
	return p.URLCredentials && HasURLCredentials(value)
}

// HasURLCredentials reports whether s holds scheme://USER:PASSWORD@ (the
// user may be empty): at each "://" preceded by a scheme character, the
// authority up to the first '/', '?', '#' or blank ends in '@' and holds
// a ':'. fastpath.c's has_url_credentials is the same scan.
func HasURLCredentials(s string) bool {
	for i := 0; ; {
		j := strings.Index(s[i:], "://")
		if j < 0 {
			return false
		}
		j += i
		if j > 0 && isSchemeByte(s[j-1]) {
			auth := s[j+3:]
			end := strings.IndexAny(auth, "/?#@ \t\n")
			if end >= 0 && auth[end] == '@' && strings.IndexByte(auth[:end], ':') >= 0 {
				return true
			}
		}
		i = j + 3
	}
}

func isSchemeByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// FilterEnv applies the environment policy to the caller's environ: it
// drops host-only variables (PATH, HOME, USER and LOGNAME, which the
// sandbox sets itself, SHELL, HOSTNAME, temp dirs, XDG_*, display, D-Bus,
// ssh/gpg agents, LD_* loader overrides, PWD, SHLVL, MAIL, Lectic's
// directories...), secret-looking ones and those whose value is a URL with
// credentials (see EnvPolicy). TERM, LANG, LC_*, LS_COLORS and Lectic's
// other variables (LECTIC_INTERLOCUTOR, LECTIC_FILE) pass.
//
// named are --env values: NAME keeps the host's value whatever the policy
// says, NAME=VALUE sets it (appended when the host lacks it); the last
// value for a name wins. Output keeps environ's order.
func FilterEnv(environ []string, named []string) []string {
	out, _ := filterEnv(Policy(), environ, named)
	return out
}

// filterEnv also returns the names it withheld as secrets (not the
// host-only or internal ones, which mean nothing inside), in environ's
// order: what the caller is told about, so a credential given to a tool
// on purpose does not vanish without a word.
func filterEnv(p EnvPolicy, environ []string, named []string) (out, withheld []string) {
	keep, set, order := parseNamed(named)
	seen := map[string]bool{}
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if p.isInternal(name) {
			continue
		}
		if v, ok := set[name]; ok {
			out = append(out, name+"="+v)
			seen[name] = true
			continue
		}
		switch {
		case keep[name] || !p.blocked(name) && !p.secretValue(value):
			out = append(out, kv)
		case p.withheld(name) || !p.blocked(name):
			// A secret name, or a value with credentials in it.
			withheld = append(withheld, name)
		}
	}
	for _, name := range order {
		if !seen[name] && !p.isInternal(name) {
			out = append(out, name+"="+set[name])
		}
	}
	return out, withheld
}

// parseNamed splits --env values into names to keep and names to set; the
// last value for a name wins.
func parseNamed(named []string) (keep map[string]bool, set map[string]string, order []string) {
	keep, set = map[string]bool{}, map[string]string{}
	for _, n := range named {
		name, value, hasValue := strings.Cut(n, "=")
		if name == "" {
			continue
		}
		if !hasValue {
			keep[name] = true
			continue
		}
		if _, dup := set[name]; !dup {
			order = append(order, name)
		}
		set[name] = value
	}
	return keep, set, order
}

// blocked reports whether the policy drops name when it is not named.
func (p EnvPolicy) blocked(name string) bool {
	return p.isHostOnly(name) || p.isInternal(name) || p.isSecret(name)
}

// withheld reports whether a blocked name is dropped as a secret, which
// the caller is told about; host-only and internal names are dropped
// silently.
func (p EnvPolicy) withheld(name string) bool {
	return !p.isHostOnly(name) && !p.isInternal(name) && p.isSecret(name)
}

// EnvRecipe is what a command's environment is made of besides the
// caller's environ: the image's Env (with a default PATH when it has
// none), then the caller's environ filtered by FilterEnv with the --env
// values, then HOME, USER, LOGNAME and TMPDIR=/tmp. A PATH from the caller
// wins over the image's: FilterEnv only lets one through when the caller
// named it. The fast path carries a recipe in its ticket and applies it,
// in C, to each call's own environ.
type EnvRecipe struct {
	Pre   []string // assigned first: the image's Env, then PATH if it has none
	Named []string // --env values, for FilterEnv
	Post  []string // assigned last: HOME, USER, LOGNAME, TMPDIR
}

// NewEnvRecipe is the recipe for an image's Env, the --env values and the
// command's home and user.
func NewEnvRecipe(imageEnv, named []string, home, user string) EnvRecipe {
	pre := append([]string(nil), imageEnv...)
	hasPath := false
	for _, kv := range imageEnv {
		if name, _, _ := strings.Cut(kv, "="); name == "PATH" {
			hasPath = true
		}
	}
	if !hasPath {
		pre = append(pre, "PATH="+DefaultPath)
	}
	return EnvRecipe{
		Pre:   pre,
		Named: append([]string(nil), named...),
		Post:  []string{"HOME=" + home, "USER=" + user, "LOGNAME=" + user, "TMPDIR=/tmp"},
	}
}

// Apply builds the command's environment from the caller's environ.
func (r EnvRecipe) Apply(environ []string) []string {
	env, _ := r.Build(environ)
	return env
}

// Build is Apply that also returns the names of the caller's variables
// the policy withheld as secrets, in environ's order (names only: they
// are reported, their values never leave this process).
func (r EnvRecipe) Build(environ []string) (env, withheld []string) {
	filtered, withheld := filterEnv(Policy(), environ, r.Named)
	return assemble(r.Pre, filtered, r.Post), withheld
}

// NamedSplit is the --env values as FilterEnv reads them: the names kept
// from the host and the names set, in first-mention order with the last
// value given.
func (r EnvRecipe) NamedSplit() (keep []string, set [][2]string) {
	k, values, order := parseNamed(r.Named)
	for name := range k {
		keep = append(keep, name)
	}
	sort.Strings(keep)
	for _, name := range order {
		set = append(set, [2]string{name, values[name]})
	}
	return keep, set
}

// assemble assigns pre, filtered and post in turn, keeping the order in
// which names first appeared and the last value of each; entries without
// a name are skipped.
func assemble(pre, filtered, post []string) []string {
	var names []string
	vals := map[string]string{}
	for _, list := range [][]string{pre, filtered, post} {
		for _, kv := range list {
			name, value, _ := strings.Cut(kv, "=")
			if name == "" {
				continue
			}
			if _, ok := vals[name]; !ok {
				names = append(names, name)
			}
			vals[name] = value
		}
	}
	out := make([]string, 0, len(names))
	for _, n := range names {
		out = append(out, n+"="+vals[n])
	}
	return out
}

// PassEnvVar names the variable that lists, comma-separated, host
// variables to pass as --env NAME would. It exists for callers whose
// sandbox line cannot be changed per tool: an MCP server spec's env: can
// set it.
const PassEnvVar = "LECTIC_NIX_SANDBOX_PASS_ENV"

// ParsePassEnv reads a PassEnvVar value: names separated by commas,
// spaces around them ignored, empty entries skipped.
func ParsePassEnv(value string) ([]string, error) {
	var names []string
	for _, field := range strings.Split(value, ",") {
		name := strings.TrimSpace(field)
		if name == "" {
			continue
		}
		if strings.ContainsAny(name, "= \t\n\r\x00") {
			return nil, fmt.Errorf("%s=%q: %q is not a variable name; list names separated by commas, e.g. %s=GH_TOKEN,NPM_TOKEN",
				PassEnvVar, value, name, PassEnvVar)
		}
		names = append(names, name)
	}
	return names, nil
}

package oci

import "strings"

// isHostOnly: variables that describe the host session and mean nothing
// (or something wrong) inside the container; all XDG_* base and session
// dirs among them.
func isHostOnly(name string) bool {
	switch name {
	case "PATH", "HOME", "USER", "LOGNAME", "SHELL", "HOSTNAME", "TMPDIR", "TMP", "TEMP",
		"DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS",
		"SSH_AUTH_SOCK", "SSH_AGENT_PID", "SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY", "GPG_AGENT_INFO",
		"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT",
		"PWD", "OLDPWD", "SHLVL", "_", "MAIL":
		return true
	}
	return strings.HasPrefix(strings.ToUpper(name), "XDG_")
}

// isInternal: the sandbox's and libcontainer's own hand-off variables.
// They are never passed, even when named: inside, they would make our
// binary act as an init or agent.
func isInternal(name string) bool {
	up := strings.ToUpper(name)
	return strings.HasPrefix(up, "_LIBCONTAINER_") || strings.HasPrefix(up, "_LECTIC_NIX_SANDBOX_")
}

// isSecret matches on "_"+NAME upper-cased, so a name's start counts as a
// word boundary: TOKEN matches like GH_TOKEN. The words that are never
// innocent match anywhere in a name (PGPASSWORD, MYSECRET): dropping an
// innocent variable costs an --env, leaking a secret cannot be undone.
func isSecret(name string) bool {
	up := "_" + strings.ToUpper(name)
	for _, suffix := range []string{"_API_KEY", "_APIKEY", "_TOKEN"} {
		if strings.HasSuffix(up, suffix) {
			return true
		}
	}
	for _, word := range []string{"SECRET", "PASSWORD", "PASSWD", "CREDENTIALS", "PRIVATE_KEY"} {
		if strings.Contains(up, word) {
			return true
		}
	}
	return strings.HasPrefix(up, "_AWS_")
}

// FilterEnv applies the environment policy to the caller's environ: it
// drops host-only variables (PATH, HOME, USER and LOGNAME, which the
// sandbox sets itself, SHELL, HOSTNAME, temp dirs, XDG_*, display, D-Bus,
// ssh/gpg agents, LD_* loader overrides, PWD, SHLVL, MAIL...) and
// secret-looking ones (see Blocked). TERM, LANG, LC_* and LS_COLORS pass.
//
// named are --env values: NAME keeps the host's value whatever the policy
// says, NAME=VALUE sets it (appended when the host lacks it); the last
// value for a name wins. Output keeps environ's order.
func FilterEnv(environ []string, named []string) []string {
	keep, set, order := parseNamed(named)
	var out []string
	seen := map[string]bool{}
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if isInternal(name) {
			continue
		}
		if v, ok := set[name]; ok {
			out = append(out, name+"="+v)
			seen[name] = true
			continue
		}
		if keep[name] || !Blocked(name) {
			out = append(out, kv)
		}
	}
	for _, name := range order {
		if !seen[name] && !isInternal(name) {
			out = append(out, name+"="+set[name])
		}
	}
	return out
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

// Blocked reports whether the policy drops name when it is not named.
func Blocked(name string) bool {
	return isHostOnly(name) || isInternal(name) || isSecret(name)
}

// CommandEnv builds a command's environment: the image's Env (with a
// default PATH when it has none), then the filtered host variables on top,
// then HOME, USER, LOGNAME and TMPDIR=/tmp. A PATH in filtered wins over the
// image's: FilterEnv only lets one through when the caller named it.
func CommandEnv(imageEnv, filtered []string, home, user string) []string {
	var names []string
	vals := map[string]string{}
	put := func(kv string) {
		name, value, _ := strings.Cut(kv, "=")
		if name == "" {
			return
		}
		if _, ok := vals[name]; !ok {
			names = append(names, name)
		}
		vals[name] = value
	}
	for _, kv := range imageEnv {
		put(kv)
	}
	if _, ok := vals["PATH"]; !ok {
		put("PATH=" + DefaultPath)
	}
	for _, kv := range filtered {
		put(kv)
	}
	put("HOME=" + home)
	put("USER=" + user)
	put("LOGNAME=" + user)
	put("TMPDIR=/tmp")
	out := make([]string, 0, len(names))
	for _, n := range names {
		out = append(out, n+"="+vals[n])
	}
	return out
}

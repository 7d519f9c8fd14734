package warm

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxNamesListed bounds how many withheld names one notice spells out.
const maxNamesListed = 10

// withheldNotice returns the notice for the names of withheld variables
// this container has not reported yet, and marks them reported: a name is
// said once per warm container, not in every tool result.
func (a *agent) withheldNotice(names []string) string {
	if len(names) == 0 {
		return ""
	}
	a.noticeMu.Lock()
	defer a.noticeMu.Unlock()
	var fresh []string
	for _, n := range names {
		if !a.reported[n] {
			a.reported[n] = true
			fresh = append(fresh, n)
		}
	}
	return withheldText(fresh)
}

// withheldText says which variables were kept back and how to pass them.
func withheldText(names []string) string {
	if len(names) == 0 {
		return ""
	}
	listed, more := names, ""
	if len(listed) > maxNamesListed {
		listed = listed[:maxNamesListed]
		more = " and " + strconv.Itoa(len(names)-maxNamesListed) + " more"
	}
	listed = append([]string(nil), listed...)
	for i, n := range listed {
		listed[i] = shown(n) // a name may be 128 KiB; the notice is one short line
	}
	return "withheld " + strings.Join(listed, ", ") + more +
		" from the command (variables whose names look like secrets are not passed); to pass one, add --env NAME to the sandbox line or set " +
		"LECTIC_NIX_SANDBOX_PASS_ENV=" + strings.Join(listed, ",") + " in the tool's env"
}

// missingCommand is the Missing and Hint of a "command not found" for an
// absolute argv[0] that the container lacks.
func missingCommand(argv []string, msg string) (path, hint string) {
	if len(argv) == 0 || !filepath.IsAbs(argv[0]) || !absent(argv[0]) {
		return "", ""
	}
	return argv[0], msg + ": it is " + notVisible(argv[0])
}

// missingScript is the Missing and Hint for the script an interpreter was
// given (python3 /abs/tool.py, bash /abs/x.sh, env python3 /abs/x.py),
// when that path is absolute and the container lacks it. The interpreter
// runs and fails in its own words; the hint says why.
func missingScript(argv []string) (path, hint string) {
	script := scriptArg(argv)
	if script == "" || !absent(script) {
		return "", ""
	}
	return script, script + " is " + notVisible(script)
}

// scriptArg is the first operand after an interpreter: the script it was
// asked to run, when argv[0] names one.
func scriptArg(argv []string) string {
	for i := 0; i < 2 && len(argv) > 0; i++ {
		name := filepath.Base(argv[0])
		rest := argv[1:]
		if name == "env" {
			// env [-i] [NAME=VALUE...] INTERPRETER SCRIPT
			for len(rest) > 0 && (strings.HasPrefix(rest[0], "-") || strings.Contains(rest[0], "=")) {
				rest = rest[1:]
			}
			argv = rest
			continue
		}
		if !isInterpreter(name) {
			return ""
		}
		for _, a := range rest {
			if a == "--" || strings.HasPrefix(a, "-") {
				continue
			}
			if filepath.IsAbs(a) {
				return a
			}
			return ""
		}
		return ""
	}
	return ""
}

// isInterpreter reports whether a program name is a shell or a language
// runtime that takes a script file as its first operand.
func isInterpreter(name string) bool {
	base := strings.TrimRight(name, "0123456789.")
	switch base {
	case "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "fish", "tcsh", "csh",
		"python", "pypy", "node", "nodejs", "bun", "deno", "perl", "ruby", "php",
		"lua", "luajit", "Rscript", "tclsh", "awk", "gawk", "julia", "elixir", "guile", "racket":
		return true
	}
	return false
}

// absent reports whether path does not exist where this process looks
// (inside the container).
func absent(path string) bool {
	_, err := os.Stat(path)
	return errors.Is(err, fs.ErrNotExist)
}

// notVisible explains a path the host has and the container does not,
// with the read-only bind that shows its directory at the same place.
func notVisible(path string) string {
	dir := filepath.Dir(path)
	vol := dir + ":" + dir + ":ro"
	if strings.ContainsAny(vol, " \t'\"") {
		vol = "'" + vol + "'"
	}
	return "on the host but not visible in the sandbox; add --volume " + vol + " to the sandbox line"
}

// HostHas reports whether the caller's host has path. Clients ask it of a
// reply's Missing before they print the Hint.
func HostHas(path string) bool {
	if path == "" || !filepath.IsAbs(path) {
		return false
	}
	_, err := os.Stat(path)
	return err == nil
}

// Package lecticnixsandbox holds the files the program ships with: the
// plugin's flake, its Lectic config and the packages example, embedded so
// that `--install` can write a complete plugin from the binary alone.
package lecticnixsandbox

import (
	"embed"
	"io/fs"
)

// flake.* picks up flake.lock when the repository has one, without failing
// the build when it does not.
//
//go:embed lectic.yaml packages.example.nix flake.*
var assets embed.FS

// Assets returns the embedded plugin files (read-only).
func Assets() fs.FS { return assets }

// PluginFiles returns the names of the embedded files that belong in an
// installed plugin directory; flake.lock only when the repository has one.
func PluginFiles() []string {
	var out []string
	for _, name := range []string{"lectic.yaml", "flake.nix", "flake.lock", "packages.example.nix"} {
		if _, err := fs.Stat(assets, name); err == nil {
			out = append(out, name)
		}
	}
	return out
}

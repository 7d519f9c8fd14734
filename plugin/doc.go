// Package plugin installs lectic-nix-sandbox as a Lectic plugin: the binary
// and the embedded flake, Lectic config and packages example, written into
// one directory (by default $LECTIC_DATA/plugins/nix-sandbox) so that
// Lectic's import of that directory and its `lectic nix-sandbox` subcommand
// discovery both find them.
//
// It does not resolve Lectic's directories (cmd does) and does not build
// or run anything.
package plugin

#!/bin/sh
# Prints the vendorHash flake.nix needs: the NAR hash of `go mod vendor`,
# which is what buildGoModule's goModules derivation produces. Works offline
# when the module cache is filled (any `go build` fills it).
#
#   scripts/vendor-hash.sh           print the hash
#   scripts/vendor-hash.sh --check   exit 1 when flake.nix has another one
#   scripts/vendor-hash.sh --write   put the hash into flake.nix
set -eu
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# -o keeps the working tree free of a vendor/ directory.
GOWORK=off GOFLAGS= go mod vendor -o "$tmp/vendor"
[ -d "$tmp/vendor" ] || mkdir "$tmp/vendor"
hash=$(nix --extra-experimental-features nix-command hash path --type sha256 --sri "$tmp/vendor" 2>/dev/null ||
	nix --extra-experimental-features nix-command hash path --type sha256 "$tmp/vendor")

current=$(sed -n 's/^ *vendorHash = "\(sha256-[^"]*\)";.*/\1/p' flake.nix)
case "${1:-}" in
"")
	echo "$hash"
	;;
--check)
	if [ "$current" != "$hash" ]; then
		echo "flake.nix vendorHash is $current, but go mod vendor hashes to $hash; run scripts/vendor-hash.sh --write" >&2
		exit 1
	fi
	;;
--write)
	[ -n "$current" ] || { echo "no vendorHash line found in flake.nix" >&2; exit 1; }
	sed -i "s|vendorHash = \"$current\";|vendorHash = \"$hash\";|" flake.nix
	echo "vendorHash = $hash"
	;;
*)
	echo "usage: scripts/vendor-hash.sh [--check|--write]" >&2
	exit 2
	;;
esac

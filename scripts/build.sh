#!/bin/sh
# Builds the static lectic-nix-sandbox binary to $1 (default
# bin/lectic-nix-sandbox). The Makefile, the integration tests and the
# benchmark harness all build through this script, so they measure and test
# the same binary.
#
# Static, because the binary is bind-mounted into images without a libc;
# cgo, because runc's nsenter is C. musl is preferred when musl-gcc exists:
# a static glibc probes the CPU at every start (dozens of cpuid instructions,
# each a trap under virtualisation), which costs ~0.5 ms per process here.
set -eu
cd "$(dirname "$0")/.."
out=${1:-bin/lectic-nix-sandbox}
export CGO_ENABLED=1
ldflags='-s -w -linkmode external -extldflags -static'
if command -v musl-gcc >/dev/null 2>&1; then
	# musl-gcc searches only musl's headers; nsenter also needs the kernel's
	# uapi headers, which are shared with glibc. Offer just those.
	triple=$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
	inc=$(mktemp -d)
	trap 'rm -rf "$inc"' EXIT
	ln -s /usr/include/linux "$inc/linux"
	ln -s /usr/include/asm-generic "$inc/asm-generic"
	ln -s "/usr/include/$triple/asm" "$inc/asm"
	export CC=musl-gcc CGO_CFLAGS="-I$inc"
fi
go build -trimpath -tags 'netgo osusergo' -ldflags "$ldflags" -o "$out" ./cmd/lectic-nix-sandbox

// Package nixload resolves an image source (a flake, an image file, or the
// host) to an unpacked, content-addressed root filesystem in the cache.
//
// It owns format sniffing (docker-archive, streamLayeredImage, OCI layout),
// safe extraction, the layer and rootfs store, the source caches that let a
// warm call skip Nix entirely, and garbage collection. It knows nothing of
// namespaces or containers.
package nixload

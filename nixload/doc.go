// Package nixload resolves an image source (a flake, an image file, or the
// host) to an unpacked, content-addressed root filesystem in the cache.
//
// It owns format sniffing (docker-archive, streamLayeredImage, OCI layout),
// safe extraction, the layer and rootfs store, the source caches that let a
// warm call skip Nix entirely, and garbage collection. It knows nothing of
// namespaces or containers.
//
// # Reading images
//
// Formats are told apart by content, never by name: a directory must be an
// OCI layout; an executable starting with "#!" or ELF is run and its stdout
// read (streamLayeredImage); anything else is a tar, possibly gzip or zstd
// compressed, holding a docker-archive (manifest.json) or an OCI layout
// (index.json). Member names may be plain, "./"-prefixed or absolute.
//
// An archive is read once, with no temporary copy. Small JSON members are
// kept in memory; every other member is decompressed (by magic), hashed and
// unpacked at the same time. When the manifest and config came first, each
// layer's diff_id is known before it is read: the layer's lock is taken so
// concurrent loaders unpack it once, and a layer already in the store is
// only hashed. When the manifest comes last, layers are unpacked
// speculatively into temp dirs and matched to diff_ids at the end — except
// that a member named after a cached layer's digest (streamLayeredImage's
// "<diff_id>/layer.tar") is only hashed and must prove the name right.
// Nothing is published until every layer has matched its diff_id.
//
// # Extraction (extract.go)
//
// Each layer is written below a directory fd. Names lose a leading "/",
// ".." and NUL are rejected, and every parent is opened with openat2
// RESOLVE_IN_ROOT, so symlinks in the layer (absolute or relative) resolve
// inside it. Symlinks are created verbatim; hardlinks only to regular files
// already in the layer; devices and fifos are skipped (and counted in the
// progress output); setuid/setgid are dropped; no chown; only user.*
// xattrs; mtimes are kept (Python bytecode caches depend on them);
// directories keep the image's mode plus u+rwx, so the cache can always be
// renamed and removed by its owner. Limits caps entries, total bytes and
// any single file, checked against the header before writing.
//
// Whiteout markers (".wh.name", ".wh..wh..opq") stay in the layer dir as
// empty files and are applied when a rootfs is assembled, per directory and
// before that layer's own entries, so an opaque marker anywhere in a layer
// hides only lower layers.
//
// # The store (see docs/CONTRACT.md for the layout)
//
//	layers/sha256-<hex>/      one layer's entries, whiteout markers included
//	rootfs/<chainhex>/root/   the image, hardlinked from the layers
//	rootfs/host-<hex>/        the host image
//	sources/*.json            source caches; their chain_id keeps images from GC
//	sources/choice-<hex>.json the image a default flake last ended up with
//	                          (the flake or the host image) and why (Choice)
//	tmp/<pid>-<rand>{,.lock}  a loader's work dir and the flock it holds
//	locks/                    flock files: store (loads shared, GC exclusive),
//	                          layer-<hex>, rootfs-<name>
//
// Rootfs trees share inodes with their layers, so they must never be
// written: the container mounts them as a read-only overlay lower. A loader
// killed at any point leaves only its tmp/ entry, whose lock the kernel
// released; the next Open removes it. A loader waits for a layer lock only
// while it holds none, so loaders meeting the same layers in a different
// order cannot deadlock.
package nixload

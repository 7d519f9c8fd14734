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
// A tar that is no image is said to be one: a member deeper than any
// image format has (blobs/sha256/DIGEST), or no manifest.json or
// index.json at the end. A member read before the manifest that does not
// unpack as a layer (a source tarball's test data) is an error only if
// the manifest names it. A containers-image dir: layout, as a directory
// or packed in a tar, is refused with the skopeo command that converts it.
//
// # Which image of an archive (refs.go)
//
// An archive may hold several images (docker save a b, podman save -m, an
// OCI layout with two tags). LoadOptions.Ref names one, as skopeo's
// FILE:REF does (a tag compared as docker compares names, a bare tag, or
// @N); without one such an archive is refused with its images listed,
// never read as its first. An OCI index is grouped into images by ref
// name, and each image's variant for this machine's platform is taken; an
// image only for other platforms is refused, naming them.
//
// # Identity
//
// An image is its config: Image.ID is the config's digest. Images with the
// same layers (Image.ChainID) share one tree and nothing else, so a
// changed Env or Cmd with unchanged layers is a new image at no disk cost.
// Every source cache maps its source to an image id. A file source's
// identity (cached.go) is what a rebuild always changes: the path it
// resolves to, and its size, mtime, inode and ctime to the nanosecond; a
// Nix store path is its own identity. An identity taken less than two
// seconds after the file changed is not trusted (it could change again
// within one timestamp tick); fastpath's checks are at least as strict.
//
// # Extraction (extract.go)
//
// Each layer is written below a directory fd. Names lose a leading "/",
// ".." and NUL are rejected, and every parent is opened with openat2
// RESOLVE_IN_ROOT, so symlinks in the layer (absolute or relative) resolve
// inside it. Symlinks are created verbatim; FIFOs are made; hardlinks may
// point at any non-directory entry already in the layer (a file, a
// symlink, a FIFO), never followed; device nodes are left out, with one
// notice line; setuid/setgid are dropped; no chown; only user.* xattrs;
// mtimes are kept (Python bytecode caches depend on them). Blocks of zeros
// are not written, so sparse files and runs of zeros stay holes. Limits
// caps entries and the bytes one image unpacks to (holes included),
// checked against each header before writing.
//
// Modes: a layer's directories are stored u+rwx, so the store can always
// add to, read and remove its own copy; where the image's mode differs it
// goes to the layer's record (layers/sha256-<hex>.json), with the
// directories the tar did not list. The assembled tree shows exactly the
// image's modes (0555 directories, 0400 files), and the store makes its
// trees writable again before removing them.
//
// Whiteout markers (".wh.name", ".wh..wh..opq") stay in the layer dir as
// empty files and are applied when a tree is assembled, per directory and
// before that layer's own entries, so an opaque marker anywhere in a layer
// hides only lower layers. ".wh.." and ".wh..." name no entry and are
// refused; other ".wh..wh." names are aufs metadata and ignored.
//
// # The store
//
//	layers/sha256-<hex>/      one layer's entries, whiteout markers included
//	layers/sha256-<hex>.json  the layer's record (directory modes)
//	trees/<chainhex>/root/    the image tree, hardlinked from the layers
//	trees/<chainhex>/tree.json  the layers it was made of
//	trees/host-<hex>/         the host image's tree
//	images/<idhex>.json       one image: its tree, layers and config
//	sources/*.json            source caches; their image_id keeps images from GC
//	sources/choice-<hex>.json the image a default flake last ended up with
//	                          (the flake or the host image) and why (Choice)
//	tmp/<pid>-<rand>{,.lock}  a loader's work dir and the flock it holds
//	locks/                    flock files: store (loads shared, GC exclusive),
//	                          layer-<hex>, tree-<name>
//
// Trees share inodes with their layers, so they must never be written:
// the container mounts them as a read-only overlay lower, and a published
// tree is sealed (no owner write permission on its files and directories,
// sealTree), so that not even its owner's tools change it by accident or
// by a path the sandbox did not foresee; removeAllForce makes it writable
// again before removing it. A loader killed at any point leaves only its
// tmp/ entry, whose lock the kernel released; the next Open (and GC, which
// reports it) removes it. A loader waits for a layer lock only while it
// holds none, so loaders meeting the same layers in a different order
// cannot deadlock. GC keeps the images the source caches name and the
// trees of running containers (by chain id); trees under rootfs/ are from
// an earlier layout and go once unused.
package nixload

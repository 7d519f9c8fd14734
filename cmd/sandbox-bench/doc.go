// Command sandbox-bench measures what a call through lectic-nix-sandbox costs
// and sets it beside the tools it replaces: rootless podman (exec, run, load),
// bubblewrap over the same root file system, and a bare exec of the same
// binary as the floor.
//
// Every number is the wall time of a whole client process, from fork/exec to
// wait, as Lectic experiences it. The harness starts children with
// os.StartProcess and /dev/null stdio so its own overhead stays small;
// bare_exec shows what that overhead plus an exec costs.
//
// Scenarios, all over one image (by default a generated 96 MiB busybox
// docker-archive in three layers):
//
//	bare_exec       host busybox `true`, no sandbox: the floor
//	client_startup  `lectic-nix-sandbox --version`: the client's own start-up
//	warm_exec       `true` into the warm container (served by the fast path
//	                once the image file is older than its racy window)
//	warm_exec_unconfined  as warm_exec with `--seccomp off` (its own warm
//	                container), timed alternately with warm_exec: what the
//	                default filter and limits cost
//	warm_exec_sh    `sh -c 'echo hi'` into it (output checked once)
//	warm_exec_env10k  a `sh -c` call like warm_exec_sh with 10,000 more
//	                variables in the caller's environment: the fast path's
//	                environment work (warm_exec_sh is its baseline)
//	parallel_16     16 clients at once into it; per-call latency
//	parallel_16_bare  the same 16 clients running host busybox `true`, no
//	                sandbox: what the machine's cores allow parallel_16
//	warm_exec_allowlist  warm_exec with --allow-domain and --add-host, each
//	                call after one of warm_exec_alternating (warm_exec's
//	                call), its baseline at the same moment
//	net_connect     per connection through the allow-list: dial, one byte
//	                each way, close (netprobe, a static client the harness
//	                builds, to an echo server on the host's loopback)
//	net_connect_direct  the same client on the host, straight to the server
//	net_download_256m   256 MiB over HTTP through the allow-list
//	net_download_256m_direct  the same download on the host
//	net_concurrent_100  one call with 100 connections open at once, all of
//	                which must complete
//	nix_fast_path   `--flake` of an offline fixture flake, unchanged, warm
//	cold_start      `--no-keep-warm true` with the rootfs cached, after --stop all
//	*_baseline      with -baseline BIN (another build, say of the previous
//	                commit): warm_exec and cold_start of that build, timed
//	                alternately with this one's
//	first_start     `--no-keep-warm true` with empty cache and temp dirs
//	bwrap           a fresh `bwrap --unshare-all` over the rootfs --load unpacked
//	unpack          `--load` into an empty cache: digests, unpack, tree
//	unpack_tar      `tar -xf` of the same layers plus `sha256sum`: unpack's baseline
//	load_cached     `--load` of the unchanged cached image: recognising it
//	podman_load     first `podman load` into an empty vfs store
//	podman_run      `podman run --rm`
//	podman_exec     `podman exec` into a running container
//
// The product is the rootless path, so the harness never measures as root:
// started as root it re-executes itself as an unprivileged user (sandboxtest
// when it exists, else nobody) and measures from there.
//
// -only NAME[,NAME...] measures a subset (a group that yields several
// results, the podman or the network scenarios, runs whole), for a
// comparison on a busy machine; the run's other rows are then absent.
//
// Output: a table on stdout, DIR/results.json and DIR/results.svg. Nothing
// here asserts timings; goals are reported, not enforced. The exit status is
// non-zero when a scenario failed (or, with CI=true, could not run), so a
// -quick run is a smoke test of the whole sandbox.
//
// Not here: the sandbox itself, unit-level Go benchmarks of its packages.
package main

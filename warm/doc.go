// Package warm keeps one container per sandbox configuration alive so that
// later calls join it in milliseconds. It owns the agent (PID 1 inside the
// container), the client, the wire protocol between them, the supervisor that
// creates a container and cleans up after it, and the registry of warm
// containers under the temp root: keys, locks, sockets, stale detection,
// list, stop and prune. It does not build specs (package oci) nor talk to
// libcontainer beyond namespace.Create (package namespace).
//
// # A call
//
// Run connects to T/warm/<key>/agent.sock (SOCK_SEQPACKET), checks that
// the socket is served by its own uid (SO_PEERCRED; every dial does, so
// nothing, not even a status request, reaches another user's listener),
// and sends one "run" message with its fds 0, 1 and 2 attached
// (SCM_RIGHTS): the
// command writes straight to the caller's stdout. Messages are JSON, except
// what is bytes, not text: a run message's cwd, argv, environment and
// withheld names are its body (package execargs), NUL-terminated strings
// as execve takes them, which follow the JSON header in the same packet
// after a NUL, or, when larger than fits a packet comfortably (maxInline),
// come in a sealed memfd passed as a fourth fd. A request may thus be as
// large as execve allows (ARG_MAX with the caller's stack limit, which the
// command gets too); one that no execve takes is E2BIG (126) before
// anything is sent. The agent hands a memfd body to an identity helper
// as it came, without reading it. The agent answers
// "started" or "error" (125 sandbox, 126 not executable, 127 not found),
// then "exit". When it has something to tell the caller first, it sends
// "notice" before the command starts and starts it once the client has
// printed the lines and answered "noticed": the names of variables the
// client withheld as secrets (each said once per container), and an
// absolute path the command names that the container lacks (a script an
// interpreter was given; for argv[0] the 127 error carries it), which only
// the client can check on the host before it shows the bind that would
// make it visible. The client forwards SIGINT, SIGTERM and SIGHUP as "signal"
// messages and sends SIGTERM when Request.Timeout expires (exit 124). The
// agent follows SIGTERM, SIGINT and SIGHUP with SIGKILL to what is left of
// the command's process group after Request.KillAfter, and the client exits
// 128+N (124 for the timeout). When the client's connection closes before
// the command ends (the client died, even by SIGKILL) the agent kills the
// command's process group. "status"
// and "stop" messages serve List and Stop. The run message carries Proto
// and the build id: an agent of another protocol or build answers with a
// mismatch error and the client replaces it; so does one whose container
// was made for other mounts (Spec.Mounts: the binds' identities, the
// protected files that existed), so no call runs in a container that shows
// a deleted workdir or lacks a cover. A repeated invocation may make
// the same call from C before the Go runtime starts (package fastpath, fed
// by FastRequest and Spec.TicketDir); the agent cannot tell the two apart.
//
// Files of the registry (locks, alive, meta.json, the log) are opened
// with O_NOFOLLOW|O_NONBLOCK and must be regular files (statedir.OpenRegular):
// a FIFO or symlink in their place is junk, never waited on, and a status
// or stop request is bounded by a timeout from connect on.
//
// # Starting a container
//
// When nothing answers, the client takes T/warm/<key>.lock (flock; the file
// lives beside the warm dir, and a lock on a file someone unlinked is
// retried), checks again, removes what a dead container left, and re-executes
// itself as the supervisor in its own session and its own user and mount
// namespace (namespace.CreatorSysProcAttr), without waiting for it: the
// supervisor outlives the call and is reparented when the client exits.
// The supervisor holds an exclusive flock on T/warm/<key>/alive for its whole
// life: that lock, not a pid, is what says a container is alive, so a crash
// or a reboot leaves a dir that anyone can recognise as stale. It creates the
// listening socket (never visible inside the container: T is not mounted
// there), merges the caller into the image's passwd and group files, calls
// namespace.Create with the agent as init (socket at fd 3), writes meta.json
// and reports "ok" or one error line on a pipe. When the agent exits (TTL,
// stop, crash) or the supervisor gets SIGTERM, it removes the socket first,
// destroys the container and removes the dir. When the supervisor dies
// some other way, the container dies with it: the agent has a parent-death
// signal and watches a pipe whose other end only the supervisor holds. A
// dir whose alive lock is free is removed only after the agent meta.json
// names (pid and start time) is gone.
//
// # Keeping the number of containers down
//
// Once its container is ready, a supervisor looks at the others under its
// temp root (under T/warm/evict.lock, one pass at a time): those of the same
// Spec.Family (same workdir and options, another image or build) were
// replaced, and those beyond Spec.MaxWarm idle ones, least recently used
// first, are too many. Each is sent "expire": its agent exits as soon as no
// request runs, unless a run request arrives first. The supervisor's argv
// names its warm dir, so Orphans finds, by /proc, supervisors whose dir was
// deleted under them (the temp root was removed); they end by their TTL,
// and StopOrphans ends them sooner.
//
// # The agent
//
// The agent accepts connections from its own uid and root only, and starts
// each command with
// syscall.ForkExec in its own process group, with the request's cwd
// (checked), environment, and argv[0] resolved with the request's PATH. One
// reaper loop (waitid WNOWAIT, then wait4) collects every child, including
// orphans that reparent to PID 1, and hands tracked exits to their
// connections; spawn and registration share a lock so no exit is missed.
// The agent exits after its TTL with no request running (0 = never), or
// after the first request in one-shot mode.
//
// # Network allow-list
//
// With Spec.Net the supervisor makes the container's network namespace
// itself (package netfwd) before the container, gives it to libcontainer
// to join, and serves it for the container's life; the container's
// /etc/resolv.conf names the sandbox's DNS. The agent gets the other end
// of a report channel (an fd the supervisor names): it keeps a copy of each running call's
// stderr, finds the call whose command holds a refused socket, and writes
// the refusal there, once per host:port and call (netreport.go).
//
// # Confinement
//
// Every command runs under the container's seccomp filter (Spec.Seccomp;
// package seccomp), which the agent itself does not run under. An identity
// helper installs it on itself before it forks anything, so its commands
// inherit it; root-mode commands also go through a helper (with the
// agent's identity) when there is a filter. Commands the agent forks
// itself start through package spawn, which installs the filter in the
// command's process between fork and exec and hands the listener back.
// Whoever holds a listener answers its refusals and writes one line per
// system call name to the call's stderr. The agent and helpers are not
// dumpable. --memory without a cgroup is RLIMIT_AS, set for each command
// as it starts.
//
// # Identity
//
// "root" runs the command as the agent: uid 0 of the container's user
// namespace with the container's capabilities. Every other mode ("caller",
// the default; "id" for --user; "image") puts the command in a nested user
// namespace mapping the target uid/gid to the agent's ids (the caller on the
// host): files the caller owns show as the target uid, files the command
// makes are the caller's, and no capability survives. A nested namespace is
// made once per identity: an identity helper (the agent binary in that
// namespace, as that uid) receives the connection and stdio of each request
// over a socketpair and forks the command itself, which keeps fork's fast
// path (about 1.5 ms less per call); a one-shot agent, which runs a single
// command, forks it directly in a fresh nested namespace instead. For uid 0 (a caller who is host root)
// the helper forks from a thread that dropped every capability, set
// no_new_privs and locked securebits; if no helper can be started, such
// commands start through package spawn, which does the same before execve.
// Supplementary groups are not set: a nested namespace made without a
// privileged helper must deny setgroups.
package warm

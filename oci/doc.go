// Package oci turns a sandbox description (what the user asked for and the
// image it runs on) into an OCI runtime-spec. It is pure: no file system, no
// processes, no environment reads. Everything here is tested by comparing specs.
//
// It owns the mount table, namespaces, id maps, capabilities, masked and
// read-only paths, rlimits, the environment policy, and the plan of covers
// for what the binds must not expose (CoverPlan; package namespace mounts
// it). It does not own how the spec is started (package namespace) or
// where the rootfs comes from (package nixload).
//
// Id mapping: by default the spec has no user namespace of its own. The
// container is created by a supervisor that already sits alone in a user
// namespace where uid/gid 0 is the caller (package namespace), so the
// container shares that namespace and uid 0 inside is the caller outside.
// Config.NewUserNS asks for a nested user namespace instead; its single
// mapping is container 0 -> Config.HostUID/HostGID, which must then be ids
// of the namespace that runs the container (0 in the supervisor).
//
// Limits: the pids limit is RLIMIT_NPROC of every process. Since Linux
// 5.14 the kernel counts it per user namespace and checks the count of
// every ancestor namespace against the limit its creator had, so in the
// container's user namespace (the supervisor's, shared by the agent,
// helpers and root-mode commands) it bounds the whole container, commands
// in nested namespaces included, and not the caller's other processes.
// For host root, whose processes RLIMIT_NPROC does not bind, and wherever a
// cgroup can be had (Limits.Cgroup), pids.max and memory.max hold too.
//
// Paths given to ParseVolume must already be absolute: the caller resolves a
// relative HOST against its working directory before calling.
package oci

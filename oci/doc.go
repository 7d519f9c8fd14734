// Package oci turns a sandbox description (what the user asked for and the
// image it runs on) into an OCI runtime-spec. It is pure: no file system, no
// processes, no environment reads. Everything here is tested by comparing specs.
//
// It owns the mount table, namespaces, id maps, capabilities, masked and
// read-only paths, rlimits and the environment policy. It does not own how
// the spec is started (package namespace) or where the rootfs comes from
// (package nixload).
package oci

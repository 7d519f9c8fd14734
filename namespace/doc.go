// Package namespace is the adapter to runc's libcontainer: it takes an OCI
// spec from package oci, mounts the per-container overlay root, and creates,
// starts and destroys the container. It also holds the libcontainer init
// re-exec entry and the host capability probes behind --doctor.
//
// It does not decide what the container looks like (package oci) nor how
// commands reach it (package warm).
package namespace

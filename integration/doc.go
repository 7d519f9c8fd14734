// Package integration holds end-to-end tests: they build the static binary
// once and run it as an unprivileged user (dropping from root when the test
// runs as root) and as root, against fixture images generated from busybox.
package integration

// Package unixfd reads the file descriptors a message over a unix socket
// carried (SCM_RIGHTS), and closes them, for the packages that pass fds
// between the sandbox's processes (warm's protocol, netfwd's connect
// channel).
package unixfd

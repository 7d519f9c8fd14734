// Package statedir decides where the sandbox may keep state that other
// users must never control: the temp root (warm containers' sockets and
// locks, fast-path tickets) and the cache root (images, homes, the agent
// binary).
//
// A directory is trusted the way OpenSSH's StrictModes trusts a path:
// every directory from / down to it is owned by root or by the caller, and
// none is writable by anyone else, except a sticky directory owned by root
// (/tmp), whose entries only their owners may rename. The directory itself
// must belong to the caller and be writable by no one else. Symlinks are
// resolved first and the real path is judged and returned, so a link that
// someone else may repoint later never decides where state goes.
//
// The temp root has a fixed fallback order (TempCandidates), because the
// path Lectic hands over ($TMPDIR/lectic, or /tmp/lectic for an MCP server
// that gets no TMPDIR) is shared by every user of the machine, and whoever
// created it first owns it. The order depends only on the caller's uid and
// on paths that every kind of call resolves alike, so an exec tool and an
// MCP server of the same user reach the same warm container. fastpath.c
// implements the same rules and the same order in C; the tests of package
// fastpath tie the two.
//
// Nothing here reads the environment: the caller resolves the paths.
package statedir

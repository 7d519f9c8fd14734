// Package fastpath makes a warm call without starting the Go runtime.
//
// A warm call's own work is small: connect to the agent's socket, send one
// request with fds 0-2 attached, wait for the exit status. Starting a
// static Go binary that links libcontainer costs more than that work
// (runtime start, cgo, package initialisers). So the first call of an
// invocation, made in Go, leaves a ticket, and later identical invocations
// are served by fastpath.c, a constructor that runs before the Go runtime,
// as runc's nsexec does, and exits when it has served the call.
//
// # Tickets
//
// A ticket lives at T/fast/<name>, T being the temp root the Go client
// uses: the constructor finds it by the same rules (package statedir: the
// fallback order, every directory up to / trusted, the real path) without
// creating anything, and stops at a candidate the Go client would create.
// Before it sends anything, it checks that the agent's socket is served by
// its own uid (SO_PEERCRED). Its name is a SHA-256 over everything
// the Go client reads to build its request apart from the command words:
// the caller's uid and gid, the binary's path and stat data, the current
// directory, the whole environment (os.Environ order) and the option words
// before the command. Because any of these changing gives another name,
// nothing in the ticket has to be compared with the call.
//
// What the name cannot cover is the file system: the image file, the flake
// directory, the nix executable, the host files of --image host, the
// volumes and the workdir. The ticket lists them as checks, stat data the
// constructor compares before using the ticket. A ticket is only written
// when none of its files changed in the last two seconds, so a file
// rewritten within one timestamp tick cannot pass for unchanged.
//
// The ticket holds the socket path, the run request's JSON header as the
// Go client would send it (the user, the TTL and the build id), the
// working directory, the environment recipe and policy, the timeout and
// the warnings to print. For each call the constructor completes the header
// (counts, size, its own stack limit) and sends the body as the Go client
// does: the working directory, the command words and the environment, as
// bytes (package execargs), inline or in a sealed memfd when large. Nothing
// in it is text: non-UTF-8 arguments and values arrive exactly. A request
// no execve would take (past execargs.MaxExec) ends with E2BIG's message
// and 126, as it does on the Go path. The host's secrets are never
// written down. The constructor applies the ticket's environment recipe to
// each call's own environ, as oci.EnvRecipe.Build does, and names in the
// request the variables it withheld as secrets (names, never values), so
// the agent can report them; it prints the agent's notices as the Go
// client does.
//
// A ticket's guard (Ticket.Guard) lists what the host runs later that the
// call's binds could hold but did not: files that must stay absent and
// directories whose *.lec files are known. One that exists before a call
// sends the call to the Go client, which makes a container that covers
// it; one a call creates is reported after the call, as the Go client
// reports it. The covered files themselves are identity checks.
//
// # Cost
//
// The constructor's work is linear in what it reads: the environment and
// the ticket's variables are matched by name through hash tables (as Go's
// maps do on the Go side), every candidate split of argv is named from one
// running hash of the option words, and the body is laid out in one
// allocation. What it reads is bounded: a ticket is at most 1 MiB, each of
// its policy lists (which every variable is matched against) at most 256
// entries, and its singular records (sock, head, cwd, timeout_ns) appear
// once. BenchmarkFastPathEnv measures a call with 10,000 variables.
//
// # Tests
//
// The package's tests run the constructor as it runs in the binary (the
// test binary links fastpath.c and re-runs itself as a CLI call against a
// fake agent), and drive its parser and request builder in process
// through cgo (ctest.go): FuzzTicketParser feeds it arbitrary ticket bytes,
// FuzzEnvRecipe ties the environment it builds to oci.EnvRecipe.Build.
//
// # Falling back
//
// Whatever the constructor cannot do (no ticket, a check that fails, no
// agent, an agent of another build) leaves the call to the Go client,
// which does it the long way and writes a fresh ticket. The constructor
// never writes, creates containers or prints before it knows the call is
// its own. _LECTIC_NIX_SANDBOX_FAST=off disables it; =require makes a call
// the constructor cannot serve exit 125 with the reason (for tests and
// diagnosis).
package fastpath

// Package spawn starts a command confined from its first instruction: a
// fork and exec, written in C, that confines the child between the two.
//
// Go's fork/exec runs no code of the caller's in the child, so a command
// that must start under a seccomp filter, without capabilities or with a
// memory limit would otherwise need one more exec of a trampoline (this
// 8 MB binary) that confines itself and then execs the command: about
// 1–3 ms per start. Start does it in the forked child instead, in this
// order:
//
//  1. signal handlers the Go runtime installed go back to the default
//     (signals stay blocked from before the fork until exec, so none runs
//     Go's handler in a process without a Go runtime);
//  2. with Attr.User, wait until the parent has written the new user
//     namespace's id maps (setgroups denied), then setgid and setuid;
//  3. setpgid, chdir, and the fds: Attr.Files become 0..n-1, everything
//     else is close-on-exec (close_range), whatever forgot O_CLOEXEC;
//  4. RLIMIT_AS; dropping every capability with the securebits locked;
//     no_new_privs;
//  5. the seccomp filter, with SECCOMP_FILTER_FLAG_NEW_LISTENER; the
//     listener goes back to the parent over a socketpair (SCM_RIGHTS);
//  6. the signal mask of the calling thread, then execve.
//
// A failing step writes which step and errno to a close-on-exec pipe and
// exits; Start reaps the child and returns an *Error that wraps the errno,
// so exec failures read as they do from syscall.ForkExec. The child only
// makes system calls: it is a fork of a multi-threaded process, where
// malloc or musl's all-thread setxid would wait on threads it does not
// have.
package spawn

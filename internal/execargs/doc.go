// Package execargs lays out what a command is started with — its working
// directory, arguments and environment, plus the names of the variables
// the environment policy withheld — as the body of a run request: a
// sequence of NUL-terminated byte strings, the form execve itself takes.
//
// Linux arguments and environment are bytes, not text. JSON would turn
// every byte that is not UTF-8 into U+FFFD, so these strings travel beside
// the JSON header of the request (package warm), never inside it; the C
// fast path (fastpath.c) writes the same layout. The header carries the
// counts (argc, envc, withheldc) and the body's size, and Decode checks the
// body against them exactly.
//
// Size: execve takes at most MaxExec bytes of argument and environment
// strings, whatever the stack limit. A request past that can never run,
// and is refused with E2BIG's own message before it is sent.
package execargs

// Package warm keeps one container per sandbox configuration alive so that
// later calls join it in milliseconds. It owns the agent (PID 1 inside the
// container), the client, the wire protocol between them, the supervisor that
// creates a container and cleans up after it, and the registry of warm
// containers under the temp root: keys, locks, sockets, stale detection,
// list, stop and prune.
package warm

// Package netfwd is the network of a sandbox with an allow-list
// (--allow-domain): a network namespace that the container joins, and the
// supervisor-side service that decides every connection leaving it.
//
// # Where things run
//
// The supervisor (outside the container, in the host's network) creates
// the namespace on a thread of its own (Open), sets it up and creates every
// socket the namespace needs while on that thread, then gives the
// namespace to libcontainer by path (NSPath). The sockets stay in the
// namespace; the process that serves them does not. Nothing in the
// container can see, signal or trace that process, so nothing inside can
// widen what is allowed: the agent has no part in any decision.
//
// # What the namespace holds
//
//   - lo, up, with a local route for every IPv4 and IPv6 address: a
//     connection to any address reaches a socket here or is refused by the
//     kernel at once, never by a timeout.
//   - DNS on port 53 of every address (UDP and TCP, x/net/dns/dnsmessage): every name
//     is answered with an address of netpolicy.NameBlock that maps back to
//     it (localhost and the host name with loopback). Names are never
//     refused here, so a denied name fails where the port is known.
//   - A listening socket on each allowed port (all addresses, IPv4 and
//     IPv6): a connection's destination is the address it was accepted on
//     (getsockname), which names the name. The supervisor checks name and
//     port, resolves the name on the host, refuses addresses that are not
//     public unless --add-host named them, connects, and relays the two
//     connections (relay.go says how, and why not splice(2)). Where
//     commands run under a seccomp filter, most connections never reach
//     these sockets: the supervisor makes them on the host in the
//     command's place (connect.go), and the relay serves the rest.
//   - The proxy endpoint on 127.0.0.1 (netpolicy.Policy.ProxyPort): HTTP
//     CONNECT, absolute-form HTTP and SOCKS5, ending in the same decision.
//   - Observers: packet sockets on lo with a BPF filter that passes only
//     the kernel's refusals (a reset answering a SYN, ICMP port
//     unreachable), so a connection to a port that is not forwarded, or UDP
//     other than DNS, is reported too.
//
// # Refusals
//
// Every refusal becomes a Refusal sent to the agent over a socketpair
// (ReportPair, ServeReports). The agent finds the call whose command holds
// the refused socket (SocketOwners, Parent) and writes one line to that
// call's stderr. For a connection that is still open the supervisor waits
// (briefly) for the line to be written before it resets the connection, so
// the line comes first and the socket can still be found.
//
// It does not decide the policy (package netpolicy), start containers
// (packages namespace and warm), or know about calls (package warm).
package netfwd

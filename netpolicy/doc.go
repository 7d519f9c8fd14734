// Package netpolicy is the network policy of a sandbox as data: which names
// and ports a command may connect to (--allow-domain), which it may never
// (--deny-domain), which names resolve to fixed addresses on the host side
// (--add-host), and which resolved addresses are public. It is pure: no
// sockets, no resolver, no environment reads, so the policy is tested by
// value and the same value becomes part of the warm key.
//
// # Patterns
//
// A pattern is a host part with an optional port part:
//
//	example.com        that name
//	*.example.com      every name below example.com (not example.com itself)
//	*                  every name (never a raw IP address)
//	192.0.2.7          that IPv4 address
//	[2001:db8::7]      that IPv6 address (brackets needed with a port)
//
//	:443  :8000-8100   a port or an inclusive range
//
// An --allow-domain pattern without a port allows 80 and 443; a
// --deny-domain pattern without a port denies every port. Names are
// matched case-insensitively and without a final dot. Deny wins over allow,
// and a denied address stays denied when an allowed name resolves to it
// (DeniedAddr).
//
// # Addresses
//
// A name that is allowed is still refused when it resolves only to
// addresses that are not public (loopback, private, link-local and cloud
// metadata, carrier-grade NAT, multicast, reserved): a public name must not
// become a way into the host or its network. --add-host NAME:IP is the
// explicit way to reach such an address: the host-side resolver answers
// NAME with IP, whatever IP is. An allowed IP:PORT pattern reaches that
// address, private or not, since naming it is explicit too; a loopback
// address cannot be allowed that way, because inside the sandbox it means
// the sandbox's own loopback.
//
// It does not own how the policy is enforced (package netfwd) nor the
// flags that build it (cmd/lectic-nix-sandbox).
package netpolicy

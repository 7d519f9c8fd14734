package netfwd

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// An observer sees the kernel refuse what nothing listens for: the reset
// that answers a connection to a port that is not forwarded, and the ICMP
// "port unreachable" that answers UDP other than DNS. The kernel has
// already answered (the command's connect fails at once); the observer
// only makes sure the caller learns why. It is a packet socket on lo with
// a classic BPF filter that passes those packets and nothing else, so the
// traffic that is forwarded costs a few filter instructions per packet.

// observed is one refusal the kernel made.
type observed struct {
	proto  string         // "tcp" or "udp"
	client netip.AddrPort // the command's end
	server netip.AddrPort // where it tried to go
}

const (
	ethPIP   = 0x0800
	ethPIPv6 = 0x86dd
	snapLen  = 256
)

// filter4 passes IPv4 TCP resets with sequence number 0 (a reset answering
// a SYN: RFC 793's reply to a segment without ACK) and ICMP port
// unreachable.
var filter4 = []bpf.Instruction{
	bpf.LoadAbsolute{Off: 9, Size: 1},                                     // 0: protocol
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_TCP, SkipFalse: 5},  // 1: -> 7
	bpf.LoadMemShift{Off: 0},                                              // 2: X = header length
	bpf.LoadIndirect{Off: 13, Size: 1},                                    // 3: TCP flags
	bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x04, SkipFalse: 7},            // 4: RST, else -> 12
	bpf.LoadIndirect{Off: 4, Size: 4},                                     // 5: sequence number
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipTrue: 4, SkipFalse: 5},    // 6: -> 11 / 12
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_ICMP, SkipFalse: 4}, // 7: -> 12
	bpf.LoadMemShift{Off: 0},                                              // 8
	bpf.LoadIndirect{Off: 0, Size: 2},                                     // 9: type, code
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0303, SkipFalse: 1},            // 10: unreachable/port
	bpf.RetConstant{Val: snapLen},                                         // 11
	bpf.RetConstant{Val: 0},                                               // 12
}

// filter6 is filter4 for IPv6 (fixed header; extension headers are not
// followed) with ICMPv6 destination unreachable / port unreachable.
var filter6 = []bpf.Instruction{
	bpf.LoadAbsolute{Off: 6, Size: 1},                                       // 0: next header
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_TCP, SkipFalse: 4},    // 1: -> 6
	bpf.LoadAbsolute{Off: 40 + 13, Size: 1},                                 // 2: TCP flags
	bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x04, SkipFalse: 6},              // 3: -> 10
	bpf.LoadAbsolute{Off: 40 + 4, Size: 4},                                  // 4: sequence number
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipTrue: 3, SkipFalse: 4},      // 5: -> 9 / 10
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_ICMPV6, SkipFalse: 3}, // 6: -> 10
	bpf.LoadAbsolute{Off: 40, Size: 2},                                      // 7: type, code
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0104, SkipFalse: 1},              // 8
	bpf.RetConstant{Val: snapLen},                                           // 9
	bpf.RetConstant{Val: 0},                                                 // 10
}

// openObserver opens a packet socket on lo for one ethertype with filter.
func openObserver(loIndex int, etherType uint16, filter []bpf.Instruction) (*os.File, error) {
	raw, err := bpf.Assemble(filter)
	if err != nil {
		return nil, fmt.Errorf("assemble the refusal filter: %w", err)
	}
	ins := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		ins[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	proto := int(htons(etherType))
	return socketFile(unix.AF_PACKET, unix.SOCK_DGRAM, proto, "observe refused connections", func(fd int) error {
		prog := unix.SockFprog{Len: uint16(len(ins)), Filter: &ins[0]}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
			return fmt.Errorf("attach filter: %w", err)
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(etherType), Ifindex: loIndex})
	})
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// parseRefusal reads one packet the filters passed; ok is false for
// anything else.
func parseRefusal(b []byte) (observed, bool) {
	if len(b) < 1 {
		return observed{}, false
	}
	switch b[0] >> 4 {
	case 4:
		return parse4(b)
	case 6:
		return parse6(b)
	}
	return observed{}, false
}

func parse4(b []byte) (observed, bool) {
	if len(b) < 20 {
		return observed{}, false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl+8 {
		return observed{}, false
	}
	src := netip.AddrFrom4([4]byte(b[12:16]))
	dst := netip.AddrFrom4([4]byte(b[16:20]))
	l4 := b[ihl:]
	switch b[9] {
	case unix.IPPROTO_TCP:
		if len(l4) < 14 || l4[13]&0x04 == 0 || binary.BigEndian.Uint32(l4[4:8]) != 0 {
			return observed{}, false
		}
		// The reset comes from where the command tried to go.
		return observed{proto: "tcp",
			server: netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:2])),
			client: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:4]))}, true
	case unix.IPPROTO_ICMP:
		if l4[0] != 3 || l4[1] != 3 {
			return observed{}, false
		}
		return inner4(l4[8:])
	}
	return observed{}, false
}

// inner4 reads the UDP datagram an ICMP error quotes.
func inner4(b []byte) (observed, bool) {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_UDP {
		return observed{}, false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl+4 {
		return observed{}, false
	}
	src := netip.AddrFrom4([4]byte(b[12:16]))
	dst := netip.AddrFrom4([4]byte(b[16:20]))
	u := b[ihl:]
	return observed{proto: "udp",
		client: netip.AddrPortFrom(src, binary.BigEndian.Uint16(u[0:2])),
		server: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(u[2:4]))}, true
}

func parse6(b []byte) (observed, bool) {
	if len(b) < 48 {
		return observed{}, false
	}
	src := netip.AddrFrom16([16]byte(b[8:24]))
	dst := netip.AddrFrom16([16]byte(b[24:40]))
	l4 := b[40:]
	switch b[6] {
	case unix.IPPROTO_TCP:
		if len(l4) < 14 || l4[13]&0x04 == 0 || binary.BigEndian.Uint32(l4[4:8]) != 0 {
			return observed{}, false
		}
		return observed{proto: "tcp",
			server: netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:2])),
			client: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:4]))}, true
	case unix.IPPROTO_ICMPV6:
		if l4[0] != 1 || l4[1] != 4 {
			return observed{}, false
		}
		in := l4[8:]
		if len(in) < 44 || in[0]>>4 != 6 || in[6] != unix.IPPROTO_UDP {
			return observed{}, false
		}
		return observed{proto: "udp",
			client: netip.AddrPortFrom(netip.AddrFrom16([16]byte(in[8:24])), binary.BigEndian.Uint16(in[40:42])),
			server: netip.AddrPortFrom(netip.AddrFrom16([16]byte(in[24:40])), binary.BigEndian.Uint16(in[42:44]))}, true
	}
	return observed{}, false
}

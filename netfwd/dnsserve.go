package netfwd

import (
	"encoding/binary"
	"io"
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxDNSMessage bounds a query over UDP or TCP; queries are a few dozen
// bytes.
const maxDNSMessage = 4096

// dnsIdle bounds how long a TCP DNS connection may sit without a query.
const dnsIdle = 10 * time.Second

// enablePktinfo makes a UDP socket report each datagram's destination
// address, so an answer leaves from the address the query went to: a
// query to 8.8.8.8:53 inside the sandbox reaches this socket (every
// address is local) and must seem to come back from 8.8.8.8.
func enablePktinfo(fd int, v6 bool) error {
	if v6 {
		return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
	}
	return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
}

// serveDNSUDP answers the queries on c until it is closed. Answers are
// computed in microseconds, so one loop serves them in turn.
func (n *Net) serveDNSUDP(c *net.UDPConn, v6 bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, maxDNSMessage)
	oob := make([]byte, 128)
	for {
		var k, oobn int
		var from unix.Sockaddr
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			k, oobn, _, from, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
			return rerr != unix.EAGAIN && rerr != unix.EINTR
		}); err != nil {
			return // closed
		}
		if rerr != nil || from == nil {
			continue
		}
		resp := n.dns.answer(buf[:k])
		if resp == nil {
			continue
		}
		reply := replyPktinfo(oob[:oobn], v6)
		_ = rc.Write(func(fd uintptr) bool {
			err := unix.Sendmsg(int(fd), resp, reply, from, 0)
			return err != unix.EAGAIN && err != unix.EINTR
		})
	}
}

// replyPktinfo turns a query's destination (IP_PKTINFO / IPV6_PKTINFO
// received) into the control message that makes it the answer's source.
func replyPktinfo(oob []byte, v6 bool) []byte {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	for _, m := range msgs {
		switch {
		case !v6 && m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			in := (*unix.Inet4Pktinfo)(unsafe.Pointer(&m.Data[0]))
			out := unix.Inet4Pktinfo{Spec_dst: in.Addr}
			return pktinfoCmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, unsafe.Slice((*byte)(unsafe.Pointer(&out)), unix.SizeofInet4Pktinfo))
		case v6 && m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			in := (*unix.Inet6Pktinfo)(unsafe.Pointer(&m.Data[0]))
			out := unix.Inet6Pktinfo{Addr: in.Addr}
			return pktinfoCmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, unsafe.Slice((*byte)(unsafe.Pointer(&out)), unix.SizeofInet6Pktinfo))
		}
	}
	return nil
}

func pktinfoCmsg(level, typ int, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = int32(level)
	h.Type = int32(typ)
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

// serveDNSTCP answers queries on each connection of l (two-byte length,
// then the message, RFC 1035 4.2.2) until l is closed.
func (n *Net) serveDNSTCP(l *net.TCPListener) {
	n.acceptLoop(l, func(c *net.TCPConn) {
		var lenBuf [2]byte
		buf := make([]byte, maxDNSMessage)
		for {
			_ = c.SetReadDeadline(time.Now().Add(dnsIdle))
			if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
				return
			}
			size := int(binary.BigEndian.Uint16(lenBuf[:]))
			if size > len(buf) {
				return
			}
			if _, err := io.ReadFull(c, buf[:size]); err != nil {
				return
			}
			resp := n.dns.answer(buf[:size])
			if resp == nil {
				return
			}
			out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(resp)), uint16(len(resp)))
			if _, err := c.Write(append(out, resp...)); err != nil {
				return
			}
		}
	})
}

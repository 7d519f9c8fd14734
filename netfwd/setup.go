package netfwd

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// listenBacklog is the accept queue of every listening socket; a call that
// opens many connections at once must not see refusals from a full queue.
const listenBacklog = 4096

// inNewNamespace runs f on a thread of its own in a new network namespace
// and returns the namespace, open. See onThreadIn.
func inNewNamespace(f func() error) (*os.File, error) {
	var ns *os.File
	err := onThreadIn(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("create a network namespace: %w", err)
		}
		var err error
		if ns, err = os.Open("/proc/thread-self/ns/net"); err != nil {
			return fmt.Errorf("open the new network namespace: %w", err)
		}
		if err := f(); err != nil {
			ns.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ns, nil
}

// inNamespace runs f on a thread that joined the namespace ns; sockets f
// creates belong to ns. See onThreadIn.
func inNamespace(ns *os.File, f func() error) error {
	return onThreadIn(func() error {
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter the sandbox's network namespace: %w", err)
		}
		return f()
	})
}

// onThreadIn runs enter, which moves the current thread into another
// network namespace, on a locked thread, and brings the thread back to the
// process's namespace afterwards. A thread that cannot be brought back
// stays locked: the runtime then ends it (or, for the main thread, never
// schedules on it again), so no other goroutine ever runs in a sandbox's
// namespace.
func onThreadIn(enter func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- fmt.Errorf("open this thread's network namespace: %w", err)
			return
		}
		defer home.Close()
		err = enter()
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- err
	}()
	return <-ch
}

// routeEverythingToLo brings lo up and makes every address local, so a
// connection to any address, from the name block or not, reaches a
// listening socket here or is refused at once (no route, no timeout).
// It reports whether IPv6 is routed too.
func routeEverythingToLo() (ipv6 bool, err error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return false, fmt.Errorf("find lo: %w", err)
	}
	bigSegments(lo)
	if err := netlink.LinkSetUp(lo); err != nil {
		return false, fmt.Errorf("bring lo up: %w", err)
	}
	route := func(dst string) error {
		p := netip.MustParsePrefix(dst)
		return netlink.RouteAdd(&netlink.Route{
			LinkIndex: lo.Attrs().Index,
			Dst:       &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(0, p.Addr().BitLen())},
			Type:      unix.RTN_LOCAL,
			Table:     unix.RT_TABLE_LOCAL,
			Scope:     netlink.SCOPE_HOST,
		})
	}
	if err := route("0.0.0.0/0"); err != nil {
		return false, fmt.Errorf("route IPv4 to lo: %w", err)
	}
	// A kernel without IPv6 (or with it disabled) still serves IPv4.
	if err := route("::/0"); err != nil {
		return false, nil
	}
	return true, nil
}

// bigSegmentSize is the largest segment worth asking lo for (BIG TCP's
// limit).
const bigSegmentSize = 512 << 10

// bigSegments lets TCP on lo build segments as large as the kernel allows
// (BIG TCP, Linux 6.3+ for IPv4) instead of 64 KiB. Every byte a command
// downloads crosses lo once more than it would without the sandbox, and
// per segment, not per byte, is where that costs: relaying a download
// took 51-58 ms of CPU per 64 MiB with them against 70-92 ms without
// (go test ./netfwd -bench Download/forwarded, cpu-ms/op). A kernel
// without them refuses the setting, and lo keeps its 64 KiB.
func bigSegments(lo netlink.Link) {
	size := bigSegmentSize
	if max := int(lo.Attrs().TSOMaxSize); max > 0 {
		size = min(size, max)
	}
	if size <= 64<<10 {
		return
	}
	_ = netlink.LinkSetGSOMaxSize(lo, size)
	_ = netlink.LinkSetGSOIPv4MaxSize(lo, size)
	_ = netlink.LinkSetGROMaxSize(lo, size)
	_ = netlink.LinkSetGROIPv4MaxSize(lo, size)
}

// socketFile makes a close-on-exec, non-blocking socket and hands it to
// setup; on any error the socket is closed.
func socketFile(family, typ, proto int, name string, setup func(fd int) error) (*os.File, error) {
	fd, err := unix.Socket(family, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("%s: socket: %w", name, err)
	}
	if err := setup(fd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// sockaddr is a bind address for family.
func sockaddr(family int, ap netip.AddrPort) unix.Sockaddr {
	if family == unix.AF_INET6 {
		return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
}

func family(ap netip.AddrPort) int {
	if ap.Addr().Is6() {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// listenTCP listens on ap; dual makes an IPv6 wildcard accept IPv4 too.
func listenTCP(ap netip.AddrPort, dual bool) (*net.TCPListener, error) {
	fam := family(ap)
	f, err := socketFile(fam, unix.SOCK_STREAM, 0, "listen on tcp "+ap.String(), func(fd int) error {
		if fam == unix.AF_INET6 {
			only := 1
			if dual {
				only = 0
			}
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, only); err != nil {
				return err
			}
		}
		if err := unix.Bind(fd, sockaddr(fam, ap)); err != nil {
			return err
		}
		return unix.Listen(fd, listenBacklog)
	})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listen on tcp %s: %w", ap, err)
	}
	return l.(*net.TCPListener), nil
}

// listenUDP binds a UDP socket at ap (IPv6 sockets take IPv6 only) that
// reports each datagram's destination (enablePktinfo).
func listenUDP(ap netip.AddrPort) (*net.UDPConn, error) {
	fam := family(ap)
	f, err := socketFile(fam, unix.SOCK_DGRAM, 0, "listen on udp "+ap.String(), func(fd int) error {
		if fam == unix.AF_INET6 {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
				return err
			}
		}
		if err := enablePktinfo(fd, fam == unix.AF_INET6); err != nil {
			return err
		}
		return unix.Bind(fd, sockaddr(fam, ap))
	})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("listen on udp %s: %w", ap, err)
	}
	return c.(*net.UDPConn), nil
}

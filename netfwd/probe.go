package netfwd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netpolicy"
)

// probeName is the name the probe maps to a listener of its own.
const probeName = "probe.lectic-nix-sandbox.invalid"

// Probe checks, from a process that may create network namespaces (the
// supervisor's kind), that everything --allow-domain needs works here: a
// namespace with routes and sockets, its DNS, a forwarded connection to a
// listener on the host's loopback through --add-host, and a report of a
// connection to a port that is not allowed. It returns what failed.
func Probe() (ipv6 bool, err error) {
	host, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return false, fmt.Errorf("listen on the host's loopback: %w", err)
	}
	defer host.Close()
	port := uint16(host.Addr().(*net.TCPAddr).Port)
	go func() {
		for {
			c, err := host.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "ok")
			c.Close()
		}
	}()
	var p netpolicy.Policy
	if err := errors.Join(p.Allow(probeName+":"+strconv.Itoa(int(port))), p.AddHost(probeName+":127.0.0.1")); err != nil {
		return false, err
	}
	n, err := Open(Options{Policy: &p})
	if err != nil {
		return false, err
	}
	defer n.Close()
	if n.observeErr != nil {
		return false, fmt.Errorf("connections to ports that are not allowed would not be reported: %w", n.observeErr)
	}
	rep := &probeReporter{got: make(chan Refusal, 4)}
	n.Start(rep)
	err = inNamespace(n.ns, func() error {
		addr, err := probeLookup(probeName)
		if err != nil {
			return err
		}
		if err := probeFetch(netip.AddrPortFrom(addr, port)); err != nil {
			return err
		}
		return probeRefused(netip.AddrPortFrom(addr, port+1))
	})
	if err != nil {
		return false, err
	}
	select {
	case <-rep.got:
	case <-time.After(5 * time.Second):
		return false, errors.New("a refused connection was not reported (the packet socket on lo saw nothing)")
	}
	return n.IPv6(), nil
}

// probeLookup asks the namespace's DNS for name.
func probeLookup(name string) (netip.Addr, error) {
	c, err := net.DialTimeout("udp4", "127.0.0.1:53", 5*time.Second)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("reach the sandbox DNS: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	q, err := queryA(name)
	if err != nil {
		return netip.Addr{}, err
	}
	if _, err := c.Write(q); err != nil {
		return netip.Addr{}, fmt.Errorf("query the sandbox DNS: %w", err)
	}
	buf := make([]byte, maxDNSMessage)
	k, err := c.Read(buf)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read the sandbox DNS's answer: %w", err)
	}
	var p dnsmessage.Parser
	if _, err := p.Start(buf[:k]); err != nil {
		return netip.Addr{}, fmt.Errorf("the sandbox DNS's answer: %w", err)
	}
	_ = p.SkipAllQuestions()
	for {
		h, err := p.AnswerHeader()
		if err != nil {
			return netip.Addr{}, fmt.Errorf("the sandbox DNS gave no address for %s", name)
		}
		if h.Type != dnsmessage.TypeA {
			_ = p.SkipAnswer()
			continue
		}
		a, err := p.AResource()
		if err != nil {
			return netip.Addr{}, err
		}
		return netip.AddrFrom4(a.A), nil
	}
}

// queryA is an A query for name.
func queryA(name string) ([]byte, error) {
	n, err := dnsmessage.NewName(name + ".")
	if err != nil {
		return nil, err
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 1, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(dnsmessage.Question{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}); err != nil {
		return nil, err
	}
	return b.Finish()
}

// probeFetch connects through the forwarder and reads the host's "ok".
func probeFetch(ap netip.AddrPort) error {
	c, err := net.DialTimeout("tcp", ap.String(), 5*time.Second)
	if err != nil {
		return fmt.Errorf("connect to %s inside: %w", ap, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "ok" {
		return fmt.Errorf("a forwarded connection to the host's loopback read %q (%v), want \"ok\"", b, err)
	}
	return nil
}

// probeRefused connects to a port that is not allowed: the kernel must
// refuse at once.
func probeRefused(ap netip.AddrPort) error {
	_, err := net.DialTimeout("tcp", ap.String(), 5*time.Second)
	if !errors.Is(err, unix.ECONNREFUSED) {
		return fmt.Errorf("a connection to a port that is not allowed ended with %v, want \"connection refused\"", err)
	}
	return nil
}

type probeReporter struct {
	mu  sync.Mutex
	got chan Refusal
}

func (r *probeReporter) Report(_ context.Context, ref Refusal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case r.got <- ref:
	default:
	}
}

// Command netprobe is the network client of sandbox-bench's network
// scenarios. It is built static (CGO_ENABLED=0) so the same binary runs on
// the host and in an image without a libc, and the two sides of each
// comparison run the same client code. It times only its own network work
// and prints the numbers on stdout:
//
//	netprobe connect HOST:PORT N     N sequential connections to an echo
//	                                 server: dial, one byte each way, close;
//	                                 one line of nanoseconds per connection
//	netprobe download HOST:PORT PATH an HTTP/1.0 GET; prints "NANOS BYTES"
//	netprobe concurrent HOST:PORT N  N connections open at once, each with a
//	                                 round trip; prints how many completed and
//	                                 exits 1 unless all did
//
// HOST is resolved once, before anything is timed, with the system's DNS
// (in the sandbox: the allow-list's).
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "netprobe:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	if len(args) != 3 {
		return errors.New("usage: netprobe connect|download|concurrent HOST:PORT N|PATH")
	}
	addr, err := resolve(args[1])
	if err != nil {
		return err
	}
	switch args[0] {
	case "connect":
		n, err := strconv.Atoi(args[2])
		if err != nil {
			return err
		}
		return connect(addr, n, out)
	case "download":
		return download(addr, args[2], out)
	case "concurrent":
		n, err := strconv.Atoi(args[2])
		if err != nil {
			return err
		}
		return concurrent(addr, n, out)
	}
	return fmt.Errorf("unknown mode %q", args[0])
}

// resolve turns HOST:PORT into IP:PORT with one lookup.
func resolve(hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIP(ctx, "ip4", host)
	if err != nil || len(ips) == 0 {
		return "", fmt.Errorf("resolve %s: %v", host, err)
	}
	return net.JoinHostPort(ips[0].String(), port), nil
}

// roundTrip dials addr and exchanges one byte.
func roundTrip(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{'x'}); err != nil {
		return err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return err
	}
	return nil
}

func connect(addr string, n int, out io.Writer) error {
	w := bufio.NewWriter(out)
	for i := 0; i < n; i++ {
		start := time.Now()
		if err := roundTrip(addr); err != nil {
			return fmt.Errorf("connection %d: %w", i+1, err)
		}
		fmt.Fprintln(w, time.Since(start).Nanoseconds())
	}
	return w.Flush()
}

func download(addr, path string, out io.Writer) error {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: bench\r\n\r\n", path); err != nil {
		return err
	}
	buf := make([]byte, 256<<10)
	var total int64
	headerDone := false
	var head []byte
	for {
		k, err := c.Read(buf)
		if k > 0 {
			if headerDone {
				total += int64(k)
			} else {
				head = append(head, buf[:k]...)
				if i := bytes.Index(head, []byte("\r\n\r\n")); i >= 0 {
					headerDone = true
					total += int64(len(head) - i - 4)
					head = nil
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	fmt.Fprintln(out, time.Since(start).Nanoseconds(), total)
	return nil
}

func concurrent(addr string, n int, out io.Writer) error {
	// Every connection is open before any byte is sent, so all n exist at
	// once, through the allow-list's accept queue and forwarder together.
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i+1, err)
		}
		defer c.Close()
		conns[i] = c
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			var b [1]byte
			if _, err := c.Write([]byte{'x'}); err != nil {
				return
			}
			if _, err := io.ReadFull(c, b[:]); err != nil {
				return
			}
			mu.Lock()
			ok++
			mu.Unlock()
		}()
	}
	wg.Wait()
	fmt.Fprintln(out, ok)
	if ok != n {
		return fmt.Errorf("%d of %d connections completed", ok, n)
	}
	return nil
}

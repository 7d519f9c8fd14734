package netfwd

import (
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netpolicy"
)

// rawServer sends size bytes to every connection, from a buffer, so the
// client side is what is measured.
func rawServer(tb testing.TB, size int) uint16 {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	buf := payload(1 << 20)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for left := size; left > 0; left -= len(buf) {
					if _, err := c.Write(buf[:min(left, len(buf))]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

func benchNet(b *testing.B, port uint16) *nsEnv {
	if os.Geteuid() != 0 {
		b.Skip("needs root to make a network namespace in-process")
	}
	var p netpolicy.Policy
	if err := p.Allow("bench.test:" + strconv.Itoa(int(port))); err != nil {
		b.Fatal(err)
	}
	if err := p.AddHost("bench.test:127.0.0.1"); err != nil {
		b.Fatal(err)
	}
	n, err := Open(Options{Policy: &p})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { n.Close() })
	n.Start(nil)
	return &nsEnv{n: n, port: port}
}

// BenchmarkDownload compares 64 MiB through the forwarder with the same
// read loop on a direct loopback connection.
func BenchmarkDownload(b *testing.B) {
	const size = 64 << 20
	port := rawServer(b, size)
	e := benchNet(b, port)
	var addr netip.Addr
	_ = inNamespace(e.n.ns, func() error { var err error; addr, err = probeLookup("bench.test"); return err })
	read := func(b *testing.B, c net.Conn) {
		// A client that reads big, as netprobe does: the relay, not the
		// client, must be what limits.
		n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{c}, make([]byte, 256<<10))
		c.Close()
		if err != nil || n != size {
			b.Fatalf("read %d, %v", n, err)
		}
	}
	b.Run("direct", func(b *testing.B) {
		b.SetBytes(size)
		defer cpuPerOp(b)()
		for i := 0; i < b.N; i++ {
			c, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(int(port)))
			if err != nil {
				b.Fatal(err)
			}
			read(b, c)
		}
	})
	b.Run("forwarded", func(b *testing.B) {
		b.SetBytes(size)
		defer cpuPerOp(b)()
		for i := 0; i < b.N; i++ {
			c, err := e.dial("tcp4", netip.AddrPortFrom(addr, port).String())
			if err != nil {
				b.Fatal(err)
			}
			read(b, c)
		}
	})
}

// cpuPerOp reports the CPU time this process (server, forwarder and client
// alike) spent per operation: less noisy than wall time on a busy machine.
func cpuPerOp(b *testing.B) func() {
	var before unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &before)
	return func() {
		var after unix.Rusage
		_ = unix.Getrusage(unix.RUSAGE_SELF, &after)
		cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) / time.Duration(b.N)
		b.ReportMetric(float64(cpu.Milliseconds()), "cpu-ms/op")
	}
}

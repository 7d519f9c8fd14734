package integration

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// bigSize is the large download: big enough to take many splices.
const bigSize = 64 << 20

// hostHTTP serves on the host's loopback, where nothing inside the sandbox
// reaches unless a name is mapped to it with --add-host.
type hostHTTP struct {
	port   int
	bigSum string
}

func startHostHTTP(t *testing.T) *hostHTTP {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, bigSize)
	for i := 0; i+8 <= len(big); i += 8 {
		binary.LittleEndian.PutUint64(big[i:], uint64(i)*0x9e3779b97f4a7c15)
	}
	sum := sha256.Sum256(big)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the host\n")
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(big)))
		_, _ = w.Write(big)
	})
	mux.HandleFunc("/drip", func(w http.ResponseWriter, r *http.Request) {
		// One line, then the connection stays open until the client
		// goes (or 10 s pass), so the client can look at it while open.
		fmt.Fprintf(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		// Holds each connection open long enough for all to overlap.
		time.Sleep(300 * time.Millisecond)
		fmt.Fprintf(w, "slow hello\n")
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return &hostHTTP{port: l.Addr().(*net.TCPAddr).Port, bigSum: hex.EncodeToString(sum[:])}
}

// netArgs is the allow-list every test here shares, so their calls share
// one warm container per user and workdir.
func (h *hostHTTP) netArgs() []string {
	p := strconv.Itoa(h.port)
	return []string{
		"--allow-domain", "allowed.test:" + p + ",denied.test:" + p,
		"--deny-domain", "denied.test",
		"--add-host", "allowed.test:127.0.0.1",
		"--add-host", "denied.test:127.0.0.1",
	}
}

// get is a proxy-unaware HTTP/1.0 request with nc.
func get(host string, port int, path string) string {
	return fmt.Sprintf(`printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' | nc %s %d`, path, host, host, port)
}

func wantLine(t *testing.T, r result, line string) {
	t.Helper()
	if strings.Count(r.stderr, "lectic-nix-sandbox: "+line+"\n") != 1 {
		t.Errorf("stderr lacks the line %q exactly once: %v", line, r)
	}
	if strings.Contains(r.stdout, "lectic-nix-sandbox") {
		t.Errorf("a refusal reached stdout: %v", r)
	}
}

func TestNetworkAllowDomain(t *testing.T) {
	h := startHostHTTP(t)
	p := strconv.Itoa(h.port)
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		run := func(script string) result {
			return u.sandbox(t, wd, runOpts{}, append(h.netArgs(), "sh", "-c", script)...)
		}
		t.Run("dns resolves allowed and denied names alike", func(t *testing.T) {
			r := run("busybox nslookup allowed.test; busybox nslookup denied.test; busybox nslookup nowhere.example")
			addrs := regexp.MustCompile(`Address: (198\.1[89]\.\d+\.\d+)`).FindAllStringSubmatch(r.stdout, -1)
			if r.code != 0 || len(addrs) != 3 || addrs[0][1] == addrs[1][1] {
				t.Fatalf("want three distinct addresses of 198.18.0.0/15: %v", r)
			}
			if r.stderr != "" {
				t.Errorf("a lookup is never refused: %v", r)
			}
		})
		t.Run("allowed name reaches the host, with and without the proxy", func(t *testing.T) {
			r := run("wget -q -O - http://allowed.test:" + p + "/ && env -u http_proxy -u HTTP_PROXY " + get("allowed.test", h.port, "/") + " | tail -n 1")
			if r.code != 0 || r.stdout != "hello from the host\nhello from the host\n" || r.stderr != "" {
				t.Fatalf("%v", r)
			}
		})
		t.Run("denied name", func(t *testing.T) {
			r := run(get("denied.test", h.port, "/"))
			if strings.Contains(r.stdout, "hello") {
				t.Fatalf("a denied name reached the host: %v", r)
			}
			wantLine(t, r, "blocked connection to denied.test:"+p+" (matches --deny-domain denied.test)")
		})
		t.Run("denied name through the proxy", func(t *testing.T) {
			r := run("wget -q -O - http://denied.test:" + p + "/")
			if r.code == 0 || strings.Contains(r.stdout, "hello") {
				t.Fatalf("a denied name reached the host: %v", r)
			}
			wantLine(t, r, "blocked connection to denied.test:"+p+" (matches --deny-domain denied.test)")
		})
		t.Run("allowed name on another port", func(t *testing.T) {
			other := h.port + 1
			r := run(fmt.Sprintf("nc allowed.test %d </dev/null", other))
			if r.code == 0 {
				t.Fatalf("connected to a port that is not allowed: %v", r)
			}
			wantLine(t, r, fmt.Sprintf("blocked connection to allowed.test:%d (port %d is not allowed for allowed.test; allowed: %d)", other, other, h.port))
		})
		t.Run("the host's loopback address itself", func(t *testing.T) {
			r := run(get("127.0.0.1", h.port, "/"))
			if strings.Contains(r.stdout, "hello") {
				t.Fatalf("127.0.0.1 inside reached the host's loopback: %v", r)
			}
			wantLine(t, r, "blocked connection to 127.0.0.1:"+p+" (the sandbox's own loopback; to reach the host's, name it: --add-host NAME:127.0.0.1 --allow-domain NAME:"+p+")")
		})
		t.Run("a name not in the list", func(t *testing.T) {
			r := run(get("evil.example", 443, "/") + "; " + get("evil.example", 443, "/"))
			wantLine(t, r, "blocked connection to evil.example:443 (not in --allow-domain)")
		})
		t.Run("large download is byte-exact", func(t *testing.T) {
			r := run("wget -q -O - http://allowed.test:" + p + "/big | sha256sum; env -u http_proxy " + get("allowed.test", h.port, "/big") + " | tail -c " + strconv.Itoa(bigSize) + " | sha256sum")
			want := h.bigSum + "  -\n" + h.bigSum + "  -\n"
			if r.code != 0 || r.stdout != want {
				t.Fatalf("want both downloads to hash to %s: %v", h.bigSum, r)
			}
		})
		t.Run("100 concurrent connections from one call", func(t *testing.T) {
			script := `for i in $(seq 100); do (` + get("allowed.test", h.port, "/slow") + ` > /tmp/c.$i) & done; wait; cat /tmp/c.* | grep -c "slow hello"`
			r := run(script)
			if r.code != 0 || r.stdout != "100\n" {
				t.Fatalf("want all 100 to complete: %v", r)
			}
		})
		t.Run("warm reuse", func(t *testing.T) {
			wantOK(t, run("true"))
			ws := u.warmFor(t, wd)
			if len(ws) != 1 {
				t.Fatalf("want one warm container for every call with this allow-list, got %+v", ws)
			}
			r := run("wget -q -O - http://allowed.test:" + p + "/")
			if r.code != 0 || r.stdout != "hello from the host\n" {
				t.Fatalf("%v", r)
			}
			if again := u.warmFor(t, wd); len(again) != 1 || again[0].Pid != ws[0].Pid {
				t.Fatalf("the call did not reuse the container: %+v then %+v", ws, again)
			}
		})
		t.Run("fast path", func(t *testing.T) {
			o := runOpts{env: []string{"_LECTIC_NIX_SANDBOX_FAST=require"}}
			// The refused nc fails (exit 1); the call must succeed for its
			// ticket to be left.
			script := "wget -q -O - http://allowed.test:" + p + "/; " + get("denied.test", h.port, "/") + "; true"
			args := append(h.netArgs(), "sh", "-c", script)
			settle(t, suite.images["busybox"], wd)
			wantOK(t, u.sandbox(t, wd, runOpts{}, args...)) // leaves the ticket
			r := u.sandbox(t, wd, o, args...)
			if r.stdout != "hello from the host\n" {
				t.Fatalf("fast path: %v", r)
			}
			wantLine(t, r, "blocked connection to denied.test:"+p+" (matches --deny-domain denied.test)")
		})
	})
}

// TestNetworkConnectionsMadeOnHost: an allowed connection is made by the
// supervisor on the host and handed to the command, so no byte goes
// through a relay; with --seccomp off (no filter to intercept connect with)
// the same connection is relayed. A refused one fails in connect itself,
// after its line.
func TestNetworkConnectionsMadeOnHost(t *testing.T) {
	h := startHostHTTP(t)
	p := strconv.Itoa(h.port)
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		for _, tt := range []struct {
			name  string
			extra []string
			here  string // connections to the port in the container's namespace
		}{
			{"made on the host", nil, "here: 0\n"},
			{"relayed without a filter", []string{"--seccomp", "off"}, "here: 2\n"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				args := append(append(h.netArgs(), tt.extra...), "probe", "hold-conn", "allowed.test:"+p, "/drip")
				r := u.sandbox(t, wd, runOpts{}, args...)
				if r.code != 0 || r.stdout != "first: ok\n"+tt.here {
					t.Fatalf("want %q: %v", "first: ok\n"+tt.here, r)
				}
			})
		}
		t.Run("a refused connect fails at once, after its line", func(t *testing.T) {
			r := u.sandbox(t, wd, runOpts{}, append(h.netArgs(), "sh", "-c", "nc denied.test "+p+" </dev/null; echo nc=$?")...)
			line := "lectic-nix-sandbox: blocked connection to denied.test:" + p + " (matches --deny-domain denied.test)\n"
			if r.stdout != "nc=1\n" || !strings.Contains(r.stderr, "Connection refused") {
				t.Fatalf("want nc to fail with connection refused: %v", r)
			}
			if i := strings.Index(r.stderr, line); i < 0 || i > strings.Index(r.stderr, "Connection refused") {
				t.Fatalf("want the line before nc's error: %v", r)
			}
		})
	})
}

// TestNetworkRefusalGoesToItsCall: two calls at once in one container; the
// refusal line reaches only the call whose command made the connection.
func TestNetworkRefusalGoesToItsCall(t *testing.T) {
	h := startHostHTTP(t)
	p := strconv.Itoa(h.port)
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		wantOK(t, u.sandbox(t, wd, runOpts{}, append(h.netArgs(), "true")...))
		var wg sync.WaitGroup
		var quiet, refused result
		wg.Add(2)
		go func() {
			defer wg.Done()
			quiet = u.sandbox(t, wd, runOpts{}, append(h.netArgs(), "sh", "-c", "sleep 2; wget -q -O - http://allowed.test:"+p+"/")...)
		}()
		go func() {
			defer wg.Done()
			time.Sleep(500 * time.Millisecond)
			refused = u.sandbox(t, wd, runOpts{}, append(h.netArgs(), "sh", "-c", get("denied.test", h.port, "/"))...)
		}()
		wg.Wait()
		wantLine(t, refused, "blocked connection to denied.test:"+p+" (matches --deny-domain denied.test)")
		if quiet.code != 0 || quiet.stderr != "" || quiet.stdout != "hello from the host\n" {
			t.Fatalf("the other call running at the same time heard of it: %v", quiet)
		}
	})
}

func TestNetworkFlagErrors(t *testing.T) {
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		for _, tt := range []struct {
			args []string
			want string
		}{
			{[]string{"--allow-domain", "https://example.com", "true"}, `--allow-domain "https://example.com": want NAME, *.NAME, * or an IP address`},
			{[]string{"--allow-domain", "example.com:0", "true"}, `port "0" is not a number from 1 to 65535`},
			{[]string{"--add-host", "db", "--allow-domain", "db", "true"}, `--add-host "db": want NAME:IP`},
			{[]string{"--deny-domain", "example.com", "true"}, "no --allow-domain pattern"},
			{[]string{"--allow-net", "--allow-domain", "example.com", "true"}, "--allow-net shares the host's whole network"},
			{[]string{"--allow-domain", "127.0.0.1:80", "true"}, "the sandbox's own"},
		} {
			wantSandboxError(t, u.sandbox(t, wd, runOpts{}, tt.args...), tt.want)
		}
	})
}

// TestNetworkStopLeavesNothing: the allow-list's network goes with its
// container.
func TestNetworkStopLeavesNothing(t *testing.T) {
	h := startHostHTTP(t)
	forEachUser(t, func(t *testing.T, u *testUser) {
		wd := u.workdir(t)
		r := u.sandbox(t, wd, runOpts{}, append(h.netArgs(), "--no-keep-warm", "wget", "-q", "-O", "-", "http://allowed.test:"+strconv.Itoa(h.port)+"/")...)
		if r.code != 0 || r.stdout != "hello from the host\n" {
			t.Fatalf("one-shot call: %v", r)
		}
		if ws := u.warmFor(t, wd); len(ws) != 0 {
			t.Fatalf("--no-keep-warm left %+v", ws)
		}
	})
}

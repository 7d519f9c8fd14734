package fastpath

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/execargs"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/flagvalue"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

// These tests drive fastpath.c in process through cgo (ctest.go): its
// ticket parser and request builder against the Go side.

// TestCLimits ties the limits fastpath.c keeps to the Go side's.
func TestCLimits(t *testing.T) {
	l := cLimitsOf()
	for _, c := range []struct {
		name   string
		c, go_ int64
	}{
		{"MAX_EXEC", int64(l.maxExec), execargs.MaxExec},
		{"MAX_INLINE", int64(l.maxInline), execargs.MaxInline},
		{"MAX_TICKET", int64(l.maxTicket), maxTicket},
		{"MIN_TIMEOUT_NS", int64(l.minTimeout), int64(flagvalue.MinTimeout)},
		{"MAX_TIMEOUT_NS", int64(l.maxTimeout), int64(flagvalue.MaxTimeout)},
		{"MAX_SHOWN", int64(l.maxShown), 256}, // warm's maxShown
	} {
		if c.c != c.go_ {
			t.Errorf("fastpath.c's %s is %d, the Go side's %d", c.name, c.c, c.go_)
		}
	}
	p := oci.Policy()
	for _, list := range [][]string{p.HostOnly, p.HostOnlyPrefixes, p.InternalPrefixes, p.SecretParts, p.SecretWords, p.SecretPrefixes} {
		if len(list) > l.maxPolicy {
			t.Errorf("a policy list of %d entries is past fastpath.c's MAX_POLICY %d", len(list), l.maxPolicy)
		}
	}
}

// goEnviron is os.Environ's view of a raw environment, as Go's syscall
// package builds it: empty entries dropped, and of entries naming the
// same variable only the first kept.
func goEnviron(raw []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, kv := range raw {
		if kv == "" {
			continue
		}
		if name, _, ok := strings.Cut(kv, "="); ok {
			if seen[name] {
				continue
			}
			seen[name] = true
		}
		out = append(out, kv)
	}
	return out
}

func nonASCIIName(env []string) bool {
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		for i := 0; i < len(name); i++ {
			if name[i] >= 0x80 {
				return true
			}
		}
	}
	return false
}

// decodeRequest reads a request fastpath.c built: the header's counts and
// size, and the body they describe.
func decodeRequest(t *testing.T, r cRequest) (map[string]any, execargs.Args) {
	t.Helper()
	var h map[string]any
	if err := json.Unmarshal(r.head, &h); err != nil {
		t.Fatalf("header %q is not JSON: %v", r.head, err)
	}
	n := func(k string) int { f, _ := h[k].(float64); return int(f) }
	if n("body") != len(r.body) {
		t.Fatalf("header says a body of %d bytes, the body is %d", n("body"), len(r.body))
	}
	if (len(r.body) > execargs.MaxInline) != (h["body_fd"] == true) {
		t.Fatalf("a body of %d bytes with body_fd %v", len(r.body), h["body_fd"])
	}
	a, err := execargs.Decode(r.body, n("argc"), n("envc"), n("withheldc"))
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	return h, a
}

func split0(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}

func norm(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	return l
}

// FuzzEnvRecipe: for any image environment, --env values, caller
// environment and command, the request fastpath.c builds from the ticket
// Go writes carries exactly what the Go client sends: the environment and
// withheld names of oci.EnvRecipe.Build, the command words, byte for byte.
//
//	go test ./fastpath -run '^$' -fuzz FuzzEnvRecipe -fuzztime 5m
func FuzzEnvRecipe(f *testing.F) {
	f.Add("PATH=/bin\x00LANG=C", "KEEP_TOKEN\x00SET_ME=1\x00SET_ME=2\x00_LECTIC_NIX_SANDBOX_X=no",
		"PER_CALL=42\x00GH_TOKEN=secret\x00MY_PASSWORD=x\x00KEEP_TOKEN=kept\x00SET_ME=host\x00XDG_RUNTIME_DIR=/run\x00aws_access=1\x00_libcontainer_foo=1",
		"env\x00caf\xe9\x00\xff\xfe")
	f.Add("", "", "A=1\x00A=2\x00=x\x00noequals\x00\x00B=\xe9", "true")
	f.Add("PATH=/a\x00PATH=/b", "PATH", "PATH=/host\x00HOME=/h\x00ſECRET=1", "x")
	f.Add("V=1", "V=image?", "v=lower\x00V=upper", "sh\x00-c\x00exit 0")
	f.Fuzz(func(t *testing.T, image, named, environ, args string) {
		argv := split0(args)
		if len(argv) == 0 {
			argv = []string{"true"}
		}
		recipe := oci.NewEnvRecipe(split0(image), split0(named), "/home/u\xe9", "u")
		ticket, err := encode(Ticket{Socket: "/s", Request: []byte(`{"type":"run","proto":2}`), Cwd: "/w\xe9", Env: recipe})
		if err != nil {
			t.Skip(err) // past maxTicket
		}
		raw := split0(environ)
		got := cBuildRequest(ticket, raw, argv, 0)
		env := goEnviron(raw)
		if nonASCIIName(env) {
			if got.why != "a variable name is not ASCII" {
				t.Fatalf("a name that is not ASCII: %q, want a fall back", got.why)
			}
			return
		}
		wantEnv, wantWithheld := recipe.Build(env)
		want := execargs.Args{Cwd: "/w\xe9", Argv: argv, Env: wantEnv, Withheld: wantWithheld}
		if want.ExecSize() > execargs.MaxExec {
			if got.why != "E2BIG" {
				t.Fatalf("past MaxExec: %q, want E2BIG", got.why)
			}
			return
		}
		if got.why != "" {
			t.Fatalf("fastpath.c would not send: %s", got.why)
		}
		h, a := decodeRequest(t, got)
		if h["type"] != "run" || h["proto"] != float64(2) {
			t.Fatalf("header %s lost the ticket's head", got.head)
		}
		if a.Cwd != want.Cwd || !reflect.DeepEqual(norm(a.Argv), norm(want.Argv)) {
			t.Fatalf("cwd %q argv %q, want %q %q", a.Cwd, a.Argv, want.Cwd, want.Argv)
		}
		if !reflect.DeepEqual(norm(a.Env), norm(want.Env)) {
			t.Fatalf("environment differs from EnvRecipe.Build:\n got %q\nwant %q", a.Env, want.Env)
		}
		if !reflect.DeepEqual(norm(a.Withheld), norm(want.Withheld)) {
			t.Fatalf("withheld names differ from EnvRecipe.Build:\n got %q\nwant %q", a.Withheld, want.Withheld)
		}
	})
}

// FuzzTicketParser: whatever bytes a ticket file holds, fastpath.c either
// refuses it or builds a request within every bound the Go side keeps: a
// socket path that fits sun_path, a timeout --timeout could have given, a
// header that is JSON and a body that is exactly what the header says.
// (Run it with -asan to have C memory errors reported.)
//
//	go test ./fastpath -run '^$' -fuzz FuzzTicketParser -fuzztime 5m
func FuzzTicketParser(f *testing.F) {
	recipe := oci.NewEnvRecipe([]string{"PATH=/bin", "LANG=C"}, []string{"KEEP_TOKEN", "SET=1"}, "/home/u", "u")
	good, err := encode(Ticket{Socket: "/tmp/x/agent.sock", Request: []byte(`{"type":"run","proto":2,"user":{"mode":"caller"}}`),
		Cwd: "/w", Env: recipe, Timeout: 5 * time.Second, Warnings: []string{"w"},
		Checks: []Check{{Kind: Stat, Path: "/nonexistent", State: "absent"}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(ticketMagic + "\x00sock /s\x00head {\x00cwd \x00"))
	f.Add([]byte(ticketMagic + "\x00sock /s\x00sock /t\x00head {\x00cwd /\x00"))
	f.Add([]byte(ticketMagic + "\x00timeout_ns 1e9\x00check stat x\x00env_pre =\x00pol_secret_word \x00"))
	f.Add([]byte("\x00\x00\x00"))
	environ := []string{"A=1", "GH_TOKEN=x", "KEEP_TOKEN=k", "SET=h", "B=\xe9"}
	argv := []string{"true", "caf\xe9"}
	f.Fuzz(func(t *testing.T, data []byte) {
		got := cBuildRequest(data, environ, argv, 0)
		if got.why != "" {
			return
		}
		if !bytes.HasPrefix(data, []byte(ticketMagic+"\x00")) || data[len(data)-1] != 0 || len(data) > maxTicket {
			t.Fatalf("a ticket without its magic, final NUL or size bound was taken")
		}
		var socks []string
		for _, rec := range strings.Split(string(data[:len(data)-1]), "\x00") {
			if s, ok := strings.CutPrefix(rec, "sock "); ok {
				socks = append(socks, s)
			}
		}
		if len(socks) != 1 || socks[0] != got.sock || len(got.sock) > maxSocketPath {
			t.Fatalf("socket %q taken from records %q", got.sock, socks)
		}
		if got.timeout != 0 && (got.timeout < flagvalue.MinTimeout || got.timeout > flagvalue.MaxTimeout) {
			t.Fatalf("timeout %v is outside what --timeout takes", got.timeout)
		}
		var head string
		for _, rec := range strings.Split(string(data[:len(data)-1]), "\x00") {
			if h, ok := strings.CutPrefix(rec, "head "); ok {
				head = h
			}
		}
		if !json.Valid([]byte(head + "}")) {
			// Not a head Go writes (encode takes a JSON object): the
			// agent refuses what it cannot decode.
			return
		}
		_, a := decodeRequest(t, got)
		if !reflect.DeepEqual(a.Argv, argv) {
			t.Fatalf("argv %q, want %q", a.Argv, argv)
		}
	})
}

// maxSocketPath is what sun_path holds, its NUL aside.
const maxSocketPath = 107

// TestCTakesEveryCheckKind: a check of every kind the Go side writes is one
// fastpath.c parses; a kind it did not know would send every call of such
// a ticket to the Go client, and fail every require-mode call.
func TestCTakesEveryCheckKind(t *testing.T) {
	for _, k := range []Kind{Lstat, Stat, Identity, Real} {
		t.Run(string(k), func(t *testing.T) {
			c, err := Observe(k, "/")
			if err != nil {
				t.Fatal(err)
			}
			data, err := encode(Ticket{Socket: "/tmp/x/agent.sock", Request: []byte(`{"type":"run"}`), Cwd: "/w",
				Env: oci.NewEnvRecipe(nil, nil, "/", "u"), Checks: []Check{c}})
			if err != nil {
				t.Fatal(err)
			}
			if got := cBuildRequest(data, nil, []string{"true"}, 0); got.why != "" {
				t.Fatalf("fastpath.c refuses a %s check: %s", k, got.why)
			}
		})
	}
	data, _ := encode(Ticket{Socket: "/s", Request: []byte(`{"type":"run"}`), Cwd: "/w",
		Env: oci.NewEnvRecipe(nil, nil, "/", "u"), Checks: []Check{{Kind: "mtime", Path: "/", State: "x"}}})
	if got := cBuildRequest(data, nil, []string{"true"}, 0); got.why != "a ticket check is malformed" {
		t.Fatalf("an unknown check kind: %q, want it refused", got.why)
	}
}

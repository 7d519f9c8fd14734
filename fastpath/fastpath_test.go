package fastpath

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/execargs"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/flagvalue"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/statedir"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/testenv"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netpolicy"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

// The test binary links fastpath.c like the real one does, so these tests
// run it: they write a ticket, serve a fake agent on its socket and re-run
// the test binary with the ticket's options. If the constructor does not
// serve the call, TestMain reports that the Go side was reached.

const (
	childEnv     = "FASTPATH_TEST_CHILD"
	exitFellBack = 99
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		fmt.Println("FELL BACK")
		os.Exit(exitFellBack)
	}
	os.Exit(m.Run())
}

// agentReply is what the fake agent does with one request.
type agentReply func(t testing.TB, fd int, req map[string]any)

func send(t testing.TB, fd int, m string) {
	t.Helper()
	if err := unix.Sendmsg(fd, []byte(m), nil, nil, unix.MSG_NOSIGNAL); err != nil {
		t.Errorf("fake agent: send %s: %v", m, err)
	}
}

func recvJSON(fd int) (map[string]any, []int, error) {
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(16*4))
	n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, nil, err
	}
	if n == 0 {
		return nil, nil, errors.New("EOF")
	}
	var fds []int
	if oobn > 0 {
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, m := range msgs {
			got, _ := unix.ParseUnixRights(&m)
			fds = append(fds, got...)
		}
	}
	// A run request is a JSON header and a body of byte strings, in the
	// same packet after a NUL or in a memfd passed last (execargs).
	head, body, hasBody := bytes.Cut(buf[:n], []byte{0})
	var m map[string]any
	if err := json.Unmarshal(head, &m); err != nil {
		return nil, fds, fmt.Errorf("decode %q: %w", head, err)
	}
	if m["type"] != "run" {
		return m, fds, nil
	}
	if m["body_fd"] == true {
		if hasBody || len(fds) != 4 {
			return nil, fds, fmt.Errorf("a memfd body with %d fds and inline bytes %v", len(fds), hasBody)
		}
		var err error
		body, err = readMemfd(fds[3])
		unix.Close(fds[3])
		fds = fds[:3]
		if err != nil {
			return nil, fds, err
		}
	} else if !hasBody {
		return nil, fds, errors.New("a run request without a body")
	}
	count := func(k string) int { f, _ := m[k].(float64); return int(f) }
	if count("body") != len(body) {
		return nil, fds, fmt.Errorf("body of %d bytes, header says %d", len(body), count("body"))
	}
	a, err := execargs.Decode(body, count("argc"), count("envc"), count("withheldc"))
	if err != nil {
		return nil, fds, err
	}
	m["cwd"], m["argv"], m["env"], m["withheld"] = a.Cwd, a.Argv, a.Env, a.Withheld
	return m, fds, nil
}

// readMemfd reads a sealed memfd body whole.
func readMemfd(fd int) ([]byte, error) {
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil || seals&unix.F_SEAL_WRITE == 0 {
		return nil, fmt.Errorf("the body memfd is not sealed (%#x, %v)", seals, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	b := make([]byte, st.Size)
	if n, err := unix.Pread(fd, b, 0); err != nil || n != len(b) {
		return nil, fmt.Errorf("read the body memfd: %d of %d bytes, %v", n, len(b), err)
	}
	return b, nil
}

// fakeAgent listens on sock and hands each connection's first message to
// reply; the requests it saw come out of the returned channel.
func fakeAgent(t testing.TB, sock string, reply agentReply) <-chan map[string]any {
	t.Helper()
	lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(lfd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(lfd, 8); err != nil {
		t.Fatal(err)
	}
	seen := make(chan map[string]any, 8)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
			if err != nil {
				return
			}
			req, fds, err := recvJSON(fd)
			for _, f := range fds[min(len(fds), 3):] {
				unix.Close(f)
			}
			if err == nil {
				if len(fds) != 3 {
					t.Errorf("fake agent: got %d fds with the request, want 3", len(fds))
				} else {
					// The command's stdout is the client's: prove it.
					unix.Write(fds[1], []byte("via passed stdout\n"))
				}
				seen <- req
				reply(t, fd, req)
			}
			for _, f := range fds[:min(len(fds), 3)] {
				unix.Close(f)
			}
			unix.Close(fd)
		}
	}()
	t.Cleanup(func() {
		unix.Shutdown(lfd, unix.SHUT_RDWR)
		unix.Close(lfd)
		<-done
	})
	return seen
}

func exitWith(code, sig int) agentReply {
	return func(t testing.TB, fd int, _ map[string]any) {
		send(t, fd, `{"type":"started","pid":42}`)
		send(t, fd, fmt.Sprintf(`{"type":"exit","code":%d,"signal":%d}`, code, sig))
	}
}

type child struct {
	code           int
	stdout, stderr string
}

// runChild runs the test binary as a CLI call with args and extra env.
func runChild(t *testing.T, args []string, env []string, during func(p *os.Process)) child {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = childEnviron(env)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if during != nil {
		during(cmd.Process)
	}
	// A call that hangs (a FIFO opened for reading, say) fails the test
	// instead of the whole run.
	hung := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	if !hung.Stop() {
		t.Fatalf("the call hung; stderr %q", errb.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return child{code: code, stdout: out.String(), stderr: errb.String()}
}

type fastCase struct {
	name  string
	opts  []string
	term  bool
	argv  []string // what the child gets after the options
	env   []string // extra child environment
	named []string // --env values in the recipe
	post  []string // added to the recipe's Post, as an allow-list's proxy variables are
	// imageEnv is the image's Env in the recipe (default PATH and LANG).
	imageEnv []string
	// stack is the soft stack limit the child runs with (0: the test's):
	// what decides how much argv and environment its execve takes.
	stack uint64
	// execSize, when set, pads argv with one word so that the request's
	// argv and environment are exactly this many bytes.
	execSize int
	// unsent: the constructor must answer without sending a request.
	unsent  bool
	timeout time.Duration
	reply   agentReply
	// breakTicket runs after the ticket is written.
	breakTicket func(t *testing.T, dir, sock string, checked string)
	during      func(p *os.Process)
	wantCode    int
	wantStderr  string
	// wantNotStderr must not appear on stderr.
	wantNotStderr string
	wantArgv      []string // nil: argv after the options
	// wantEnv names variables that must (true) or must not (false) reach
	// the command.
	wantEnv map[string]bool
}

// proxyEnv is what an --allow-domain call adds to its recipe.
func proxyEnv(t *testing.T) []string {
	var p netpolicy.Policy
	if err := p.Allow("example.com"); err != nil {
		t.Fatal(err)
	}
	return p.ProxyEnv()
}

func TestFastPath(t *testing.T) {
	started := make(chan struct{})
	trapStarted := make(chan struct{})
	cases := []fastCase{
		{name: "exit code", opts: []string{"--image", "/img.tar"}, argv: []string{"true"}, reply: exitWith(3, 0), wantCode: 3},
		{name: "killed by a signal", opts: []string{"--image", "/img.tar"}, argv: []string{"sleep", "1"}, reply: exitWith(0, 9), wantCode: 137},
		{name: "no options", argv: []string{"ls", "-la"}, reply: exitWith(0, 0)},
		{name: "option values that look like commands", opts: []string{"-v", "/a:/b", "--persist", "p", "--allow-net"}, argv: []string{"sh", "-c", "echo hi"}, reply: exitWith(0, 0)},
		{name: "many option values", opts: manyVolumes(20), argv: []string{"true"}, reply: exitWith(0, 0)},
		{name: "after --", opts: []string{"--image", "/img.tar", "--"}, term: true, argv: []string{"-weird", "x"}, reply: exitWith(5, 0), wantCode: 5},
		{name: "bytes as they are", argv: []string{"printf", "a\"b\\c\nd\te\x01", "ünï", "\xff\xfe", "caf\xe9", "\xc3\x28", ""},
			env: []string{"LATIN=caf\xe9 na\xefve", "BIN=\x01\x7f\xff"}, reply: exitWith(0, 0), wantEnv: map[string]bool{"LATIN": true, "BIN": true}},
		{name: "environment policy", argv: []string{"env"}, named: []string{"KEEP_TOKEN", "SET_ME=1", "SET_ME=2", "_LECTIC_NIX_SANDBOX_X=no", "KEEP_URL"},
			env: append([]string{"PER_CALL=42", "GH_TOKEN=secret", "MY_PASSWORD=x", "KEEP_TOKEN=kept", "SET_ME=host", "XDG_RUNTIME_DIR=/run", "aws_access=1", "_libcontainer_foo=1",
				"DATABASE_URL=postgres://u:pw@db/x", "PROXY=a http://:pw@p:3128 b", "KEEP_URL=https://u:p@h", "HOMEPAGE=https://example.com/a:b@c",
				"TOKENIZERS_PARALLELISM=false", "LECTIC_INTERLOCUTOR=Assistant"}, secretEnv()...),
			reply: exitWith(0, 0),
			wantEnv: withSecrets(map[string]bool{"PER_CALL": true, "GH_TOKEN": false, "MY_PASSWORD": false, "KEEP_TOKEN": true, "SET_ME": true,
				"XDG_RUNTIME_DIR": false, "_libcontainer_foo": false, "aws_access": false, "_LECTIC_NIX_SANDBOX_X": false, "HOME": true,
				"DATABASE_URL": false, "PROXY": false, "KEEP_URL": true, "HOMEPAGE": true, "TOKENIZERS_PARALLELISM": true,
				"LECTIC_INTERLOCUTOR": true})},
		{name: "allow-list proxy variables win over the host's", argv: []string{"env"}, post: proxyEnv(t),
			env:     []string{"HTTP_PROXY=http://corp:8080", "no_proxy=localhost,.corp", "ALL_PROXY=socks5://x:1"},
			reply:   exitWith(0, 0),
			wantEnv: map[string]bool{"HTTP_PROXY": true, "no_proxy": true, "NO_PROXY": true, "https_proxy": true}},
		{name: "withheld names, no values", argv: []string{"env"}, named: []string{"PASSED_TOKEN"},
			env:     []string{"GITHUB_PERSONAL_ACCESS_TOKEN=ghp_abcdef", "PASSED_TOKEN=p4ss", "NPM_TOKEN=npm_xyz", "DB_PASSWORD=hunter22"},
			reply:   exitWith(0, 0),
			wantEnv: map[string]bool{"GITHUB_PERSONAL_ACCESS_TOKEN": false, "PASSED_TOKEN": true, "NPM_TOKEN": false}},
		{name: "notice before the command starts", argv: []string{"python3", "/abs/tool.py"}, reply: func(t testing.TB, fd int, _ map[string]any) {
			send(t, fd, `{"type":"notice","notice":"withheld GH_TOKEN","missing":"`+os.Args[0]+`","hint":"the script is on the host"}`)
			if m, _, err := recvJSON(fd); err != nil || m["type"] != "noticed" {
				t.Errorf("after a notice the agent got %v, %v; want the client's acknowledgement", m, err)
			}
			send(t, fd, `{"type":"started","pid":42}`)
			send(t, fd, `{"type":"exit","code":2}`)
		}, wantCode: 2, wantStderr: "lectic-nix-sandbox: warning: --podman-exe is ignored\nlectic-nix-sandbox: withheld GH_TOKEN\nlectic-nix-sandbox: the script is on the host\n"},
		{name: "no hint for a path the host lacks", argv: []string{"python3", "/abs/tool.py"}, reply: func(t testing.TB, fd int, _ map[string]any) {
			send(t, fd, `{"type":"notice","missing":"/nonexistent/tool.py","hint":"HINT"}`)
			recvJSON(fd)
			send(t, fd, `{"type":"started","pid":42}`)
			send(t, fd, `{"type":"exit","code":2}`)
		}, wantCode: 2, wantNotStderr: "HINT"},
		{name: "agent error 127 for a host path", argv: []string{"/abs/x"}, reply: func(t testing.TB, fd int, _ map[string]any) {
			send(t, fd, `{"type":"error","code":127,"message":"command not found: /abs/x","notice":"withheld A_TOKEN","missing":"`+os.Args[0]+`","hint":"command not found: it is on the host"}`)
		}, wantCode: 127, wantStderr: "lectic-nix-sandbox: withheld A_TOKEN\nlectic-nix-sandbox: command not found: it is on the host\n", wantNotStderr: "/abs/x"},
		{name: "agent error 127 for a path nowhere", argv: []string{"/abs/x"}, reply: func(t testing.TB, fd int, _ map[string]any) {
			send(t, fd, `{"type":"error","code":127,"message":"command not found: /abs/x","missing":"/nonexistent/x","hint":"HINT"}`)
		}, wantCode: 127, wantStderr: "lectic-nix-sandbox: command not found: /abs/x\n", wantNotStderr: "HINT"},
		{name: "agent error 125 says one line", argv: []string{"x"}, reply: func(t testing.TB, fd int, _ map[string]any) {
			send(t, fd, `{"type":"error","code":125,"message":"cannot start","notice":"NOTICE"}`)
		}, wantCode: 125, wantStderr: "lectic-nix-sandbox: cannot start\n", wantNotStderr: "NOTICE"},
		{name: "agent error 127", argv: []string{"nope"}, reply: func(t testing.TB, fd int, _ map[string]any) {
			send(t, fd, `{"type":"error","code":127,"message":"nope: command not found \u003cin PATH\u003e"}`)
		}, wantCode: 127, wantStderr: "lectic-nix-sandbox: nope: command not found <in PATH>\n"},
		{name: "agent error 125", argv: []string{"x"}, reply: func(t testing.TB, fd int, _ map[string]any) {
			send(t, fd, `{"type":"error","code":125,"message":"cannot start"}`)
		}, wantCode: 125, wantStderr: "lectic-nix-sandbox: cannot start\n"},
		{name: "agent dies after starting", argv: []string{"x"}, reply: func(t testing.TB, fd int, _ map[string]any) {
			send(t, fd, `{"type":"started","pid":1}`)
		}, wantCode: 125, wantStderr: "sandbox agent died during the call"},
		{name: "timeout", argv: []string{"sleep", "9"}, timeout: 100 * time.Millisecond, reply: func(t testing.TB, fd int, _ map[string]any) {
			send(t, fd, `{"type":"started","pid":1}`)
			m, _, err := recvJSON(fd)
			if err != nil || m["type"] != "signal" || m["signal"] != float64(15) {
				t.Errorf("after the timeout the agent got %v, %v; want a SIGTERM signal message (the agent escalates)", m, err)
			}
			send(t, fd, `{"type":"exit","signal":15}`)
		}, wantCode: 124},
		{name: "signal forwarded", argv: []string{"sleep", "9"}, reply: func(t testing.TB, fd int, _ map[string]any) {
			send(t, fd, `{"type":"started","pid":1}`)
			close(started)
			m, _, err := recvJSON(fd)
			if err != nil || m["type"] != "signal" || m["signal"] != float64(15) {
				t.Errorf("the agent got %v, %v; want a SIGTERM signal message", m, err)
			}
			send(t, fd, `{"type":"exit","signal":15}`)
		}, during: func(p *os.Process) {
			// Signals are held from before the request is sent, so
			// one sent once the command started must be forwarded.
			select {
			case <-started:
			case <-time.After(10 * time.Second):
			}
			p.Signal(syscall.SIGTERM)
		}, wantCode: 143},
		{name: "signal trapped by the command", argv: []string{"sh"}, reply: func(t testing.TB, fd int, _ map[string]any) {
			send(t, fd, `{"type":"started","pid":1}`)
			close(trapStarted)
			if m, _, err := recvJSON(fd); err != nil || m["signal"] != float64(2) {
				t.Errorf("the agent got %v, %v; want a SIGINT signal message", m, err)
			}
			send(t, fd, `{"type":"exit","code":0}`)
		}, during: func(p *os.Process) {
			select {
			case <-trapStarted:
			case <-time.After(10 * time.Second):
			}
			p.Signal(syscall.SIGINT)
		}, wantCode: 130}, // as warm.Run: the call ends as the signal says
		{name: "agent of another build falls back", argv: []string{"x"}, reply: func(t testing.TB, fd int, _ map[string]any) {
			send(t, fd, `{"type":"error","code":125,"reason":"mismatch","message":"other build"}`)
		}, wantCode: exitFellBack},
		{name: "agent that never reads falls back", argv: []string{"x"}, reply: func(t testing.TB, fd int, _ map[string]any) {},
			breakTicket: func(t *testing.T, dir, sock, checked string) {
				// A listener that never accepts: the request is queued,
				// then the socket is closed under it.
				os.Remove(sock)
				lfd, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
				unix.Bind(lfd, &unix.SockaddrUnix{Name: sock})
				unix.Listen(lfd, 1)
				go func() { time.Sleep(300 * time.Millisecond); unix.Close(lfd) }()
			}, wantCode: exitFellBack},
		{name: "no agent falls back", argv: []string{"x"}, reply: exitWith(0, 0),
			breakTicket: func(t *testing.T, dir, sock, checked string) { os.Remove(sock) }, wantCode: exitFellBack},
		{name: "changed file falls back", argv: []string{"x"}, reply: exitWith(0, 0),
			breakTicket: func(t *testing.T, dir, sock, checked string) {
				if err := os.WriteFile(checked, []byte("changed"), 0o644); err != nil {
					t.Fatal(err)
				}
			}, wantCode: exitFellBack},
		{name: "rewritten with the same size and mtime falls back", argv: []string{"x"}, reply: exitWith(0, 0),
			breakTicket: func(t *testing.T, dir, sock, checked string) {
				// A wrapper rebuilt in place: only the ctime tells.
				st, err := os.Stat(checked)
				if err != nil {
					t.Fatal(err)
				}
				time.Sleep(10 * time.Millisecond)
				if err := os.WriteFile(checked, []byte("IMAGE"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(checked, st.ModTime(), st.ModTime()); err != nil {
					t.Fatal(err)
				}
			}, wantCode: exitFellBack},
		{name: "result pointed elsewhere falls back", argv: []string{"x"}, reply: exitWith(0, 0),
			breakTicket: func(t *testing.T, dir, sock, checked string) {
				// The new target is the same inode, stat data and all:
				// only what the link resolves to tells.
				result := filepath.Join(filepath.Dir(checked), "result")
				tmp := result + ".new"
				if err := os.Symlink("alias.tar", tmp); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, result); err != nil {
					t.Fatal(err)
				}
			}, wantCode: exitFellBack},
		{name: "checked file removed falls back", argv: []string{"x"}, reply: exitWith(0, 0),
			breakTicket: func(t *testing.T, dir, sock, checked string) { os.Remove(checked) }, wantCode: exitFellBack},
		{name: "another option falls back", opts: []string{"--image", "/img.tar"}, argv: []string{"--allow-net", "true"}, reply: exitWith(0, 0), wantCode: exitFellBack},
		{name: "non-ASCII variable name falls back", argv: []string{"x"}, env: []string{"ſECRET=1"}, reply: exitWith(0, 0), wantCode: exitFellBack},
		{name: "config variable changed falls back", argv: []string{"x"}, env: []string{"USER=someone-else"}, reply: exitWith(0, 0), wantCode: exitFellBack},
		{name: "pass-env list changed falls back", argv: []string{"x"}, env: []string{"LECTIC_NIX_SANDBOX_PASS_ENV=GH_TOKEN"}, reply: exitWith(0, 0), wantCode: exitFellBack},
		{name: "ticket writable by others falls back", argv: []string{"x"}, reply: exitWith(0, 0),
			breakTicket: func(t *testing.T, dir, sock, checked string) {
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					os.Chmod(filepath.Join(dir, e.Name()), 0o666)
				}
			}, wantCode: exitFellBack},
		{name: "a FIFO named like the ticket falls back", argv: []string{"x"}, reply: exitWith(0, 0),
			breakTicket: func(t *testing.T, dir, sock, checked string) {
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					p := filepath.Join(dir, e.Name())
					os.Remove(p)
					if err := unix.Mkfifo(p, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}, wantCode: exitFellBack},
		{name: "require mode reports a miss", argv: []string{"x"}, env: []string{ModeEnv + "=require"}, reply: exitWith(0, 0),
			breakTicket: func(t *testing.T, dir, sock, checked string) { os.Remove(sock) },
			wantCode:    125, wantStderr: "the fast path was not taken: no agent answers"},
		{name: "off mode", argv: []string{"x"}, env: []string{ModeEnv + "=off"}, reply: exitWith(0, 0), wantCode: exitFellBack},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runFastCase(t, tc) })
	}
}

func runFastCase(t *testing.T, tc fastCase) {
	tmp := shortTempDir(t)
	t.Setenv("LECTIC_TEMP", tmp)
	t.Setenv("USER", "tester")
	dir := Dir(goTempRoot(t, filepath.Join(tmp, "nix-sandbox"), filepath.Join(tmp, "cache", "nix-sandbox")))
	sock := filepath.Join(tmp, "agent.sock")
	// The image is reached through a `result` symlink, and checked as the
	// CLI checks an --image file: its stat through the link, and the path
	// the link resolves to. alias.tar is the same inode under another name.
	checked := filepath.Join(tmp, "image.tar")
	if err := os.WriteFile(checked, []byte("image"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(checked, filepath.Join(tmp, "alias.tar")); err != nil {
		t.Fatal(err)
	}
	result := filepath.Join(tmp, "result")
	if err := os.Symlink("image.tar", result); err != nil {
		t.Fatal(err)
	}
	c, err := Observe(Stat, result)
	if err != nil {
		t.Fatal(err)
	}
	c.changed = time.Time{} // the racy rule is tested on its own
	real, err := Observe(Real, result)
	if err != nil {
		t.Fatal(err)
	}
	imageEnv := tc.imageEnv
	if imageEnv == nil {
		imageEnv = []string{"PATH=/bin", "LANG=C"}
	}
	recipe := oci.NewEnvRecipe(imageEnv, tc.named, "/home/tester", "tester")
	recipe.Post = append(recipe.Post, tc.post...)
	head := `{"type":"run","proto":2,"build":"b1","user":{"mode":"caller","uid":1,"gid":1},"ttl_seconds":900}`
	inv := Invocation{Options: tc.opts, Terminated: tc.term}
	if err := Write(dir, inv, Ticket{Socket: sock, Request: []byte(head), Cwd: "/w\xe9", Env: recipe, Timeout: tc.timeout,
		Warnings: []string{"--podman-exe is ignored"}, Checks: []Check{c, real}}); err != nil {
		t.Fatal(err)
	}
	seen := fakeAgent(t, sock, tc.reply)
	if tc.breakTicket != nil {
		tc.breakTicket(t, dir, sock, checked)
	}
	if tc.stack != 0 {
		restore := withStack(t, tc.stack)
		defer restore()
	}
	if tc.execSize > 0 {
		tc.argv = padTo(t, tc.argv, recipe, tc.env, tc.execSize)
	}
	got := runChild(t, append(append([]string(nil), tc.opts...), tc.argv...), tc.env, tc.during)
	if got.code != tc.wantCode {
		t.Fatalf("exit %d, want %d; stdout %q stderr %q", got.code, tc.wantCode, got.stdout, got.stderr)
	}
	if tc.wantStderr != "" && !strings.Contains(got.stderr, tc.wantStderr) {
		t.Errorf("stderr %q, want it to contain %q", got.stderr, tc.wantStderr)
	}
	if tc.wantNotStderr != "" && strings.Contains(got.stderr, tc.wantNotStderr) {
		t.Errorf("stderr %q must not contain %q", got.stderr, tc.wantNotStderr)
	}
	if tc.unsent {
		select {
		case <-seen:
			t.Error("the request was sent")
		default:
		}
		return
	}
	if tc.wantCode == exitFellBack || tc.wantCode == 125 && strings.Contains(tc.wantStderr, "not taken") {
		if strings.Contains(got.stderr, "warning:") {
			t.Errorf("a call that fell back printed the ticket's warnings: %q", got.stderr)
		}
		return
	}
	if !strings.Contains(got.stdout, "via passed stdout") {
		t.Errorf("stdout %q: the fds passed to the agent are not the client's", got.stdout)
	}
	if !strings.Contains(got.stderr, "lectic-nix-sandbox: warning: --podman-exe is ignored\n") {
		t.Errorf("stderr %q lacks the ticket's warning", got.stderr)
	}
	req := <-seen
	checkRequest(t, req, tc, recipe)
}

func checkRequest(t *testing.T, req map[string]any, tc fastCase, recipe oci.EnvRecipe) {
	t.Helper()
	var stack unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_STACK, &stack); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"type": "run", "proto": float64(2), "build": "b1", "cwd": "/w\xe9", "ttl_seconds": float64(900),
		"stack_limit": float64(stack.Cur)} {
		if req[k] != want {
			t.Errorf("request %s = %v, want %v", k, req[k], want)
		}
	}
	wantArgv := tc.wantArgv
	if wantArgv == nil {
		wantArgv = tc.argv
	}
	if got := strList(req["argv"]); !reflect.DeepEqual(got, wantArgv) {
		t.Errorf("argv %q, want %q", got, wantArgv)
	}
	// The command's environment, and the names withheld from it, must be
	// exactly what the Go client computes from the same environ.
	want, wantWithheld := recipe.Build(childEnviron(tc.env))
	gotEnv := strList(req["env"])
	if !reflect.DeepEqual(gotEnv, want) {
		t.Errorf("env differs from EnvRecipe.Build:\n got %q\nwant %q", gotEnv, want)
	}
	if wantWithheld == nil {
		wantWithheld = []string{}
	}
	if got := strList(req["withheld"]); !reflect.DeepEqual(got, wantWithheld) {
		t.Errorf("withheld names differ from EnvRecipe.Build:\n got %q\nwant %q", got, wantWithheld)
	}
	for _, kv := range childEnviron(tc.env) {
		if _, v, _ := strings.Cut(kv, "="); len(v) > 3 && strings.Contains(fmt.Sprint(req["withheld"]), v) {
			t.Errorf("a withheld variable's value %q reached the request's withheld names", v)
		}
	}
	for name, present := range tc.wantEnv {
		found := false
		for _, kv := range gotEnv {
			found = found || strings.HasPrefix(kv, name+"=")
		}
		if found != present {
			t.Errorf("%s in the command's env: %v, want %v", name, found, present)
		}
	}
}

// secretNames are the variables of common tools that carry credentials or
// host paths: the policy withholds each unless named.
var secretNames = []string{
	"OPENAI_KEY", "GEMINI_KEY", "STRIPE_KEY", "SIGNING_KEY", "ENCRYPTION_KEY", "ACCESS_KEY",
	"GH_PAT", "GITHUB_PAT", "MYSQL_PWD", "NPM_CONFIG__AUTH", "DOCKER_AUTH_CONFIG", "CI_JOB_JWT",
	"SLACK_WEBHOOK_URL", "SENTRY_DSN", "KRB5CCNAME", "COOKIE",
	"LECTIC_CACHE", "LECTIC_TEMP", "LECTIC_DATA", "LECTIC_CONFIG", "LECTIC_RUNTIME",
}

// secretEnv sets each of secretNames for one call, but for the variables
// a ticket's name covers (changing them is another invocation; the test
// sets LECTIC_TEMP for every call).
func secretEnv() []string {
	var env []string
	for _, n := range secretNames {
		if !slices.Contains(configEnv, n) {
			env = append(env, n+"=x")
		}
	}
	return env
}

func withSecrets(want map[string]bool) map[string]bool {
	for _, n := range secretNames {
		want[n] = false
	}
	return want
}

// goTempRoot is the temp root the Go client picks (cmd's pickTemp),
// short of the last candidate: a test never makes /tmp/lectic-UID.
func goTempRoot(t testing.TB, given, cache string) string {
	t.Helper()
	cands := statedir.TempCandidates(given, cache, os.Getuid())
	root, err := statedir.PickTemp(cands[:len(cands)-1], os.Getuid())
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// shortTempDir keeps temp roots within statedir.MaxTempRoot.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "fp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// childEnviron is the test's environment with extra set over it.
func childEnviron(extra []string) []string {
	set := map[string]bool{}
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		set[k] = true
	}
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !set[k] {
			env = append(env, kv)
		}
	}
	return append(append(env, childEnv+"=1"), extra...)
}

// manyVolumes is a long option prefix whose every value could start a
// command: each is a candidate split the constructor has to try.
func manyVolumes(n int) []string {
	var opts []string
	for i := range n {
		opts = append(opts, "-v", fmt.Sprintf("/data%d:/d%d", i, i))
	}
	return opts
}

func strList(v any) []string {
	if l, ok := v.([]string); ok {
		if l == nil {
			return []string{}
		}
		return l
	}
	list, _ := v.([]any)
	out := []string{}
	for _, s := range list {
		str, _ := s.(string)
		out = append(out, str)
	}
	return out
}

// TestTicketTimeoutRange ties fastpath.c's range for a ticket's timeout to
// the one --timeout accepts (flagvalue): the constructor serves a ticket
// whose timeout_ns the Go side would accept as a duration, and falls back
// on any other, however it is spelled.
func TestTicketTimeoutRange(t *testing.T) {
	minNs, maxNs := flagvalue.MinTimeout.Nanoseconds(), flagvalue.MaxTimeout.Nanoseconds()
	values := []string{"0", strconv.FormatInt(minNs, 10), strconv.FormatInt(maxNs, 10),
		strconv.FormatInt(minNs-1, 10), strconv.FormatInt(maxNs+1, 10), "1", "-1", "-1000000",
		"+1000000", " 1000000", "1000000 ", "1e9", "0x100000", "9223372036854775807", "99999999999999999999", ""}
	for _, v := range values {
		t.Run(strconv.Quote(v), func(t *testing.T) {
			goAccepts := v == "0"
			if ns, err := strconv.ParseInt(v, 10, 64); err == nil && strconv.FormatInt(ns, 10) == v && ns != 0 {
				_, derr := flagvalue.Duration("--timeout", strconv.FormatInt(ns, 10)+"ns", flagvalue.MinTimeout, flagvalue.MaxTimeout)
				goAccepts = derr == nil
			}
			tc := fastCase{argv: []string{"true"}, reply: exitWith(0, 0), env: []string{ModeEnv + "=require"},
				timeout: time.Second, breakTicket: func(t *testing.T, dir, sock, checked string) {
					rewriteRecord(t, dir, "timeout_ns", v)
				}}
			if goAccepts {
				tc.wantCode = 0
			} else {
				tc.wantCode, tc.wantStderr = 125, "the fast path was not taken: the ticket's timeout is out of range"
			}
			runFastCase(t, tc)
		})
	}
}

// TestLongTimeout: a timeout longer than poll's int of milliseconds
// (2^31 ms is about 25 days) is not cut short.
func TestLongTimeout(t *testing.T) {
	runFastCase(t, fastCase{argv: []string{"sleep", "1"}, timeout: (1<<32 + 50) * time.Millisecond,
		reply: func(t testing.TB, fd int, _ map[string]any) {
			send(t, fd, `{"type":"started","pid":1}`)
			time.Sleep(500 * time.Millisecond)
			send(t, fd, `{"type":"exit","code":0}`)
		}, wantCode: 0})
}

// rewriteRecord sets every record tagged tag in the tickets under dir to
// value.
func rewriteRecord(t *testing.T, dir, tag, value string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		recs := strings.Split(string(data), "\x00")
		for i, r := range recs {
			if strings.HasPrefix(r, tag+" ") {
				recs[i] = tag + " " + value
			}
		}
		if err := os.WriteFile(p, []byte(strings.Join(recs, "\x00")), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// withStack sets this process's soft stack limit, which children inherit,
// and returns what puts it back.
func withStack(t *testing.T, cur uint64) func() {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_STACK, &old); err != nil {
		t.Fatal(err)
	}
	if old.Max < cur {
		testenv.Missing(t, fmt.Sprintf("the hard stack limit %d is below %d", old.Max, cur))
	}
	if err := unix.Setrlimit(unix.RLIMIT_STACK, &unix.Rlimit{Cur: cur, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	return func() { _ = unix.Setrlimit(unix.RLIMIT_STACK, &old) }
}

// TestLargeRequests: the request is not bounded by a socket packet: a
// hundred thousand words and ten thousand variables reach the agent byte
// for byte (in a sealed memfd), up to exactly execargs.MaxExec bytes of
// argv and environment; one byte more is E2BIG, said as the Go client says
// it, with nothing sent.
func TestLargeRequests(t *testing.T) {
	many := make([]string, 100000)
	for i := range many {
		many[i] = "w\xe9" + strconv.Itoa(i)
	}
	vars := make([]string, 10000)
	for i := range vars {
		vars[i] = fmt.Sprintf("VAR_%d=value \xff %d", i, i)
	}
	t.Run("100k words", func(t *testing.T) {
		runFastCase(t, fastCase{argv: append([]string{"xargs-like"}, many...), reply: exitWith(0, 0)})
	})
	t.Run("10k variables", func(t *testing.T) {
		runFastCase(t, fastCase{argv: []string{"env"}, env: vars, reply: exitWith(0, 0)})
	})
	// 100 KiB strings, under the kernel's 128 KiB a string: 52 words in
	// argv, 9 variables from the image (only in the request: the ticket
	// carries them), and one word padded to hit the limit exactly.
	const chunk = 100 << 10
	imageEnv := []string{"PATH=/bin"}
	for i := range 9 {
		imageEnv = append(imageEnv, fmt.Sprintf("IMG%d=%s", i, strings.Repeat("\xe9", chunk)))
	}
	argv := []string{"true"}
	for range 52 {
		argv = append(argv, strings.Repeat("a", chunk))
	}
	t.Run("exactly MaxExec", func(t *testing.T) {
		runFastCase(t, fastCase{argv: argv, execSize: execargs.MaxExec, imageEnv: imageEnv, stack: 64 << 20, reply: exitWith(0, 0)})
	})
	t.Run("one byte more", func(t *testing.T) {
		runFastCase(t, fastCase{argv: argv, execSize: execargs.MaxExec + 1, imageEnv: imageEnv, stack: 64 << 20,
			reply: exitWith(0, 0), unsent: true, wantCode: 126,
			wantStderr: "lectic-nix-sandbox: warning: --podman-exe is ignored\nlectic-nix-sandbox: cannot execute true: argument list too long\n"})
	})
}

// padTo appends to argv one word that makes argv and the environment the
// child's request will carry exactly size bytes, as execve counts them.
func padTo(t *testing.T, argv []string, recipe oci.EnvRecipe, extra []string, size int) []string {
	t.Helper()
	env, _ := recipe.Build(childEnviron(extra))
	have := 0
	for _, s := range append(append([]string(nil), argv...), env...) {
		have += len(s) + 1
	}
	pad := size - have - 1 // the padding word's own NUL
	if pad < 0 || pad > 128<<10-1 {
		t.Fatalf("padding of %d bytes does not fit one string", pad)
	}
	return append(append([]string(nil), argv...), strings.Repeat("p", pad))
}

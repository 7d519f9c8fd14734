package warm

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/unixfd"
)

// envTestListener makes the test binary a listener on the socket path in
// its value, as another user would run one: it reports "ready", then one
// line per connection saying whether anything arrived.
const envTestListener = "_WARM_TEST_LISTENER"

func testListenerMain(path string) int {
	lfd, err := listen(path)
	if err != nil {
		fmt.Println("listen:", err)
		return 1
	}
	fmt.Println("ready")
	for {
		fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if err != nil {
			return 1
		}
		c := conn{fd: fd}
		_ = c.setTimeout(2 * time.Second)
		m, fds, err := c.recv()
		unixfd.CloseAll(fds)
		if err == nil {
			fmt.Printf("received %s with %d fds\n", m.Type, len(fds))
		} else {
			fmt.Println("received nothing")
		}
		c.close()
	}
}

// TestForeignPeerRefused: a socket at the agent's path that another user
// listens on (a dir swapped under us, a socket planted there) gets neither
// the request nor the caller's stdio; the call fails with one line.
func TestForeignPeerRefused(t *testing.T) {
	uid, gid := unprivileged(t)
	tempRoot := shortTempDir(t)
	if err := os.Chmod(tempRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	key := Key(t.Name())
	dir := warmDir(tempRoot, key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	os.Chmod(warmRoot(tempRoot), 0o755)
	cmd := exec.Command(publicTestBinary(t))
	cmd.Env = []string{envTestListener + "=" + socketPath(tempRoot, key)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("listener: %q", lines.Text())
	}
	code, err := Run(context.Background(), tempRoot, Spec{Key: key, BuildID: "b", Plain: true},
		Request{Argv: []string{"true"}, Cwd: "/", User: UserSpec{Mode: "root"}})
	if code != 125 || err == nil || !strings.Contains(err.Error(), "served by another user") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Run = %d, %v; want 125 and one line saying who serves the socket", code, err)
	}
	if !lines.Scan() || lines.Text() != "received nothing" {
		t.Fatalf("the foreign listener got: %q", lines.Text())
	}
	// Management never talks to it either.
	if _, err := askStatus(socketPath(tempRoot, key)); err == nil {
		t.Fatal("a status request went to another user's socket")
	}
	if !lines.Scan() || lines.Text() != "received nothing" {
		t.Fatalf("the foreign listener got: %q", lines.Text())
	}
	if _, err := os.Stat(filepath.Join(dir, aliveName)); err == nil {
		t.Fatal("a supervisor was started in the foreign dir")
	}
}

// TestAgentRefusesForeignClients: an agent serves only its own user and
// root; anyone else's connection is closed unread.
func TestAgentRefusesForeignClients(t *testing.T) {
	uid, gid := unprivileged(t)
	a := startTestAgent(t, agentOpts{})
	os.Chmod(a.tempRoot, 0o755)
	os.Chmod(warmRoot(a.tempRoot), 0o755)
	os.Chmod(warmDir(a.tempRoot, a.key), 0o755)
	sock := socketPath(a.tempRoot, a.key)
	os.Chmod(sock, 0o777)
	done := make(chan error, 1)
	go func() {
		// A process of another uid connects and asks for the status.
		cmd := exec.Command(publicTestBinary(t), "-test.run=^TestHelperStatusClient$")
		cmd.Env = []string{"_WARM_STATUS_SOCK=" + sock}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		b, err := cmd.CombinedOutput()
		if err == nil {
			err = fmt.Errorf("the foreign client got an answer: %s", b)
		} else if !strings.Contains(string(b), "no answer") {
			err = fmt.Errorf("foreign client: %v: %s", err, b)
		} else {
			err = nil
		}
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := askStatus(sock); err != nil {
		t.Fatalf("the agent's own user is refused: %v", err)
	}
}

// TestHelperStatusClient is the foreign client of the test above.
func TestHelperStatusClient(t *testing.T) {
	sock := os.Getenv("_WARM_STATUS_SOCK")
	if sock == "" {
		t.Skip("run by TestAgentRefusesForeignClients")
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	c := conn{fd: fd}
	_ = c.setTimeout(2 * time.Second)
	if err := c.send(&message{Type: msgStatus, Proto: Proto}); err != nil {
		fmt.Println("no answer:", err)
		t.FailNow()
	}
	if m, _, err := c.recv(); err != nil {
		fmt.Println("no answer:", err)
		t.FailNow()
	} else {
		fmt.Println("answer:", m.Type)
	}
}

// TestJunkInTheRegistry: FIFOs and symlinks where a lock, the alive file or
// meta.json belong never block --list, --stop or --prune (opening a FIFO
// for reading waits for a writer forever), and --stop all leaves no lock
// files.
func TestJunkInTheRegistry(t *testing.T) {
	tempRoot := shortTempDir(t)
	keys := []string{Key("fifo meta"), Key("fifo alive"), Key("symlink meta"), Key("fifo lock")}
	for i, k := range keys {
		dir := warmDir(tempRoot, k)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		var err error
		switch i {
		case 0:
			err = unix.Mkfifo(filepath.Join(dir, metaName), 0o600)
		case 1:
			err = unix.Mkfifo(filepath.Join(dir, aliveName), 0o600)
		case 2:
			err = os.Symlink("/dev/zero", filepath.Join(dir, metaName))
		case 3:
			os.Remove(dir)
			err = unix.Mkfifo(keyLockPath(tempRoot, k), 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		name string
		run  func() error
	}{
		{"list", func() error { _, err := List(tempRoot); return err }},
		{"prune", func() error { _, err := Prune(tempRoot); return err }},
		{"stop all", func() error { return Stop(tempRoot, "all") }},
	} {
		done := make(chan error, 1)
		go func() { done <- step.run() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s hung on junk in the warm registry", step.name)
		}
	}
	ents, _ := os.ReadDir(warmRoot(tempRoot))
	for _, e := range ents {
		t.Errorf("left in the warm root: %s", e.Name())
	}
}

// TestStopAllLeavesNoLocks: a stopped container's lock file goes with it.
func TestStopAllLeavesNoLocks(t *testing.T) {
	tools := toolDir(t)
	a := startTestAgent(t, agentOpts{})
	if _, _, code, err := pipeRun(t, a, Request{Argv: []string{"true"}, Env: []string{"PATH=" + tools}}, ""); code != 0 || err != nil {
		t.Fatalf("run: %d %v", code, err)
	}
	// As a caller that started it, and its supervisor's eviction, leave them.
	for _, lock := range []func() (*fileLock, error){
		func() (*fileLock, error) { return lockKey(a.tempRoot, a.key) },
		func() (*fileLock, error) { return lockPath(evictLockPath(a.tempRoot)) },
	} {
		l, err := lock()
		if err != nil {
			t.Fatal(err)
		}
		l.unlock()
	}
	if err := Stop(a.tempRoot, "all"); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(warmRoot(a.tempRoot))
	for _, e := range ents {
		t.Errorf("left in the warm root after --stop all: %s", e.Name())
	}
}

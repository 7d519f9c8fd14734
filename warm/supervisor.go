package warm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/fastpath"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/namespace"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netfwd"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/oci"
)

// envSupervisor marks the supervisor process.
const envSupervisor = "_LECTIC_NIX_SANDBOX_SUPERVISOR"

// Fds of the agent besides stdio: the listening socket (listenFD), the
// watch pipe, and the filter when commands have one.
const (
	agentWatchFD  = 4
	agentFilterFD = 5
)

// Fds of the supervisor besides stdio.
const (
	specFD  = 3 // the supervisorSpec as JSON, then EOF
	readyFD = 4 // "ok\n" or one error line
)

// startTimeout bounds how long a client waits for a new container.
const startTimeout = 2 * time.Minute

// IsSupervisor reports whether this process was started as a supervisor.
func IsSupervisor() bool { return os.Getenv(envSupervisor) != "" }

// supervisorSpec is what the client hands the supervisor.
type supervisorSpec struct {
	Dir  string `json:"dir"`
	Spec Spec   `json:"spec"`
}

// ensureAgent starts the key's container unless another caller did.
func ensureAgent(ctx context.Context, tempRoot string, s Spec) error {
	if !validKey(s.Key) {
		return fmt.Errorf("warm: invalid key %q", s.Key)
	}
	lock, err := lockKey(tempRoot, s.Key)
	if err != nil {
		return err
	}
	defer lock.unlock()
	if c, err := dial(socketPath(tempRoot, s.Key)); err == nil {
		c.close()
		return nil
	}
	dir := warmDir(tempRoot, s.Key)
	if err := clearStale(ctx, dir); err != nil {
		return err
	}
	return startSupervisor(ctx, dir, s)
}

// clearStale removes what a dead container left in dir. A supervisor that
// is still cleaning up is given time to finish.
func clearStale(ctx context.Context, dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for supervisorAlive(dir) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !waitGone(dir, 10*time.Second) {
			pid := 0
			if m, err := readMeta(dir); err == nil {
				pid = m.SupervisorPid
			}
			return fmt.Errorf("the sandbox supervisor (pid %d) of %s is alive but its agent does not answer; run lectic-nix-sandbox --stop %s", pid, dir, filepath.Base(dir))
		}
	}
	return removeStaleDir(dir)
}

// startSupervisor starts the supervisor for s in dir and waits until its
// container is ready.
func startSupervisor(ctx context.Context, dir string, s Spec) error {
	if !s.Plain && s.Create.Config.AgentPath == "" {
		if s.CacheRoot == "" {
			return errors.New("warm: neither an agent binary nor a cache root to copy it to")
		}
		p, err := AgentBinary(s.CacheRoot)
		if err != nil {
			return err
		}
		s.Create.Config.AgentPath = p
	}
	if !s.Plain {
		img := s.Create.Config.Image
		if err := namespace.CheckAgentLoader(s.Create.Config.AgentPath, img.Rootfs, img.HostBinds); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	logf, err := openState(filepath.Join(dir, logName), os.O_WRONLY|os.O_CREATE|os.O_APPEND)
	if err != nil {
		return fmt.Errorf("create the sandbox log: %w", err)
	}
	defer logf.Close()
	specR, specW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start the sandbox supervisor: %w", err)
	}
	defer specR.Close()
	defer specW.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start the sandbox supervisor: %w", err)
	}
	defer readyR.Close()
	cmd := exec.Command("/proc/self/exe")
	// The dir in argv (which anyone may read) is how --doctor finds a
	// supervisor whose temp root was deleted under it.
	cmd.Args = []string{supervisorArg0, dir}
	cmd.Env = []string{envSupervisor + "=1", "PATH=" + os.Getenv("PATH")}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{specR, readyW}
	// The supervisor outlives this call: its own session keeps it out of
	// the caller's terminal signals and process-group kills (Lectic's
	// timeout), and a real container's supervisor starts in its own user
	// and mount namespace.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if !s.Plain {
		cmd.SysProcAttr = namespace.CreatorSysProcAttr(os.Getuid(), os.Getgid())
	}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return fmt.Errorf("start the sandbox supervisor: %w", err)
	}
	// Reaped while this process lives; after that it is reparented.
	go func() { _ = cmd.Wait() }()
	werr := writeSpec(specW, supervisorSpec{Dir: dir, Spec: s})
	specW.Close()
	if werr != nil {
		return werr
	}
	return awaitReady(ctx, readyR)
}

func writeSpec(w *os.File, ss supervisorSpec) error {
	// Files cannot cross a pipe as JSON; the supervisor makes its own.
	ss.Spec.Create.ExtraFiles = nil
	ss.Spec.Create.Stdio = [3]*os.File{}
	if err := json.NewEncoder(w).Encode(ss); err != nil {
		return fmt.Errorf("send the container spec to the supervisor: %w", err)
	}
	return nil
}

// awaitReady reads the supervisor's one-line verdict.
func awaitReady(ctx context.Context, r *os.File) error {
	deadline := time.Now().Add(startTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = r.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = r.SetReadDeadline(time.Now()) })
	defer stop()
	line, err := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	switch {
	case line == "ok":
		return nil
	case line != "":
		return errors.New(line)
	case ctx.Err() != nil:
		return fmt.Errorf("start the sandbox container: %w", ctx.Err())
	default:
		return fmt.Errorf("the sandbox supervisor ended without reporting (%v)", err)
	}
}

// supervisor owns one container for its whole life.
type supervisor struct {
	dir   string
	spec  Spec
	log   *os.File
	alive *os.File
	watch *os.File // held open for life: the agent ends when it closes
	agent agentProc
}

// agentProc is the running agent: a container or, for Plain, a process.
type agentProc interface {
	pid() int
	wait()
	destroy() error
}

// RunSupervisor creates one container, serves as its owner until the agent
// exits or it is told to stop, and removes every trace of it.
func RunSupervisor() int {
	// The container's init gets SIGKILL when the thread that started it
	// exits (its parent-death signal, see namespace): that must be when
	// this process dies and never before, so the container is created
	// from the main thread, which lives as long as the process.
	runtime.LockOSThread()
	ready := os.NewFile(readyFD, "ready")
	var ss supervisorSpec
	err := json.NewDecoder(os.NewFile(specFD, "spec")).Decode(&ss)
	if err != nil {
		fmt.Fprintln(ready, "read the container spec: "+err.Error())
		return 1
	}
	sv := &supervisor{dir: ss.Dir, spec: ss.Spec, log: os.Stderr}
	if err := sv.start(); err != nil {
		fmt.Fprintln(ready, oneLine(err.Error()))
		ready.Close()
		sv.cleanup()
		return 1
	}
	fmt.Fprintln(ready, "ok")
	ready.Close()
	// The call goes on meanwhile: its container is ready.
	evicted := make(chan struct{})
	go func() {
		defer close(evicted)
		evict(filepath.Dir(filepath.Dir(sv.dir)), sv.spec, sv.log)
	}()
	sv.serve()
	<-evicted
	sv.cleanup()
	return 0
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// start takes ownership of the dir, creates the socket and the container,
// and records meta.json.
func (sv *supervisor) start() error {
	alive, err := openState(filepath.Join(sv.dir, aliveName), os.O_RDWR|os.O_CREATE)
	if err != nil {
		return fmt.Errorf("create %s: %w", filepath.Join(sv.dir, aliveName), err)
	}
	if err := flock(alive, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		alive.Close()
		return fmt.Errorf("another sandbox supervisor owns %s", sv.dir)
	}
	sv.alive = alive
	lfd, err := listen(filepath.Join(sv.dir, sockName))
	if err != nil {
		return err
	}
	lf := os.NewFile(uintptr(lfd), sockName)
	defer lf.Close() // the agent has its own copy
	// The agent watches the read end of this pipe: it sees the pipe hang
	// up when this process dies, however it dies (see agentFiles).
	watchR, watchW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("create the agent's watch pipe: %w", err)
	}
	defer watchR.Close()
	sv.watch = watchW
	files := []*os.File{lf, watchR}
	filter, err := sv.spec.Seccomp.Filter(oci.DefaultCaps())
	if err != nil {
		return fmt.Errorf("seccomp profile: %w", err)
	}
	if filter != nil {
		mf, err := filter.Memfd()
		if err != nil {
			return err
		}
		defer mf.Close()
		files = append(files, mf)
	}
	if sv.spec.Plain {
		sv.agent, err = startPlainAgent(sv.spec, files, sv.log)
	} else {
		sv.agent, err = startContainer(sv.dir, sv.spec, files, sv.log)
	}
	if err != nil {
		return err
	}
	return sv.writeMeta()
}

func (sv *supervisor) writeMeta() error {
	at, _ := startTime(os.Getpid())
	agentAt, _ := startTime(sv.agent.pid())
	return writeMeta(sv.dir, &meta{
		Key:           sv.spec.Key,
		Image:         sv.spec.Image,
		ChainID:       sv.spec.ChainID,
		Workdir:       sv.workdir(),
		Created:       time.Now().UTC(),
		SupervisorPid: os.Getpid(),
		SupervisorAt:  at,
		AgentPid:      sv.agent.pid(),
		AgentAt:       agentAt,
		TTLSeconds:    int64(sv.spec.TTL / time.Second),
		BuildID:       sv.spec.BuildID,
		Family:        sv.spec.Family,
		OneShot:       sv.spec.OneShot,
	})
}

func (sv *supervisor) workdir() string {
	if sv.spec.Workdir != "" {
		return sv.spec.Workdir
	}
	return sv.spec.Create.Config.Workdir
}

// serve waits for the agent to exit, or ends it on SIGTERM/SIGINT/SIGHUP.
func (sv *supervisor) serve() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	exited := make(chan struct{})
	go func() {
		sv.agent.wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-sigs:
	}
	// The socket goes first so new callers stop connecting to a dying agent.
	_ = os.Remove(filepath.Join(sv.dir, sockName))
	if err := sv.agent.destroy(); err != nil {
		fmt.Fprintln(sv.log, "lectic-nix-sandbox supervisor:", err)
	}
	<-exited
}

// cleanup removes the warm dir; the alive lock goes last, with the process.
func (sv *supervisor) cleanup() {
	_ = os.Remove(filepath.Join(sv.dir, sockName))
	if sv.agent != nil {
		if err := sv.agent.destroy(); err != nil {
			fmt.Fprintln(sv.log, "lectic-nix-sandbox supervisor:", err)
		}
	}
	// Tickets go before the dir: once --list no longer shows the
	// container, no ticket names it either.
	if sv.spec.TicketDir != "" {
		if _, err := fastpath.Prune(sv.spec.TicketDir); err != nil {
			fmt.Fprintln(sv.log, "lectic-nix-sandbox supervisor:", err)
		}
	}
	if err := removeWarmDir(sv.dir); err != nil {
		fmt.Fprintln(sv.log, "lectic-nix-sandbox supervisor:", err)
	}
}

// agentEnv is the environment of the agent process.
func agentEnv(s Spec) []string {
	env := []string{
		envAgent + "=1",
		envBuild + "=" + s.BuildID,
		envMounts + "=" + s.Mounts,
		envTTL + "=" + strconv.FormatInt(int64(s.TTL/time.Second), 10),
		"PATH=/usr/local/bin:/usr/bin:/bin",
	}
	if s.OneShot {
		env = append(env, envOneShot+"=1")
	}
	// Fds after the listening socket (3) and the watch pipe (4): the
	// filter, then the report channel and the connect channel, each only
	// when there is one.
	env = append(env, envWatch+"="+strconv.Itoa(agentWatchFD))
	next := agentFilterFD
	if !s.Seccomp.Off() {
		env = append(env, envSeccomp+"="+strconv.Itoa(agentFilterFD))
		next++
	}
	if s.Net != nil {
		env = append(env, envReports+"="+strconv.Itoa(next))
		if s.connectsOnHost() {
			env = append(env, envConnects+"="+strconv.Itoa(next+1))
		}
	}
	// No cgroup holds the memory limit: each command gets it as RLIMIT_AS.
	if l := s.Create.Config.Limits; l.Memory > 0 && !l.Cgroup {
		env = append(env, envRlimitAS+"="+strconv.FormatInt(l.Memory, 10))
	}
	return env
}

// plainAgent is an agent run as an ordinary child process.
type plainAgent struct{ p *os.Process }

func startPlainAgent(s Spec, files []*os.File, logf *os.File) (*plainAgent, error) {
	if s.Net != nil {
		return nil, errors.New("a network allow-list needs a container; a plain agent has none")
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	p, err := os.StartProcess("/proc/self/exe", []string{"lectic-nix-sandbox-agent"}, &os.ProcAttr{
		Env:   agentEnv(s),
		Files: append([]*os.File{devnull, logf, logf}, files...),
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return nil, fmt.Errorf("start the sandbox agent: %w", err)
	}
	return &plainAgent{p: p}, nil
}

func (a *plainAgent) pid() int { return a.p.Pid }
func (a *plainAgent) wait()    { _, _ = a.p.Wait() }
func (a *plainAgent) destroy() error {
	// The agent's commands live in process groups of their own; the agent
	// ends them itself on a stop request, a kill takes only the agent.
	if err := a.p.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill the sandbox agent: %w", err)
	}
	return nil
}

// containerAgent is an agent running as a container's init, with the
// network it serves when it has an allow-list.
type containerAgent struct {
	c   *namespace.Container
	net *policyNet
}

// connectsOnHost says whether the commands of s connect through the
// supervisor (netfwd.Net.ConnectChannel): with an allow-list, when a
// filter can intercept their connect(2). The agent's environment and its
// extra files must agree on it.
func (s Spec) connectsOnHost() bool { return s.Net != nil && !s.Seccomp.Off() }

// policyNet is an allow-list's network and the channel its refusals take
// to the agent.
type policyNet struct {
	n        *netfwd.Net
	reports  *netfwd.ReportSender
	agent    *os.File // the agent's end, until the container has it
	connects *os.File // the agent's end of the connect channel, likewise; nil without a filter
}

// openPolicyNet makes the allow-list's network namespace for the container
// to join and the report channel to its agent.
func openPolicyNet(s Spec, logf *os.File) (*policyNet, error) {
	host := s.Create.Config.Hostname
	if host == "" {
		host = oci.DefaultHostname
	}
	n, err := netfwd.Open(netfwd.Options{Policy: s.Net, Hostname: host, Log: logf})
	if err != nil {
		return nil, fmt.Errorf("set up the allow-list's network: %w", err)
	}
	rs, agentEnd, err := netfwd.ReportPair()
	if err != nil {
		n.Close()
		return nil, err
	}
	p := &policyNet{n: n, reports: rs, agent: agentEnd}
	if s.connectsOnHost() {
		if p.connects, err = n.ConnectChannel(); err != nil {
			p.close()
			return nil, err
		}
	}
	return p, nil
}

// closeAgentEnds closes this process's copies of the agent's ends.
func (p *policyNet) closeAgentEnds() {
	for _, f := range []**os.File{&p.agent, &p.connects} {
		if *f != nil {
			(*f).Close()
			*f = nil
		}
	}
}

func (p *policyNet) close() error {
	if p == nil {
		return nil
	}
	p.closeAgentEnds()
	err := p.n.Close()
	p.reports.Close()
	return err
}

func startContainer(dir string, s Spec, files []*os.File, logf *os.File) (*containerAgent, error) {
	o := s.Create
	// As root, libcontainer names the container's cgroup after its ID; a
	// random suffix keeps two warm dirs with the same key (other temp
	// roots, a container still being destroyed) from sharing one.
	o.ID = s.Key + "-" + randomHex(4)
	o.StateDir = filepath.Join(dir, "state")
	o.UpperDir = filepath.Join(dir, "upper")
	o.WorkDir = filepath.Join(dir, "work")
	o.MergedDir = filepath.Join(dir, "merged")
	o.Volatile = true
	o.Config.HostUID, o.Config.HostGID = uint32(os.Getuid()), uint32(os.Getgid())
	o.InitArgs = []string{oci.AgentTarget}
	o.InitEnv = agentEnv(s)
	o.ExtraFiles = files
	o.Stdio = [3]*os.File{nil, logf, logf}
	var pn *policyNet
	if s.Net != nil {
		var err error
		if pn, err = openPolicyNet(s, logf); err != nil {
			return nil, err
		}
		o.Config.NetNS = pn.n.NSPath()
		o.ExtraFiles = append(o.ExtraFiles, pn.agent) // after the others: see agentEnv
		if pn.connects != nil {
			o.ExtraFiles = append(o.ExtraFiles, pn.connects)
		}
	}
	c, err := createContainer(o, s)
	if err != nil {
		pn.close()
		return nil, err
	}
	if pn != nil {
		pn.closeAgentEnds()
		pn.reports.SetFlusher(pn.n.Flush)
		pn.n.Start(pn.reports)
	}
	return &containerAgent{c: c, net: pn}, nil
}

// createContainer makes the dirs and /etc files of the container and
// starts it.
func createContainer(o namespace.CreateOptions, s Spec) (*namespace.Container, error) {
	for _, d := range []string{o.StateDir, o.UpperDir, o.WorkDir, o.MergedDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	etc, err := etcFiles(o.Config.Image.Rootfs, s.Users, s.Groups)
	if err != nil {
		return nil, err
	}
	if s.Net != nil {
		etc["/etc/resolv.conf"] = []byte(netfwd.ResolvConf)
	}
	o.EtcFiles = etc
	c, err := namespace.Create(context.Background(), o)
	if err != nil {
		return nil, fmt.Errorf("create the sandbox container: %w", err)
	}
	return c, nil
}

// etcFiles merges the users into the image's passwd and group files.
func etcFiles(rootfs string, users []oci.User, groups []oci.Group) (map[string][]byte, error) {
	passwd, err := readOptional(rootfs, "/etc/passwd")
	if err != nil {
		return nil, err
	}
	group, err := readOptional(rootfs, "/etc/group")
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		"/etc/passwd": oci.MergePasswd(passwd, users...),
		"/etc/group":  oci.MergeGroup(group, groups...),
	}, nil
}

func readOptional(rootfs, path string) ([]byte, error) {
	b, err := namespace.ReadRootFile(rootfs, path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read the image's %s: %w", path, err)
	}
	return b, nil
}

func (a *containerAgent) pid() int { return a.c.Pid() }
func (a *containerAgent) wait()    { _, _ = a.c.Wait() }
func (a *containerAgent) destroy() error {
	var errs []error
	if err := a.c.Destroy(); err != nil {
		errs = append(errs, fmt.Errorf("destroy the sandbox container: %w", err))
	}
	if err := a.net.close(); err != nil {
		errs = append(errs, fmt.Errorf("close the allow-list's network: %w", err))
	}
	return errors.Join(errs...)
}

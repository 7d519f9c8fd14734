package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/internal/flagvalue"
	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netpolicy"
)

// options is everything the command line can say. Parsing fills it and
// nothing else; validation that needs the file system happens in resolve.
type options struct {
	workdir  string
	volumes  []string
	persist  string
	home     string
	allowNet bool
	// allowHostConfig turns off the protection of files the host runs
	// later (hostConfigCovers): --allow-host-config-writes.
	allowHostConfig bool
	// net is the allow-list from --allow-domain, --deny-domain and
	// --add-host; nil when none was given.
	net          *netpolicy.Policy
	keepWarm     bool
	warmTTL      int
	maxWarm      int
	packagesFile string
	image        string
	maxImage     int64 // --max-image-size; 0 = nixload's default
	flake        string
	env          []string
	timeout      time.Duration
	killAfter    time.Duration
	seccomp      string // "default", "off" or a profile file
	pidsLimit    int64
	storageSize  int64 // 0: defaultStorageSize
	memory       int64 // 0: no limit
	user         string
	refresh      bool
	nixExe       string
	nixExtra     string
	warnings     []string

	// management: at most one of these is set.
	action     string // "", "doctor", "list", "stop", "prune", "gc", "install", "load", "version", "help"
	actionArg  string
	jsonOutput bool

	command []string
	// optWords is how many words before the command were options (a
	// final "--" included), terminated whether "--" ended them: the
	// split a fast-path ticket is named by.
	optWords   int
	terminated bool
}

// usageError is a command-line mistake: exit 125 with one line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg + " (see --help)" }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// flagSpec describes one option. takesValue options accept "--name VALUE"
// and "--name=VALUE"; optionalValue ones take the next word only if it does
// not look like another option.
type flagSpec struct {
	names         []string
	takesValue    bool
	optionalValue bool
	apply         func(o *options, name, value string) error
}

const defaultWarmTTL = 900

// maxWarmTTL is a year: a TTL is a whole number of seconds that must fit a
// time.Duration; 0 already means never.
const maxWarmTTL = int64(flagvalue.Year / time.Second)

// defaultKillAfter is the grace period after SIGTERM, SIGINT or --timeout.
const defaultKillAfter = 2 * time.Second

// Limits of a container. The sandbox's own processes (supervisor, agent,
// identity helpers: Go programs of a few threads each) count towards the
// pids limit, hence its floor.
const (
	defaultPidsLimit = 4096
	minPidsLimit     = 64
	maxPidsLimit     = 1 << 22 // the kernel's highest pid_max
	minStorageSize   = 16 << 20
	minMemory        = 16 << 20
	maxSize          = 1 << 50
)

// defaultMaxWarm and maxMaxWarm bound --max-warm: idle warm containers
// kept per user (each holds about 10 MB).
const (
	defaultMaxWarm = 16
	maxMaxWarm     = 1000
)

func defaultOptions() options {
	return options{keepWarm: true, warmTTL: defaultWarmTTL, maxWarm: defaultMaxWarm, user: "caller",
		killAfter: defaultKillAfter, seccomp: "default", pidsLimit: defaultPidsLimit}
}

// parseMaxWarm takes a plain whole number from 1 to maxMaxWarm: no sign,
// no spaces, no exponent. Keeping none is --no-keep-warm.
func parseMaxWarm(name, v string) (int, error) {
	n, err := flagvalue.Int(name, v, 1, maxMaxWarm, "idle containers")
	if err != nil {
		return 0, &usageError{err.Error() + "; --no-keep-warm keeps none"}
	}
	return int(n), nil
}

func setAction(action string) func(o *options, name, value string) error {
	return func(o *options, name, value string) error {
		if o.action != "" && o.action != action {
			return usagef("%s cannot be combined with --%s", name, o.action)
		}
		o.action = action
		o.actionArg = value
		return nil
	}
}

var flagTable = []flagSpec{
	{names: []string{"-d", "--workdir"}, takesValue: true, apply: func(o *options, _, v string) error { o.workdir = v; return nil }},
	{names: []string{"-v", "--volume"}, takesValue: true, apply: func(o *options, _, v string) error { o.volumes = append(o.volumes, v); return nil }},
	{names: []string{"-p", "--persist"}, takesValue: true, apply: func(o *options, _, v string) error { o.persist = v; return nil }},
	{names: []string{"--home"}, takesValue: true, apply: func(o *options, _, v string) error { o.home = v; return nil }},
	{names: []string{"--allow-net"}, apply: func(o *options, _, _ string) error { o.allowNet = true; return nil }},
	{names: []string{"--allow-host-config-writes"}, apply: func(o *options, _, _ string) error { o.allowHostConfig = true; return nil }},
	{names: []string{"--allow-domain"}, takesValue: true, apply: netFlag((*netpolicy.Policy).Allow)},
	{names: []string{"--deny-domain"}, takesValue: true, apply: netFlag((*netpolicy.Policy).Deny)},
	{names: []string{"--add-host"}, takesValue: true, apply: netFlag((*netpolicy.Policy).AddHost)},
	{names: []string{"--keep-warm"}, apply: func(o *options, _, _ string) error { o.keepWarm = true; return nil }},
	{names: []string{"--no-keep-warm"}, apply: func(o *options, _, _ string) error { o.keepWarm = false; return nil }},
	{names: []string{"--warm-ttl-seconds"}, takesValue: true, apply: func(o *options, n, v string) error {
		ttl, err := flagvalue.Int(n, v, 0, maxWarmTTL, "seconds")
		if err != nil {
			return &usageError{err.Error()}
		}
		o.warmTTL = int(ttl)
		return nil
	}},
	{names: []string{"--max-warm"}, takesValue: true, apply: func(o *options, n, v string) error {
		m, err := parseMaxWarm(n, v)
		o.maxWarm = m
		return err
	}},
	{names: []string{"--nix-packages-file"}, takesValue: true, apply: func(o *options, _, v string) error { o.packagesFile = v; return nil }},
	{names: []string{"--image"}, takesValue: true, apply: func(o *options, _, v string) error { o.image = v; return nil }},
	{names: []string{"--max-image-size"}, takesValue: true, apply: func(o *options, n, v string) error {
		size, err := flagvalue.Size(n, v, 1<<20, 1<<50)
		if err != nil {
			return &usageError{err.Error()}
		}
		o.maxImage = size
		return nil
	}},
	{names: []string{"--flake"}, takesValue: true, apply: func(o *options, _, v string) error { o.flake = v; return nil }},
	{names: []string{"--env", "-e"}, takesValue: true, apply: func(o *options, n, v string) error {
		name, _, _ := strings.Cut(v, "=")
		if name == "" || strings.ContainsAny(name, " \t\n\x00") {
			return usagef("%s %q: want NAME or NAME=VALUE", n, v)
		}
		o.env = append(o.env, v)
		return nil
	}},
	{names: []string{"--timeout"}, takesValue: true, apply: func(o *options, n, v string) error {
		t, err := flagvalue.Duration(n, v, flagvalue.MinTimeout, flagvalue.MaxTimeout)
		if err != nil {
			return &usageError{err.Error()}
		}
		o.timeout = t
		return nil
	}},
	{names: []string{"--kill-after"}, takesValue: true, apply: func(o *options, n, v string) error {
		d, err := flagvalue.Duration(n, v, 0, flagvalue.Year)
		if err != nil {
			return &usageError{err.Error()}
		}
		o.killAfter = d
		return nil
	}},
	{names: []string{"--pids-limit"}, takesValue: true, apply: func(o *options, n, v string) error {
		l, err := flagvalue.Int(n, v, minPidsLimit, maxPidsLimit, "processes")
		if err != nil {
			return &usageError{err.Error()}
		}
		o.pidsLimit = l
		return nil
	}},
	{names: []string{"--storage-size"}, takesValue: true, apply: func(o *options, n, v string) error {
		l, err := flagvalue.Size(n, v, minStorageSize, maxSize)
		if err != nil {
			return &usageError{err.Error()}
		}
		o.storageSize = l
		return nil
	}},
	{names: []string{"--memory"}, takesValue: true, apply: func(o *options, n, v string) error {
		l, err := flagvalue.Size(n, v, minMemory, maxSize)
		if err != nil {
			return &usageError{err.Error()}
		}
		o.memory = l
		return nil
	}},
	{names: []string{"--seccomp"}, takesValue: true, apply: func(o *options, n, v string) error {
		if v == "" {
			return usagef("%s: want default, off or the path of a seccomp profile (OCI/Docker JSON)", n)
		}
		o.seccomp = v
		return nil
	}},
	{names: []string{"--user", "-u"}, takesValue: true, apply: func(o *options, n, v string) error {
		if v == "" {
			return usagef("%s: want root, image, a user name or UID[:GID]", n)
		}
		o.user = v
		return nil
	}},
	{names: []string{"--refresh"}, apply: func(o *options, _, _ string) error { o.refresh = true; return nil }},
	{names: []string{"--nix-exe"}, takesValue: true, apply: func(o *options, _, v string) error { o.nixExe = v; return nil }},
	{names: []string{"--nix-extra"}, takesValue: true, apply: func(o *options, _, v string) error { o.nixExtra = v; return nil }},
	{names: []string{"--podman-exe", "--podman-extra"}, takesValue: true, apply: func(o *options, n, _ string) error {
		o.warnings = append(o.warnings, fmt.Sprintf("%s is ignored: this sandbox does not use podman", n))
		return nil
	}},
	{names: []string{"--json"}, apply: func(o *options, _, _ string) error { o.jsonOutput = true; return nil }},
	{names: []string{"--doctor"}, apply: setAction("doctor")},
	{names: []string{"--list"}, apply: setAction("list")},
	{names: []string{"--stop"}, takesValue: true, apply: setAction("stop")},
	{names: []string{"--prune"}, apply: setAction("prune")},
	{names: []string{"--gc"}, apply: setAction("gc")},
	{names: []string{"--install"}, optionalValue: true, apply: setAction("install")},
	{names: []string{"--load"}, takesValue: true, apply: setAction("load")},
	{names: []string{"--version"}, apply: setAction("version")},
	{names: []string{"-h", "--help"}, apply: setAction("help")},
}

// netFlag applies one allow-list flag to the options' policy.
func netFlag(add func(*netpolicy.Policy, string) error) func(o *options, name, value string) error {
	return func(o *options, name, value string) error {
		if o.net == nil {
			o.net = &netpolicy.Policy{}
		}
		if err := add(o.net, value); err != nil {
			return usagef("%s %v", name, err)
		}
		return nil
	}
}

// checkNet checks the allow-list as a whole, once every flag is read.
func checkNet(o options) error {
	if o.net == nil {
		return nil
	}
	if o.allowNet {
		return usagef("--allow-net shares the host's whole network, so --allow-domain, --deny-domain and --add-host mean nothing with it; drop one or the other")
	}
	if err := o.net.Validate(); err != nil {
		return usagef("%v", err)
	}
	return nil
}

func lookupFlag(name string) (flagSpec, bool) {
	for _, f := range flagTable {
		for _, n := range f.names {
			if n == name {
				return f, true
			}
		}
	}
	return flagSpec{}, false
}

// parseArgs reads options up to the first word that is not an option (or
// "--"); everything from there on is the command, untouched. Lectic adds no
// "--", so "ls -la" after the options must stay the command's.
func parseArgs(args []string) (options, error) {
	o := defaultOptions()
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			o.command = args[i+1:]
			o.optWords, o.terminated = i+1, true
			break
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			o.command = args[i:]
			o.optWords = i
			break
		}
		name, value, hasValue := strings.Cut(arg, "=")
		if !strings.HasPrefix(arg, "--") {
			// Short options take no "=" form; "-dDIR" is not supported either.
			name, value, hasValue = arg, "", false
		}
		spec, ok := lookupFlag(name)
		if !ok {
			return o, usagef("unknown option %s", name)
		}
		switch {
		case spec.takesValue && !hasValue:
			if i+1 >= len(args) {
				return o, usagef("%s needs a value", name)
			}
			i++
			value = args[i]
		case spec.optionalValue && !hasValue:
			if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++
				value = args[i]
			}
		case !spec.takesValue && !spec.optionalValue && hasValue:
			return o, usagef("%s takes no value", name)
		}
		if err := spec.apply(&o, name, value); err != nil {
			return o, err
		}
	}
	if o.action != "" && o.action != "help" && o.action != "version" && len(o.command) > 0 {
		return o, usagef("--%s takes no command (got %q)", o.action, o.command[0])
	}
	return o, checkNet(o)
}

const usageText = `usage: lectic-nix-sandbox [OPTIONS] [--] COMMAND [ARGS...]
       lectic-nix-sandbox --doctor | --list [--json] | --stop KEY|all|orphaned | --prune | --gc
       lectic-nix-sandbox --install [DIR] | --load IMAGE | --version | --help

Runs COMMAND in a rootless container built from a Nix image. Options end at
the first word that is not an option; the rest is the command.

Sandbox:
  -d, --workdir DIR            directory bound read-write at the same path and used
                               as the working directory (default: $PWD)
  -v, --volume HOST[:TARGET][:ro]
                               bind HOST at TARGET (default: the same path)
  -p, --persist DIR            bind DIR at /persist (created if missing)
      --home DIR               host directory used as $HOME (default: one per workdir
                               under the cache)
      --allow-domain PATTERN[,PATTERN...]
                               let the command connect to these names (repeatable):
                               NAME, *.NAME (its subdomains), * (any name) or IP,
                               each with :PORT or :PORT-PORT (default 80 and 443);
                               enforced outside the sandbox, refusals on stderr
      --deny-domain PATTERN    never connect to these, even if allowed (no port:
                               every port)
      --add-host NAME:IP       resolve NAME to IP on the host side; the only way to
                               reach a private or loopback address by name
      --allow-net              share the host's whole network, including services on
                               its loopback and abstract unix sockets (default:
                               loopback only; prefer --allow-domain)
      --allow-host-config-writes
                               let the command write what the host runs later:
                               lectic.yaml, *.lec, git hooks (.git/hooks, the
                               core.hooksPath dir) and config, .envrc, the flake
                               and packages file in use, LECTIC_CONFIG and
                               LECTIC_RUNTIME (default: read-only inside)
      --user MODE              caller (default: your own uid/gid, no capabilities),
                               root, image (the image's User), NAME or UID[:GID]
      --env NAME[=VALUE]       pass NAME from the host, or set it (repeatable)
      --timeout DURATION       end the command after DURATION as SIGTERM would (exit
                               124): seconds (30, 0.5) or with a unit (250ms, 2m,
                               1h30m), 1ms to 1 year
      --kill-after DURATION    after SIGTERM, SIGINT or --timeout, SIGKILL what is left
                               of the command after DURATION (default 2s; 0 = at once)
      --pids-limit N           processes (threads count) the whole container may
                               have, the sandbox's own included (default 4096)
      --storage-size SIZE      memory for everything the container writes outside
                               its binds: the root's upper layer, /tmp, /run,
                               /var/tmp, /dev/shm together (default 25% of RAM)
      --memory SIZE            memory limit: the container's cgroup where one can
                               hold it, else per process (RLIMIT_AS); see --doctor
      --seccomp default|off|FILE
                               system call filter: the default profile, none, or an
                               OCI/Docker seccomp JSON profile (as podman takes)
Image:
      --image PATH|host        image archive, OCI layout or streamLayeredImage script;
                               "host" is a read-only view of this machine's system;
                               PATH:REF picks one image of an archive holding several
                               (REF: a tag such as name:latest, or @N for the N-th)
      --max-image-size SIZE    refuse an image that unpacks to more than SIZE
                               (default 32G; K, M, G, T are powers of 1024)
      --flake REF              flake whose #containerImage is the image
      --nix-packages-file FILE extra packages for the flake's image
      --refresh                rebuild the flake image (or read the --image file)
                               even if it is cached
      --nix-exe PATH           nix executable (default: nix)
      --nix-extra ARGS         extra arguments for nix build
Warm containers:
      --keep-warm              keep the container for later calls (default)
      --no-keep-warm           one container for this call only, removed after it
      --warm-ttl-seconds N     stop an idle warm container after N s (default 900;
                               0 = never; at most 31536000, a year)
      --max-warm N             keep at most N idle warm containers per user; a new
                               one stops the least recently used (default 16)
Management:
      --doctor                 check this machine and explain how to fix problems
      --list [--json]          list warm containers
      --stop KEY|all|orphaned  stop warm containers (orphaned: those whose temp root
                               was deleted, which --doctor reports)
      --prune                  stop warm containers idle past their TTL
      --gc                     remove cached images nothing refers to
      --install [DIR]          install as a Lectic plugin (default:
                               $LECTIC_DATA/plugins/nix-sandbox)
      --load IMAGE[:REF]       load IMAGE into the cache and print it as JSON
      --version, -h/--help

Exit status: the command's; 128+N if it was killed by signal N; 124 on
--timeout; 127 command not found; 126 not executable; 125 the sandbox failed.
`

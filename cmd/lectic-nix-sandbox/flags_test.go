package main

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    func(o *options)
		wantErr string
	}{
		{name: "command only", args: []string{"ls", "-la"},
			want: func(o *options) { o.command = []string{"ls", "-la"} }},
		{name: "options end at first word", args: []string{"--allow-net", "ls", "--allow-net"},
			want: func(o *options) { o.allowNet = true; o.command = []string{"ls", "--allow-net"}; o.optWords = 1 }},
		{name: "double dash", args: []string{"--", "--help"},
			want: func(o *options) { o.command = []string{"--help"}; o.optWords, o.terminated = 1, true }},
		{name: "init is a command", args: []string{"init"},
			want: func(o *options) { o.command = []string{"init"} }},
		{name: "values both forms", args: []string{"-d", "/w", "--home=/h", "-v", "/a:/b:ro", "--volume=/c", "true"},
			want: func(o *options) {
				o.workdir, o.home = "/w", "/h"
				o.volumes = []string{"/a:/b:ro", "/c"}
				o.command = []string{"true"}
				o.optWords = 6
			}},
		{name: "ttl and no keep warm", args: []string{"--warm-ttl-seconds", "0", "--no-keep-warm", "true"},
			want: func(o *options) { o.warmTTL = 0; o.keepWarm = false; o.command = []string{"true"}; o.optWords = 3 }},
		{name: "env repeatable", args: []string{"--env", "A", "--env=B=c d", "env"},
			want: func(o *options) { o.env = []string{"A", "B=c d"}; o.command = []string{"env"}; o.optWords = 3 }},
		{name: "podman flags warn", args: []string{"--podman-exe", "/usr/bin/podman", "--podman-extra=--foo", "true"},
			want: func(o *options) {
				o.warnings = []string{"--podman-exe is ignored: this sandbox does not use podman", "--podman-extra is ignored: this sandbox does not use podman"}
				o.command = []string{"true"}
				o.optWords = 3
			}},
		{name: "install with dir", args: []string{"--install", "/tmp/x"},
			want: func(o *options) { o.action, o.actionArg = "install", "/tmp/x" }},
		{name: "install default", args: []string{"--install"},
			want: func(o *options) { o.action = "install" }},
		{name: "list json", args: []string{"--list", "--json"},
			want: func(o *options) { o.action = "list"; o.jsonOutput = true }},
		{name: "stop all", args: []string{"--stop", "all"},
			want: func(o *options) { o.action, o.actionArg = "stop", "all" }},
		{name: "a value that is -- is a value", args: []string{"-e", "--", "--", "-x"},
			want: func(o *options) {
				o.env = []string{"--"}
				o.command = []string{"-x"}
				o.optWords, o.terminated = 3, true
			}},
		{name: "timeout", args: []string{"--timeout", "1.5", "sleep", "9"},
			want: func(o *options) {
				o.timeout = 1500 * time.Millisecond
				o.command = []string{"sleep", "9"}
				o.optWords = 2
			}},
		{name: "max warm", args: []string{"--max-warm", "3", "true"},
			want: func(o *options) { o.maxWarm = 3; o.command = []string{"true"}; o.optWords = 2 }},
		{name: "max warm upper bound", args: []string{"--max-warm=1000", "true"},
			want: func(o *options) { o.maxWarm = 1000; o.command = []string{"true"}; o.optWords = 1 }},
		{name: "unknown option", args: []string{"--frobnicate", "ls"}, wantErr: "unknown option --frobnicate (see --help)"},
		{name: "missing value", args: []string{"--image"}, wantErr: "--image needs a value (see --help)"},
		{name: "bad ttl", args: []string{"--warm-ttl-seconds", "-3", "true"}, wantErr: `--warm-ttl-seconds "-3": want a whole number of seconds from 0 to 31536000 (see --help)`},
		{name: "ttl past a year", args: []string{"--warm-ttl-seconds", "9223372037", "true"}, wantErr: `--warm-ttl-seconds "9223372037": want a whole number of seconds from 0 to 31536000 (see --help)`},
		{name: "timeout as a duration", args: []string{"--timeout=2m", "true"},
			want: func(o *options) { o.timeout = 2 * time.Minute; o.command = []string{"true"}; o.optWords = 1 }},
		{name: "kill-after", args: []string{"--kill-after", "500ms", "--seccomp", "off", "true"},
			want: func(o *options) {
				o.killAfter, o.seccomp = 500*time.Millisecond, "off"
				o.command, o.optWords = []string{"true"}, 4
			}},
		{name: "kill-after 0", args: []string{"--kill-after", "0", "--seccomp", "/p.json", "true"},
			want: func(o *options) {
				o.killAfter, o.seccomp = 0, "/p.json"
				o.command, o.optWords = []string{"true"}, 4
			}},
		{name: "limits", args: []string{"--pids-limit", "100", "--storage-size", "1.5G", "--memory", "512M", "true"},
			want: func(o *options) {
				o.pidsLimit, o.storageSize, o.memory = 100, 3<<29, 512<<20
				o.command, o.optWords = []string{"true"}, 6
			}},
		{name: "pids-limit too low", args: []string{"--pids-limit", "10", "true"}, wantErr: `--pids-limit "10": want a whole number of processes from 64 to 4194304 (see --help)`},
		{name: "pids-limit not a number", args: []string{"--pids-limit", "1e3", "true"}, wantErr: `--pids-limit "1e3": want a whole number of processes from 64 to 4194304 (see --help)`},
		{name: "storage-size unit", args: []string{"--storage-size", "10x", "true"}, wantErr: `--storage-size "10x": want a size from 16MiB to 1024TiB, in bytes or with a unit (512M, 1.5G; K, M, G, T are powers of 1024) (see --help)`},
		{name: "memory negative", args: []string{"--memory", "-1", "true"}, wantErr: `--memory "-1": want a size from 16MiB to 1024TiB, in bytes or with a unit (512M, 1.5G; K, M, G, T are powers of 1024) (see --help)`},
		{name: "bad kill-after", args: []string{"--kill-after", "-1", "true"}, wantErr: `--kill-after "-1": want a duration from 0s to 1 year, in seconds (30, 0.5) or with a unit (250ms, 2m, 1h30m) (see --help)`},
		{name: "empty seccomp", args: []string{"--seccomp", "", "true"}, wantErr: `--seccomp: want default, off or the path of a seccomp profile (OCI/Docker JSON) (see --help)`},
		{name: "bad timeout", args: []string{"--timeout", "soon", "true"}, wantErr: `--timeout "soon": want a duration from 1ms to 1 year, in seconds (30, 0.5) or with a unit (250ms, 2m, 1h30m) (see --help)`},
		{name: "NaN timeout", args: []string{"--timeout", "NaN", "true"}, wantErr: `--timeout "NaN": want a duration from 1ms to 1 year, in seconds (30, 0.5) or with a unit (250ms, 2m, 1h30m) (see --help)`},
		{name: "bad env", args: []string{"--env", "=x", "true"}, wantErr: `--env "=x": want NAME or NAME=VALUE (see --help)`},
		{name: "value on a switch", args: []string{"--allow-net=yes", "true"}, wantErr: "--allow-net takes no value (see --help)"},
		{name: "two actions", args: []string{"--list", "--gc"}, wantErr: "--gc cannot be combined with --list (see --help)"},
		{name: "action with command", args: []string{"--prune", "ls"}, wantErr: `--prune takes no command (got "ls") (see --help)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseArgs(tt.args)
			if tt.wantErr != "" {
				var ue *usageError
				if err == nil || !errors.As(err, &ue) || err.Error() != tt.wantErr {
					t.Fatalf("error = %v, want usage error %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			want := defaultOptions()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseNetFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		policy  string // the canonical policy
		wantErr string
	}{
		{name: "allow with defaults", args: []string{"--allow-domain", "example.com", "true"},
			policy: "allow=example.com:443,example.com:80;deny=;hosts="},
		{name: "repeatable and comma lists", args: []string{"--allow-domain=a.example,*.b.example:8080", "--allow-domain", "github.com:22", "--deny-domain", "x.b.example", "--add-host", "a.example:127.0.0.1", "git", "push"},
			policy: "allow=*.b.example:8080,a.example:443,a.example:80,github.com:22;deny=x.b.example;hosts=a.example=127.0.0.1"},
		{name: "bad pattern", args: []string{"--allow-domain", "https://x.example", "true"},
			wantErr: `--allow-domain "https://x.example": want NAME, *.NAME, * or an IP address, with an optional :PORT or :PORT-PORT (no scheme, path or user) (see --help)`},
		{name: "bad port", args: []string{"--allow-domain", "x.example:99999", "true"},
			wantErr: `--allow-domain "x.example:99999": port "99999" is not a number from 1 to 65535 (see --help)`},
		{name: "bad host mapping", args: []string{"--allow-domain", "x.example", "--add-host", "x.example", "true"},
			wantErr: `--add-host "x.example": want NAME:IP (see --help)`},
		{name: "deny alone", args: []string{"--deny-domain", "x.example", "true"},
			wantErr: "no --allow-domain pattern: --deny-domain and --add-host only refine an allow-list (see --help)"},
		{name: "with the host network", args: []string{"--allow-net", "--allow-domain", "x.example", "true"},
			wantErr: "--allow-net shares the host's whole network, so --allow-domain, --deny-domain and --add-host mean nothing with it; drop one or the other (see --help)"},
		{name: "too many ports", args: []string{"--allow-domain", "*:2000-9000", "true"},
			wantErr: "the allowed ports number 7001; at most 1024 are supported (each is a listening socket) (see --help)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseArgs(tt.args)
			if tt.wantErr != "" {
				var ue *usageError
				if err == nil || !errors.As(err, &ue) || err.Error() != tt.wantErr {
					t.Fatalf("error = %v, want usage error %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.net == nil || o.net.String() != tt.policy {
				t.Fatalf("policy = %v, want %s", o.net, tt.policy)
			}
		})
	}
}

// --max-warm takes nothing but a plain whole number in range, in one line.
func TestMaxWarmValidation(t *testing.T) {
	for _, v := range []string{"0", "-1", "+3", " 3", "3 ", "1e3", "0x10", "3.0", "1001", "99999999999999999999", "", "many", "０"} {
		_, err := parseArgs([]string{"--max-warm", v, "true"})
		var ue *usageError
		want := `--max-warm "` + v + `": want a whole number of idle containers from 1 to 1000; --no-keep-warm keeps none`
		if err == nil || !errors.As(err, &ue) || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("--max-warm %q: error %v, want one line starting %q", v, err, want)
		}
	}
}

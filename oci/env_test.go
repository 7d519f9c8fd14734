package oci

import (
	"reflect"
	"strings"
	"testing"
)

func TestFilterEnv(t *testing.T) {
	host := []string{
		"TERM=xterm", "LANG=C.UTF-8", "LC_ALL=C", "EDITOR=vi", "LS_COLORS=di=34",
		"PATH=/usr/bin", "HOME=/home/u", "USER=u", "LOGNAME=u", "SHELL=/bin/zsh",
		"TMPDIR=/tmp/u", "XDG_RUNTIME_DIR=/run/user/1000", "XDG_CONFIG_HOME=/c",
		"DISPLAY=:0", "WAYLAND_DISPLAY=wayland-0", "DBUS_SESSION_BUS_ADDRESS=unix:x",
		"SSH_AUTH_SOCK=/s", "SSH_AGENT_PID=1", "GPG_AGENT_INFO=x",
		"LD_PRELOAD=/x.so", "LD_LIBRARY_PATH=/l", "LD_AUDIT=/a", "PWD=/p", "OLDPWD=/o",
		"SHLVL=2", "_=/usr/bin/env", "MAIL=/var/mail/u",
		"ANTHROPIC_API_KEY=sk", "openai_api_key=sk", "GITHUB_TOKEN=t", "GH_TOKEN=t",
		"NPM_TOKEN=t", "TOKEN=t", "DB_PASSWORD=p", "MYSQL_PASSWORD_FILE=/f", "PGPASSWD=x",
		"APP_SECRET_KEY=s", "SECRET=s", "GOOGLE_APPLICATION_CREDENTIALS=/c",
		"SSH_PRIVATE_KEY=k", "AWS_REGION=eu", "aws_profile=p",
		"_LIBCONTAINER_INITPIPE=3", "_LECTIC_NIX_SANDBOX_AGENT=1",
		"TOKENIZER=bpe", "PGPASSWORD=x", "LECTIC_TOOL=x",
	}
	tests := []struct {
		name  string
		named []string
		want  []string
	}{
		{
			name: "policy",
			want: []string{"TERM=xterm", "LANG=C.UTF-8", "LC_ALL=C", "EDITOR=vi", "LS_COLORS=di=34", "TOKENIZER=bpe", "LECTIC_TOOL=x"},
		},
		{
			name:  "named keep and set",
			named: []string{"GITHUB_TOKEN", "AWS_REGION=us", "NEW=1", "HOME", "MISSING", "_LIBCONTAINER_INITPIPE", "_LECTIC_NIX_SANDBOX_X=1", "EDITOR=nano", "NEW=2"},
			want: []string{"TERM=xterm", "LANG=C.UTF-8", "LC_ALL=C", "EDITOR=nano", "LS_COLORS=di=34",
				"HOME=/home/u", "GITHUB_TOKEN=t", "AWS_REGION=us",
				"TOKENIZER=bpe", "LECTIC_TOOL=x", "NEW=2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FilterEnv(host, tt.named); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("FilterEnv:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// secretNames are variables that carry credentials in common tools; each
// must be withheld unless named.
var secretNames = []string{
	"OPENAI_KEY", "GEMINI_KEY", "STRIPE_KEY", "SIGNING_KEY", "ENCRYPTION_KEY", "ACCESS_KEY",
	"GH_PAT", "GITHUB_PAT", "MYSQL_PWD", "NPM_CONFIG__AUTH", "DOCKER_AUTH_CONFIG", "CI_JOB_JWT",
	"SLACK_WEBHOOK_URL", "SENTRY_DSN", "KRB5CCNAME", "COOKIE",
	"LECTIC_CACHE", "LECTIC_TEMP", "LECTIC_DATA", "LECTIC_CONFIG", "LECTIC_RUNTIME",
	"ANTHROPIC_API_KEY", "GITHUB_TOKEN", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "GOOGLE_APPLICATION_CREDENTIALS",
	"SMTP_PASS", "GPG_PASSPHRASE", "SESSION_ID", "APP_PRIVATE_KEY", "OPENAIAPIKEY", "DB_CREDS",
}

func TestBlocked(t *testing.T) {
	tests := map[string]bool{
		"anthropic_api_key": true, "My_Secret_Thing": true, "X_CREDENTIALS_FILE": true,
		"GIT_PRIVATE_KEY_PATH": true, "PASSWORD": true, "AWS": false, "AWS_": true,
		"SECRETARY": true, "PGPASSWORD": true, "PGPASSWD": true,
		"OPENAI_APIKEY": true, "MYTOKEN": false, "GH_TOKEN": true, "XDG_DATA_DIRS": true, "xdg_data_dirs": true,
		"TERM": false, "LC_CTYPE": false,
		// Parts are whole: a word that merely starts like one passes.
		"TOKENIZERS_PARALLELISM": false, "GIT_AUTHOR_NAME": false, "KEYTIMEOUT": false, "MANPATH": false,
		"PASSAGE": false, "PATH_INFO": false, "OLDPWD": true, "PWD": true,
		// Lectic's variables that are not host paths pass.
		"LECTIC_INTERLOCUTOR": false, "LECTIC_FILE": false, "LECTIC_TOOL": false,
		// The sandbox's own settings stay on the host.
		PassEnvVar: true, "LECTIC_NIX_SANDBOX_FLAKE": true,
	}
	for _, n := range secretNames {
		tests[n] = true
	}
	for name, want := range tests {
		if got := Policy().blocked(name); got != want {
			t.Errorf("blocked(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestEnvRecipeAssembly: how a recipe's parts and the filtered caller's
// variables combine, given the variables FilterEnv let through.
func TestEnvRecipeAssembly(t *testing.T) {
	tests := []struct {
		name        string
		image, host []string
		home, user  string
		want        []string
	}{
		{
			name:  "image PATH kept, host overrides others, ours last",
			image: []string{"PATH=/nix/bin", "LANG=en", "FOO=image", "HOME=/root"},
			host:  []string{"LANG=C", "TERM=xterm", "TMPDIR=/x"},
			home:  "/home/u", user: "u",
			want: []string{"PATH=/nix/bin", "LANG=C", "FOO=image", "HOME=/home/u", "TERM=xterm", "TMPDIR=/tmp", "USER=u", "LOGNAME=u"},
		},
		{
			name:  "default PATH",
			image: nil, host: nil, home: "/root", user: "root",
			want: []string{"PATH=" + DefaultPath, "HOME=/root", "USER=root", "LOGNAME=root", "TMPDIR=/tmp"},
		},
		{
			name:  "named PATH from the caller wins",
			image: []string{"PATH=/nix/bin"}, host: []string{"PATH=/mine"}, home: "/h", user: "u",
			want: []string{"PATH=/mine", "HOME=/h", "USER=u", "LOGNAME=u", "TMPDIR=/tmp"},
		},
		{
			name:  "malformed entries dropped",
			image: []string{"=x", "NOVALUE"}, host: nil, home: "/h", user: "u",
			want: []string{"NOVALUE=", "PATH=" + DefaultPath, "HOME=/h", "USER=u", "LOGNAME=u", "TMPDIR=/tmp"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewEnvRecipe(tt.image, nil, tt.home, tt.user)
			if got := assemble(r.Pre, tt.host, r.Post); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("assembled:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestBuildReportsWithheld(t *testing.T) {
	environ := []string{"TERM=xterm", "GH_TOKEN=ghp_value", "HOME=/h", "SSH_AUTH_SOCK=/s",
		"_LECTIC_NIX_SANDBOX_X=1", "DB_PASSWORD=pw", "KEEP_TOKEN=k", "SET_SECRET=host", "GITHUB_PERSONAL_ACCESS_TOKEN=pat"}
	tests := []struct {
		name  string
		named []string
		want  []string
	}{
		{name: "secrets only, in environ order", want: []string{"GH_TOKEN", "DB_PASSWORD", "KEEP_TOKEN", "SET_SECRET", "GITHUB_PERSONAL_ACCESS_TOKEN"}},
		{name: "named ones are not withheld", named: []string{"KEEP_TOKEN", "SET_SECRET=mine", "GITHUB_PERSONAL_ACCESS_TOKEN"},
			want: []string{"GH_TOKEN", "DB_PASSWORD"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewEnvRecipe(nil, tt.named, "/home/u", "u")
			env, withheld := r.Build(environ)
			if !reflect.DeepEqual(withheld, tt.want) {
				t.Errorf("withheld %q, want %q", withheld, tt.want)
			}
			if !reflect.DeepEqual(env, r.Apply(environ)) {
				t.Errorf("Build's env %q differs from Apply's", env)
			}
			for _, name := range withheld {
				for _, kv := range env {
					if strings.HasPrefix(kv, name+"=") {
						t.Errorf("%s is reported withheld but reached the env", name)
					}
				}
			}
		})
	}
}

func TestParsePassEnv(t *testing.T) {
	tests := []struct {
		value   string
		want    []string
		wantErr bool
	}{
		{value: "", want: nil},
		{value: "GH_TOKEN", want: []string{"GH_TOKEN"}},
		{value: " GH_TOKEN , NPM_TOKEN,,", want: []string{"GH_TOKEN", "NPM_TOKEN"}},
		{value: "GH_TOKEN=x", wantErr: true},
		{value: "GH TOKEN", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParsePassEnv(tt.value)
		if (err != nil) != tt.wantErr || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParsePassEnv(%q) = %q, %v; want %q, error %v", tt.value, got, err, tt.want, tt.wantErr)
		}
		if err != nil && (!strings.Contains(err.Error(), PassEnvVar) || strings.Contains(err.Error(), "\n")) {
			t.Errorf("error %q must be one line naming %s", err, PassEnvVar)
		}
	}
}

func TestURLCredentials(t *testing.T) {
	tests := map[string]bool{
		"postgres://app:s3cret@db:5432/app":          true,
		"redis://:pw@cache:6379/0":                   true,
		"mysql://u:p@h/d?x=1":                        true,
		"a list: http://x, https://user:pw@proxy:80": true,
		"https://u:p@":                               true,
		"https://github.com/a/b":                     false,
		"ssh://git@github.com/a/b":                   false,
		"https://h/path?q=a:b@c":                     false,
		"https://h#frag:x@y":                         false,
		"://u:p@h":                                   false,
		"plain:text@host":                            false,
		"":                                           false,
	}
	for v, want := range tests {
		if got := HasURLCredentials(v); got != want {
			t.Errorf("HasURLCredentials(%q) = %v, want %v", v, got, want)
		}
	}
	got := FilterEnv([]string{"DATABASE_URL=postgres://app:s3cret@db/app", "HOMEPAGE_URL=https://example.com", "MIRROR=http://u:p@m"},
		[]string{"MIRROR"})
	if want := []string{"HOMEPAGE_URL=https://example.com", "MIRROR=http://u:p@m"}; !reflect.DeepEqual(got, want) {
		t.Errorf("FilterEnv = %q, want %q", got, want)
	}
	// A value with credentials is reported withheld like a secret name.
	_, withheld := NewEnvRecipe(nil, nil, "/h", "u").Build([]string{"DATABASE_URL=postgres://app:s3cret@db/app", "LECTIC_CACHE=/c"})
	if want := []string{"DATABASE_URL"}; !reflect.DeepEqual(withheld, want) {
		t.Errorf("withheld %q, want %q", withheld, want)
	}
}

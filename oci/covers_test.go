package oci

import (
	"reflect"
	"strings"
	"testing"
)

func TestCoverPlan(t *testing.T) {
	hide := func(p string) Cover { return Cover{Path: p, Hide: true, Why: "the sandbox's state"} }
	ro := func(p string) Cover { return Cover{Path: p, Why: "LECTIC_DATA"} }
	tests := []struct {
		name    string
		c       Config
		want    []BindCovers
		wantErr string
	}{
		{
			name: "workdir is $HOME: the cache hidden, LECTIC_DATA and the binary read-only, the way to each pinned",
			c: Config{Workdir: "/home/u", Home: "/home/u/.cache/lectic/nix-sandbox/home/ab", HomeTarget: "/home/u", HomeIsOwn: true,
				Covers: []Cover{hide("/home/u/.cache/lectic/nix-sandbox"), hide("/tmp/lectic/nix-sandbox"),
					ro("/home/u/.local/share/lectic"), ro("/home/u/.local/share/lectic/plugins/nix-sandbox/lectic-nix-sandbox"),
					ro("/home/u/bin/lectic-nix-sandbox")}},
			want: []BindCovers{{Source: "/home/u", Target: "/home/u", Steps: []CoverStep{
				{".cache", CoverPin}, {".local", CoverPin}, {"bin", CoverPin},
				{".cache/lectic", CoverPin}, {".local/share", CoverPin}, {"bin/lectic-nix-sandbox", CoverReadOnly},
				{".cache/lectic/nix-sandbox", CoverHide}, {".local/share/lectic", CoverReadOnly},
			}}},
		},
		{
			name: "workdir is $TMPDIR: the temp root hidden",
			c:    Config{Workdir: "/tmp", Covers: []Cover{hide("/tmp/lectic/nix-sandbox")}},
			want: []BindCovers{{Source: "/tmp", Target: "/tmp", Steps: []CoverStep{{"lectic", CoverPin}, {"lectic/nix-sandbox", CoverHide}}}},
		},
		{
			name: "a read-only volume needs only the hidden ones, at its target",
			c: Config{Volumes: []Volume{{Source: "/home/u", Target: "/h", ReadOnly: true}},
				Covers: []Cover{hide("/home/u/.cache/x"), ro("/home/u/.local/share/lectic")}},
			want: []BindCovers{{Source: "/home/u", Target: "/h", Steps: []CoverStep{{".cache/x", CoverHide}}}},
		},
		{
			name: "what lies in a hidden or read-only dir needs nothing more",
			c:    Config{Workdir: "/w", Covers: []Cover{hide("/w/a"), ro("/w/a/b/c"), ro("/w/r"), ro("/w/r/s"), hide("/w/r/t/sock")}},
			want: []BindCovers{{Source: "/w", Target: "/w", Steps: []CoverStep{{"a", CoverHide}, {"r", CoverReadOnly}, {"r/t/sock", CoverHide}}}},
		},
		{
			name: "binds that hold no cover are left alone",
			c:    Config{Workdir: "/w", Volumes: []Volume{{Source: "/data", Target: "/data"}}, Covers: []Cover{hide("/other")}},
		},
		{
			name:    "a workdir inside the sandbox's state",
			c:       Config{Workdir: "/home/u/.cache/lectic/nix-sandbox/x", Covers: []Cover{hide("/home/u/.cache/lectic/nix-sandbox")}},
			wantErr: "workdir /home/u/.cache/lectic/nix-sandbox/x lies inside the sandbox's state (/home/u/.cache/lectic/nix-sandbox), which no command may reach",
		},
		{
			name:    "a read-write volume inside a read-only cover",
			c:       Config{Volumes: []Volume{{Source: "/d/lectic/x", Target: "/persist"}}, Covers: []Cover{ro("/d/lectic")}},
			wantErr: "volume /d/lectic/x lies inside LECTIC_DATA (/d/lectic), which must stay read-only",
		},
		{
			name: "a read-only volume inside a read-only cover is fine",
			c:    Config{Volumes: []Volume{{Source: "/d/lectic/x", Target: "/x", ReadOnly: true}}, Covers: []Cover{ro("/d/lectic")}},
		},
		{
			name:    "a read-only volume of a hidden dir is not",
			c:       Config{Volumes: []Volume{{Source: "/t/nix-sandbox", Target: "/x", ReadOnly: true}}, Covers: []Cover{hide("/t/nix-sandbox")}},
			wantErr: "no command may reach",
		},
		{
			name: "the refusal says what to do",
			c: Config{Volumes: []Volume{{Source: "/c/lectic", Target: "/c"}},
				Covers: []Cover{{Path: "/c/lectic", Why: "LECTIC_CONFIG", Refuse: "pass --allow-host-config-writes to allow it"}}},
			wantErr: "pass --allow-host-config-writes",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CoverPlan(tt.c)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("CoverPlan = %+v, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("CoverPlan:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

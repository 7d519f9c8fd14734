package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

func TestLauncherTime(t *testing.T) {
	needBusybox(t)
	bb, _ := findBusybox()
	l, err := newLauncher(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tests := []struct {
		name    string
		argv    []string
		wantErr string // substring; "" means success
	}{
		{"success", []string{bb, "true"}, ""},
		{"exit status reported", []string{bb, "false"}, "exit status 1"},
		{"stderr tail reported", []string{bb, "sh", "-c", "echo first >&2; echo the reason >&2; exit 3"}, "exit status 3: the reason"},
		{"earlier stderr not blamed", []string{bb, "false"}, "(no stderr)"},
		{"missing program", []string{"/nonexistent/prog"}, "start /nonexistent/prog"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := l.Time(proc{argv: tt.argv, dir: "/"})
			if tt.wantErr == "" {
				if err != nil || d <= 0 {
					t.Fatalf("Time = %v, %v; want a positive duration", d, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Time error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	needBusybox(t)
	bb, _ := findBusybox()
	ctx := context.Background()
	if err := verify(ctx, proc{argv: []string{bb, "echo", "hi"}, dir: "/"}, "hi\n"); err != nil {
		t.Errorf("verify of matching output: %v", err)
	}
	if err := verify(ctx, proc{argv: []string{bb, "echo", "ho"}, dir: "/"}, "hi\n"); err == nil {
		t.Error("verify accepted the wrong output")
	}
}

func TestShellJoin(t *testing.T) {
	tests := []struct {
		argv []string
		want string
	}{
		{[]string{"sh", "-c", "echo hi"}, "sh -c 'echo hi'"},
		{[]string{"a", "it's"}, `a 'it'\''s'`},
		{[]string{"x", ""}, "x ''"},
	}
	for _, tt := range tests {
		if got := shellJoin(tt.argv); got != tt.want {
			t.Errorf("shellJoin(%q) = %s, want %s", tt.argv, got, tt.want)
		}
	}
}

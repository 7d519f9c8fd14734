package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// proc is one process to start: argv[0] is an absolute path, so no PATH
// search happens inside the timed window.
type proc struct {
	argv []string
	env  []string
	dir  string
}

// launcher starts processes with as little work as Go allows between the
// clock reads: os.StartProcess with prepared stdio, then Wait. Stderr goes
// to a log file so a failure can be explained without a pipe per call.
type launcher struct {
	devnull *os.File
	stderr  *os.File
}

func newLauncher(logPath string) (*launcher, error) {
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		devnull.Close()
		return nil, fmt.Errorf("open child log: %w", err)
	}
	return &launcher{devnull: devnull, stderr: log}, nil
}

func (l *launcher) Close() {
	l.devnull.Close()
	l.stderr.Close()
}

// Time runs p to completion and returns its wall time. A non-zero exit is
// an error carrying the tail of what the process wrote to stderr.
func (l *launcher) Time(p proc) (time.Duration, error) {
	mark := l.logSize()
	attr := &os.ProcAttr{Dir: p.dir, Env: p.env, Files: []*os.File{l.devnull, l.devnull, l.stderr}}
	start := time.Now()
	child, err := os.StartProcess(p.argv[0], p.argv, attr)
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", p.argv[0], err)
	}
	st, err := child.Wait()
	elapsed := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("wait for %s: %w", p.argv[0], err)
	}
	if !st.Success() {
		return 0, fmt.Errorf("%s: %s: %s", shortArgv(p.argv), st, l.logTail(mark))
	}
	return elapsed, nil
}

func (l *launcher) logSize() int64 {
	fi, err := l.stderr.Stat()
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logTail returns the last non-empty line written to the log since mark.
func (l *launcher) logTail(mark int64) string {
	b, err := os.ReadFile(l.stderr.Name())
	if err != nil || int64(len(b)) < mark {
		return "(no stderr)"
	}
	return lastLine(b[mark:])
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	line := strings.TrimSpace(lines[len(lines)-1])
	if line == "" {
		return "(no stderr)"
	}
	return line
}

// Output runs p untimed and returns its stdout; used to check that a
// scenario does what it claims before timing it.
func Output(ctx context.Context, p proc, stdin io.Reader) (string, error) {
	cmd := exec.CommandContext(ctx, p.argv[0], p.argv[1:]...)
	cmd.Env, cmd.Dir, cmd.Stdin = p.env, p.dir, stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %v: %s", shortArgv(p.argv), err, lastLine(stderr.Bytes()))
	}
	return stdout.String(), nil
}

// shellJoin renders argv the way a person would type it.
func shellJoin(argv []string) string {
	parts := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?;&|<>()") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts[i] = a
	}
	return strings.Join(parts, " ")
}

// shortArgv names a command in an error by its program's base name and
// first arguments; the full paths are in results.json.
func shortArgv(argv []string) string {
	short := append([]string{filepath.Base(argv[0])}, argv[1:min(len(argv), 4)]...)
	s := shellJoin(short)
	if len(argv) > 4 {
		s += " …"
	}
	return s
}

package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes where and how the numbers were taken, so a result file
// read months later still says what it measured.
type Machine struct {
	Hostname   string            `json:"hostname"`
	OS         string            `json:"os"`
	Kernel     string            `json:"kernel"`
	CPU        string            `json:"cpu"`
	CPUs       int               `json:"cpus"`
	MemoryMB   int               `json:"memory_mb"`
	Cgroup     string            `json:"cgroup"`
	GoVersion  string            `json:"go"`
	Date       string            `json:"date"`
	User       string            `json:"user"`
	UID        int               `json:"uid"`
	Binary     string            `json:"binary"`
	Image      string            `json:"image"`
	ImageBytes int64             `json:"image_bytes"`
	Quick      bool              `json:"quick"`
	Iterations map[string]int    `json:"iterations"`
	Tools      map[string]string `json:"tools"`
	Launcher   string            `json:"launcher"`
}

// describeMachine gathers what it can; an unreadable detail stays empty
// rather than failing the run.
func describeMachine(ctx context.Context, now time.Time) Machine {
	m := Machine{
		OS:        osRelease(),
		Kernel:    firstLine(readFile("/proc/sys/kernel/osrelease")),
		CPU:       cpuModel(),
		CPUs:      runtime.NumCPU(),
		MemoryMB:  memTotalMB(),
		Cgroup:    cgroupMode(),
		GoVersion: runtime.Version(),
		Date:      now.UTC().Format(time.RFC3339),
		UID:       os.Getuid(),
		Tools:     map[string]string{},
		Launcher:  "os.StartProcess + Wait, stdio /dev/null; wall time from fork/exec to reaped exit",
	}
	m.Hostname, _ = os.Hostname()
	for _, tool := range []string{"podman", "bwrap", "nix", "runc"} {
		if v := toolVersion(ctx, tool); v != "" {
			m.Tools[tool] = v
		}
	}
	return m
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}

func osRelease() string {
	for _, line := range strings.Split(readFile("/etc/os-release"), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return runtime.GOOS
}

func cpuModel() string {
	return procField("/proc/cpuinfo", "model name")
}

func memTotalMB() int {
	f := strings.Fields(procField("/proc/meminfo", "MemTotal"))
	if len(f) == 0 {
		return 0
	}
	kb, _ := strconv.Atoi(f[0])
	return kb / 1024
}

// procField returns the value of the first "key: value" line named key.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func cgroupMode() string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return "v2"
	}
	if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.controllers"); err == nil {
		return "v1 hybrid"
	}
	return "v1"
}

func toolVersion(ctx context.Context, tool string) string {
	path, err := exec.LookPath(tool)
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return ""
	}
	return firstLine(string(out))
}

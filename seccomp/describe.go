package seccomp

import (
	"strings"

	"golang.org/x/sys/unix"
)

var namespaceFlags = []struct {
	flag uint64
	name string
}{
	{unix.CLONE_NEWUSER, "CLONE_NEWUSER"}, {unix.CLONE_NEWNS, "CLONE_NEWNS"},
	{unix.CLONE_NEWPID, "CLONE_NEWPID"}, {unix.CLONE_NEWNET, "CLONE_NEWNET"},
	{unix.CLONE_NEWIPC, "CLONE_NEWIPC"}, {unix.CLONE_NEWUTS, "CLONE_NEWUTS"},
	{unix.CLONE_NEWCGROUP, "CLONE_NEWCGROUP"}, {unix.CLONE_NEWTIME, "CLONE_NEWTIME"},
}

var families = map[uint64]string{
	unix.AF_UNIX: "AF_UNIX", unix.AF_INET: "AF_INET", unix.AF_INET6: "AF_INET6",
	unix.AF_NETLINK: "AF_NETLINK", unix.AF_PACKET: "AF_PACKET", unix.AF_VSOCK: "AF_VSOCK",
	unix.AF_BLUETOOTH: "AF_BLUETOOTH", unix.AF_CAN: "AF_CAN", unix.AF_ALG: "AF_ALG",
	unix.AF_XDP: "AF_XDP", unix.AF_KEY: "AF_KEY", unix.AF_TIPC: "AF_TIPC", unix.AF_RDS: "AF_RDS",
	unix.AF_APPLETALK: "AF_APPLETALK", unix.AF_X25: "AF_X25", unix.AF_BRIDGE: "AF_BRIDGE",
	unix.AF_KCM: "AF_KCM", unix.AF_SMC: "AF_SMC", unix.AF_QIPCRTR: "AF_QIPCRTR",
}

var ioctls = map[uint64]string{unix.TIOCSTI: "TIOCSTI", unix.TIOCLINUX: "TIOCLINUX"}

// Describe names a system call as the sandbox reports it: the call's name
// and, for the calls whose refusal depends on an argument, that argument
// by name (never a value the command chose, such as a path or a number
// without a name).
func (f *Filter) Describe(d *Data) string {
	name := f.Arch.SyscallName(d.Nr)
	switch name {
	case "clone", "unshare":
		var set []string
		for _, fl := range namespaceFlags {
			if name == "clone" && fl.flag == unix.CLONE_NEWTIME {
				continue // part of the exit signal for clone
			}
			if d.Args[0]&fl.flag != 0 {
				set = append(set, fl.name)
			}
		}
		if len(set) > 0 {
			return name + "(" + strings.Join(set, "|") + ")"
		}
	case "socket", "socketpair":
		if n, ok := families[uint64(uint32(d.Args[0]))]; ok {
			return name + "(" + n + ")"
		}
	case "ioctl":
		if n, ok := ioctls[uint64(uint32(d.Args[1]))]; ok {
			return name + "(" + n + ")"
		}
	}
	return name
}

// Name is the system call's name alone.
func (f *Filter) Name(d *Data) string { return f.Arch.SyscallName(d.Nr) }

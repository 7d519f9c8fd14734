package namespace

import "syscall"

// CreatorSysProcAttr returns the attributes for re-executing ourselves as
// the supervisor: alone in a new user and mount namespace where uid/gid 0
// is the caller (size 1), so it may mount the overlay root. Setgroups stays
// denied, which is what lets an unprivileged parent write the gid map. The
// child gets its own session because it outlives the client that starts it.
func CreatorSysProcAttr(hostUID, hostGID int) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: hostUID, Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: hostGID, Size: 1}},
		GidMappingsEnableSetgroups: false,
		Setsid:                     true,
	}
}

// Package seccomp builds and installs the system call filter every command
// in the sandbox runs under, without libseccomp: the binary is static, and
// libcontainer's own seccomp support needs cgo libseccomp. Programs are
// classic BPF, assembled with golang.org/x/net/bpf; the system call tables
// are copied from github.com/elastic/go-seccomp-bpf/arch (tables_test.go
// keeps them equal); profiles are the OCI/Docker JSON format, read with
// github.com/moby/profiles/seccomp's types.
//
// # The default profile
//
// Default starts from Docker's default profile (moby/profiles, which
// podman's is derived from): an allowlist, where anything not listed is
// refused with EPERM. Left out by Docker, and so refused here: nested
// namespaces (clone/unshare with namespace flags, setns), the mount family
// (mount, umount, pivot_root, fsopen, fsconfig, fsmount, fspick, open_tree,
// move_mount, mount_setattr), io_uring, bpf, userfaultfd, perf_event_open
// and the keyring (keyctl, add_key, request_key). Made stricter here:
//   - ptrace, process_vm_readv/writev, pidfd_getfd, kcmp and
//     process_madvise are refused outright (Docker allows the first three
//     on kernels >= 4.8): they reach other processes' memory and
//     descriptors, and the agent and identity helpers must stay out of
//     reach even of --user root;
//   - socket() is allowed only for AF_UNIX, AF_INET, AF_INET6 and
//     AF_NETLINK (Docker allows a dozen families, Flatpak five);
//   - ioctl TIOCSTI and TIOCLINUX are refused (as Flatpak does), comparing
//     only the 32 bits the kernel reads;
//   - unshare is allowed without namespace flags (CLONE_FILES, CLONE_FS),
//     get_mempolicy, which only reads the caller's NUMA policy (ps and top
//     ask for it), and personality(ADDR_NO_RANDOMIZE), which Nix sets for
//     every build.
//
// clone3 gets ENOSYS so that libc falls back to clone, whose flags a filter
// can read (as Docker and Flatpak do). Calls newer than the table get
// ENOSYS too, as runc arranges, so libc's fallbacks work. Other ABIs on the
// same machine (i386 and x32 on x86-64, arm32 on arm64) are refused: the
// filter checks the architecture first and kills a process that uses
// another one, and answers ENOSYS to x32 numbers.
//
// # Reporting refusals
//
// The program the kernel runs (Filter.Install) sends every refusal except
// ENOSYS to a listener as SECCOMP_RET_USER_NOTIF; Filter.Serve answers each
// with the errno the profile gives it (found by running the same program,
// with errnos in place of notifications, in x/net/bpf's VM) after a report
// callback has named it (Filter.Describe). A refused call is always
// answered with a refusal: no answer lets through a call the profile does
// not allow, so a listener that dies or is fooled can only turn a refusal
// into ENOSYS.
//
// # Intercepting allowed calls
//
// Filter.Intercept prefixes the kernel program so that some calls the
// profile allows (connect(2), for package netfwd) reach the listener too;
// ServeIntercepting hands them to a callback that carries them out in the
// caller's place (PlaceFD, Return) or lets them go on as made (Continue).
// Only calls the profile allows are intercepted, so the answers can make
// no call possible that the profile refuses. A filter with a listener
// cannot be stacked with another listener, so a command cannot install a
// filter with SECCOMP_FILTER_FLAG_NEW_LISTENER of its own.
//
// Filter.Program is the kernel program for installing the filter in
// another process: package spawn installs it in a command between fork
// and exec and hands the listener back; identity helpers (package warm)
// install it on themselves with Install.
package seccomp

/*
 * The exec trampoline: the last step of a command that the agent forks
 * itself rather than through an identity helper (a one-shot container's
 * command, or a command that cannot use a helper). Go's fork/exec runs no
 * code of ours between clone and execve, so the child execs this binary
 * once more with _LECTIC_NIX_SANDBOX_EXEC set, and this constructor, which
 * runs before the Go runtime starts, does what must happen in the command's
 * own process and then execs the command:
 *
 *   _LECTIC_NIX_SANDBOX_EXEC=<dropcaps>,<rlimit_as>,<filter fd>,<report fd>,<path>
 *
 * dropcaps 1: clear every capability set, lock the securebits that would
 *   give uid 0 capabilities back at exec, set no_new_privs (a uid 0
 *   command in its own user namespace, as warm's dropAllCaps does).
 * rlimit_as > 0: RLIMIT_AS for --memory where no cgroup can hold it.
 * filter fd >= 0: a compiled filter (install.go's binary form); installed
 *   with a listener, which goes to the agent over report fd (SCM_RIGHTS) so
 *   the agent can answer and report refusals.
 *
 * The variable is removed before exec. Failures print one line and exit
 * 125, or 126/127 when the command itself cannot be executed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char **environ;

#define ENV_EXEC "_LECTIC_NIX_SANDBOX_EXEC="
#define FILTER_MAGIC "LNSBPF1"

static void fail(int code, const char *what, int err)
{
	char line[512];
	int n;
	if (err)
		n = snprintf(line, sizeof line, "lectic-nix-sandbox: %s: %s\n", what, strerror(err));
	else
		n = snprintf(line, sizeof line, "lectic-nix-sandbox: %s\n", what);
	if (n > 0)
		while (write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1) < 0 && errno == EINTR)
			;
	_exit(code);
}

static void drop_caps(void)
{
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];
	int c;

	for (c = 0; c < 64; c++)
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) && errno != EINVAL)
			fail(125, "drop capabilities", errno);
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) && errno != EINVAL)
		fail(125, "clear ambient capabilities", errno);
	/* SECBIT_NOROOT, NO_SETUID_FIXUP, KEEP_CAPS_LOCKED, NO_CAP_AMBIENT_RAISE, locked */
	if (prctl(PR_SET_SECUREBITS, 0xef, 0, 0, 0))
		fail(125, "set securebits", errno);
	memset(data, 0, sizeof data);
	if (syscall(SYS_capset, &hdr, data))
		fail(125, "clear capabilities", errno);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		fail(125, "set no_new_privs", errno);
}

static void install_filter(int ffd, int rfd)
{
	unsigned char head[24];
	uint32_t n;
	struct sock_filter *insns;
	struct sock_fprog prog;
	struct msghdr mh = {0};
	struct iovec iov;
	char ctl[CMSG_SPACE(sizeof(int))];
	struct cmsghdr *cm;
	int lfd;

	if (pread(ffd, head, sizeof head, 0) != sizeof head || memcmp(head, FILTER_MAGIC, 8))
		fail(125, "read the seccomp filter: not a compiled filter", 0);
	memcpy(&n, head + 12, 4);
	if (n == 0 || n > 4096)
		fail(125, "read the seccomp filter: bad length", 0);
	insns = calloc(n, sizeof *insns);
	if (!insns)
		fail(125, "read the seccomp filter", ENOMEM);
	if (pread(ffd, insns, n * sizeof *insns, sizeof head) != (ssize_t)(n * sizeof *insns))
		fail(125, "read the seccomp filter: truncated", 0);
	close(ffd);
	prog.len = n;
	prog.filter = insns;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		fail(125, "set no_new_privs", errno);
	lfd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
	if (lfd < 0)
		fail(125, "install the seccomp filter", errno);
	free(insns);
	if (rfd >= 0) {
		iov.iov_base = "l";
		iov.iov_len = 1;
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = ctl;
		mh.msg_controllen = sizeof ctl;
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &lfd, sizeof(int));
		while (sendmsg(rfd, &mh, MSG_NOSIGNAL) < 0)
			if (errno != EINTR)
				fail(125, "hand the seccomp listener to the agent", errno);
		close(rfd);
	}
	close(lfd);
}

__attribute__((constructor)) static void lns_exec_trampoline(void)
{
	char **e, **env, *spec = NULL, *path, *end;
	int dropcaps, ffd, rfd, n = 0, i = 0;
	unsigned long long as;
	int code;

	for (e = environ; *e; e++) {
		n++;
		if (!strncmp(*e, ENV_EXEC, sizeof ENV_EXEC - 1))
			spec = *e + sizeof ENV_EXEC - 1;
	}
	if (!spec)
		return;
	dropcaps = (int)strtol(spec, &end, 10);
	if (*end++ != ',')
		fail(125, "bad exec trampoline request", 0);
	as = strtoull(end, &end, 10);
	if (*end++ != ',')
		fail(125, "bad exec trampoline request", 0);
	ffd = (int)strtol(end, &end, 10);
	if (*end++ != ',')
		fail(125, "bad exec trampoline request", 0);
	rfd = (int)strtol(end, &end, 10);
	if (*end++ != ',')
		fail(125, "bad exec trampoline request", 0);
	path = end;

	env = calloc(n + 1, sizeof *env);
	if (!env)
		fail(125, "exec trampoline", ENOMEM);
	for (e = environ; *e; e++)
		if (strncmp(*e, ENV_EXEC, sizeof ENV_EXEC - 1))
			env[i++] = *e;

	if (as > 0) {
		struct rlimit r = {as, as};
		if (setrlimit(RLIMIT_AS, &r))
			fail(125, "set the memory limit (RLIMIT_AS)", errno);
	}
	if (dropcaps)
		drop_caps();
	if (ffd >= 0)
		install_filter(ffd, rfd);
	else if (rfd >= 0)
		close(rfd);

	/* argv of this process is the command's: the agent execs us with it. */
	{
		char *argv_buf = NULL;
		char **argv = NULL;
		size_t len = 0, cap = 0;
		int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC), argc = 0, k;
		char chunk[4096], *p;
		ssize_t got;

		if (fd < 0)
			fail(125, "read the command line", errno);
		while ((got = read(fd, chunk, sizeof chunk)) != 0) {
			if (got < 0 && errno == EINTR)
				continue;
			if (got < 0)
				fail(125, "read the command line", errno);
			if (len + got + 1 > cap) {
				cap = (len + got + 1) * 2;
				argv_buf = realloc(argv_buf, cap);
				if (!argv_buf)
					fail(125, "read the command line", ENOMEM);
			}
			memcpy(argv_buf + len, chunk, got);
			len += got;
		}
		close(fd);
		if (!argv_buf)
			fail(125, "read the command line: empty", 0);
		argv_buf[len] = 0;
		for (p = argv_buf; p < argv_buf + len; p += strlen(p) + 1)
			argc++;
		argv = calloc(argc + 1, sizeof *argv);
		if (!argv)
			fail(125, "read the command line", ENOMEM);
		for (k = 0, p = argv_buf; p < argv_buf + len; p += strlen(p) + 1)
			argv[k++] = p;
		execve(path, argv, env);
	}
	code = (errno == ENOENT) ? 127 : 126;
	{
		char what[512];
		snprintf(what, sizeof what, code == 127 ? "command not found: %s (or its interpreter)" : "cannot execute %s", path);
		fail(code, what, code == 127 ? 0 : errno);
	}
}

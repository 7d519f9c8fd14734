/*
 * A fork and exec that confines the child between the two. Go's own
 * fork/exec runs no code of ours in the child, so confining a command there
 * used to cost one more exec of this 8 MB binary; here the child does it in
 * place. See doc.go for what the child does and in which order.
 *
 * The child is a fork (no CLONE_VM) of a multi-threaded Go process: it may
 * only make system calls. No malloc, no stdio, no libc call that takes a
 * lock or, like musl's setuid and setrlimit, signals every thread of the
 * parent it no longer has. Everything it needs was prepared before clone.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spawn.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif

/* The kernel's struct sigaction head: the handler comes first on every
 * architecture; the rest is zero for SIG_DFL. */
struct ksigaction {
	void *handler;
	unsigned long flags;
	unsigned long rest[4];
};

struct child_err {
	int32_t stage;
	int32_t err;
};

static void child_fail(int fd, int stage, int err)
{
	struct child_err e = {stage, err};
	while (write(fd, &e, sizeof e) < 0 && errno == EINTR)
		;
	syscall(SYS_exit_group, 127);
	for (;;)
		;
}

/* Signals stay blocked from before clone until just before execve; the Go
 * runtime's handlers must be gone by then, as its own fork/exec does. */
static void default_handlers(void)
{
	struct ksigaction old, dfl;
	int sig;

	memset(&dfl, 0, sizeof dfl);
	for (sig = 1; sig < 65; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		memset(&old, 0, sizeof old);
		if (syscall(SYS_rt_sigaction, sig, NULL, &old, 8))
			continue;
		if (old.handler == SIG_IGN || old.handler == SIG_DFL)
			continue;
		syscall(SYS_rt_sigaction, sig, &dfl, NULL, 8);
	}
}

/* The child's fds become files[0..n-1]: every source is first copied above
 * n, so no dup2 overwrites a source a later one still needs. */
static int place_files(const int *files, int n)
{
	int copies[LNS_SPAWN_MAX_FILES];
	int i;

	for (i = 0; i < n; i++) {
		copies[i] = -1;
		if (files[i] >= 0 && (copies[i] = fcntl(files[i], F_DUPFD_CLOEXEC, n)) < 0)
			return errno;
	}
	for (i = 0; i < n; i++) {
		if (copies[i] < 0) {
			close(i);
			continue;
		}
		if (dup2(copies[i], i) < 0)
			return errno;
		close(copies[i]);
	}
	/* Nothing else reaches the command, whatever forgot O_CLOEXEC. */
	syscall(SYS_close_range, (unsigned)n, ~0U, CLOSE_RANGE_CLOEXEC);
	return 0;
}

static int drop_caps(void)
{
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];
	int c;

	for (c = 0; c < 64; c++)
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) && errno != EINVAL)
			return errno;
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) && errno != EINVAL)
		return errno;
	/* SECBIT_NOROOT, NO_SETUID_FIXUP, KEEP_CAPS_LOCKED, NO_CAP_AMBIENT_RAISE, locked */
	if (prctl(PR_SET_SECUREBITS, 0xef, 0, 0, 0))
		return errno;
	memset(data, 0, sizeof data);
	if (syscall(SYS_capset, &hdr, data))
		return errno;
	return 0;
}

static int send_fd(int sock, int fd)
{
	struct msghdr mh = {0};
	struct iovec iov = {"l", 1};
	char ctl[CMSG_SPACE(sizeof(int))];
	struct cmsghdr *cm;

	memset(ctl, 0, sizeof ctl);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = ctl;
	mh.msg_controllen = sizeof ctl;
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	while (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0)
		if (errno != EINTR)
			return errno;
	return 0;
}

static void child(const struct lns_spawn *s, const sigset_t *mask, int errfd, int syncfd, int sock)
{
	char c;
	int err, lfd;
	ssize_t got;

	default_handlers();
	if (syncfd >= 0) {
		/* Wait until the parent has written our id maps. */
		while ((got = read(syncfd, &c, 1)) < 0 && errno == EINTR)
			;
		if (got != 1)
			child_fail(errfd, LNS_STAGE_IDMAP, got < 0 ? errno : EPIPE);
	}
	if (s->setpgid && setpgid(0, 0))
		child_fail(errfd, LNS_STAGE_SETPGID, errno);
	if (s->userns) {
		if (syscall(SYS_setgid, s->gid))
			child_fail(errfd, LNS_STAGE_SETID, errno);
		if (syscall(SYS_setuid, s->uid))
			child_fail(errfd, LNS_STAGE_SETID, errno);
	}
	if (s->dir && chdir(s->dir))
		child_fail(errfd, LNS_STAGE_CHDIR, errno);
	if ((err = place_files(s->files, s->nfiles)))
		child_fail(errfd, LNS_STAGE_FILES, err);
	if (s->rlimit_as) {
		struct rlimit r = {s->rlimit_as, s->rlimit_as};
		if (syscall(SYS_prlimit64, 0, RLIMIT_AS, &r, NULL))
			child_fail(errfd, LNS_STAGE_RLIMIT, errno);
	}
	if (s->dropcaps && (err = drop_caps()))
		child_fail(errfd, LNS_STAGE_CAPS, err);
	if (s->dropcaps || s->filter_len)
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
			child_fail(errfd, LNS_STAGE_CAPS, errno);
	if (s->filter_len) {
		struct sock_fprog prog = {s->filter_len, (struct sock_filter *)s->filter};
		lfd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
		if (lfd < 0)
			child_fail(errfd, LNS_STAGE_SECCOMP, errno);
		if ((err = send_fd(sock, lfd)))
			child_fail(errfd, LNS_STAGE_SECCOMP, err);
		close(lfd);
	}
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, mask, NULL, 8);
	execve(s->path, s->argv, s->envp);
	child_fail(errfd, LNS_STAGE_EXEC, errno);
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), err = 0;
	size_t n = strlen(text);

	if (fd < 0)
		return errno;
	if (write(fd, text, n) != (ssize_t)n)
		err = errno ? errno : EIO;
	close(fd);
	return err;
}

static int write_maps(pid_t pid, const struct lns_spawn *s)
{
	char path[64], map[64];
	int err;

	snprintf(path, sizeof path, "/proc/%d/setgroups", (int)pid);
	if ((err = write_file(path, "deny")) && err != ENOENT)
		return err;
	snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
	snprintf(map, sizeof map, "%u %u 1\n", s->gid, s->host_gid);
	if ((err = write_file(path, map)))
		return err;
	snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
	snprintf(map, sizeof map, "%u %u 1\n", s->uid, s->host_uid);
	return write_file(path, map);
}

static int recv_fd(int sock)
{
	char b;
	struct iovec iov = {&b, 1};
	char ctl[CMSG_SPACE(sizeof(int))];
	struct msghdr mh = {0};
	struct cmsghdr *cm;
	int fd;

	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = ctl;
	mh.msg_controllen = sizeof ctl;
	while (recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT) < 0)
		if (errno != EINTR)
			return -1;
	cm = CMSG_FIRSTHDR(&mh);
	if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
	    cm->cmsg_len != CMSG_LEN(sizeof(int)))
		return -1;
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

static void close_pair(int p[2])
{
	if (p[0] >= 0)
		close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
	p[0] = p[1] = -1;
}

int lns_spawn(const struct lns_spawn *s, struct lns_spawn_result *res)
{
	int errp[2] = {-1, -1}, syncp[2] = {-1, -1}, sockp[2] = {-1, -1};
	sigset_t all, old;
	struct child_err ce;
	ssize_t got;
	long pid;
	int err, status;

	res->pid = -1;
	res->listener = -1;
	res->stage = LNS_STAGE_SETUP;
	res->err = 0;
	if (s->nfiles < 0 || s->nfiles > LNS_SPAWN_MAX_FILES)
		return res->err = EINVAL;
	if (pipe2(errp, O_CLOEXEC))
		return res->err = errno;
	if (s->userns && pipe2(syncp, O_CLOEXEC)) {
		err = errno;
		goto out;
	}
	if (s->filter_len && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sockp)) {
		err = errno;
		goto out;
	}

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid = syscall(SYS_clone, (unsigned long)SIGCHLD | (s->userns ? CLONE_NEWUSER : 0), 0, 0, 0, 0);
	if (pid == 0) {
		close(errp[0]);
		if (syncp[1] >= 0)
			close(syncp[1]);
		if (sockp[0] >= 0)
			close(sockp[0]);
		child(s, &old, errp[1], syncp[0], sockp[1]);
	}
	err = pid < 0 ? errno : 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (pid < 0)
		goto out;
	res->pid = (int)pid;
	close(errp[1]);
	errp[1] = -1;

	if (s->userns) {
		close(syncp[0]);
		syncp[0] = -1;
		if ((err = write_maps((pid_t)pid, s))) {
			res->stage = LNS_STAGE_IDMAP;
			kill((pid_t)pid, SIGKILL);
		} else if (write(syncp[1], "", 1) != 1) {
			err = errno;
			res->stage = LNS_STAGE_IDMAP;
			kill((pid_t)pid, SIGKILL);
		}
		close(syncp[1]);
		syncp[1] = -1;
	}

	/* EOF: the child exec'd (the pipe is close-on-exec). */
	while ((got = read(errp[0], &ce, sizeof ce)) < 0 && errno == EINTR)
		;
	if (!err && got == sizeof ce) {
		res->stage = ce.stage;
		err = ce.err;
	} else if (!err && got != 0) {
		res->stage = LNS_STAGE_SETUP;
		err = got < 0 ? errno : EPIPE;
	}
	if (!err && s->filter_len && (res->listener = recv_fd(sockp[0])) < 0) {
		res->stage = LNS_STAGE_SECCOMP;
		err = EPROTO;
		kill((pid_t)pid, SIGKILL);
	}
	if (err) {
		/* Reap it ourselves, as Go's fork/exec does when it fails. */
		while (waitpid((pid_t)pid, &status, 0) < 0 && errno == EINTR)
			;
		res->pid = -1;
	}
out:
	close_pair(errp);
	close_pair(syncp);
	close_pair(sockp);
	res->err = err;
	return err;
}

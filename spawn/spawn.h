#ifndef LNS_SPAWN_H
#define LNS_SPAWN_H

#include <linux/filter.h>
#include <stdint.h>

#define LNS_SPAWN_MAX_FILES 16

/* Where a start failed (lns_spawn_result.stage). */
enum {
	LNS_STAGE_SETUP = 1, /* pipes, clone, or reading the child's answer */
	LNS_STAGE_IDMAP,     /* writing the new user namespace's id maps */
	LNS_STAGE_SETPGID,
	LNS_STAGE_SETID,   /* setgid/setuid to the identity */
	LNS_STAGE_CHDIR,
	LNS_STAGE_FILES,   /* placing the child's fds */
	LNS_STAGE_RLIMIT,  /* RLIMIT_AS */
	LNS_STAGE_CAPS,    /* dropping capabilities, no_new_privs */
	LNS_STAGE_SECCOMP, /* installing the filter, handing its listener back */
	LNS_STAGE_EXEC,
};

struct lns_spawn {
	const char *path;
	char *const *argv;
	char *const *envp;
	const char *dir; /* NULL: stay */
	const int *files;
	int nfiles;
	int setpgid;
	/* userns: a new user namespace mapping uid/gid onto host_uid/host_gid,
	 * entered as uid/gid. */
	int userns;
	uint32_t uid, gid, host_uid, host_gid;
	int dropcaps;
	uint64_t rlimit_as;
	const struct sock_filter *filter;
	unsigned short filter_len;
};

struct lns_spawn_result {
	int pid;
	int listener;
	int stage;
	int err;
};

int lns_spawn(const struct lns_spawn *s, struct lns_spawn_result *res);

#endif

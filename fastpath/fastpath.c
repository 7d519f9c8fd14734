/*
 * The fast path: a warm call made before the Go runtime starts.
 *
 * This constructor runs in every process of the binary, before main and
 * before the Go runtime initialises (as runc's nsexec does). For a CLI call
 * it looks for the ticket an earlier call of the same invocation left (see
 * ticket.go for the format and doc.go for what makes a ticket valid). If the
 * ticket is there, every file it names still stats the same and its agent
 * answers, the call is made from here and the process exits with the
 * command's status. Anything else returns, and the Go CLI does the call the
 * long way, rewriting the ticket. Nothing is written here, so a wrong guess
 * can only cost the slow path.
 *
 * Before the request is sent, every failure falls back. After it is sent,
 * only the two answers that prove nothing ran (the agent reset the
 * connection unread, or answered "mismatch") fall back; everything else
 * ends here with the exit codes of warm.Run.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sha256.h"

extern char **environ;

#define MATERIAL_MAGIC "lectic-nix-sandbox fast path v2\n"
#define TICKET_MAGIC "lectic-nix-sandbox ticket 2"
#define ENV_MODE "_LECTIC_NIX_SANDBOX_FAST="
#define MAX_CANDIDATES 64
#define MAX_TICKET (1 << 20)
/* A reply from the agent; a request is any size (see struct request). */
#define MAX_MESSAGE (64 << 10)
/* execargs.MaxExec: the most argv and environment bytes execve ever takes. */
#define MAX_EXEC (6 << 20)
/* execargs.MaxInline: a larger request body goes in a sealed memfd. */
#define MAX_INLINE (32 << 10)
/* warm.shown: how much of a command name a message quotes. */
#define MAX_SHOWN 256
#define EXIT_NOEXEC 126
#define MAX_SOCKET 107
/* The range of --timeout (flagvalue.MinTimeout, MaxTimeout); 0 is none. */
#define MIN_TIMEOUT_NS 1000000LL
#define MAX_TIMEOUT_NS (365LL * 24 * 3600 * 1000000000LL)
#define EXIT_TIMEOUT 124
#define EXIT_SANDBOX 125

enum mode { MODE_ON, MODE_REQUIRE };

struct buf {
	char *p;
	size_t n, cap;
	int oom;
};

static void buf_add(struct buf *b, const void *s, size_t n)
{
	if (b->oom)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *p;
		while (cap < b->n + n + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p) {
			b->oom = 1;
			return;
		}
		b->p = p, b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

static void buf_str(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }

/* buf_reserve makes room for n more bytes at once. */
static void buf_reserve(struct buf *b, size_t n)
{
	char *p;
	if (b->oom || b->n + n + 1 <= b->cap)
		return;
	p = realloc(b->p, b->n + n + 1);
	if (!p) {
		b->oom = 1;
		return;
	}
	b->p = p, b->cap = b->n + n + 1;
}

/*
 * printable is warm.Printable over line[:n], in place: line breaks and
 * tabs become spaces, other control characters ('?') cannot drive the
 * caller's terminal. It returns the new length.
 */
static int printable(char *line, int n)
{
	int i, o = 0;

	for (i = 0; i < n; i++) {
		unsigned char ch = line[i];
		if (ch == '\n' || ch == '\r' || ch == '\t')
			ch = ' ';
		else if (ch < 0x20 || ch == 0x7f)
			ch = '?';
		else if (ch == 0xc2 && i + 1 < n && (unsigned char)line[i + 1] >= 0x80 && (unsigned char)line[i + 1] < 0xa0)
			ch = '?', i++; /* a C1 control, U+0080..U+009F */
		line[o++] = ch;
	}
	return o;
}

static void say(const char *fmt, ...)
{
	char line[4096];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof line - 2)
		n = sizeof line - 2;
	n = printable(line, n);
	line[n++] = '\n';
	while (write(2, line, n) < 0 && errno == EINTR)
		;
}

/*
 * ---- a set of variable names ----
 *
 * An environment may hold tens of thousands of variables, and a ticket as
 * many image variables: every lookup by name goes through a hash table, so
 * the work is linear in what is read (Go's maps, on the Go side).
 */

/*
 * A table maps a name to the index of its first entry in an array its
 * owner keeps (key reads an entry's name back). A slot is 8 bytes: the
 * index and 32 bits of the name's hash, which spares most comparisons;
 * tables are sized up front, so they are touched once and never rehashed
 * on the common path.
 */
typedef const char *(*key_fn)(const void *owner, int idx, size_t *nlen);

struct names {
	uint64_t *slot; /* hash << 32 | (index + 1); 0 is empty */
	size_t cap, n;  /* cap is a power of two */
	key_fn key;
	const void *owner;
};

static uint64_t name_hash(const char *name, size_t n)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	size_t i;
	for (i = 0; i < n; i++)
		h = (h ^ (unsigned char)name[i]) * 1099511628211ULL;
	return h;
}

static int names_init(struct names *t, size_t expected, key_fn key, const void *owner)
{
	t->cap = 16;
	while (3 * t->cap < 4 * (expected + 1))
		t->cap *= 2;
	t->n = 0, t->key = key, t->owner = owner;
	t->slot = calloc(t->cap, sizeof *t->slot);
	return t->slot ? 0 : -1;
}

/* names_find returns name's slot: its entry, or the empty slot it would
 * take. */
static uint64_t *names_find(const struct names *t, const char *name, size_t n, uint32_t h)
{
	size_t i = h & (t->cap - 1);
	for (;; i = (i + 1) & (t->cap - 1)) {
		uint64_t v = t->slot[i];
		const char *k;
		size_t klen;
		if (!v)
			return &t->slot[i];
		if ((uint32_t)(v >> 32) != h)
			continue;
		k = t->key(t->owner, (int)(uint32_t)v - 1, &klen);
		if (klen == n && !memcmp(k, name, n))
			return &t->slot[i];
	}
}

/* names_get returns the index stored for name, or -1. */
static int names_get(const struct names *t, const char *name, size_t n)
{
	uint64_t v;
	if (!t->cap)
		return -1;
	v = *names_find(t, name, n, (uint32_t)name_hash(name, n));
	return v ? (int)(uint32_t)v - 1 : -1;
}

/* names_put stores idx for name unless name is there already; it returns
 * the index stored for name, or -1 when out of memory. */
static int names_put(struct names *t, const char *name, size_t n, int idx)
{
	uint32_t h = (uint32_t)name_hash(name, n);
	uint64_t *sl;
	/* at most 3/4 full: short probes, and few pages to touch (the
	 * first touch of each is a page fault) */
	if (4 * (t->n + 1) > 3 * t->cap) {
		struct names bigger = *t;
		size_t i;
		bigger.cap = 2 * t->cap;
		bigger.slot = calloc(bigger.cap, sizeof *bigger.slot);
		if (!bigger.slot)
			return -1;
		for (i = 0; i < t->cap; i++) {
			uint64_t v = t->slot[i];
			size_t j = (v >> 32) & (bigger.cap - 1);
			if (!v)
				continue;
			while (bigger.slot[j])
				j = (j + 1) & (bigger.cap - 1);
			bigger.slot[j] = v;
		}
		free(t->slot);
		*t = bigger;
	}
	sl = names_find(t, name, n, h);
	if (!*sl) {
		*sl = (uint64_t)h << 32 | (uint32_t)(idx + 1);
		t->n++;
	}
	return (int)(uint32_t)*sl - 1;
}

/* ---- what the call is: the material its ticket is named by ---- */

struct call {
	char *cmdline;      /* /proc/self/cmdline */
	char **args;        /* argv[1:] */
	int nargs;
	char **env;         /* environ as os.Environ returns it */
	int nenv;
	char **envp;        /* the environ it was made from */
	struct names first; /* name -> index in envp of its first entry */
	char exe[PATH_MAX];
	char cwd[PATH_MAX];
	char dir[PATH_MAX]; /* T/fast, T as pickTemp chooses it */
	struct stat exest;
};

static void hash_lp(struct sha256 *h, const char *s)
{
	char n[24];
	int len = snprintf(n, sizeof n, "%zu:", strlen(s));
	sha256_update(h, n, len);
	sha256_update(h, s, strlen(s));
}

static void hash_fmt(struct sha256 *h, const char *fmt, ...)
{
	char line[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n > 0 && (size_t)n < sizeof line)
		sha256_update(h, line, n);
}

static const char *read_cmdline(struct call *c)
{
	struct buf b = {0};
	char chunk[4096];
	int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	ssize_t n;
	int i, argc = 0;
	char *p;

	if (fd < 0)
		return "cannot read /proc/self/cmdline";
	while ((n = read(fd, chunk, sizeof chunk)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		buf_add(&b, chunk, n);
	}
	close(fd);
	if (n < 0 || b.oom || b.n == 0)
		return "cannot read /proc/self/cmdline";
	for (p = b.p; p < b.p + b.n; p += strlen(p) + 1)
		argc++;
	c->args = calloc(argc, sizeof *c->args);
	if (!c->args)
		return "out of memory";
	c->cmdline = b.p;
	p = b.p + strlen(b.p) + 1; /* skip argv[0] */
	for (i = 0; p < b.p + b.n; i++, p += strlen(p) + 1)
		c->args[i] = p;
	c->nargs = argc - 1;
	return NULL;
}

/* key_environ reads the name of environ[idx]. */
static const char *key_environ(const void *owner, int idx, size_t *nlen)
{
	const char *e = ((char *const *)owner)[idx];
	*nlen = strchr(e, '=') - e;
	return e;
}

/*
 * env_list is os.Environ(): empty entries dropped, and a later entry whose
 * key ("" included) an earlier one had is dropped, as Go's syscall package
 * does. The fast-path mode variable is left out of the material, so calls
 * with and without it share tickets.
 */
static const char *env_list(struct call *c, char **envp)
{
	struct names *seen = &c->first;
	int n = 0, i, j;

	for (i = 0; envp[i]; i++)
		n++;
	c->envp = envp;
	c->env = calloc(n + 1, sizeof *c->env);
	if (!c->env || names_init(seen, n, key_environ, envp))
		return "out of memory";
	for (i = 0; i < n; i++) {
		const char *e = envp[i], *eq = strchr(e, '=');
		int first;
		if (*e == 0)
			continue;
		if (eq) {
			first = names_put(seen, e, eq - e, i);
			if (first < 0)
				return "out of memory";
			if (first != i)
				continue;
		}
		c->env[c->nenv++] = (char *)e;
	}
	j = 0;
	for (i = 0; i < c->nenv; i++)
		if (strncmp(c->env[i], ENV_MODE, sizeof ENV_MODE - 1))
			c->env[j++] = c->env[i];
	c->nenv = j;
	return NULL;
}

/* first_env is os.Getenv: the value of name's first entry, or NULL. */
static const char *first_env(struct call *c, const char *name)
{
	size_t len = strlen(name);
	int i = names_get(&c->first, name, len);
	return i < 0 ? NULL : c->envp[i] + len + 1;
}

/* ---- the temp root: statedir's rules and fallback order ---- */

/* MAX_TEMP_ROOT is statedir.MaxTempRoot. */
#define MAX_TEMP_ROOT (MAX_SOCKET - 6 - 25 - 11)

/* my_uid is getuid(), asked once: the checks below ask for every
 * directory and file they judge. */
static uid_t my_uid(void)
{
	static uid_t uid = (uid_t)-1;
	if (uid == (uid_t)-1)
		uid = getuid();
	return uid;
}

/* owned_private: this user's, and no one else may write to it. */
static int owned_private(const struct stat *st)
{
	return st->st_uid == my_uid() && (st->st_mode & 022) == 0;
}

/* judge_dir is statedir.judge: own marks the directory that holds the
 * state itself. */
static int judge_dir(const struct stat *st, int own)
{
	uid_t uid = my_uid();

	if (!S_ISDIR(st->st_mode))
		return 0;
	if (own)
		return owned_private(st);
	if (st->st_uid != uid && st->st_uid != 0)
		return 0;
	if ((st->st_mode & 022) && (!(st->st_mode & S_ISVTX) || st->st_uid != 0))
		return 0;
	return 1;
}

/* chain_ok is statedir.chain: every directory from / down to real, an
 * existing real path, is trusted. real is cut at each '/' in turn and
 * restored: each call is a fresh process, and every new page of stack it
 * touches costs a page fault, so no copy is made. */
static int chain_ok(char *real, int own)
{
	struct stat st;
	size_t n = strlen(real), i;
	int ok = 1;

	if (real[0] != '/')
		return 0;
	if (lstat("/", &st) || !judge_dir(&st, own && n == 1))
		return 0;
	for (i = 1; i <= n && ok; i++) {
		if (i < n && real[i] != '/')
			continue;
		real[i] = 0;
		ok = !lstat(real, &st) && judge_dir(&st, own && i == n);
		if (i < n)
			real[i] = '/';
	}
	return ok;
}

/* clean_path is Go's filepath.Clean for an absolute path, in place: each
 * name kept is written as "/name" no further on than where it was read. */
static void clean_path(char *p)
{
	size_t o = 0, len;
	char *in = p;

	for (;;) {
		while (*in == '/')
			in++;
		len = strcspn(in, "/");
		if (len == 0)
			break;
		if (len == 2 && in[0] == '.' && in[1] == '.') {
			while (o > 0 && p[--o] != '/')
				;
		} else if (len != 1 || in[0] != '.') {
			p[o] = '/';
			memmove(p + o + 1, in, len);
			o += len + 1;
		}
		in += len;
	}
	if (o == 0)
		p[o++] = '/';
	p[o] = 0;
}

/*
 * resolve_dir is statedir.resolve: real gets the real path of dir's
 * longest existing ancestor, out the real path dir would have (out may be
 * dir itself). It returns how many names are missing below real, or -1.
 */
static int resolve_dir(const char *dir, char *real, char *out)
{
	char clean[PATH_MAX];
	size_t cut, end;
	int missing = 0;

	if (dir[0] != '/' || strlen(dir) >= sizeof clean)
		return -1;
	strcpy(clean, dir);
	clean_path(clean);
	/* clean[cut:] is the missing part, "" or "/name/..."; the ancestor
	 * tried is clean[:end], cut there for realpath and restored. */
	cut = strlen(clean);
	for (;;) {
		char saved;
		end = cut > 0 ? cut : 1;
		saved = clean[end];
		clean[end] = 0;
		if (realpath(clean, real)) {
			clean[end] = saved;
			break;
		}
		clean[end] = saved;
		if (errno != ENOENT || cut == 0)
			return -1;
		while (cut > 0 && clean[--cut] != '/')
			;
		missing++;
	}
	if ((size_t)snprintf(out, PATH_MAX, "%s%s", strcmp(real, "/") || !missing ? real : "", clean + cut) >= PATH_MAX)
		return -1;
	return missing;
}

/*
 * temp_probe judges one candidate as statedir.tryTemp would: 1 when it
 * exists and is trusted (its real path in out, which may be dir), 0 when
 * the Go client would create it (what exists is trusted and writable),
 * -1 when the Go client passes it by.
 */
static int temp_probe(const char *dir, const char *needs, char *out)
{
	char real[PATH_MAX];
	int missing;

	if (needs && (resolve_dir(needs, real, out) != 0 || !chain_ok(real, 1)))
		return -1;
	missing = resolve_dir(dir, real, out);
	if (missing < 0 || strlen(out) > MAX_TEMP_ROOT || !chain_ok(real, missing == 0))
		return -1;
	if (missing == 0)
		return 1;
	return access(real, W_OK | X_OK) ? -1 : 0;
}

/* join_env writes to out the value of the first of names set (relative
 * to the cwd, as filepath.Abs makes it) followed by its suffix: 1, or 0
 * when none is set, -1 when the path does not fit. */
static int join_env(struct call *c, char *out, const char *const *names, const char *const *suffixes)
{
	const char *v;
	int i, n;

	for (i = 0; names[i]; i++) {
		if (!(v = first_env(c, names[i])) || !*v)
			continue;
		n = snprintf(out, PATH_MAX, "%s%s%s%s", v[0] == '/' ? "" : c->cwd, v[0] == '/' ? "" : "/", v, suffixes[i]);
		return n > 0 && n < PATH_MAX ? 1 : -1;
	}
	return 0;
}

/*
 * temp_root finds T as cmd's resolveRoots and pickTemp do, the candidates
 * in statedir.TempCandidates' order, and names T/fast in c->dir. One
 * candidate at a time, in c->dir itself: see chain_ok on stack pages.
 */
static const char *temp_root(struct call *c)
{
	static const char *const given[] = {"LECTIC_TEMP", "TMPDIR", NULL};
	static const char *const given_sfx[] = {"/nix-sandbox", "/lectic/nix-sandbox"};
	static const char *const cache[] = {"LECTIC_CACHE", "XDG_CACHE_HOME", "HOME", NULL};
	static const char *const cache_sfx[] = {"/nix-sandbox/temp", "/lectic/nix-sandbox/temp", "/.cache/lectic/nix-sandbox/temp"};
	char cand[PATH_MAX], needs[32];
	unsigned uid = my_uid();
	int i, got, have;

	snprintf(needs, sizeof needs, "/run/user/%u", uid);
	for (i = 0; i < 4; i++) {
		switch (i) {
		case 0: /* what Lectic gives, by default /tmp/lectic */
			have = join_env(c, cand, given, given_sfx);
			if (have == 0)
				have = snprintf(cand, sizeof cand, "/tmp/lectic/nix-sandbox") > 0;
			break;
		case 1: /* the runtime dir the system made for this uid */
			have = snprintf(cand, sizeof cand, "%s/lectic/nix-sandbox", needs) > 0;
			break;
		case 2: /* under the cache root */
			have = join_env(c, cand, cache, cache_sfx);
			break;
		default: /* a per-user dir in /tmp */
			have = snprintf(cand, sizeof cand, "/tmp/lectic-%u/nix-sandbox", uid) > 0;
		}
		if (have <= 0)
			continue;
		got = temp_probe(cand, i == 1 ? needs : NULL, c->dir);
		if (got < 0)
			continue;
		if (got == 0)
			return "no tickets yet";
		if (strlen(c->dir) + sizeof "/fast" > sizeof c->dir)
			return "the temp dir is too long";
		strcat(c->dir, "/fast");
		return NULL;
	}
	return "no safe temp dir";
}

static const char *describe(struct call *c)
{
	ssize_t n = readlink("/proc/self/exe", c->exe, sizeof c->exe - 1);
	if (n <= 0)
		return "cannot read /proc/self/exe";
	c->exe[n] = 0;
	if (stat("/proc/self/exe", &c->exest))
		return "cannot stat /proc/self/exe";
	if (!getcwd(c->cwd, sizeof c->cwd))
		return "the current directory is not usable";
	return NULL;
}

/*
 * config_env are the variables the Go client reads to find its dirs, the
 * caller's name, the flake and nix (ticket.go's configEnv, in the same
 * order). The rest of the environment does not shape the call: it is
 * filtered for the command here, with the ticket's recipe.
 */
static const char *const config_env[] = {
	"HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "LECTIC_CACHE", "LECTIC_DATA",
	"LECTIC_TEMP", "TMPDIR", "USER", "LECTIC_NIX_SANDBOX_FLAKE", "PATH",
	"LECTIC_NIX_SANDBOX_PASS_ENV", "LECTIC_CONFIG", "XDG_CONFIG_HOME",
	"LECTIC_FILE", "LECTIC_RUNTIME",
};

static void material_prefix(struct call *c, struct sha256 *h)
{
	size_t i, n = sizeof config_env / sizeof config_env[0];
	sha256_init(h);
	sha256_update(h, MATERIAL_MAGIC, sizeof MATERIAL_MAGIC - 1);
	hash_fmt(h, "uid %u gid %u\n", (unsigned)my_uid(), (unsigned)getgid());
	sha256_update(h, "exe ", 4);
	hash_lp(h, c->exe);
	hash_fmt(h, "\nexestat %llu %llu %lld %lld\n",
		 (unsigned long long)c->exest.st_dev, (unsigned long long)c->exest.st_ino,
		 (long long)c->exest.st_size,
		 (long long)c->exest.st_mtim.tv_sec * 1000000000LL + c->exest.st_mtim.tv_nsec);
	sha256_update(h, "cwd ", 4);
	hash_lp(h, c->cwd);
	hash_fmt(h, "\nenv %zu\n", n);
	for (i = 0; i < n; i++) {
		const char *v = first_env(c, config_env[i]);
		char len[24];
		if (!v) {
			hash_lp(h, config_env[i]);
			continue;
		}
		/* lp("NAME=value"), without building the string */
		sha256_update(h, len, snprintf(len, sizeof len, "%zu:", strlen(config_env[i]) + 1 + strlen(v)));
		sha256_update(h, config_env[i], strlen(config_env[i]));
		sha256_update(h, "=", 1);
		sha256_update(h, v, strlen(v));
	}
}

/*
 * ticket_name finishes a candidate's name: words is the material so far
 * followed by the option words args[0..k), so each candidate costs only
 * its own ending, and trying every split is linear in argv.
 */
/* hex16 writes the first 16 bytes of a digest as 32 hex digits and a NUL,
 * as the Go side names tickets and "real" states. */
static void hex16(const uint8_t *sum, char *out)
{
	static const char hex[] = "0123456789abcdef";
	int i;

	for (i = 0; i < 16; i++) {
		out[2 * i] = hex[sum[i] >> 4];
		out[2 * i + 1] = hex[sum[i] & 15];
	}
	out[32] = 0;
}

static void ticket_name(const struct sha256 *words, int k, int term, char *out)
{
	struct sha256 h = *words;
	uint8_t sum[32];

	hash_fmt(&h, "\nsplit %d %d\n", k, term);
	sha256_final(&h, sum);
	hex16(sum, out);
}

/* ---- the ticket ---- */

struct list {
	const char **v;
	int n, cap;
};

static int list_add(struct list *l, const char *s)
{
	if (l->n == l->cap) {
		int cap = l->cap ? 2 * l->cap : 16;
		const char **v = realloc(l->v, cap * sizeof *v);
		if (!v)
			return -1;
		l->v = v, l->cap = cap;
	}
	l->v[l->n++] = s;
	return 0;
}

/* The environment recipe (oci.EnvRecipe) and policy (oci.EnvPolicy). */
struct recipe {
	struct list pre, keep, set, post;
	struct list hostonly, hostonly_prefix, internal_prefix;
	struct list secret_part, secret_word, secret_prefix, url_credentials;
};

/* A file the ticket depends on, with the state it must still have. */
struct check {
	const char *kind, *want, *path;
};

struct ticket {
	char *data;
	const char *sock;
	const char *head;
	const char *cwd;
	size_t size;
	long long timeout_ns;
	int k; /* the command starts at args[k] */
	struct recipe env;
	struct list warns;
	struct check *checks;
	int nchecks;
	/* fastpath.Guard: paths that must stay absent, watched dirs
	 * ("MTIME PATH") and the *.lec files they held */
	struct list guards, lecdirs, lecs;
};

static void ticket_free(struct ticket *t)
{
	struct list *ls[] = {&t->env.pre, &t->env.keep, &t->env.set, &t->env.post,
			     &t->env.hostonly, &t->env.hostonly_prefix, &t->env.internal_prefix,
			     &t->env.secret_part, &t->env.secret_word, &t->env.secret_prefix,
			     &t->env.url_credentials, &t->warns, &t->guards, &t->lecdirs, &t->lecs};
	size_t i;
	for (i = 0; i < sizeof ls / sizeof ls[0]; i++)
		free(ls[i]->v);
	free(t->checks);
	free(t->data);
}

/* recipe_list maps a ticket record's tag to its list, or NULL. */
static struct list *recipe_list(struct recipe *r, const char *tag)
{
	static const struct {
		const char *tag;
		size_t off;
	} tags[] = {
		{"env_pre", offsetof(struct recipe, pre)},
		{"env_keep", offsetof(struct recipe, keep)},
		{"env_set", offsetof(struct recipe, set)},
		{"env_post", offsetof(struct recipe, post)},
		{"pol_hostonly", offsetof(struct recipe, hostonly)},
		{"pol_hostonly_prefix", offsetof(struct recipe, hostonly_prefix)},
		{"pol_internal_prefix", offsetof(struct recipe, internal_prefix)},
		{"pol_secret_part", offsetof(struct recipe, secret_part)},
		{"pol_secret_word", offsetof(struct recipe, secret_word)},
		{"pol_secret_prefix", offsetof(struct recipe, secret_prefix)},
		{"pol_url_credentials", offsetof(struct recipe, url_credentials)},
	};
	size_t i;
	for (i = 0; i < sizeof tags / sizeof tags[0]; i++)
		if (!strcmp(tag, tags[i].tag))
			return (struct list *)((char *)r + tags[i].off);
	return NULL;
}

/* open_ticket tries the candidate splits of argv into options and command. */
static const char *open_ticket(struct call *c, struct ticket *t)
{
	struct sha256 words;
	struct stat st;
	char path[PATH_MAX], name[33];
	int k, term, tried = 0, fd = -1;
	ssize_t n;
	size_t got = 0;

	if (lstat(c->dir, &st))
		return "no tickets yet";
	if (!S_ISDIR(st.st_mode) || !owned_private(&st))
		return "the ticket dir is not a private dir of this user";
	material_prefix(c, &words);
	sha256_update(&words, "\nopts\n", 6);
	/*
	 * The command starts at the first word that is not an option, or after
	 * "--". Which words before it are option values only the Go parser
	 * knows, so every place the command could start is tried; a ticket
	 * exists only for the split the parser made, and a parse is decided
	 * by its prefix, so at most one candidate can have one.
	 */
	for (k = 0; k < c->nargs && fd < 0 && tried < MAX_CANDIDATES; k++) {
		for (term = 1; term >= 0 && fd < 0; term--) {
			const char *w = c->args[k];
			if (term && !(k > 0 && !strcmp(c->args[k - 1], "--")))
				continue;
			if (!term && w[0] == '-' && strcmp(w, "-"))
				continue;
			tried++;
			ticket_name(&words, k, term, name);
			if ((size_t)snprintf(path, sizeof path, "%s/%s", c->dir, name) >= sizeof path)
				return "the ticket path is too long";
			/* O_NONBLOCK: a FIFO named like a ticket must not hang
			 * the call; fstat then turns it away. */
			fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
			if (fd < 0 && errno != ENOENT)
				return "cannot open the ticket";
			t->k = k;
		}
		hash_lp(&words, c->args[k]);
	}
	if (fd < 0)
		return "no ticket for this invocation";
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || !owned_private(&st) ||
	    st.st_size <= 0 || st.st_size > MAX_TICKET) {
		close(fd);
		return "the ticket is not a private file of this user";
	}
	t->data = malloc(st.st_size + 1);
	if (!t->data) {
		close(fd);
		return "out of memory";
	}
	while (got < (size_t)st.st_size) {
		n = read(fd, t->data + got, st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += n;
	}
	close(fd);
	if (got != (size_t)st.st_size)
		return "cannot read the ticket";
	t->data[got] = 0;
	t->size = got;
	if (t->data[got - 1] != 0)
		return "the ticket is truncated";
	return NULL;
}

/* parse_timeout reads a ticket's timeout: 0 (none) or a whole number of
 * nanoseconds in the range the Go side accepts, in plain decimal. */
static int parse_timeout(const char *s, long long *ns)
{
	char *end;
	long long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end || (v != 0 && (v < MIN_TIMEOUT_NS || v > MAX_TIMEOUT_NS)))
		return -1;
	*ns = v;
	return 0;
}

/*
 * real_state formats what path resolves to as ticket.go's Observe does for
 * a "real" check: the first 16 bytes of the SHA-256 of the resolved path,
 * in hex.
 */
static int real_state(const char *path, char *out, size_t len)
{
	struct sha256 h;
	uint8_t sum[32];
	char *rp = realpath(path, NULL);

	if (!rp) {
		if (errno != ENOENT && errno != ENOTDIR)
			return -1;
		snprintf(out, len, "absent");
		return 0;
	}
	sha256_init(&h);
	sha256_update(&h, rp, strlen(rp));
	sha256_final(&h, sum);
	free(rp);
	if (len < 33)
		return -1;
	hex16(sum, out);
	return 0;
}

/* stat_state formats a stat as ticket.go's Observe does. */
static int stat_state(const char *kind, const char *path, char *out, size_t len)
{
	struct stat st;
	int r;

	if (!strcmp(kind, "real"))
		return real_state(path, out, len);
	if (!strcmp(kind, "lstat"))
		r = lstat(path, &st);
	else if (!strcmp(kind, "stat") || !strcmp(kind, "id"))
		r = stat(path, &st);
	else
		return -1;
	if (r) {
		if (errno != ENOENT && errno != ENOTDIR)
			return -1;
		snprintf(out, len, "absent");
	} else if (!strcmp(kind, "id")) {
		snprintf(out, len, "%o:%llu:%llu", (unsigned)(st.st_mode & S_IFMT),
			 (unsigned long long)st.st_ino, (unsigned long long)st.st_dev);
	} else {
		snprintf(out, len, "%o:%lld:%lld:%lld:%llu:%llu", (unsigned)st.st_mode,
			 (long long)st.st_size,
			 (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec,
			 (long long)st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec,
			 (unsigned long long)st.st_ino, (unsigned long long)st.st_dev);
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int known_lec(const struct ticket *t, const char *path)
{
	int i;
	for (i = 0; i < t->lecs.n; i++)
		if (!strcmp(t->lecs.v[i], path))
			return 1;
	return 0;
}

/*
 * created is hostConfig.created: the guards that exist now and the *.lec
 * files new at the top of a watched dir whose mtime changed. With out, it
 * lists them (sorted, ", "-joined); it returns how many there are.
 */
static int created(const struct ticket *t, struct buf *out)
{
	struct list found = {0};
	struct stat st;
	int i, n;

	for (i = 0; i < t->guards.n; i++)
		if (!lstat(t->guards.v[i], &st))
			list_add(&found, strdup(t->guards.v[i]));
	for (i = 0; i < t->lecdirs.n; i++) {
		char *end;
		long long mtime = strtoll(t->lecdirs.v[i], &end, 10);
		const char *dir = *end == ' ' ? end + 1 : "";
		DIR *d;
		struct dirent *e;
		if (!*dir || lstat(dir, &st) ||
		    (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec == mtime)
			continue;
		if (!(d = opendir(dir)))
			continue;
		while ((e = readdir(d))) {
			size_t len = strlen(e->d_name);
			char *p;
			if (len < 5 || strcmp(e->d_name + len - 4, ".lec"))
				continue;
			if (asprintf(&p, "%s/%s", dir, e->d_name) < 0)
				continue;
			if (known_lec(t, p))
				free(p);
			else
				list_add(&found, p);
		}
		closedir(d);
	}
	n = found.n;
	if (out && n) {
		qsort(found.v, n, sizeof *found.v, cmp_str);
		for (i = 0; i < n; i++) {
			if (i)
				buf_str(out, ", ");
			buf_str(out, found.v[i]);
		}
	}
	for (i = 0; i < found.n; i++)
		free((char *)found.v[i]);
	free(found.v);
	return n;
}

/* the ticket of the call in progress, for report_created */
static const struct ticket *watched;

/* report_created is cmd's reportCreated, after the call. */
static void report_created(void)
{
	struct buf b = {0};
	if (watched && created(watched, &b) && !b.oom)
		say("lectic-nix-sandbox: warning: the command created %s, which the host may run later (Lectic, git, direnv or the shell read it); check it before you use it there", b.p);
	free(b.p);
}

/* finish ends the call with code, reporting what it created first. */
static void finish(int code)
{
	report_created();
	_exit(code);
}

/*
 * MAX_POLICY bounds each policy list of a ticket: every variable of every
 * call is matched against them, so a ticket must not be able to make that
 * work grow with its own size (oci.Policy's lists are far shorter).
 */
#define MAX_POLICY 256

/*
 * parse_ticket reads the records of t->data (t->size bytes, the last of
 * them a NUL), splitting them in place. It touches no file: check_files
 * verifies the checks it collects. Everything it keeps points into
 * t->data, and all it does is linear in the ticket's size.
 */
static const char *parse_ticket(struct ticket *t)
{
	char *p = t->data, *end = t->data + t->size, *next;
	int ncap = 0, timeout = 0;

	if (t->size == 0 || t->size > MAX_TICKET || t->data[t->size - 1] != 0)
		return "the ticket is truncated";
	if (strcmp(p, TICKET_MAGIC))
		return "the ticket is of another version";
	for (p += strlen(p) + 1; p < end; p = next) {
		char *val = strchr(p, ' ');
		struct list *l;
		next = p + strlen(p) + 1; /* before the record is split */
		if (!val)
			return "a ticket record has no value";
		*val++ = 0;
		if (!strcmp(p, "sock")) {
			if (t->sock)
				return "a ticket record is repeated";
			t->sock = val;
		} else if (!strcmp(p, "head")) {
			if (t->head)
				return "a ticket record is repeated";
			t->head = val;
		} else if (!strcmp(p, "cwd")) {
			if (t->cwd)
				return "a ticket record is repeated";
			t->cwd = val;
		} else if (!strcmp(p, "timeout_ns")) {
			if (timeout)
				return "a ticket record is repeated";
			timeout = 1;
			if (parse_timeout(val, &t->timeout_ns))
				return "the ticket's timeout is out of range";
		} else if (!strcmp(p, "check")) {
			char *want = strchr(val, ' '), *path = want ? strchr(want + 1, ' ') : NULL;
			if (!path || (strncmp(val, "lstat ", 6) && strncmp(val, "stat ", 5) && strncmp(val, "id ", 3) &&
				      strncmp(val, "real ", 5)))
				return "a ticket check is malformed";
			*want++ = 0, *path++ = 0;
			if (t->nchecks == ncap) {
				struct check *c;
				ncap = ncap ? 2 * ncap : 16;
				c = realloc(t->checks, ncap * sizeof *c);
				if (!c)
					return "out of memory";
				t->checks = c;
			}
			t->checks[t->nchecks++] = (struct check){val, want, path};
		} else if (!strcmp(p, "warn")) {
			if (list_add(&t->warns, val))
				return "out of memory";
		} else if (!strcmp(p, "guard") || !strcmp(p, "lecdir") || !strcmp(p, "lec")) {
			struct list *gl = p[0] == 'g' ? &t->guards : p[3] == 'd' ? &t->lecdirs : &t->lecs;
			if (list_add(gl, val))
				return "out of memory";
		} else if ((l = recipe_list(&t->env, p))) {
			if (!strncmp(p, "pol_", 4) && l->n >= MAX_POLICY)
				return "the ticket's policy is too long";
			if (list_add(l, val))
				return "out of memory";
		} else {
			return "the ticket has an unknown record";
		}
	}
	/* the head is a JSON object without its "}", and with a key: what
	 * build_request appends starts with a "," */
	if (!t->sock || !t->head || !t->cwd || strlen(t->sock) > MAX_SOCKET || strncmp(t->head, "{\"", 2))
		return "the ticket lacks a socket or a request";
	return NULL;
}

/* check_files verifies that every file the ticket depends on is as it was. */
static const char *check_files(struct ticket *t)
{
	char state[160];
	int i;

	for (i = 0; i < t->nchecks; i++) {
		const struct check *c = &t->checks[i];
		if (stat_state(c->kind, c->path, state, sizeof state) || strcmp(state, c->want))
			return "a file the image or the mounts depend on changed";
	}
	/* Something the host runs later appeared since: the Go client makes
	 * a container that covers it. */
	if (created(t, NULL))
		return "a file the host runs later appeared in a bind";
	return NULL;
}

/* Warnings are printed only once the whole ticket has held, so a fall-back
 * does not print them twice. */
static void print_warnings(struct ticket *t)
{
	int i;
	for (i = 0; i < t->warns.n; i++)
		say("lectic-nix-sandbox: warning: %s", t->warns.v[i]);
}

/* ---- the command's environment: oci.EnvRecipe.Apply ---- */

struct entry {
	const char *name, *val;
	size_t nlen;
};

/* envmap is the environment being built: entries in the order their
 * names first came, and an index of them by name. */
struct envmap {
	struct entry *e;
	int n, cap, oom;
	struct names index;
};

static size_t name_len(const char *kv)
{
	const char *eq = strchr(kv, '=');
	return eq ? (size_t)(eq - kv) : strlen(kv);
}

/* key_entry reads the name of an envmap's entry idx. */
static const char *key_entry(const void *owner, int idx, size_t *nlen)
{
	const struct entry *e = &((const struct envmap *)owner)->e[idx];
	*nlen = e->nlen;
	return e->name;
}

/* key_list reads the name of a NAME or NAME=VALUE list item. */
static const char *key_list(const void *owner, int idx, size_t *nlen)
{
	const char *kv = ((const struct list *)owner)->v[idx];
	*nlen = name_len(kv);
	return kv;
}

/* envmap_init sizes m for about n names, so that neither its entries nor
 * its index grow on the way. */
static int envmap_init(struct envmap *m, int n)
{
	m->cap = n > 0 ? n : 1;
	m->e = malloc(m->cap * sizeof *m->e);
	return m->e && !names_init(&m->index, n, key_entry, m) ? 0 : -1;
}

/* env_put assigns NAME=VALUE (a missing "=" is an empty value), keeping
 * the place a name first took. */
static void env_put(struct envmap *m, const char *kv)
{
	size_t nlen = name_len(kv);
	const char *val = kv[nlen] ? kv + nlen + 1 : "";
	int i;

	if (nlen == 0 || m->oom)
		return;
	i = names_put(&m->index, kv, nlen, m->n);
	if (i < 0) {
		m->oom = 1;
		return;
	}
	if (i < m->n) {
		m->e[i].val = val;
		return;
	}
	if (m->n == m->cap) {
		int cap = m->cap ? 2 * m->cap : 64;
		struct entry *e = realloc(m->e, cap * sizeof *e);
		if (!e) {
			m->oom = 1;
			return;
		}
		m->e = e, m->cap = cap;
	}
	m->e[m->n++] = (struct entry){kv, val, nlen};
}

static int upper_prefix(const char *s, size_t n, const char *prefix)
{
	size_t i;
	for (i = 0; prefix[i]; i++)
		if (i >= n || toupper((unsigned char)s[i]) != prefix[i])
			return 0;
	return 1;
}

static int any_upper_prefix(const char *s, size_t n, const struct list *l)
{
	int i;
	for (i = 0; i < l->n; i++)
		if (upper_prefix(s, n, l->v[i]))
			return 1;
	return 0;
}

static int is_internal(const struct recipe *r, const char *name, size_t n)
{
	return any_upper_prefix(name, n, &r->internal_prefix);
}

/*
 * is_blocked is EnvPolicy.blocked for an ASCII name: 0 passes, 1 is dropped
 * silently (host-only, internal), 2 is withheld as a secret, which the
 * request reports by name (EnvPolicy.withheld); -1 when out of memory.
 */
static int is_blocked(const struct recipe *r, const char *name, size_t n, struct buf *scratch)
{
	char *up;
	size_t i, ulen = n + 1;
	int j, hit = 0;

	for (j = 0; j < r->hostonly.n; j++)
		if (r->hostonly.v[j][0] == name[0] && strlen(r->hostonly.v[j]) == n && !memcmp(r->hostonly.v[j], name, n))
			return 1;
	if (any_upper_prefix(name, n, &r->hostonly_prefix) || is_internal(r, name, n))
		return 1;
	/* "_" + NAME upper-cased, in a buffer every name reuses */
	scratch->n = 0;
	buf_add(scratch, "_", 1);
	buf_add(scratch, name, n);
	if (scratch->oom)
		return -1;
	up = scratch->p;
	for (i = 1; i < ulen; i++)
		up[i] = toupper((unsigned char)up[i]);
	/* the parts of "_"+NAME split on '_' */
	for (i = 0; i < ulen && !hit;) {
		size_t end = i, pl;
		while (end < ulen && up[end] != '_')
			end++;
		pl = end - i;
		for (j = 0; pl > 0 && j < r->secret_part.n && !hit; j++)
			hit = r->secret_part.v[j][0] == up[i] && !strncmp(up + i, r->secret_part.v[j], pl) &&
			      r->secret_part.v[j][pl] == 0;
		i = end + 1;
	}
	for (j = 0; j < r->secret_word.n && !hit; j++)
		hit = strstr(up, r->secret_word.v[j]) != NULL;
	if (!hit)
		hit = any_upper_prefix(up, ulen, &r->secret_prefix);
	return hit ? 2 : 0;
}

static int is_scheme_byte(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '-' || c == '.';
}

/* has_url_credentials is oci.HasURLCredentials: scheme://USER:PASSWORD@. */
static int has_url_credentials(const char *s)
{
	const char *p = s, *at;

	while ((at = strstr(p, "://"))) {
		if (at > s && is_scheme_byte(at[-1])) {
			const char *auth = at + 3;
			size_t end = strcspn(auth, "/?#@ \t\n");
			if (auth[end] == '@' && memchr(auth, ':', end))
				return 1;
		}
		p = at + 3;
	}
	return 0;
}

/* index_names indexes a list of NAME or NAME=VALUE entries by name; the
 * first of a name wins, as Go's map of --env values has one per name. */
static int index_names(struct names *t, const struct list *l)
{
	int i;
	if (names_init(t, l->n, key_list, l))
		return -1;
	for (i = 0; i < l->n; i++)
		if (names_put(t, l->v[i], name_len(l->v[i]), i) < 0)
			return -1;
	return 0;
}

/* build_env is EnvRecipe.Build: the command's environment in m, and the
 * names withheld as secrets, in environ's order, in withheld. */
static const char *build_env(struct call *c, const struct recipe *r, struct envmap *m, struct list *withheld)
{
	struct names set = {0}, keep = {0};
	struct buf scratch = {0};
	char *seen = calloc(r->set.n + 1, 1);
	const char *why = NULL;
	int i;

	if (!seen || index_names(&set, &r->set) || index_names(&keep, &r->keep) ||
	    envmap_init(m, r->pre.n + c->nenv + r->set.n + r->post.n)) {
		why = "out of memory";
		goto out;
	}
	for (i = 0; i < r->pre.n; i++)
		env_put(m, r->pre.v[i]);
	for (i = 0; i < c->nenv; i++) {
		const char *kv = c->env[i];
		size_t n = name_len(kv), j;
		int s;
		/* Go upper-cases names with Unicode rules; only ASCII ones are
		 * judged here, so the two sides cannot disagree. */
		for (j = 0; j < n; j++)
			if ((unsigned char)kv[j] >= 0x80) {
				why = "a variable name is not ASCII";
				goto out;
			}
		if (is_internal(r, kv, n))
			continue;
		if ((s = names_get(&set, kv, n)) >= 0) {
			env_put(m, r->set.v[s]);
			seen[s] = 1;
			continue;
		}
		if (names_get(&keep, kv, n) < 0) {
			int b = is_blocked(r, kv, n, &scratch);
			/* a value with credentials is withheld like a secret name */
			if (b == 0 && r->url_credentials.n > 0 && kv[n] && has_url_credentials(kv + n + 1))
				b = 2;
			if (b < 0 || (b == 2 && list_add(withheld, kv))) {
				why = "out of memory";
				goto out;
			}
			if (b)
				continue;
		}
		env_put(m, kv);
	}
	for (i = 0; i < r->set.n; i++)
		if (!seen[i] && !is_internal(r, r->set.v[i], name_len(r->set.v[i])))
			env_put(m, r->set.v[i]);
	for (i = 0; i < r->post.n; i++)
		env_put(m, r->post.v[i]);
	if (m->oom)
		why = "out of memory";
out:
	free(seen);
	free(set.slot);
	free(keep.slot);
	free(scratch.p);
	return why;
}

/*
 * ---- the request ----
 *
 * A JSON header (the ticket's head, completed with the body's counts and
 * size and this process's stack limit) and a body of NUL-terminated byte
 * strings: cwd, argv, environment, withheld names (package execargs). The
 * bytes go as they are: nothing here is text.
 */

struct request {
	struct buf head, body;
	size_t exec_size; /* argv and environment bytes, as execve counts them */
	const char *argv0;
};

static void body_add(struct buf *b, const char *s, size_t n)
{
	buf_add(b, s, n);
	buf_add(b, "", 1); /* its NUL */
}

/*
 * build_request fills req, or returns why not. A request no execve would
 * take gives "E2BIG" (exec_size past MAX_EXEC): the caller says so as
 * warm.Run does.
 */
static const char *build_request(struct call *c, struct ticket *t, struct request *req)
{
	struct envmap m = {0};
	struct list withheld = {0};
	struct rlimit rl;
	const char *why;
	char tail[160];
	int i;

	if ((why = build_env(c, &t->env, &m, &withheld))) {
		free(m.e);
		free(m.index.slot);
		free(withheld.v);
		return why;
	}
	req->argv0 = t->k < c->nargs ? c->args[t->k] : "";
	{
		/* one allocation for the whole body */
		size_t size = strlen(t->cwd) + 1;
		for (i = t->k; i < c->nargs; i++)
			size += strlen(c->args[i]) + 1;
		for (i = 0; i < m.n; i++)
			size += m.e[i].nlen + 1 + strlen(m.e[i].val) + 1;
		for (i = 0; i < withheld.n; i++)
			size += name_len(withheld.v[i]) + 1;
		buf_reserve(&req->body, size);
	}
	body_add(&req->body, t->cwd, strlen(t->cwd));
	for (i = t->k; i < c->nargs; i++) {
		size_t n = strlen(c->args[i]);
		body_add(&req->body, c->args[i], n);
		req->exec_size += n + 1;
	}
	for (i = 0; i < m.n; i++) {
		size_t vlen = strlen(m.e[i].val);
		buf_add(&req->body, m.e[i].name, m.e[i].nlen);
		buf_add(&req->body, "=", 1);
		body_add(&req->body, m.e[i].val, vlen);
		req->exec_size += m.e[i].nlen + 1 + vlen + 1;
	}
	/* names only: the entries are NAME=value, cut at the "=" */
	for (i = 0; i < withheld.n; i++)
		body_add(&req->body, withheld.v[i], name_len(withheld.v[i]));
	free(m.e);
	free(m.index.slot);
	free(withheld.v);
	if (req->exec_size > MAX_EXEC)
		return "E2BIG";
	if (getrlimit(RLIMIT_STACK, &rl))
		return "cannot read the stack limit";
	buf_str(&req->head, t->head);
	snprintf(tail, sizeof tail, ",\"argc\":%d,\"envc\":%d,\"withheldc\":%d,\"body\":%zu,\"stack_limit\":%llu%s}",
		 c->nargs - t->k, m.n, withheld.n, req->body.n, (unsigned long long)rl.rlim_cur,
		 req->body.n > MAX_INLINE ? ",\"body_fd\":true" : "");
	buf_str(&req->head, tail);
	if (req->head.oom || req->body.oom)
		return "out of memory";
	return NULL;
}

/* body_memfd returns a sealed memfd holding the body, or -1. */
static int body_memfd(const struct buf *body)
{
	size_t off = 0;
	int fd = syscall(SYS_memfd_create, "lectic-nix-sandbox-request", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0)
		return -1;
	while (off < body->n) {
		ssize_t n = write(fd, body->p + off, body->n - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			return -1;
		}
		off += n;
	}
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- the agent's answers ---- */

struct reply {
	char type[32];
	char reason[32];
	char message[2048];
	char notice[2048];
	char missing[PATH_MAX];
	char hint[2048 + PATH_MAX];
	long long code, signal;
};

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

static void put_utf8(char **o, char *end, unsigned cp)
{
	char tmp[4];
	int n, i;
	if (cp < 0x80)
		tmp[0] = cp, n = 1;
	else if (cp < 0x800)
		tmp[0] = 0xc0 | cp >> 6, tmp[1] = 0x80 | (cp & 63), n = 2;
	else if (cp < 0x10000)
		tmp[0] = 0xe0 | cp >> 12, tmp[1] = 0x80 | (cp >> 6 & 63), tmp[2] = 0x80 | (cp & 63), n = 3;
	else
		tmp[0] = 0xf0 | cp >> 18, tmp[1] = 0x80 | (cp >> 12 & 63),
		tmp[2] = 0x80 | (cp >> 6 & 63), tmp[3] = 0x80 | (cp & 63), n = 4;
	for (i = 0; i < n && *o < end; i++)
		*(*o)++ = tmp[i];
}

static int hex4(const char *p, unsigned *v)
{
	int i;
	*v = 0;
	for (i = 0; i < 4; i++) {
		char ch = p[i];
		*v <<= 4;
		if (ch >= '0' && ch <= '9')
			*v |= ch - '0';
		else if (ch >= 'a' && ch <= 'f')
			*v |= ch - 'a' + 10;
		else if (ch >= 'A' && ch <= 'F')
			*v |= ch - 'A' + 10;
		else
			return -1;
	}
	return 0;
}

/* parse_string decodes the JSON string at p into out (truncating) and
 * returns the position after it, or NULL. Line breaks become spaces: what
 * the client prints from a message is one line. */
static const char *parse_string(const char *p, char *out, size_t len)
{
	char *o = out, *end = out + len - 1;
	if (*p++ != '"')
		return NULL;
	while (*p && *p != '"') {
		unsigned cp;
		if (*p != '\\') {
			char ch = *p++;
			if (o < end)
				*o++ = (ch == '\n' || ch == '\r') ? ' ' : ch;
			continue;
		}
		p++;
		switch (*p) {
		case 'n': case 'r': case 't': cp = ' '; break;
		case 'b': cp = '\b'; break;
		case 'f': cp = '\f'; break;
		case 'u':
			if (hex4(p + 1, &cp))
				return NULL;
			p += 4;
			if (cp >= 0xd800 && cp < 0xdc00 && p[1] == '\\' && p[2] == 'u') {
				unsigned lo;
				if (!hex4(p + 3, &lo) && lo >= 0xdc00 && lo < 0xe000) {
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
					p += 6;
				}
			}
			break;
		case 0:
			return NULL;
		default: cp = (unsigned char)*p; break;
		}
		p++;
		put_utf8(&o, end, cp);
	}
	*o = 0;
	return *p == '"' ? p + 1 : NULL;
}

static const char *skip_value(const char *p)
{
	int depth = 0;
	char scratch[8];
	do {
		p = skip_ws(p);
		if (*p == '"') {
			p = parse_string(p, scratch, sizeof scratch);
			if (!p)
				return NULL;
		} else if (*p == '{' || *p == '[') {
			depth++, p++;
		} else if (*p == '}' || *p == ']') {
			depth--, p++;
		} else if (*p == ',' || *p == ':') {
			p++;
		} else if (*p) {
			while (*p && !strchr(",:}] \t\r\n", *p))
				p++;
		} else {
			return NULL;
		}
	} while (depth > 0);
	return p;
}

static int parse_reply(const char *p, struct reply *r)
{
	memset(r, 0, sizeof *r);
	p = skip_ws(p);
	if (*p++ != '{')
		return -1;
	for (;;) {
		char key[32];
		p = skip_ws(p);
		if (*p == '}')
			return 0;
		p = parse_string(p, key, sizeof key);
		if (!p)
			return -1;
		p = skip_ws(p);
		if (*p++ != ':')
			return -1;
		p = skip_ws(p);
		if (!strcmp(key, "type"))
			p = parse_string(p, r->type, sizeof r->type);
		else if (!strcmp(key, "reason"))
			p = parse_string(p, r->reason, sizeof r->reason);
		else if (!strcmp(key, "message"))
			p = parse_string(p, r->message, sizeof r->message);
		else if (!strcmp(key, "notice"))
			p = parse_string(p, r->notice, sizeof r->notice);
		else if (!strcmp(key, "missing"))
			p = parse_string(p, r->missing, sizeof r->missing);
		else if (!strcmp(key, "hint"))
			p = parse_string(p, r->hint, sizeof r->hint);
		else if (!strcmp(key, "code"))
			r->code = strtoll(p, (char **)&p, 10);
		else if (!strcmp(key, "signal"))
			r->signal = strtoll(p, (char **)&p, 10);
		else
			p = skip_value(p);
		if (!p)
			return -1;
		p = skip_ws(p);
		if (*p == ',')
			p++;
		else if (*p != '}')
			return -1;
	}
}

/* ---- talking to the agent ---- */

static char msgbuf[MAX_MESSAGE + 1];

/* recv_reply reads one message; fds passed along are closed. It returns
 * 1 on a message, 0 on end of stream and -1 with errno on an error. */
static int recv_reply(int fd, struct reply *r)
{
	char ctl[CMSG_SPACE(16 * sizeof(int))];
	struct iovec iov = {msgbuf, MAX_MESSAGE};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
	struct cmsghdr *cm;
	ssize_t n;

	do
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			int *fds = (int *)CMSG_DATA(cm);
			size_t i, nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (i = 0; i < nfd; i++)
				close(fds[i]);
		}
	}
	if (n == 0)
		return 0;
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		errno = EMSGSIZE;
		return -1;
	}
	msgbuf[n] = 0;
	if (parse_reply(msgbuf, r)) {
		errno = EBADMSG;
		return -1;
	}
	return 1;
}

static int send_signal(int fd, int sig)
{
	char m[64];
	int n = snprintf(m, sizeof m, "{\"type\":\"signal\",\"signal\":%d}", sig);
	return send(fd, m, n, MSG_NOSIGNAL) == n ? 0 : -1;
}

/* host_has is warm.HostHas: an absolute path that exists here, on the
 * caller's side of the sandbox. */
static int host_has(const char *path)
{
	struct stat st;
	return path[0] == '/' && stat(path, &st) == 0;
}

static void agent_died(const char *why)
{
	report_created();
	say("lectic-nix-sandbox: sandbox agent died during the call (%s); run again, the next call starts a fresh container", why);
	_exit(EXIT_SANDBOX);
}

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/*
 * follow forwards signals and the timeout until the exit message, as
 * warm's follow does: the timeout is sent as SIGTERM (the agent follows
 * ending signals with SIGKILL after the grace period), and the call exits
 * 124 after a timeout or 128+N after the first forwarded signal N.
 */
static void follow(int fd, int sfd, long long timeout_ns)
{
	long long deadline = timeout_ns > 0 ? now_ns() + timeout_ns : 0;
	int timed_out = 0, ended = 0;
	struct reply r;

	for (;;) {
		struct pollfd pf[2] = {{fd, POLLIN, 0}, {sfd, POLLIN, 0}};
		int wait = -1, got;
		if (deadline && !timed_out) {
			long long left = deadline - now_ns();
			if (left <= 0) {
				timed_out = 1;
				send_signal(fd, SIGTERM);
				if (!ended)
					ended = EXIT_TIMEOUT;
				continue;
			}
			/* poll takes an int of ms: a long timeout is waited
			 * for in pieces. */
			left = (left + 999999) / 1000000;
			wait = left > INT_MAX ? INT_MAX : (int)left;
		}
		got = poll(pf, 2, wait);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			agent_died(strerror(errno));
		if (got == 0)
			continue;
		if (pf[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof si) == sizeof si) {
				send_signal(fd, si.ssi_signo);
				if (!ended)
					ended = 128 + (int)si.ssi_signo;
			}
		}
		if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			got = recv_reply(fd, &r);
			if (got == 0)
				agent_died("connection closed before the exit status arrived");
			if (got < 0)
				agent_died(strerror(errno));
			if (strcmp(r.type, "exit"))
				continue;
			if (ended)
				finish(ended);
			if (r.signal > 0)
				finish(128 + (int)r.signal);
			finish((int)r.code & 0xff);
		}
	}
}

/*
 * run sends the request and follows it. It returns only when the agent
 * proved it ran nothing, with the reason to fall back.
 */
static const char *run(struct ticket *t, struct request *req)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fds[4] = {0, 1, 2, -1}, nfds = 3, fd, sfd, got;
	char ctl[CMSG_SPACE(sizeof fds)];
	/* inline: the header, a NUL, the body; else the body is the 4th fd */
	struct iovec iov[3] = {{req->head.p, req->head.n}, {"", 1}, {req->body.p, req->body.n}};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 3, .msg_control = ctl};
	struct cmsghdr *cm;
	sigset_t sigs, old;
	struct reply r;
	ssize_t n, want = req->head.n + 1 + req->body.n;

	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return "cannot create a socket";
	strcpy(addr.sun_path, t->sock);
	while ((got = connect(fd, (struct sockaddr *)&addr, sizeof addr)) < 0 && errno == EINTR)
		;
	if (got < 0) {
		close(fd);
		return "no agent answers";
	}
	/* Who listens must be this user: never send a request, or our
	 * stdio, to anyone else (warm's dial checks the same). */
	{
		struct ucred uc;
		socklen_t ul = sizeof uc;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &ul) || uc.uid != my_uid()) {
			close(fd);
			return "the agent socket is served by another user";
		}
	}
	/* A large body goes in a memfd, made only once an agent of ours
	 * answers: a call that falls back copies nothing. */
	if (req->body.n > MAX_INLINE) {
		if ((fds[3] = body_memfd(&req->body)) < 0) {
			close(fd);
			return "cannot put the request in a memfd";
		}
		nfds = 4, mh.msg_iovlen = 1, want = req->head.n;
	}
	mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
	/* Signals are queued from here, so one that arrives while the
	 * command starts is forwarded, not fatal. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	sigprocmask(SIG_BLOCK, &sigs, &old);
	sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
	if (sfd < 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		close(fd);
		if (fds[3] >= 0)
			close(fds[3]);
		return "cannot create a signalfd";
	}
	memset(ctl, 0, sizeof ctl);
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
	memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	do
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (fds[3] >= 0)
		close(fds[3]); /* the agent has its own */
	if (n != want)
		goto unread;
	watched = t; /* the command may run from here on */
	got = recv_reply(fd, &r);
	if (got < 0 && errno == ECONNRESET)
		goto unread; /* the agent went away with the request unread */
	if (got == 0)
		agent_died("connection closed before the exit status arrived");
	if (got < 0)
		agent_died(strerror(errno));
	if (!strcmp(r.type, "error") && !strcmp(r.reason, "mismatch"))
		goto unread;
	print_warnings(t);
	/* As warm.call: lines the agent has to say come before the command
	 * starts, which it does once they are acknowledged. */
	while (!strcmp(r.type, "notice")) {
		static const char ack[] = "{\"type\":\"noticed\"}";
		if (r.notice[0])
			say("lectic-nix-sandbox: %s", r.notice);
		if (host_has(r.missing) && r.hint[0])
			say("lectic-nix-sandbox: %s", r.hint);
		if (send(fd, ack, sizeof ack - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof ack - 1))
			agent_died(strerror(errno));
		got = recv_reply(fd, &r);
		if (got == 0)
			agent_died("connection closed before the exit status arrived");
		if (got < 0)
			agent_died(strerror(errno));
	}
	if (!strcmp(r.type, "error")) {
		int code = r.code > 0 && r.code < 256 ? (int)r.code : EXIT_SANDBOX;
		/* as warm.call: a sandbox failure is one line, its message */
		if (code != EXIT_SANDBOX && r.notice[0])
			say("lectic-nix-sandbox: %s", r.notice);
		say("lectic-nix-sandbox: %s", code != EXIT_SANDBOX && host_has(r.missing) && r.hint[0] ? r.hint : r.message);
		finish(code);
	}
	if (strcmp(r.type, "started")) {
		say("lectic-nix-sandbox: sandbox agent answered \"%s\" to a run request", r.type);
		_exit(EXIT_SANDBOX);
	}
	follow(fd, sfd, t->timeout_ns);
	/* not reached */
unread:
	close(sfd);
	close(fd);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return "the agent did not take the request";
}

/* too_long ends a call no execve would take, in warm.Run's words. */
static void too_long(struct ticket *t, const char *argv0)
{
	print_warnings(t);
	say("lectic-nix-sandbox: cannot execute %.*s%s: argument list too long", MAX_SHOWN, argv0,
	    strlen(argv0) > MAX_SHOWN ? "..." : "");
	_exit(EXIT_NOEXEC);
}

static const char *fast_call(struct call *c)
{
	struct ticket t = {0};
	struct request req = {0};
	const char *why;

	if ((why = read_cmdline(c)) || (why = env_list(c, environ)) || (why = describe(c)) ||
	    (why = temp_root(c)) || (why = open_ticket(c, &t)))
		goto out;
	if ((why = parse_ticket(&t)) || (why = check_files(&t)))
		goto out;
	if ((why = build_request(c, &t, &req))) {
		if (!strcmp(why, "E2BIG"))
			too_long(&t, req.argv0);
		goto out;
	}
	why = run(&t, &req);
out:
	free(req.head.p);
	free(req.body.p);
	ticket_free(&t);
	return why;
}

__attribute__((constructor)) static void lns_fast_path(void)
{
	enum mode mode = MODE_ON;
	struct call c = {0};
	const char *why;
	char **e;

	for (e = environ; *e; e++) {
		if (!strncmp(*e, ENV_MODE, sizeof ENV_MODE - 1)) {
			const char *v = *e + sizeof ENV_MODE - 1;
			if (!strcmp(v, "off"))
				return;
			if (!strcmp(v, "require"))
				mode = MODE_REQUIRE;
			continue;
		}
		/* Any other hand-off variable means this process is an init,
		 * agent, helper, supervisor or probe: not a CLI call. */
		if (!strncmp(*e, "_LECTIC_NIX_SANDBOX_", 20) || !strncmp(*e, "_LIBCONTAINER_", 14))
			return;
	}
	why = fast_call(&c);
	free(c.cmdline);
	free(c.args);
	free(c.env);
	free(c.first.slot);
	if (mode == MODE_REQUIRE) {
		say("lectic-nix-sandbox: the fast path was not taken: %s", why);
		_exit(EXIT_SANDBOX);
	}
}

/*
 * ---- for the package's tests ----
 *
 * Called through cgo (ctest.go), never by the constructor: they let Go
 * tests and fuzzing drive the ticket parser and the request builder in
 * process, and read the limits the Go side must agree with.
 */

/*
 * lns_test_request does what the constructor does between reading a
 * ticket and connecting, for a ticket given as bytes and a call given as
 * its environ and the words after argv[0], the command starting at word k:
 * parse_ticket (no file is checked), build_env and build_request. On
 * success it returns NULL with the header, body, socket and timeout (the
 * three buffers malloc'd, for the caller to free); otherwise why the
 * constructor would not send ("E2BIG": it would say so and exit 126).
 */
const char *lns_test_request(const char *ticket, size_t n, char **env, char **args, int nargs, int k,
			     char **head, size_t *headn, char **body, size_t *bodyn, char **sock,
			     long long *timeout_ns)
{
	struct call c = {0};
	struct ticket t = {0};
	struct request req = {0};
	const char *why;

	*head = *body = *sock = NULL;
	if (n == 0 || n > MAX_TICKET || k < 0 || k > nargs)
		return "the ticket is not a private file of this user";
	t.data = malloc(n);
	if (!t.data)
		return "out of memory";
	memcpy(t.data, ticket, n);
	t.size = n;
	t.k = k;
	c.args = args, c.nargs = nargs;
	if ((why = env_list(&c, env)) || (why = parse_ticket(&t)) || (why = build_request(&c, &t, &req)))
		goto out;
	*head = req.head.p, *headn = req.head.n;
	*body = req.body.p, *bodyn = req.body.n;
	req.head.p = req.body.p = NULL;
	*sock = strdup(t.sock);
	*timeout_ns = t.timeout_ns;
out:
	free(req.head.p);
	free(req.body.p);
	free(c.env);
	free(c.first.slot);
	ticket_free(&t);
	return why;
}

/* lns_test_limits reports the limits fastpath.c keeps. */
void lns_test_limits(long long *max_exec, long long *max_inline, long long *max_ticket, long long *min_timeout,
		     long long *max_timeout, long long *max_shown, long long *max_policy)
{
	*max_exec = MAX_EXEC, *max_inline = MAX_INLINE, *max_ticket = MAX_TICKET;
	*min_timeout = MIN_TIMEOUT_NS, *max_timeout = MAX_TIMEOUT_NS;
	*max_shown = MAX_SHOWN, *max_policy = MAX_POLICY;
}

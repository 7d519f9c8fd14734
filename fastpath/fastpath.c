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

#define MATERIAL_MAGIC "lectic-nix-sandbox fast path v1\n"
#define TICKET_MAGIC "lectic-nix-sandbox ticket 2"
#define ENV_MODE "_LECTIC_NIX_SANDBOX_FAST="
#define MAX_CANDIDATES 64
#define MAX_TICKET (1 << 20)
/* A reply from the agent; a request is any size (see struct request). */
#define MAX_MESSAGE (64 << 10)
/* execargs.MaxExec: the most argv and environment bytes execve ever takes. */
#define MAX_EXEC (6 << 20)
/* warm's maxInline: a larger request body goes in a sealed memfd. */
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
	line[n++] = '\n';
	while (write(2, line, n) < 0 && errno == EINTR)
		;
}

/* ---- what the call is: the material its ticket is named by ---- */

struct call {
	char *cmdline;      /* /proc/self/cmdline */
	char **args;        /* argv[1:] */
	int nargs;
	char **env;         /* environ as os.Environ returns it */
	int nenv;
	char exe[PATH_MAX];
	char cwd[PATH_MAX];
	char dir[PATH_MAX]; /* T/fast */
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

/*
 * env_list is os.Environ(): empty entries dropped, and a later entry whose
 * key ("" included) an earlier one had is dropped, as Go's syscall package
 * does. The fast-path mode variable is left out of the material, so calls
 * with and without it share tickets.
 */
static const char *env_list(struct call *c)
{
	int n = 0, i, j;

	for (i = 0; environ[i]; i++)
		n++;
	c->env = calloc(n + 1, sizeof *c->env);
	if (!c->env)
		return "out of memory";
	for (i = 0; i < n; i++) {
		const char *e = environ[i], *eq = strchr(e, '=');
		int dup = 0;
		if (*e == 0)
			continue;
		if (eq) {
			size_t klen = eq - e;
			for (j = 0; j < i && !dup; j++) {
				const char *o = environ[j], *oeq = strchr(o, '=');
				dup = oeq && (size_t)(oeq - o) == klen && !memcmp(o, e, klen);
			}
		}
		if (!dup)
			c->env[c->nenv++] = (char *)e;
	}
	j = 0;
	for (i = 0; i < c->nenv; i++)
		if (strncmp(c->env[i], ENV_MODE, sizeof ENV_MODE - 1))
			c->env[j++] = c->env[i];
	c->nenv = j;
	return NULL;
}

static const char *first_env(struct call *c, const char *name)
{
	size_t len = strlen(name);
	int i;
	for (i = 0; i < c->nenv; i++)
		if (!strncmp(c->env[i], name, len) && c->env[i][len] == '=')
			return c->env[i] + len + 1;
	return NULL;
}

/* ticket_dir is T/fast, with T as cmd's resolveRoots finds it, unjoined. */
static const char *ticket_dir(struct call *c)
{
	const char *lt = first_env(c, "LECTIC_TEMP"), *tmp;
	int n;

	if (lt && *lt) {
		n = snprintf(c->dir, sizeof c->dir, "%s/nix-sandbox/fast", lt);
	} else {
		tmp = first_env(c, "TMPDIR");
		if (!tmp || !*tmp)
			tmp = "/tmp";
		n = snprintf(c->dir, sizeof c->dir, "%s/lectic/nix-sandbox/fast", tmp);
	}
	if (n < 0 || (size_t)n >= sizeof c->dir || c->dir[0] != '/')
		return "the temp dir is not an absolute path";
	return NULL;
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
};

static void material_prefix(struct call *c, struct sha256 *h)
{
	size_t i, n = sizeof config_env / sizeof config_env[0];
	sha256_init(h);
	sha256_update(h, MATERIAL_MAGIC, sizeof MATERIAL_MAGIC - 1);
	hash_fmt(h, "uid %u gid %u\n", (unsigned)getuid(), (unsigned)getgid());
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

static void ticket_name(const struct sha256 *prefix, struct call *c, int k, int term, char *out)
{
	static const char hex[] = "0123456789abcdef";
	struct sha256 h = *prefix;
	uint8_t sum[32];
	int i;

	hash_fmt(&h, "\nopts %d %d\n", k, term);
	for (i = 0; i < k; i++)
		hash_lp(&h, c->args[i]);
	sha256_final(&h, sum);
	for (i = 0; i < 16; i++) {
		out[2 * i] = hex[sum[i] >> 4];
		out[2 * i + 1] = hex[sum[i] & 15];
	}
	out[32] = 0;
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
	struct list secret_suffix, secret_word, secret_prefix;
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
};

static void ticket_free(struct ticket *t)
{
	struct list *ls[] = {&t->env.pre, &t->env.keep, &t->env.set, &t->env.post,
			     &t->env.hostonly, &t->env.hostonly_prefix, &t->env.internal_prefix,
			     &t->env.secret_suffix, &t->env.secret_word, &t->env.secret_prefix};
	size_t i;
	for (i = 0; i < sizeof ls / sizeof ls[0]; i++)
		free(ls[i]->v);
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
		{"pol_secret_suffix", offsetof(struct recipe, secret_suffix)},
		{"pol_secret_word", offsetof(struct recipe, secret_word)},
		{"pol_secret_prefix", offsetof(struct recipe, secret_prefix)},
	};
	size_t i;
	for (i = 0; i < sizeof tags / sizeof tags[0]; i++)
		if (!strcmp(tag, tags[i].tag))
			return (struct list *)((char *)r + tags[i].off);
	return NULL;
}

static int owned_private(const struct stat *st)
{
	return st->st_uid == getuid() && (st->st_mode & 022) == 0;
}

/* open_ticket tries the candidate splits of argv into options and command. */
static const char *open_ticket(struct call *c, struct ticket *t)
{
	struct sha256 prefix;
	struct stat st;
	char path[PATH_MAX], name[33];
	int k, term, tried = 0, fd = -1;
	ssize_t n;
	size_t got = 0;

	if (lstat(c->dir, &st))
		return "no tickets yet";
	if (!S_ISDIR(st.st_mode) || !owned_private(&st))
		return "the ticket dir is not a private dir of this user";
	material_prefix(c, &prefix);
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
			ticket_name(&prefix, c, k, term, name);
			if ((size_t)snprintf(path, sizeof path, "%s/%s", c->dir, name) >= sizeof path)
				return "the ticket path is too long";
			fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0 && errno != ENOENT)
				return "cannot open the ticket";
			t->k = k;
		}
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

/* stat_state formats a stat as ticket.go's stateOf does. */
static int stat_state(const char *kind, const char *path, char *out, size_t len)
{
	struct stat st;
	int r;

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

/*
 * check_ticket reads the records and verifies every check. Warnings are
 * printed only once the whole ticket has held, so a fall-back does not
 * print them twice.
 */
static const char *check_ticket(struct ticket *t)
{
	char *p = t->data, *end = t->data + t->size;
	char state[160];
	int holds;

	if (strcmp(p, TICKET_MAGIC))
		return "the ticket is of another version";
	for (p += strlen(p) + 1; p < end; p += strlen(p) + 1) {
		char *sp = strchr(p, ' ');
		if (!sp)
			return "a ticket record has no value";
		*sp = 0;
		if (!strcmp(p, "sock")) {
			t->sock = sp + 1;
		} else if (!strcmp(p, "head")) {
			t->head = sp + 1;
		} else if (!strcmp(p, "cwd")) {
			t->cwd = sp + 1;
		} else if (!strcmp(p, "timeout_ns")) {
			if (parse_timeout(sp + 1, &t->timeout_ns))
				return "the ticket's timeout is out of range";
		} else if (!strcmp(p, "check")) {
			char *kind = sp + 1, *want, *path;
			want = strchr(kind, ' ');
			if (!want)
				return "a ticket check is malformed";
			*want++ = 0;
			path = strchr(want, ' ');
			if (!path)
				return "a ticket check is malformed";
			*path++ = 0;
			holds = !stat_state(kind, path, state, sizeof state) && !strcmp(state, want);
			*--path = ' ', *--want = ' '; /* print_warnings walks the records again */
			if (!holds)
				return "a file the image or the mounts depend on changed";
		} else if (recipe_list(&t->env, p)) {
			if (list_add(recipe_list(&t->env, p), sp + 1))
				return "out of memory";
		} else if (strcmp(p, "warn")) {
			return "the ticket has an unknown record";
		}
		*sp = ' ';
	}
	if (!t->sock || !t->head || !t->cwd || strlen(t->sock) > MAX_SOCKET)
		return "the ticket lacks a socket or a request";
	return NULL;
}

static void print_warnings(struct ticket *t)
{
	char *p;
	for (p = t->data + strlen(t->data) + 1; p < t->data + t->size; p += strlen(p) + 1)
		if (!strncmp(p, "warn ", 5))
			say("lectic-nix-sandbox: warning: %s", p + 5);
}

/* ---- the command's environment: oci.EnvRecipe.Apply ---- */

struct entry {
	const char *name, *val;
	size_t nlen;
};

struct envmap {
	struct entry *e;
	int n, cap, oom;
};

static size_t name_len(const char *kv)
{
	const char *eq = strchr(kv, '=');
	return eq ? (size_t)(eq - kv) : strlen(kv);
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
	for (i = 0; i < m->n; i++) {
		if (m->e[i].nlen == nlen && !memcmp(m->e[i].name, kv, nlen)) {
			m->e[i].val = val;
			return;
		}
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
static int is_blocked(const struct recipe *r, const char *name, size_t n)
{
	char *up;
	size_t i, ulen = n + 1;
	int j, hit = 0;

	for (j = 0; j < r->hostonly.n; j++)
		if (strlen(r->hostonly.v[j]) == n && !memcmp(r->hostonly.v[j], name, n))
			return 1;
	if (any_upper_prefix(name, n, &r->hostonly_prefix) || is_internal(r, name, n))
		return 1;
	up = malloc(ulen + 1);
	if (!up)
		return -1;
	up[0] = '_';
	for (i = 0; i < n; i++)
		up[i + 1] = toupper((unsigned char)name[i]);
	up[ulen] = 0;
	for (j = 0; j < r->secret_suffix.n && !hit; j++) {
		size_t sl = strlen(r->secret_suffix.v[j]);
		hit = sl <= ulen && !memcmp(up + ulen - sl, r->secret_suffix.v[j], sl);
	}
	for (j = 0; j < r->secret_word.n && !hit; j++)
		hit = strstr(up, r->secret_word.v[j]) != NULL;
	if (!hit)
		hit = any_upper_prefix(up, ulen, &r->secret_prefix);
	free(up);
	return hit ? 2 : 0;
}

static int find_named(const struct list *l, const char *name, size_t n)
{
	int i;
	for (i = 0; i < l->n; i++)
		if (name_len(l->v[i]) == n && !memcmp(l->v[i], name, n))
			return i;
	return -1;
}

/* build_env is EnvRecipe.Build: the command's environment in m, and the
 * names withheld as secrets, in environ's order, in withheld. */
static const char *build_env(struct call *c, const struct recipe *r, struct envmap *m, struct list *withheld)
{
	char seen[4096] = {0};
	int i;

	if (r->set.n > (int)sizeof seen)
		return "too many --env values for the fast path";
	for (i = 0; i < r->pre.n; i++)
		env_put(m, r->pre.v[i]);
	for (i = 0; i < c->nenv; i++) {
		const char *kv = c->env[i];
		size_t n = name_len(kv), j;
		int s;
		/* Go upper-cases names with Unicode rules; only ASCII ones are
		 * judged here, so the two sides cannot disagree. */
		for (j = 0; j < n; j++)
			if ((unsigned char)kv[j] >= 0x80)
				return "a variable name is not ASCII";
		if (is_internal(r, kv, n))
			continue;
		if ((s = find_named(&r->set, kv, n)) >= 0) {
			env_put(m, r->set.v[s]);
			seen[s] = 1;
			continue;
		}
		if (find_named(&r->keep, kv, n) < 0) {
			int b = is_blocked(r, kv, n);
			if (b < 0)
				return "out of memory";
			if (b == 2 && list_add(withheld, kv))
				return "out of memory";
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
	return m->oom ? "out of memory" : NULL;
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
		free(withheld.v);
		return why;
	}
	req->argv0 = t->k < c->nargs ? c->args[t->k] : "";
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
				_exit(ended);
			if (r.signal > 0)
				_exit(128 + (int)r.signal);
			_exit((int)r.code & 0xff);
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

	if (req->body.n > MAX_INLINE) {
		if ((fds[3] = body_memfd(&req->body)) < 0)
			return "cannot put the request in a memfd";
		nfds = 4, mh.msg_iovlen = 1, want = req->head.n;
	}
	mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		if (fds[3] >= 0)
			close(fds[3]);
		return "cannot create a socket";
	}
	strcpy(addr.sun_path, t->sock);
	while ((got = connect(fd, (struct sockaddr *)&addr, sizeof addr)) < 0 && errno == EINTR)
		;
	if (got < 0) {
		close(fd);
		if (fds[3] >= 0)
			close(fds[3]);
		return "no agent answers";
	}
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
		_exit(code);
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

	if ((why = read_cmdline(c)) || (why = env_list(c)) || (why = ticket_dir(c)) ||
	    (why = describe(c)) || (why = open_ticket(c, &t)))
		goto out;
	if ((why = check_ticket(&t)))
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
	if (mode == MODE_REQUIRE) {
		say("lectic-nix-sandbox: the fast path was not taken: %s", why);
		_exit(EXIT_SANDBOX);
	}
}

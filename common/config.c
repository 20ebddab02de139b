/*
 * config.c -- parse and check the JSON configuration (SPEC §3).
 *
 * The document is tokenized once by json_parse() (strict JSON), then walked
 * with tables: every object is matched against the list of keys it may
 * hold, so an unknown or repeated key is an error before any value is
 * looked at, and every message starts with the key's path
 * ("jobs.build.timeout_s: expected a positive integer").  Tokens reference
 * jobs, so the root's fields are applied in table order (jobs before
 * tokens), not in document order.
 *
 * This file holds the walker's helpers (shared through config_int.h), the
 * root and limits tables, file reading and the public API; the "jobs"
 * and "tokens" sections are parsed in config_jobs.c.
 *
 * Secrets: plaintext tokens are hashed with SHA-256 as soon as they are
 * decoded and the decoded copy is wiped; only digests live in a Config.
 * config_auth() hashes the presented token and compares it with every
 * digest using CRYPTO_memcmp, without stopping at a match, so its time
 * depends on the number of tokens only.  HMAC secrets must stay in memory
 * (they key the signature check) and are wiped by config_free().
 */
#include "config.h"
#include "config_int.h"
#include "json.h"
#include "jg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#define CFG_FILE_MAX (1 << 20)	/* a config larger than 1 MiB is a mistake */

/* ---- parser helpers (declared in config_int.h) ------------------------ */

/* Length of the UTF-8 sequence of 2-4 bytes at s[0..n) when it is valid
 * (no overlong form, surrogate or code point past U+10FFFF) and safe to
 * print (not a C1 control, not a bidi override or isolate), else 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	size_t len = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
	uint32_t c;

	if (len == 0 || len > n)
		return 0;
	c = s[0] & (0x7f >> len);
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10ffff)) ||
	    (c >= 0xd800 && c <= 0xdfff) || c < 0xa0 ||
	    (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069))
		return 0;
	return len;
}

/* A printable, bounded rendering of untrusted text for error messages:
 * what the file holds, UTF-8 included ("tökens"); control characters and
 * bytes that are not UTF-8 as \xNN. */
void cfg_show(const char *s, size_t n, char *out, size_t cap)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, k = 0, m;

	while (i < n && k + 8 < cap) {
		if (u[i] >= 0x20 && u[i] < 0x7f) {
			out[k++] = s[i++];
		} else if (u[i] >= 0x80 && (m = utf8_seq(u + i, n - i)) != 0) {
			memcpy(out + k, s + i, m);
			k += m, i += m;
		} else {
			k += (size_t)snprintf(out + k, cap - k, "\\x%02x", u[i++]);
		}
	}
	if (i < n && k + 3 < cap)
		memcpy(out + k, "...", 3), k += 3;
	out[k] = '\0';
}

int cfg_fail(CfgParse *p, const char *path, const char *fmt, ...)
{
	va_list ap;
	int k;

	if (!p->err || p->errlen == 0)
		return JG_EINVAL;
	k = snprintf(p->err, p->errlen, "%s: ", path);
	if (k >= 0 && (size_t)k < p->errlen) {
		va_start(ap, fmt);
		vsnprintf(p->err + k, p->errlen - (size_t)k, fmt, ap);
		va_end(ap);
	}
	return JG_EINVAL;
}

/* The key token's text shown in a path: decoded when it is a short plain
 * name, else the sanitized raw text. */
void cfg_key(CfgParse *p, int k, char *out, size_t cap)
{
	const jsmntok_t *t = &p->t[k];

	if (json_str(p->js, t, out, cap) == 0 && config_name_ok(out, strlen(out)))
		return;
	cfg_show(p->js + t->start, (size_t)(t->end - t->start), out, cap);
}

/* parent.key into out[CFG_PATH_MAX]; parts are bounded, so a cut (which
 * would only shorten a message) cannot happen in practice. */
void cfg_path(char *out, const char *parent, const char *key)
{
	if (snprintf(out, CFG_PATH_MAX, "%s%s%s", parent, *parent ? "." : "", key) < 0)
		out[0] = '\0';
}

/*
 * Match every key of object toks[obj] against fields[0..nf), rejecting
 * unknown and repeated keys, then run each present field's handler in
 * table order.  obj must be an object (checked by the caller).
 */
int cfg_fields(CfgParse *p, int obj, const char *path, void *target,
		      const CfgField *fields, int nf)
{
	char key[80], sub[CFG_PATH_MAX];
	int at[16], i, k, f, rc;

	if (nf > (int)(sizeof at / sizeof at[0]))
		return cfg_fail(p, path, "internal: too many fields");
	for (f = 0; f < nf; f++)
		at[f] = -1;
	for (i = obj + 1, k = 0; k < p->t[obj].size; k++, i = json_skip(p->t, i)) {
		for (f = 0; f < nf && !json_eq(p->js, &p->t[i], fields[f].name); f++)
			;
		cfg_key(p, i, key, sizeof key);
		cfg_path(sub, path, key);
		if (f == nf)
			return cfg_fail(p, sub, "unknown key");
		if (at[f] >= 0)
			return cfg_fail(p, sub, "duplicate key");
		at[f] = i + 1;
	}
	for (f = 0; f < nf; f++) {
		if (at[f] < 0)
			continue;
		cfg_path(sub, path, fields[f].name);
		if ((rc = fields[f].fn(p, at[f], sub, target, &fields[f])) != 0)
			return rc;
	}
	return 0;
}

int cfg_want(CfgParse *p, int i, const char *path, jsmntype_t type)
{
	static const char *what[] = {"", "an object", "an array", "a string", ""};

	if (p->t[i].type == type)
		return 0;
	return cfg_fail(p, path, "expected %s", what[type]);
}

/* String value into out[cap]; rejects non-strings, NUL bytes, empty and
 * over-long values with the path. */
int cfg_str(CfgParse *p, int i, const char *path, char *out, size_t cap)
{
	int rc;

	if ((rc = cfg_want(p, i, path, JSMN_STRING)) != 0)
		return rc;
	rc = json_str(p->js, &p->t[i], out, cap);
	if (rc == ENAMETOOLONG)
		return cfg_fail(p, path, "too long (at most %zu bytes)", cap - 1);
	if (rc != 0)
		return cfg_fail(p, path, "must not contain NUL bytes");
	if (out[0] == '\0')
		return cfg_fail(p, path, "must not be empty");
	return 0;
}

/* Fresh copy of a non-empty string value without NUL bytes. */
int cfg_strdup(CfgParse *p, int i, const char *path, char **out)
{
	int rc;

	if ((rc = cfg_want(p, i, path, JSMN_STRING)) != 0)
		return rc;
	if (p->t[i].end == p->t[i].start)
		return cfg_fail(p, path, "must not be empty");
	if (!(*out = json_strdup(p->js, &p->t[i])))
		return cfg_fail(p, path, "must not contain NUL bytes");
	return 0;
}

int cfg_posint(CfgParse *p, int i, const char *path, void *obj,
		      const CfgField *f)
{
	int64_t v;

	if (json_int(p->js, &p->t[i], 1, INT64_MAX, &v) != 0) {
		const jsmntok_t *t = &p->t[i];
		int k = t->start;

		/* All digits but past int64: a positive integer, too big. */
		while (t->type == JSMN_PRIMITIVE && k < t->end && p->js[k] >= '0' && p->js[k] <= '9')
			k++;
		if (k == t->end && k - t->start > 18 && p->js[t->start] != '0')
			return cfg_fail(p, path, "must be at most %lld", (long long)f->max);
		return cfg_fail(p, path, "expected a positive integer");
	}
	if (v > f->max)
		return cfg_fail(p, path, "must be at most %lld", (long long)f->max);
	if (f->wide)
		*(int64_t *)(void *)((char *)obj + f->off) = v;
	else
		*(int *)(void *)((char *)obj + f->off) = (int)v;
	return 0;
}

/* ---- root ---------------------------------------------------------- */

static int cfg_listen(CfgParse *p, int i, const char *path, void *obj,
		      const CfgField *f)
{
	char hp[300];
	int rc;

	(void)obj, (void)f;
	if ((rc = cfg_str(p, i, path, hp, sizeof hp)) != 0)
		return rc;
	if (config_set_listen(p->c, hp) != 0)
		return cfg_fail(p, path, "expected HOST:PORT with a port 0-65535");
	return 0;
}

static int cfg_data_dir(CfgParse *p, int i, const char *path, void *obj,
			const CfgField *f)
{
	(void)obj, (void)f;
	return cfg_str(p, i, path, p->c->data_dir, sizeof p->c->data_dir);
}

#define LIM(name, max, wide) \
	{#name, cfg_posint, offsetof(Config, name), max, wide}
static const CfgField cfg_limit_fields[] = {
	LIM(max_payload_bytes, 1LL << 26, 1),	/* 64 MiB: several fit the api body budget */
	LIM(max_result_bytes, 1LL << 26, 1),
	LIM(max_wait_s, 3600, 0),
	LIM(max_running, 4096, 0),
	LIM(queue_max, 1 << 24, 0),
	LIM(map_size_mb, 1LL << 24, 1),	/* 16 TiB */
};

static int cfg_limits(CfgParse *p, int i, const char *path, void *obj,
		      const CfgField *f)
{
	int rc;

	(void)obj, (void)f;
	if ((rc = cfg_want(p, i, path, JSMN_OBJECT)) != 0)
		return rc;
	return cfg_fields(p, i, path, p->c, cfg_limit_fields,
			  (int)(sizeof cfg_limit_fields / sizeof cfg_limit_fields[0]));
}

/* ---- root and public API ------------------------------------------- */

static const CfgField cfg_root_fields[] = {
	{"listen", cfg_listen, 0, 0, 0},
	{"data_dir", cfg_data_dir, 0, 0, 0},
	{"limits", cfg_limits, 0, 0, 0},
	{"jobs", cfg_jobs, 0, 0, 0},	/* before tokens: they name jobs */
	{"tokens", cfg_tokens, 0, 0, 0},
};

/* Every setting at its default, with no jobs and no tokens. */
static Config *cfg_new(void)
{
	Config *c = calloc(1, sizeof *c);

	if (!c)
		return NULL;
	strcpy(c->listen_host, "127.0.0.1");
	c->listen_port = 8080;
	strcpy(c->data_dir, "./data");
	c->max_payload_bytes = 1 << 20;
	c->max_result_bytes = 64 << 10;
	c->max_wait_s = 60;
	c->max_running = 64;
	c->queue_max = 65536;
	c->map_size_mb = 8192;
	return c;
}

/* The embedded job list: one builtin "echo". */
static int cfg_default_jobs(Config *c)
{
	if (!(c->jobs = calloc(1, sizeof *c->jobs)))
		return ENOMEM;
	c->njobs = 1;
	strcpy(c->jobs[0].name, "echo");
	c->jobs[0].builtin_echo = 1;
	cfg_job_defaults(&c->jobs[0]);
	return 0;
}

/* One event must fit in the log's map with room to spare: a payload that
 * cannot is refused at every trigger (503 storage_full on an empty log),
 * and a result that cannot is never recorded (the runner retries its
 * job.succeeded for ever and the job stays running).  The log takes a
 * job.enqueued only while twice its size fits under 15/16 of the map
 * (log.c, put_entry); a result is stored as a JSON string at up to 6
 * bytes a byte (\u0001), and a status event may take half the map.  The
 * slack covers an empty log's pages and the event's other fields. */
#define CFG_EVENT_SLACK (64 << 10)

static int cfg_check_fit(CfgParse *p)
{
	long long map = (long long)p->c->map_size_mb << 20;
	long long pay = map / 32 * 15 - CFG_EVENT_SLACK;
	long long most = (map / 2 - CFG_EVENT_SLACK) / 6;

	if (p->c->max_payload_bytes > pay)
		return cfg_fail(p, "limits.max_payload_bytes", "%lld bytes cannot be taken "
				"into the log's map (limits.map_size_mb %lld): at most %lld, or a "
				"bigger map", (long long)p->c->max_payload_bytes,
				(long long)p->c->map_size_mb, pay);
	if (p->c->max_result_bytes > most)
		return cfg_fail(p, "limits.max_result_bytes", "%lld bytes (up to 6 times that "
				"once escaped in its event) cannot fit in half of the log's map "
				"(limits.map_size_mb %lld): at most %lld, or a bigger map",
				(long long)p->c->max_result_bytes, (long long)p->c->map_size_mb,
				most);
	return 0;
}

int config_default(Config **out)
{
	Config *c = cfg_new();

	*out = NULL;
	if (!c || cfg_default_jobs(c) != 0) {
		free(c);
		return ENOMEM;
	}
	*out = c;
	return 0;
}

int config_parse(const char *js, size_t n, Config **out, char *err, size_t errlen)
{
	CfgParse p = {js, NULL, NULL, err, errlen};
	jsmntok_t *toks = NULL;
	int rc;

	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	if ((rc = json_parse(js, n, &toks)) < 0) {
		size_t at, k, line = 1, col = 1;
		json_error_at(js, n, &at);
		for (k = 0; k < at && k < n; k++, col++)
			if (js[k] == '\n')
				line++, col = 0;
		if (n >= 3 && memcmp(js, "\xef\xbb\xbf", 3) == 0)
			rc = cfg_fail(&p, "config", "the file starts with a UTF-8 byte order "
				      "mark; save it without one");
		else if (rc == JG_ETOODEEP)
			rc = cfg_fail(&p, "config", "JSON nested deeper than %d levels at "
				      "line %zu, column %zu", JSON_MAX_DEPTH, line, col);
		else
			rc = cfg_fail(&p, "config", "invalid JSON at line %zu, column %zu",
				      line, col);
		goto out;
	}
	p.t = toks;
	if (!(p.c = cfg_new())) {
		rc = ENOMEM;
		goto out;
	}
	if ((rc = cfg_want(&p, 0, "config", JSMN_OBJECT)) != 0)
		goto out;
	/* A file without "jobs" (say, one that only sets tokens or limits)
	 * serves the embedded builtin echo job, as no file at all does. */
	if (json_get(js, toks, 0, "jobs") < 0 && (rc = cfg_default_jobs(p.c)) != 0)
		goto out;
	rc = cfg_fields(&p, 0, "", p.c, cfg_root_fields,
			(int)(sizeof cfg_root_fields / sizeof cfg_root_fields[0]));
	if (rc == 0)
		rc = cfg_check_fit(&p);
out:
	if (rc == ENOMEM && err && errlen)
		snprintf(err, errlen, "config: out of memory");
	if (rc == 0)
		*out = p.c;
	else
		config_free(p.c);
	free(toks);
	return rc;
}

/* Read all of fd (at most CFG_FILE_MAX bytes) into a fresh buffer. */
static int cfg_read(int fd, char **out, size_t *n)
{
	struct stat st;
	size_t cap, len = 0;
	ssize_t r;
	char *b;

	if (fstat(fd, &st) != 0)
		return errno;
	if (st.st_size > CFG_FILE_MAX)
		return EFBIG;
	cap = (size_t)st.st_size + 1;
	if (cap < 4096)
		cap = 4096;	/* a pipe's st_size is 0 */
	if (!(b = malloc(cap)))
		return ENOMEM;
	/* Read until EOF (not st_size): the file may be a pipe or growing. */
	while ((r = read(fd, b + len, cap - len)) != 0) {
		int e = 0;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			e = errno;
		else if ((len += (size_t)r) == cap) {
			/* Grow by copying, so the secrets it holds are wiped
			 * from the old block (realloc would leave them). */
			size_t ncap = cap * 2 > CFG_FILE_MAX + 1 ? CFG_FILE_MAX + 1 : cap * 2;
			char *nb = ncap > cap ? malloc(ncap) : NULL;
			if (!nb) {
				e = ncap > cap ? ENOMEM : EFBIG;
			} else {
				memcpy(nb, b, len);
				OPENSSL_cleanse(b, len);
				free(b);
				b = nb;
				cap = ncap;
			}
		}
		if (e) {
			OPENSSL_cleanse(b, len);
			free(b);
			return e;
		}
	}
	*out = b;
	*n = len;
	return 0;
}

int config_load(const char *path, Config **out, char *err, size_t errlen)
{
	char *text = NULL;
	size_t n = 0;
	int fd, rc;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = errno;
		goto out;
	}
	rc = cfg_read(fd, &text, &n);
	close(fd);
	if (rc != 0)
		goto out;
	rc = config_parse(text, n, out, err, errlen);
	/* The file may hold plaintext tokens: leave no copy in freed memory. */
	OPENSSL_cleanse(text, n);
	free(text);
	return rc;
out:
	if (err && errlen)
		snprintf(err, errlen, "%s: %s", path,
			 rc == EFBIG ? "file too large (limit 1 MiB)" : jg_strerror(rc));
	return rc;
}

int config_token_ok(const char *s, size_t n)
{
	size_t k;

	if (!s || n == 0 || n > JG_TOKEN_MAX)
		return 0;
	for (k = 0; k < n; k++)
		if ((unsigned char)s[k] <= ' ' || (unsigned char)s[k] >= 0x7f)
			return 0;
	return 1;
}

int config_add_token(Config *c, const char *name, const char *token)
{
	unsigned char sha[32];
	JgToken *t;
	size_t n = strlen(name);
	int k;

	if (!config_name_ok(name, n) || !token || !config_token_ok(token, strlen(token)))
		return JG_EINVAL;
	SHA256((const unsigned char *)token, strlen(token), sha);
	for (k = 0; k < c->ntokens; k++) {
		if (strcmp(c->tokens[k].name, name) == 0)
			return JG_EINVAL;
		if (memcmp(c->tokens[k].sha256, sha, 32) == 0)
			return JG_ECONFLICT;	/* two names for one secret */
	}
	t = realloc(c->tokens, ((size_t)c->ntokens + 1) * sizeof *t);
	if (!t)
		return ENOMEM;
	c->tokens = t;
	t = &c->tokens[c->ntokens++];
	memset(t, 0, sizeof *t);
	memcpy(t->name, name, n + 1);
	memcpy(t->sha256, sha, 32);
	return 0;
}

/* Port: strict decimal 0-65535 (0 asks the kernel for a free port). */
static int cfg_port(const char *s, size_t n, int *port)
{
	uint64_t v;

	if (n == 0 || n > 5 || jg_parse_u64(s, n, &v) != 0 || v > 65535)
		return JG_EINVAL;
	*port = (int)v;
	return 0;
}

int config_set_listen(Config *c, const char *hostport)
{
	const char *colon, *h = hostport;
	size_t hn, k;
	int port;

	if (!hostport || !(colon = strrchr(hostport, ':')))
		return JG_EINVAL;
	hn = (size_t)(colon - hostport);
	if (h[0] == '[') {	/* [v6addr]:port */
		if (hn < 3 || h[hn - 1] != ']')
			return JG_EINVAL;
		h++, hn -= 2;
	}
	if (hn == 0 || hn >= sizeof c->listen_host)
		return JG_EINVAL;
	for (k = 0; k < hn; k++)
		if (h[k] <= ' ' || h[k] >= 0x7f || h[k] == '[' || h[k] == ']' ||
		    (h[k] == ':' && hostport[0] != '['))
			return JG_EINVAL;
	if (cfg_port(colon + 1, strlen(colon + 1), &port) != 0)
		return JG_EINVAL;
	memcpy(c->listen_host, h, hn);
	c->listen_host[hn] = '\0';
	c->listen_port = port;
	return 0;
}

void config_free(Config *c)
{
	int k, j;

	if (!c)
		return;
	for (k = 0; k < c->njobs; k++)
		cfg_job_free(&c->jobs[k]);
	free(c->jobs);
	for (k = 0; k < c->ntokens; k++) {
		for (j = 0; c->tokens[k].jobs && j < c->tokens[k].njobs; j++)
			free(c->tokens[k].jobs[j]);
		free(c->tokens[k].jobs);
	}
	if (c->tokens)
		OPENSSL_cleanse(c->tokens, (size_t)c->ntokens * sizeof *c->tokens);
	free(c->tokens);
	free(c);
}

const JgJob *config_job(const Config *c, const char *name, size_t n)
{
	int k;

	for (k = 0; k < c->njobs; k++)
		if (strlen(c->jobs[k].name) == n && memcmp(c->jobs[k].name, name, n) == 0)
			return &c->jobs[k];
	return NULL;
}

const JgToken *config_auth(const Config *c, const char *tok, size_t n)
{
	unsigned char d[SHA256_DIGEST_LENGTH];
	const JgToken *found = NULL;
	int k;

	if (!tok || n == 0)
		return NULL;
	SHA256((const unsigned char *)tok, n, d);
	/* No early exit: every entry is compared whether or not one matched,
	 * so timing reveals neither which token matched nor how much of it. */
	for (k = 0; k < c->ntokens; k++)
		if (CRYPTO_memcmp(d, c->tokens[k].sha256, sizeof d) == 0 && !found)
			found = &c->tokens[k];
	OPENSSL_cleanse(d, sizeof d);
	return found;
}

int config_token_allows(const JgToken *t, const char *job)
{
	int k;

	if (!t)
		return 0;
	if (!t->jobs)
		return 1;
	for (k = 0; k < t->njobs; k++)
		if (strcmp(t->jobs[k], job) == 0)
			return 1;
	return 0;
}

int config_name_ok(const char *s, size_t n)
{
	size_t k;

	if (!s || n == 0 || n > JG_NAME_MAX)
		return 0;
	/* "." and ".." would be rewritten by clients in /trigger/{job} URLs. */
	if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
		return 0;
	for (k = 0; k < n; k++)
		if (!(s[k] >= '0' && s[k] <= '9') && !(s[k] >= 'a' && s[k] <= 'z') &&
		    !(s[k] >= 'A' && s[k] <= 'Z') && s[k] != '_' && s[k] != '.' &&
		    s[k] != '-')
			return 0;
	return 1;
}

/*
 * config_jobs.c -- the "jobs" and "tokens" sections of the configuration
 * (SPEC §3), walked with the field tables and helpers of config_int.h.
 * config.c applies the root's fields in table order, so every job is
 * known before a token's "jobs" list names it.  Plaintext tokens are
 * hashed and wiped here as soon as they are decoded (see config.c).
 */
#include "config.h"
#include "config_int.h"
#include "json.h"
#include "jg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#define CFG_HMAC_HEADER "X-Hub-Signature-256"

/* ---- jobs ---------------------------------------------------------- */

void cfg_job_defaults(JgJob *j)
{
	j->timeout_s = 600;
	j->concurrency = 4;
	j->max_attempts = 3;
	j->backoff_s = 2;
}

void cfg_job_free(JgJob *j)
{
	int k;

	for (k = 0; j->argv && k < j->argc; k++)
		free(j->argv[k]);
	free(j->argv);
	if (j->hmac_secret) {
		OPENSSL_cleanse(j->hmac_secret, j->hmac_secret_len);
		free(j->hmac_secret);
	}
	free(j->hmac_header);
	memset(j, 0, sizeof *j);
}

static int cfg_builtin(CfgParse *p, int i, const char *path, void *obj,
		       const CfgField *f)
{
	JgJob *j = obj;
	char show[80];

	(void)f;
	if (cfg_want(p, i, path, JSMN_STRING) != 0)
		return JG_EINVAL;
	if (!json_eq(p->js, &p->t[i], "echo")) {
		cfg_show(p->js + p->t[i].start, (size_t)(p->t[i].end - p->t[i].start),
			 show, sizeof show);
		return cfg_fail(p, path, "unknown builtin \"%s\" (known: echo)", show);
	}
	j->builtin_echo = 1;
	return 0;
}

/* argv[0] is run without a shell: an absolute path, or a bare name looked
 * up in PATH when the job runs.  A relative path would depend on the
 * server's working directory, so it is refused. */
static int cfg_argv0_ok(const char *s)
{
	return s[0] == '/' || !strchr(s, '/');
}

static int cfg_command(CfgParse *p, int i, const char *path, void *obj,
		       const CfgField *f)
{
	JgJob *j = obj;
	char sub[CFG_PATH_MAX];
	int k, e, rc, n = p->t[i].size;

	(void)f;
	if ((rc = cfg_want(p, i, path, JSMN_ARRAY)) != 0)
		return rc;
	if (n == 0)
		return cfg_fail(p, path, "expected a non-empty array of strings");
	if (!(j->argv = calloc((size_t)n + 1, sizeof *j->argv)))
		return ENOMEM;
	for (k = 0, e = i + 1; k < n; k++, e = json_skip(p->t, e)) {
		snprintf(sub, sizeof sub, "%s[%d]", path, k);
		if (k > 0 && p->t[e].type == JSMN_STRING && p->t[e].start == p->t[e].end) {
			j->argv[k] = strdup("");	/* empty arguments are legal */
			if (!j->argv[k])
				return ENOMEM;
		} else if ((rc = cfg_strdup(p, e, sub, &j->argv[k])) != 0) {
			return rc;
		}
		j->argc = k + 1;
	}
	if (!cfg_argv0_ok(j->argv[0])) {
		snprintf(sub, sizeof sub, "%s[0]", path);
		return cfg_fail(p, sub, "expected an absolute path or a command name");
	}
	return 0;
}

static int cfg_hmac_secret(CfgParse *p, int i, const char *path, void *obj,
			   const CfgField *f)
{
	JgJob *j = obj;
	int rc;

	(void)f;
	if ((rc = cfg_strdup(p, i, path, &j->hmac_secret)) != 0)
		return rc;
	j->hmac_secret_len = strlen(j->hmac_secret);
	return 0;
}

/* An HTTP field name: RFC 9110 token characters. */
static int cfg_header_ok(const char *s)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";
	size_t n = strlen(s), k;

	if (n == 0 || n > 64)
		return 0;
	for (k = 0; k < n; k++)
		if (!(s[k] >= '0' && s[k] <= '9') && !(s[k] >= 'a' && s[k] <= 'z') &&
		    !(s[k] >= 'A' && s[k] <= 'Z') && !strchr(extra, s[k]))
			return 0;
	return 1;
}

/* Headers that frame or route the request (hop-by-hop or read by the
 * server itself): a signature there would change how the request is
 * read, so no job may take one there. */
static int cfg_header_reserved(const char *s)
{
	static const char *const names[] = { "host", "content-length", "transfer-encoding",
		"connection", "upgrade", "expect", "keep-alive", "te", "trailer",
		"proxy-connection", "content-type", "idempotency-key" };

	for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
		if (strcasecmp(s, names[k]) == 0)
			return 1;
	return 0;
}

static int cfg_hmac_header(CfgParse *p, int i, const char *path, void *obj,
			   const CfgField *f)
{
	JgJob *j = obj;
	int rc;

	(void)f;
	if ((rc = cfg_strdup(p, i, path, &j->hmac_header)) != 0)
		return rc;
	if (!cfg_header_ok(j->hmac_header))
		return cfg_fail(p, path, "expected an HTTP header name");
	if (cfg_header_reserved(j->hmac_header))
		return cfg_fail(p, path, "%s frames or routes the request and cannot carry "
				"a signature", j->hmac_header);
	return 0;
}

#define JOBINT(name, max) {#name, cfg_posint, offsetof(JgJob, name), max, 0}
static const CfgField cfg_job_fields[] = {
	{"builtin", cfg_builtin, 0, 0, 0},
	{"command", cfg_command, 0, 0, 0},
	JOBINT(timeout_s, 7 * 86400),
	JOBINT(concurrency, 1024),
	JOBINT(max_attempts, 100),
	JOBINT(backoff_s, 86400),
	{"hmac_secret", cfg_hmac_secret, 0, 0, 0},
	{"hmac_header", cfg_hmac_header, 0, 0, 0},
};

/* Rules that span fields, checked once the job's keys are applied. */
static int cfg_job_check(CfgParse *p, JgJob *j, const char *path)
{
	char sub[CFG_PATH_MAX];

	if (j->builtin_echo == (j->argv != NULL))
		return cfg_fail(p, path, "exactly one of builtin or command is required");
	if (j->hmac_header && !j->hmac_secret) {
		cfg_path(sub, path, "hmac_header");
		return cfg_fail(p, sub, "requires hmac_secret");
	}
	if (j->hmac_secret && !j->hmac_header &&
	    !(j->hmac_header = strdup(CFG_HMAC_HEADER)))
		return ENOMEM;
	return 0;
}

static int cfg_job(CfgParse *p, int k, JgJob *j)
{
	char name[80], path[CFG_PATH_MAX];
	const JgJob *q;
	int rc, v = k + 1;

	cfg_key(p, k, name, sizeof name);
	if (json_str(p->js, &p->t[k], j->name, sizeof j->name) != 0 ||
	    !config_name_ok(j->name, strlen(j->name)))
		return cfg_fail(p, "jobs", "bad job name \"%s\": use 1-64 of A-Z a-z 0-9 _ . -"
				" (not . or ..)",
				name);
	cfg_path(path, "jobs", j->name);
	for (q = p->c->jobs; q < j; q++)
		if (strcmp(q->name, j->name) == 0)
			return cfg_fail(p, path, "duplicate key");
	cfg_job_defaults(j);
	if ((rc = cfg_want(p, v, path, JSMN_OBJECT)) != 0)
		return rc;
	if ((rc = cfg_fields(p, v, path, j, cfg_job_fields,
			     (int)(sizeof cfg_job_fields / sizeof cfg_job_fields[0]))) != 0)
		return rc;
	return cfg_job_check(p, j, path);
}

int cfg_jobs(CfgParse *p, int i, const char *path, void *obj,
		    const CfgField *f)
{
	Config *c = p->c;
	int k, e, rc, n = p->t[i].size;

	(void)obj, (void)f;
	if ((rc = cfg_want(p, i, path, JSMN_OBJECT)) != 0)
		return rc;
	if (n == 0)
		return cfg_fail(p, path, "at least one job is required");
	/* Drop the embedded default: the file's jobs replace it. */
	for (k = 0; k < c->njobs; k++)
		cfg_job_free(&c->jobs[k]);
	free(c->jobs);
	c->njobs = 0;
	if (!(c->jobs = calloc((size_t)n, sizeof *c->jobs)))
		return ENOMEM;
	for (k = 0, e = i + 1; k < n; k++, e = json_skip(p->t, e)) {
		/* Count the job first so config_free() releases a half-built one. */
		c->njobs++;
		if ((rc = cfg_job(p, e, &c->jobs[k])) != 0)
			return rc;
	}
	return 0;
}

/* ---- tokens -------------------------------------------------------- */

typedef struct CfgTok {
	JgToken *t;
	int has_secret;	/* token or token_sha256 seen */
} CfgTok;

static int cfg_tok_name(CfgParse *p, int i, const char *path, void *obj,
			const CfgField *f)
{
	CfgTok *ct = obj;
	int k, rc;

	(void)f;
	if ((rc = cfg_str(p, i, path, ct->t->name, sizeof ct->t->name)) != 0)
		return rc;
	if (!config_name_ok(ct->t->name, strlen(ct->t->name)))
		return cfg_fail(p, path, "bad token name: use 1-64 of A-Z a-z 0-9 _ . -"
				" (not . or ..)");
	for (k = 0; &p->c->tokens[k] != ct->t; k++)
		if (strcmp(p->c->tokens[k].name, ct->t->name) == 0)
			return cfg_fail(p, path, "duplicate token name \"%s\"", ct->t->name);
	return 0;
}

static int cfg_tok_plain(CfgParse *p, int i, const char *path, void *obj,
			 const CfgField *f)
{
	CfgTok *ct = obj;
	char *plain = NULL;
	size_t n;
	int rc;

	(void)f;
	if ((rc = cfg_strdup(p, i, path, &plain)) != 0)
		return rc;
	n = strlen(plain);
	if (!config_token_ok(plain, n)) {
		OPENSSL_cleanse(plain, n);
		free(plain);
		return cfg_fail(p, path, "must be 1 to 256 bytes of printable ASCII without spaces");
	}
	SHA256((const unsigned char *)plain, n, ct->t->sha256);
	OPENSSL_cleanse(plain, n);
	free(plain);
	ct->has_secret++;
	return 0;
}

static int cfg_tok_sha(CfgParse *p, int i, const char *path, void *obj,
		       const CfgField *f)
{
	CfgTok *ct = obj;
	const jsmntok_t *t = &p->t[i];
	const char *s = p->js + t->start;
	int k, hi, lo;

	(void)f;
	if (t->type != JSMN_STRING || t->end - t->start != 64)
		return cfg_fail(p, path, "expected 64 hex digits");
	for (k = 0; k < 32; k++) {
		hi = jg_hexval(s[2 * k]);
		lo = jg_hexval(s[2 * k + 1]);
		if (hi < 0 || lo < 0)
			return cfg_fail(p, path, "expected 64 hex digits");
		ct->t->sha256[k] = (unsigned char)(hi << 4 | lo);
	}
	ct->has_secret++;
	return 0;
}

static int cfg_tok_jobs(CfgParse *p, int i, const char *path, void *obj,
			const CfgField *f)
{
	JgToken *t = ((CfgTok *)obj)->t;
	char sub[CFG_PATH_MAX], name[JG_NAME_MAX + 1];
	int k, e, rc, n = p->t[i].size;

	(void)f;
	if ((rc = cfg_want(p, i, path, JSMN_ARRAY)) != 0)
		return rc;
	/* An empty list is a token that may trigger nothing (read-only). */
	if (!(t->jobs = calloc((size_t)n + 1, sizeof *t->jobs)))
		return ENOMEM;
	for (k = 0, e = i + 1; k < n; k++, e = json_skip(p->t, e)) {
		snprintf(sub, sizeof sub, "%s[%d]", path, k);
		if (p->t[e].type != JSMN_STRING)
			return cfg_fail(p, sub, "expected a string");
		if (json_str(p->js, &p->t[e], name, sizeof name) != 0 ||
		    !config_job(p->c, name, strlen(name))) {
			cfg_key(p, e, name, sizeof name);
			return cfg_fail(p, sub, "unknown job \"%s\"", name);
		}
		for (int j = 0; j < k; j++)
			if (strcmp(t->jobs[j], name) == 0)	/* a typo, most likely */
				return cfg_fail(p, sub, "job \"%s\" is listed twice", name);
		if (!(t->jobs[k] = strdup(name)))
			return ENOMEM;
		t->njobs = k + 1;
	}
	return 0;
}

static const CfgField cfg_tok_fields[] = {
	{"name", cfg_tok_name, 0, 0, 0},
	{"token", cfg_tok_plain, 0, 0, 0},
	{"token_sha256", cfg_tok_sha, 0, 0, 0},
	{"jobs", cfg_tok_jobs, 0, 0, 0},
};

int cfg_tokens(CfgParse *p, int i, const char *path, void *obj,
		      const CfgField *f)
{
	Config *c = p->c;
	char sub[CFG_PATH_MAX];
	CfgTok ct;
	int k, e, rc, n = p->t[i].size;

	(void)obj, (void)f;
	if ((rc = cfg_want(p, i, path, JSMN_ARRAY)) != 0)
		return rc;
	if (n == 0)
		return 0;
	if (!(c->tokens = calloc((size_t)n, sizeof *c->tokens)))
		return ENOMEM;
	for (k = 0, e = i + 1; k < n; k++, e = json_skip(p->t, e)) {
		snprintf(sub, sizeof sub, "%s[%d]", path, k);
		c->ntokens++;
		ct.t = &c->tokens[k];
		ct.has_secret = 0;
		if ((rc = cfg_want(p, e, sub, JSMN_OBJECT)) != 0)
			return rc;
		if ((rc = cfg_fields(p, e, sub, &ct, cfg_tok_fields,
				     (int)(sizeof cfg_tok_fields / sizeof cfg_tok_fields[0]))) != 0)
			return rc;
		if (ct.t->name[0] == '\0') {
			strcat(sub, ".name");
			return cfg_fail(p, sub, "required");
		}
		if (ct.has_secret != 1)
			return cfg_fail(p, sub, "exactly one of token or token_sha256 is required");
		/* Two names for one secret would make the actor and the job
		 * list of a request ambiguous. */
		for (int j = 0; j < k; j++)
			if (memcmp(c->tokens[j].sha256, ct.t->sha256, 32) == 0)
				return cfg_fail(p, sub, "same secret as tokens[%d]", j);
	}
	return 0;
}

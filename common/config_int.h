/*
 * config_int.h -- private to common/config*.c: the table-driven parser
 * shared by config.c (helpers, root, limits, public API) and config_jobs.c
 * (the "jobs" and "tokens" sections).  Not for use outside those files.
 *
 * Every handler reports a bad value through cfg_fail(), which writes
 * "path: message" into the caller's buffer and returns JG_EINVAL; other
 * codes (ENOMEM) pass through.  Memory a handler allocates hangs off the
 * Config under construction, so config_free() releases it on any failure.
 */
#ifndef JG_CONFIG_INT_H
#define JG_CONFIG_INT_H

#include "config.h"
#include "json.h"

#include <stddef.h>
#include <stdint.h>

#define CFG_PATH_MAX 256

typedef struct CfgParse {
	const char *js;
	const jsmntok_t *t;
	Config *c;
	char *err;
	size_t errlen;
} CfgParse;

typedef struct CfgField CfgField;
typedef int (*CfgFn)(CfgParse *p, int i, const char *path, void *obj,
		     const CfgField *f);

/* One key an object may hold; int fields carry their offset and bound. */
struct CfgField {
	const char *name;
	CfgFn fn;
	size_t off;
	int64_t max;
	int wide;	/* 1: int64_t field, 0: int */
};

/* ---- config.c: parser helpers ---- */
/* Printable, bounded rendering of s[0..n) into out[cap]. */
void cfg_show(const char *s, size_t n, char *out, size_t cap);
/* "path: fmt..." into p->err; returns JG_EINVAL. */
int  cfg_fail(CfgParse *p, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Key token k as shown in a path, into out[cap]. */
void cfg_key(CfgParse *p, int k, char *out, size_t cap);
/* parent.key into out[CFG_PATH_MAX]. */
void cfg_path(char *out, const char *parent, const char *key);
/* Match object obj's keys against fields[0..nf) and run the handlers in
 * table order; unknown and duplicate keys are errors. */
int  cfg_fields(CfgParse *p, int obj, const char *path, void *target,
		const CfgField *fields, int nf);
/* 0 if token i has type, else a path-first error. */
int  cfg_want(CfgParse *p, int i, const char *path, jsmntype_t type);
/* Non-empty string without NUL bytes into out[cap]. */
int  cfg_str(CfgParse *p, int i, const char *path, char *out, size_t cap);
/* Fresh copy (caller frees) of a non-empty string without NUL bytes. */
int  cfg_strdup(CfgParse *p, int i, const char *path, char **out);
/* CfgField handler: positive integer <= f->max at obj + f->off. */
int  cfg_posint(CfgParse *p, int i, const char *path, void *obj,
		const CfgField *f);

/* ---- config_jobs.c ---- */
void cfg_job_defaults(JgJob *j);
/* Release what j owns (wiping the HMAC secret) and zero it. */
void cfg_job_free(JgJob *j);
/* Root field handlers: "jobs" replaces p->c's jobs; "tokens" fills
 * p->c->tokens and must run after "jobs". */
int  cfg_jobs(CfgParse *p, int i, const char *path, void *obj,
	      const CfgField *f);
int  cfg_tokens(CfgParse *p, int i, const char *path, void *obj,
		const CfgField *f);

#endif

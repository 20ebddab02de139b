/*
 * config.h -- the JSON configuration of SPEC §3, parsed with jsmn.
 *
 * config_load() rejects unknown keys, wrong types and bad values with the
 * key's path in the message ("jobs.build.timeout_s: expected a positive
 * integer").  Without a file, config_default() gives the embedded default:
 * listen 127.0.0.1:8080, data dir ./data, one builtin job "echo", no tokens.
 * Tokens are kept only as SHA-256 digests; plain "token" values are hashed
 * at load and the plaintext wiped.  A Config is immutable after load and
 * shared read-only by every thread; config_free() releases it.
 */
#ifndef JG_CONFIG_H
#define JG_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define JG_NAME_MAX 64		/* job and token names: [A-Za-z0-9_.-]{1,64} */

typedef struct JgToken {
	char  name[JG_NAME_MAX + 1];
	unsigned char sha256[32];
	char **jobs;		/* NULL = every job; else njobs names */
	int    njobs;
} JgToken;

typedef struct JgJob {
	char   name[JG_NAME_MAX + 1];
	int    builtin_echo;	/* 1: {"builtin":"echo"}; else argv is set */
	char **argv;		/* NULL-terminated, argc entries */
	int    argc;
	int    timeout_s;	/* default 600 */
	int    concurrency;	/* default 4 */
	int    max_attempts;	/* default 3 */
	int    backoff_s;	/* default 2; delay = backoff_s * 2^(attempt-1), capped */
	char  *hmac_secret;	/* NULL if none */
	size_t hmac_secret_len;
	char  *hmac_header;	/* default "X-Hub-Signature-256" when secret set */
} JgJob;

typedef struct Config {
	char    listen_host[256];
	int     listen_port;
	char    data_dir[4096];
	JgToken *tokens;
	int     ntokens;
	JgJob  *jobs;
	int     njobs;
	int64_t max_payload_bytes;	/* default 1 MiB */
	int64_t max_result_bytes;	/* default 64 KiB */
	int     max_wait_s;		/* default 60 */
	int     max_running;		/* global cap on job processes, default 64 */
	int     queue_max;		/* append queue capacity, default 65536 */
	int64_t map_size_mb;		/* LMDB map size, default 8192 */
} Config;

/* Embedded default.  Caller frees with config_free(). */
int  config_default(Config **out);
/* Parse file at path.  On error returns JG_EINVAL (or errno) and writes a
 * one-line message (key path first) into err[errlen]. */
int  config_load(const char *path, Config **out, char *err, size_t errlen);
/* Parse an in-memory document (fuzz target and tests use this). */
int  config_parse(const char *js, size_t n, Config **out, char *err, size_t errlen);
/* Add a plaintext token (env JOBGATE_TOKEN or a generated one) named
 * name: JG_EINVAL for a bad or taken name or a token config_token_ok
 * refuses, JG_ECONFLICT when another token has the same secret. */
int  config_add_token(Config *c, const char *name, const char *token);
/* A bearer token is printable ASCII without spaces (RFC 6750 allows
 * less; nothing that cannot travel in "Authorization: Bearer X"). */
#define JG_TOKEN_MAX 256	/* bytes; it must fit the api's header and query copies */
int  config_token_ok(const char *s, size_t n);
/* "HOST:PORT" into c; JG_EINVAL on a bad form. */
int  config_set_listen(Config *c, const char *hostport);
void config_free(Config *c);

const JgJob   *config_job(const Config *c, const char *name, size_t n);	/* NULL if none */
/* Token whose digest matches tok[0..n) in constant time per entry; NULL if none. */
const JgToken *config_auth(const Config *c, const char *tok, size_t n);
int  config_token_allows(const JgToken *t, const char *job);	/* 1 or 0 */
int  config_name_ok(const char *s, size_t n);			/* 1 or 0 */

#endif

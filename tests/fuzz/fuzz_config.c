/*
 * fuzz_config.c -- libFuzzer target for config_parse: any input either
 * yields a Config that keeps the documented invariants, or fails with a
 * one-line message; nothing leaks or crashes either way.
 */
#include "../../common/config.h"
#include "../../common/jg.h"

#include <stdlib.h>
#include <string.h>

#define FUZZ_ASSERT(c) do { if (!(c)) abort(); } while (0)

static void check_config(const Config *c)
{
	int k, j;

	FUZZ_ASSERT(c->njobs >= 1);
	for (k = 0; k < c->njobs; k++) {
		const JgJob *jb = &c->jobs[k];
		FUZZ_ASSERT(config_name_ok(jb->name, strlen(jb->name)));
		FUZZ_ASSERT(config_job(c, jb->name, strlen(jb->name)) == jb);
		FUZZ_ASSERT(jb->builtin_echo == (jb->argv == NULL));
		FUZZ_ASSERT(!jb->argv || (jb->argc >= 1 && jb->argv[jb->argc] == NULL));
		FUZZ_ASSERT(!jb->hmac_secret == !jb->hmac_header);
		FUZZ_ASSERT(jb->timeout_s > 0 && jb->concurrency > 0 &&
			    jb->max_attempts > 0 && jb->backoff_s > 0);
	}
	for (k = 0; k < c->ntokens; k++) {
		const JgToken *t = &c->tokens[k];
		FUZZ_ASSERT(config_name_ok(t->name, strlen(t->name)));
		for (j = 0; j < t->njobs; j++)
			FUZZ_ASSERT(config_job(c, t->jobs[j], strlen(t->jobs[j])) != NULL);
	}
	FUZZ_ASSERT(c->listen_port >= 0 && c->listen_port <= 65535);
	FUZZ_ASSERT(c->data_dir[0] != '\0' && c->listen_host[0] != '\0');
	FUZZ_ASSERT(c->max_payload_bytes > 0 && c->max_wait_s > 0 && c->queue_max > 0);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	Config *c = NULL;
	char err[256];
	int rc = config_parse((const char *)data, size, &c, err, sizeof err);

	if (rc != 0) {
		FUZZ_ASSERT(c == NULL && err[0] != '\0' && strlen(err) < sizeof err);
		FUZZ_ASSERT(!strchr(err, '\n'));
		return 0;
	}
	check_config(c);
	/* Auth against the input itself exercises hashing and the scan. */
	(void)config_auth(c, (const char *)data, size);
	config_free(c);
	return 0;
}

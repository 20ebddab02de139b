/*
 * fuzz_json.c -- libFuzzer target for common/json.c and buf_json_str.
 *
 * Properties checked on every input:
 *  - json_parse accepts what json_valid does (json_valid also refuses lone
 *    surrogate escapes), json_error_at agrees with json_parse, and a parse
 *    yields a well-formed token tree (bounds inside the input, the root
 *    spans every token);
 *  - every string token decodes to valid UTF-8 (or is refused for U+0000);
 *  - buf_json_str of the raw bytes is always one valid JSON string, and
 *    decoding it gives the input back when the input was clean UTF-8.
 */
#include "../../common/buf.h"
#include "../../common/jg.h"
#include "../../common/json.h"

#include <stdlib.h>
#include <string.h>

#define FUZZ_ASSERT(c) do { if (!(c)) abort(); } while (0)

static void check_tree(const char *js, size_t n, const jsmntok_t *t, int ntok)
{
	int k;

	FUZZ_ASSERT(json_skip(t, 0) == ntok);
	for (k = 0; k < ntok; k++) {
		char *s;

		FUZZ_ASSERT(t[k].start >= 0 && t[k].end >= t[k].start);
		FUZZ_ASSERT((size_t)t[k].end <= n);
		FUZZ_ASSERT(k == 0 ? t[k].parent == -1 : t[k].parent >= 0 && t[k].parent < k);
		if (t[k].type != JSMN_STRING)
			continue;
		s = json_strdup(js, &t[k]);
		if (s) {
			FUZZ_ASSERT(json_utf8_ok(s, strlen(s)));
			FUZZ_ASSERT(json_eq(js, &t[k], s));
			free(s);
		}
	}
}

static void check_escape(const char *data, size_t size)
{
	Buf b = {0};
	jsmntok_t *t = NULL;
	char *back;

	buf_json_str(&b, data, size);
	if (b.oom)
		goto out;
	FUZZ_ASSERT(json_valid(b.p, b.len) == 0);
	FUZZ_ASSERT(json_parse(b.p, b.len, &t) == 1 && t[0].type == JSMN_STRING);
	if (json_utf8_ok(data, size) && !memchr(data, '\0', size)) {
		back = json_strdup(b.p, &t[0]);
		FUZZ_ASSERT(back && strlen(back) == size && memcmp(back, data, size) == 0);
		free(back);
	}
out:
	free(t);
	buf_free(&b);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	const char *js = (const char *)data;
	jsmntok_t *t = NULL;
	int valid = json_valid(js, size);
	int ntok = json_parse(js, size, &t);
	size_t at;

	/* json_valid also refuses lone surrogate escapes, which the parser
	 * (and json_error_at, its account of where it stopped) accept. */
	FUZZ_ASSERT(valid != 0 || ntok > 0);
	FUZZ_ASSERT((ntok > 0) == (json_error_at(js, size, &at) == 0));
	FUZZ_ASSERT((ntok > 0) == (t != NULL));
	if (ntok > 0)
		check_tree(js, size, t, ntok);
	free(t);
	check_escape(js, size);
	return 0;
}

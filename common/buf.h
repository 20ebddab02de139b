/*
 * buf.h -- a growable byte buffer with JSON writers (like Redis's sds, but
 * a plain struct the caller owns).
 *
 * A Buf starts zeroed ({0}); buf_free() releases it.  On allocation failure
 * the buffer sets oom and ignores further writes, so writers can be chained
 * and checked once: `if (b.oom) ...`.  b.p is NUL-terminated whenever
 * b.len > 0 or after buf_reserve.  b.p is moved by any write: pointers into
 * it are dead after the next write.
 */
#ifndef JG_BUF_H
#define JG_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct Buf {
	char  *p;
	size_t len, cap;
	int    oom;
} Buf;

void buf_free(Buf *b);
void buf_reset(Buf *b);			/* len = 0, oom = 0, keeps the memory */
int  buf_reserve(Buf *b, size_t extra);	/* 0 or ENOMEM */
void buf_add(Buf *b, const void *p, size_t n);
void buf_puts(Buf *b, const char *s);
void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_u64(Buf *b, uint64_t v);	/* decimal */
void buf_i64(Buf *b, int64_t v);

/* JSON string literal of s[0..n) with quotes; bytes that are not valid
 * UTF-8 are written as U+FFFD so the output is always valid JSON. */
void buf_json_str(Buf *b, const char *s, size_t n);
void buf_json_cstr(Buf *b, const char *s);	/* NULL writes null */
/* Length (1..4) of the valid UTF-8 sequence at the start of s[0..n), or 0
 * if it is invalid (overlong, surrogate, above U+10FFFF, truncated). */
size_t buf_utf8_seq(const char *s, size_t n);
/* RFC 3339 time string in quotes, or null when ms == 0. */
void buf_json_time(Buf *b, int64_t ms);

#endif

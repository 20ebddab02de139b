/*
 * buf.c -- growable byte buffer and JSON writers.
 *
 * Invariant: when p != NULL, cap > len and p[len] == '\0', so b.p is
 * always a C string.  Once oom is set every writer is a no-op; the caller
 * checks the flag once after a chain of writes.  buf_reset starts a new
 * chain: it clears the flag, so a buffer reused after one failed
 * allocation works again (a long-lived scratch buffer is not poisoned for
 * good).
 */
#include "buf.h"
#include "jg.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_free(Buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
	b->oom = 0;
}

void buf_reset(Buf *b)
{
	b->len = 0;
	b->oom = 0;
	if (b->p)
		b->p[0] = '\0';
}

int buf_reserve(Buf *b, size_t extra)
{
	size_t need, cap;
	char *p;

	if (b->oom)
		return ENOMEM;
	/* No real buffer reaches SIZE_MAX/4; refusing earlier keeps the
	 * doubling below from overflowing. */
	if (extra >= SIZE_MAX / 4 - b->len)
		goto fail;
	need = b->len + extra + 1;	/* + NUL */
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		goto fail;
	b->p = p;
	b->cap = cap;
	b->p[b->len] = '\0';
	return 0;
fail:
	b->oom = 1;
	return ENOMEM;
}

void buf_add(Buf *b, const void *p, size_t n)
{
	if (buf_reserve(b, n) != 0)
		return;
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void buf_puts(Buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

void buf_printf(Buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (buf_reserve(b, 64) != 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		goto fail;
	if ((size_t)n >= b->cap - b->len) {
		/* Did not fit: grow to the exact size and format again. */
		if (buf_reserve(b, (size_t)n) != 0)
			return;
		va_start(ap, fmt);
		vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
	return;
fail:
	b->p[b->len] = '\0';
	b->oom = 1;	/* an encoding error leaves the buffer unusable too */
}

void buf_u64(Buf *b, uint64_t v)
{
	char tmp[20];
	size_t i = sizeof tmp;

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	buf_add(b, tmp + i, sizeof tmp - i);
}

void buf_i64(Buf *b, int64_t v)
{
	if (v < 0) {
		buf_add(b, "-", 1);
		/* Negate in unsigned arithmetic: -INT64_MIN overflows int64_t. */
		buf_u64(b, (uint64_t)0 - (uint64_t)v);
	} else {
		buf_u64(b, (uint64_t)v);
	}
}

size_t buf_utf8_seq(const char *p, size_t n)
{
	const unsigned char *s = (const unsigned char *)p;
	size_t len, i;
	uint32_t cp;

	if (n == 0)
		return 0;
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;	/* continuation byte, C0/C1 overlong lead, > F4 */
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

static void buf_json_esc(Buf *b, unsigned char c)
{
	static const char hex[] = "0123456789abcdef";
	char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

	switch (c) {
	case '"':  buf_add(b, "\\\"", 2); break;
	case '\\': buf_add(b, "\\\\", 2); break;
	case '\n': buf_add(b, "\\n", 2); break;
	case '\r': buf_add(b, "\\r", 2); break;
	case '\t': buf_add(b, "\\t", 2); break;
	default:   buf_add(b, e, 6); break;
	}
}

void buf_json_str(Buf *b, const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, run = 0, k;

	/* Worst case is 6 bytes per input byte; reserve the common case. */
	if (buf_reserve(b, n + 2) != 0)
		return;
	buf_add(b, "\"", 1);
	while (i < n) {
		if (u[i] >= 0x20 && u[i] != '"' && u[i] != '\\' && u[i] < 0x80) {
			i++, run++;
			continue;
		}
		if (u[i] >= 0x80 && (k = buf_utf8_seq(s + i, n - i)) != 0) {
			i += k, run += k;
			continue;
		}
		buf_add(b, u + i - run, run);	/* flush the plain run */
		run = 0;
		if (u[i] >= 0x80)
			buf_add(b, "\xef\xbf\xbd", 3);	/* U+FFFD */
		else
			buf_json_esc(b, u[i]);
		i++;
	}
	buf_add(b, u + i - run, run);
	buf_add(b, "\"", 1);
}

void buf_json_cstr(Buf *b, const char *s)
{
	if (!s)
		buf_add(b, "null", 4);
	else
		buf_json_str(b, s, strlen(s));
}

void buf_json_time(Buf *b, int64_t ms)
{
	char t[JG_TIME_LEN + 1];

	if (ms == 0) {
		buf_add(b, "null", 4);
		return;
	}
	jg_fmt_time(ms, t);
	buf_add(b, "\"", 1);
	buf_add(b, t, JG_TIME_LEN);
	buf_add(b, "\"", 1);
}

/*
 * route.c -- pure request parsing: path segments, route patterns, strict
 * ids, query fragments and chunked bodies.  See route.h.
 *
 * Everything here runs on whatever thread calls it (the api thread, or a
 * fuzzer) and touches only its arguments.  Inputs are untrusted bytes
 * straight off the socket (after lws's %-decoding), so every loop is
 * bounded by n and nothing reads past it; there is no NUL-termination
 * assumption anywhere.
 */
#include <errno.h>
#include <string.h>

#include "../common/jg.h"
#include "route.h"

int route_split(const char *path, size_t n, RoutePath *rp)
{
	size_t i, start;

	rp->nseg = 0;
	if (n > ROUTE_PATH_MAX)
		return ENAMETOOLONG;
	if (n == 0 || path[0] != '/')
		return JG_EINVAL;
	if (n == 1)
		return 0;
	start = 1;
	for (i = 1; i <= n; i++) {
		if (i < n && path[i] == '\0')
			return JG_EINVAL;
		if (i < n && path[i] != '/')
			continue;
		/* An empty segment ("//" or a trailing "/") is never a route:
		 * refusing it keeps "/jobs/" from meaning "/jobs". */
		if (i == start || rp->nseg == ROUTE_SEGS_MAX)
			return JG_EINVAL;
		rp->seg[rp->nseg].p = path + start;
		rp->seg[rp->nseg].n = i - start;
		rp->nseg++;
		start = i + 1;
	}
	return 0;
}

int route_match(const char *pattern, const RoutePath *rp, RouteSeg *caps, int ncap)
{
	const char *p = pattern, *e;
	int k = 0, ncaps = 0;
	size_t len;

	if (*p == '/')
		p++;
	while (*p) {
		e = strchr(p, '/');
		len = e ? (size_t)(e - p) : strlen(p);
		if (k >= rp->nseg)
			return 0;
		if (len >= 2 && p[0] == '{' && p[len - 1] == '}') {
			if (ncaps < ncap)
				caps[ncaps] = rp->seg[k];
			ncaps++;
		} else if (rp->seg[k].n != len || memcmp(rp->seg[k].p, p, len) != 0) {
			return 0;
		}
		k++;
		p += len;
		if (*p == '/')
			p++;
	}
	return k == rp->nseg;
}

int route_id(const char *s, size_t n, uint64_t *id)
{
	uint64_t v;
	size_t i;

	/* jg_parse_u64 is strict about digits and overflow; leading zeros
	 * are refused here so one job has exactly one URL. */
	if (n == 0 || n > 20 || (n > 1 && s[0] == '0'))
		return JG_EINVAL;
	for (i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return JG_EINVAL;
	if (jg_parse_u64(s, n, &v) != 0 || v == 0)
		return JG_EINVAL;
	*id = v;
	return 0;
}

int route_arg(const char *frag, size_t n, const char *name, const char **val, size_t *vn)
{
	size_t ln = strlen(name);

	if (n < ln || memcmp(frag, name, ln) != 0)
		return 0;
	if (n == ln) {
		*val = frag + n;
		*vn = 0;
		return 1;
	}
	if (frag[ln] != '=')
		return 0;
	*val = frag + ln + 1;
	*vn = n - ln - 1;
	return 1;
}

/* Decoder states. */
enum { CK_SIZE, CK_EXT, CK_SIZE_LF, CK_DATA, CK_DATA_CR, CK_DATA_LF,
       CK_TRAILER, CK_TRAILER_LINE, CK_TRAILER_LF, CK_END_LF };

#define CK_LINE_MAX 4096	/* a size or trailer line longer than this is refused */

/* One byte of framing (not chunk data).  0 to go on, 1 at the end, or an
 * error code. */
static int ck_byte(RouteChunk *c, char ch)
{
	int h;

	switch (c->st) {
	case CK_SIZE:
		if ((h = jg_hexval(ch)) >= 0) {
			if (++c->ndig > 15)	/* 2^60 bytes: refuse, not overflow */
				return JG_EINVAL;
			c->left = c->left * 16 + (uint64_t)h;
			return 0;
		}
		if (c->ndig == 0)
			return JG_EINVAL;
		if (ch == '\r') {
			c->st = CK_SIZE_LF;
			return 0;
		}
		if (ch != ';' && ch != ' ' && ch != '\t')
			return JG_EINVAL;
		c->st = CK_EXT;
		c->linelen = 0;
		return 0;
	case CK_EXT:
		if (ch == '\r')
			c->st = CK_SIZE_LF;
		else if (++c->linelen > CK_LINE_MAX || ch == '\n')
			return JG_EINVAL;
		return 0;
	case CK_SIZE_LF:
		if (ch != '\n')
			return JG_EINVAL;
		c->ndig = 0;
		c->st = c->left ? CK_DATA : CK_TRAILER;
		return 0;
	case CK_DATA_CR:
		if (ch != '\r')
			return JG_EINVAL;
		c->st = CK_DATA_LF;
		return 0;
	case CK_DATA_LF:
		if (ch != '\n')
			return JG_EINVAL;
		c->st = CK_SIZE;
		c->left = 0;
		return 0;
	case CK_TRAILER:
		if (ch == '\r') {
			c->st = CK_END_LF;
			return 0;
		}
		c->st = CK_TRAILER_LINE;
		c->linelen = 0;
		/* fall through */
	case CK_TRAILER_LINE:
		if (ch == '\r')
			c->st = CK_TRAILER_LF;
		else if (++c->linelen > CK_LINE_MAX || ch == '\n')
			return JG_EINVAL;
		return 0;
	case CK_TRAILER_LF:
		if (ch != '\n')
			return JG_EINVAL;
		c->st = CK_TRAILER;
		return 0;
	case CK_END_LF:
		return ch == '\n' ? 1 : JG_EINVAL;
	}
	return JG_EINVAL;
}

int route_chunk_feed(RouteChunk *c, const char *in, size_t n, Buf *out,
		     size_t max, size_t *used)
{
	size_t i = 0, take;
	int rc;

	while (i < n) {
		if (c->st == CK_DATA) {
			take = n - i;
			if (take > c->left)
				take = (size_t)c->left;
			if (out->len + take > max)
				return E2BIG;
			buf_add(out, in + i, take);
			if (out->oom)
				return ENOMEM;
			c->left -= take;
			i += take;
			if (c->left == 0)
				c->st = CK_DATA_CR;
			continue;
		}
		/* The declared size alone may already exceed the limit: refuse
		 * before any of it is buffered. */
		if (c->st == CK_SIZE_LF && c->left > max - out->len)
			return E2BIG;
		rc = ck_byte(c, in[i++]);
		if (rc == 1) {
			*used = i;
			return ROUTE_CHUNK_DONE;
		}
		if (rc != 0)
			return rc;
	}
	*used = n;
	return ROUTE_CHUNK_MORE;
}

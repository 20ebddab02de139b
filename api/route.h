/*
 * route.h -- pure request parsing for the HTTP side of api/: the request
 * target (path segments, strict ids, query fragments) and chunked request
 * bodies.  No lws, no I/O, no allocation except into a caller's Buf, so the
 * whole of it is a libFuzzer target (tests/fuzz/fuzz_route.c).
 *
 * lws has already %-decoded the path and collapsed "/../" before we see it;
 * what reaches route_split() is the decoded path without the query.  Query
 * arguments arrive from lws one "name=value" fragment at a time (also
 * decoded), which is what route_arg() takes.
 */
#ifndef JG_ROUTE_H
#define JG_ROUTE_H

#include <stddef.h>
#include <stdint.h>
#include "../common/buf.h"

#define ROUTE_PATH_MAX 2048	/* longer paths are refused with 400 */
#define ROUTE_SEGS_MAX 8	/* more segments than any route has: no match */

typedef struct RouteSeg { const char *p; size_t n; } RouteSeg;

typedef struct RoutePath {
	RouteSeg seg[ROUTE_SEGS_MAX];
	int      nseg;
} RoutePath;

/* Split path[0..n) ("/a/b") into segments borrowed from path.  Returns 0,
 * ENAMETOOLONG over ROUTE_PATH_MAX, or JG_EINVAL when it does not start
 * with '/', has an empty segment ("//", trailing "/"), a NUL byte, or more
 * than ROUTE_SEGS_MAX segments.  "/" alone has zero segments. */
int route_split(const char *path, size_t n, RoutePath *rp);

/* 1 if rp matches pattern ("/jobs/{id}/events"): literal segments compare
 * exactly, "{...}" matches any one segment, whose span goes to caps[k] in
 * order (at most ncap).  0 otherwise. */
int route_match(const char *pattern, const RoutePath *rp, RouteSeg *caps, int ncap);

/* Strict job id: decimal digits only, no sign, no leading zero, > 0 and
 * no overflow.  0 or JG_EINVAL. */
int route_id(const char *s, size_t n, uint64_t *id);

/* If fragment frag[0..n) is "name=value" for this name, set *val and *vn to the
 * value (borrowed) and return 1; a bare "name" gives an empty value.  Else 0. */
int route_arg(const char *frag, size_t n, const char *name, const char **val, size_t *vn);

/*
 * Chunked request body decoder (RFC 9112 §7.1), incremental: feed bytes as
 * they arrive.  Chunk extensions are skipped, trailers are read and
 * dropped.  Data is appended to out; more than max bytes of data is an
 * error before it is buffered, so memory stays bounded.
 */
typedef struct RouteChunk {
	int      st;		/* decoder state, 0 = start */
	uint64_t left;		/* bytes left in the current chunk */
	int      ndig;		/* hex digits of the size line */
	int      linelen;	/* bytes of the current trailer line */
} RouteChunk;

enum { ROUTE_CHUNK_MORE = 0, ROUTE_CHUNK_DONE = 1 };
/* Consume in[0..n).  Returns ROUTE_CHUNK_MORE (all consumed, need more),
 * ROUTE_CHUNK_DONE (*used = bytes consumed up to the end of the body),
 * E2BIG (data over max), or JG_EINVAL (malformed).  ENOMEM if out ran
 * out of memory. */
int route_chunk_feed(RouteChunk *c, const char *in, size_t n, Buf *out,
		     size_t max, size_t *used);

#endif

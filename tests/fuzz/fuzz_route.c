/*
 * fuzz_route.c -- libFuzzer target for api/route.c: the request-target
 * parser (path split, route patterns, strict ids, query fragments) and
 * the chunked body decoder, all fed untrusted bytes as they come off a
 * socket.  Checks invariants beyond "no crash": captures lie inside the
 * input, decoded bodies never exceed the limit, and a body decoded in
 * one piece equals the same body decoded byte-split.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../api/route.h"
#include "../../common/jg.h"

static const char *const patterns[] = {
	"/trigger/{job}", "/trigger/{job}/{mode}", "/jobs", "/jobs/{id}",
	"/jobs/{id}/events", "/jobs/{id}/cancel", "/healthz", "/",
};

static void fuzz_path(const char *s, size_t n)
{
	RoutePath rp;
	RouteSeg caps[3];
	uint64_t id;

	if (route_split(s, n, &rp) != 0)
		return;
	assert(rp.nseg >= 0 && rp.nseg <= ROUTE_SEGS_MAX);
	for (int i = 0; i < rp.nseg; i++) {
		assert(rp.seg[i].p > s && rp.seg[i].p + rp.seg[i].n <= s + n);
		assert(rp.seg[i].n > 0 && !memchr(rp.seg[i].p, '/', rp.seg[i].n));
		if (route_id(rp.seg[i].p, rp.seg[i].n, &id) == 0)
			assert(id > 0 && rp.seg[i].p[0] != '0');
	}
	for (size_t k = 0; k < sizeof patterns / sizeof patterns[0]; k++)
		if (route_match(patterns[k], &rp, caps, 3))
			for (int i = 0; i < 3 && i < rp.nseg; i++)
				(void)caps[i];
}

static void fuzz_args(const char *s, size_t n)
{
	const char *p = s, *end = s + n, *amp, *v;
	size_t vn;

	while (p < end) {
		amp = memchr(p, '&', (size_t)(end - p));
		size_t fn = amp ? (size_t)(amp - p) : (size_t)(end - p);
		if (route_arg(p, fn, "timeout", &v, &vn))
			assert(v >= p && v + vn <= p + fn);
		p += fn + 1;
	}
}

/* Decode whole, then in pieces of step bytes: same verdict, same data. */
static void fuzz_chunked(const char *s, size_t n, size_t max, size_t step)
{
	RouteChunk c1 = { 0 }, c2 = { 0 };
	Buf b1 = { 0 }, b2 = { 0 };
	size_t used1 = 0, used2 = 0, off = 0;
	int r1, r2 = ROUTE_CHUNK_MORE;

	r1 = route_chunk_feed(&c1, s, n, &b1, max, &used1);
	assert(b1.len <= max);
	while (off < n && r2 == ROUTE_CHUNK_MORE) {
		size_t k = n - off < step ? n - off : step, u = 0;
		r2 = route_chunk_feed(&c2, s + off, k, &b2, max, &u);
		assert(u <= k);
		if (r2 == ROUTE_CHUNK_DONE)
			used2 = off + u;
		off += k;
	}
	assert(b2.len <= max);
	assert(r1 == r2);
	if (r1 == ROUTE_CHUNK_DONE) {
		assert(used1 == used2 && used1 <= n);
		assert(b1.len == b2.len && memcmp(b1.p ? b1.p : "", b2.p ? b2.p : "", b1.len) == 0);
	}
	buf_free(&b1);
	buf_free(&b2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s;

	if (size < 2)
		return 0;
	s = (const char *)data + 2;
	size -= 2;
	switch (data[0] % 3) {
	case 0:
		fuzz_path(s, size);
		break;
	case 1:
		fuzz_args(s, size);
		break;
	case 2:
		fuzz_chunked(s, size, (size_t)data[1] * 8, (size_t)(data[1] % 7) + 1);
		break;
	}
	return 0;
}

/* bench/jgload.c -- load generator and stream fan-out probe for make bench.
 *
 * One process:
 *   main thread  -- CONNS keep-alive HTTP/1.1 connections sending POST PATH,
 *                   open loop at a fixed RATE (requests are scheduled at
 *                   t0 + i/RATE; latency counts from the scheduled time, so a
 *                   stalled server cannot hide behind a stalled client) or
 *                   closed loop at max rate (RATE 0); bounded by DURATION
 *                   and MAX requests.
 *   sub thread   -- connects SUBS subscribers (WebSocket /ws, or SSE /events
 *                   with --sse; all jobs, live), then runs K worker threads
 *                   (--sub-threads, default 2), each reading its own range
 *                   of subs[] through its own epoll, and merges their
 *                   counters after the join.  Each subscriber checks its
 *                   events arrive in seq order without gaps; every event's
 *                   "at" (commit side, ms precision, same clock) gives the
 *                   delivery latency.  Subscriber 0 also records
 *                   job.succeeded events so the trigger -> succeeded latency
 *                   can be joined by job id.
 * Shared between threads: subs[] (each worker owns its range; read by main
 * only after the join), succ_* (written by the worker of subscriber 0, read
 * after the join), and the atomics succ_seen, subs_ready, stop_subs and
 * target_seq (sub_deadline_us is written before stop_subs is set).
 * After the load, the head is polled via GET /healthz until it stops moving
 * (the runner has drained), then the subscribers read up to that head.
 * A JSON summary goes to stdout.  Everything is bounded in time.
 *
 * Build: cc -O2 -pthread -o jgload jgload.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int port;
static const char *token = "", *path = "/trigger/echo/poll", *body = "{\"bench\":1}";
static int conns = 64, subs_n = 0;
static int sse_mode;		/* --sse: subscribers on GET /events */
static double rate = 0, duration = 10, drain_s = 30;
static long max_req = 0;
static int e2e = 0;

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "jgload: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int tcp_connect(int nonblock)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		close(fd);
		return -1;
	}
	if (nonblock)
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

/* ---------- growable arrays ---------- */
typedef struct { int64_t *v; size_t n, cap; } I64s;
static void push(I64s *a, int64_t x)
{
	if (a->n == a->cap) {
		a->cap = a->cap ? a->cap * 2 : 4096;
		a->v = realloc(a->v, a->cap * sizeof *a->v);
		if (!a->v)
			die("out of memory");
	}
	a->v[a->n++] = x;
}
static int cmp64(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
	return a < b ? -1 : a > b;
}
static int64_t pct(I64s *a, double p)	/* a sorted */
{
	if (!a->n)
		return -1;
	size_t i = (size_t)(p / 100.0 * (double)(a->n - 1) + 0.5);
	return a->v[i < a->n ? i : a->n - 1];
}

/* ---------- small helpers ---------- */
static const char *memcasemem(const char *h, size_t hn, const char *n)
{
	size_t nn = strlen(n);
	for (size_t i = 0; i + nn <= hn; i++)
		if (strncasecmp(h + i, n, nn) == 0)
			return h + i;
	return NULL;
}
static long long num_after(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '"'))
		p++;
	long long v = 0;
	int any = 0;
	while (p < end && *p >= '0' && *p <= '9') {
		v = v * 10 + (*p++ - '0');
		any = 1;
	}
	return any ? v : -1;
}

/* "2026-02-11T22:03:14.120Z" -> epoch ms; the day part is cached. */
static int64_t parse_at_ms(const char *s, size_t n)
{
	static __thread char day[11];
	static __thread int64_t day_ms;
	if (n < 23)
		return -1;
	if (memcmp(day, s, 10) != 0) {
		struct tm tm = {0};
		tm.tm_year = atoi(s) - 1900;
		tm.tm_mon = atoi(s + 5) - 1;
		tm.tm_mday = atoi(s + 8);
		day_ms = (int64_t)timegm(&tm) * 1000;
		memcpy(day, s, 10);
	}
	int h = (s[11] - '0') * 10 + s[12] - '0', m = (s[14] - '0') * 10 + s[15] - '0';
	int sec = (s[17] - '0') * 10 + s[18] - '0';
	int ms = 0, k = 20, digits = 0;
	while (k < (int)n && s[k] >= '0' && s[k] <= '9' && digits < 3) {
		ms = ms * 10 + s[k++] - '0';
		digits++;
	}
	while (digits++ < 3)
		ms *= 10;
	return day_ms + ((int64_t)h * 3600 + m * 60 + sec) * 1000 + ms;
}

/* ---------- GET /healthz (blocking, short) ---------- */
static long long healthz_log_seq(void)
{
	int fd = tcp_connect(0);
	if (fd < 0)
		return -1;
	struct timeval tv = {2, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	const char *req = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
	if (write(fd, req, strlen(req)) < 0) {
		close(fd);
		return -1;
	}
	char buf[4096];
	size_t n = 0;
	ssize_t r;
	while (n < sizeof buf - 1 && (r = read(fd, buf + n, sizeof buf - 1 - n)) > 0) {
		n += (size_t)r;
		buf[n] = 0;
		if (strstr(buf, "projected_seq"))
			break;
	}
	close(fd);
	buf[n] = 0;
	const char *p = strstr(buf, "\"log_seq\":");
	return p ? num_after(p + 10, buf + n) : -1;
}

/* ---------- subscribers ---------- */
typedef struct {
	int fd, open;
	char *buf;
	size_t n, cap;
	char *msg;		/* fragmented message being assembled */
	size_t mn, mcap;
	long long first, last, count, gaps, disorder;
} Sub;

static Sub *subs;
static atomic_int subs_ready, stop_subs;
static atomic_llong target_seq = -1;	/* subs done once each reaches it */
static int64_t sub_deadline_us;
/* Subscribers are split over sub_threads workers, each with its own epoll
 * and counters: one client thread reading 1,000 sockets serialises what
 * 1,000 real clients do side by side, and its own queueing showed up as
 * delivery latency.  Merged after the join. */
typedef struct {
	int lo, hi;			/* subs[lo..hi) */
	pthread_t th;
	uint64_t hist[100001];		/* delivery ms buckets, last = overflow */
	long long events;
	int64_t first_us, last_us;
} SubWorker;
static int sub_threads = 2;
static long long events_total, subs_connected, subs_failed;
static I64s succ_id, succ_seen_us, succ_at_ms;	/* sub 0's job.succeeded */
static int64_t sub_first_event_us, sub_last_event_us;
static uint64_t deliver_hist[100001];	/* merged from the workers */
static atomic_llong succ_seen;	/* job.succeeded seen by sub 0 */

/* The fields on_event needs.  Fast path for the server's field order
 * ({"seq":N,"type":"T","at":"A","job_id":J,...}); anything else falls
 * back to searching, so a reordered event is still counted right. */
typedef struct {
	long long seq, job_id;
	const char *type, *at;
	size_t type_len, at_len;
} EvFields;

static const char *lit(const char *p, const char *end, const char *s, size_t n)
{
	return (size_t)(end - p) >= n && memcmp(p, s, n) == 0 ? p + n : NULL;
}

static const char *digits(const char *p, const char *end, long long *v)
{
	long long x = 0;
	const char *q = p;
	while (q < end && *q >= '0' && *q <= '9')
		x = x * 10 + (*q++ - '0');
	*v = q > p ? x : -1;
	return q;
}

static const char *str_end(const char *p, const char *end)
{
	const char *q = memchr(p, '"', (size_t)(end - p));
	return q ? q : end;
}

static int ev_fast(const char *m, const char *end, EvFields *f)
{
	const char *p = lit(m, end, "{\"seq\":", 7), *q;
	if (!p)
		return -1;
	p = digits(p, end, &f->seq);
	if (!(p = lit(p, end, ",\"type\":\"", 9)))
		return -1;
	q = str_end(p, end);
	f->type = p;
	f->type_len = (size_t)(q - p);
	if (!(p = lit(q, end, "\",\"at\":\"", 8)))
		return -1;
	/* "2026-02-11T22:03:14.120Z": 24 characters, checked before searching */
	q = end - p > 24 && p[24] == '"' ? p + 24 : str_end(p, end);
	f->at = p;
	f->at_len = (size_t)(q - p);
	if (!(p = lit(q, end, "\",\"job_id\":", 11)))
		return -1;
	digits(p, end, &f->job_id);
	return f->seq >= 0 ? 0 : -1;
}

static void ev_slow(const char *m, const char *end, EvFields *f)
{
	size_t n = (size_t)(end - m);
	const char *p = memmem(m, n, "\"seq\":", 6);
	f->seq = p ? num_after(p + 6, end) : -1;
	p = memmem(m, n, "\"at\":\"", 6);
	f->at = p ? p + 6 : NULL;
	f->at_len = p ? (size_t)(end - p - 6) : 0;
	p = memmem(m, n, "\"job.succeeded\"", 15);
	f->type = p ? p + 1 : "";
	f->type_len = p ? 13 : 0;
	p = memmem(m, n, "\"job_id\":", 9);
	f->job_id = p ? num_after(p + 9, end) : -1;
}

static void on_event(SubWorker *w, Sub *s, int idx, const char *m, size_t n, int64_t t)
{
	const char *end = m + n;
	EvFields f;
	if (ev_fast(m, end, &f) < 0)
		ev_slow(m, end, &f);
	long long seq = f.seq;
	w->events++;
	if (!w->first_us)
		w->first_us = t;
	w->last_us = t;
	if (seq >= 0) {
		if (s->first < 0)
			s->first = seq;
		else if (seq != s->last + 1) {
			if (seq > s->last + 1)
				s->gaps++;
			else
				s->disorder++;
		}
		if (seq > s->last)
			s->last = seq;
		s->count++;
	}
	/* Events of one commit share their "at": parse each value once. */
	static __thread char last_at[32];
	static __thread size_t last_at_len;
	static __thread int64_t last_at_ms;
	int64_t at = -1;
	if (f.at && f.at_len == last_at_len && memcmp(f.at, last_at, f.at_len) == 0) {
		at = last_at_ms;
	} else if (f.at) {
		at = parse_at_ms(f.at, f.at_len);
		if (f.at_len < sizeof last_at) {
			memcpy(last_at, f.at, f.at_len);
			last_at_len = f.at_len;
			last_at_ms = at;
		}
	}
	if (at > 0) {
		int64_t d = t / 1000 - at;
		if (d < 0)
			d = 0;
		w->hist[d > 100000 ? 100000 : d]++;
	}
	if (idx == 0 && e2e && f.type_len == 13 && memcmp(f.type, "job.succeeded", 13) == 0) {
		long long id = f.job_id;
		if (id >= 0) {
			push(&succ_id, id);
			atomic_fetch_add(&succ_seen, 1);
			push(&succ_seen_us, t);
			push(&succ_at_ms, at);
		}
	}
}

static void ws_send(int fd, int op, const char *pl, size_t n)
{
	unsigned char f[256];
	if (n > 125)
		n = 125;
	f[0] = 0x80 | (unsigned)op;
	f[1] = 0x80 | (unsigned)n;
	memset(f + 2, 0, 4);	/* zero mask key: payload unchanged */
	memcpy(f + 6, pl, n);
	ssize_t r = write(fd, f, 6 + n);
	(void)r;
}

/* Parse complete frames in s->buf; returns 0, or -1 when closed. */
static int ws_parse(SubWorker *w, Sub *s, int idx, int64_t t)
{
	size_t off = 0;
	while (s->n - off >= 2) {
		unsigned char *b = (unsigned char *)s->buf + off;
		int fin = b[0] & 0x80, op = b[0] & 0x0f;
		uint64_t len = b[1] & 0x7f;
		size_t h = 2;
		if (b[1] & 0x80)
			h += 4;	/* servers do not mask; tolerate */
		if (len == 126) {
			if (s->n - off < 4)
				break;
			len = ((uint64_t)b[2] << 8) | b[3];
			h += 2;
		} else if (len == 127) {
			if (s->n - off < 10)
				break;
			len = 0;
			for (int i = 0; i < 8; i++)
				len = (len << 8) | b[2 + i];
			h += 8;
		}
		if (s->n - off < h + len)
			break;
		char *pl = (char *)b + h;
		if (op == 8) {
			s->open = 0;
			return -1;
		} else if (op == 9) {
			ws_send(s->fd, 10, pl, (size_t)len);
		} else if (op == 1 || op == 2 || op == 0) {
			if (fin && op != 0 && s->mn == 0) {
				on_event(w, s, idx, pl, (size_t)len, t);
			} else {
				if (s->mn + len > s->mcap) {
					s->mcap = (s->mn + len) * 2;
					s->msg = realloc(s->msg, s->mcap);
				}
				memcpy(s->msg + s->mn, pl, len);
				s->mn += len;
				if (fin) {
					on_event(w, s, idx, s->msg, s->mn, t);
					s->mn = 0;
				}
			}
		}
		off += h + len;
	}
	memmove(s->buf, s->buf + off, s->n - off);
	s->n -= off;
	return 0;
}

/* Parse complete SSE records ("id: N\ndata: JSON\n\n", or a ": ping"
 * comment) in s->buf; the body ends with the connection.  Returns 0. */
static int sse_parse(SubWorker *w, Sub *s, int idx, int64_t t)
{
	size_t off = 0;
	for (;;) {
		const char *b = s->buf + off, *end = s->buf + s->n, *nl = b, *rec_end = NULL;
		/* Fast path, the server's form: "id: N\ndata: JSON\n\n". */
		if (end - b > 4 && memcmp(b, "id: ", 4) == 0) {
			const char *l1 = memchr(b + 4, '\n', (size_t)(end - b - 4));
			if (!l1)
				break;
			if (end - l1 > 7 && memcmp(l1 + 1, "data: ", 6) == 0) {
				const char *d = l1 + 7, *l2 = memchr(d, '\n', (size_t)(end - d));
				if (!l2 || l2 + 1 >= end)
					break;
				if (l2[1] == '\n') {
					on_event(w, s, idx, d, (size_t)(l2 - d), t);
					off = (size_t)(l2 + 2 - s->buf);
					continue;
				}
			}
		}
		while ((nl = memchr(nl, '\n', (size_t)(end - nl))) && nl + 1 < end) {
			if (nl[1] == '\n') {
				rec_end = nl;
				break;
			}
			nl++;
		}
		if (!rec_end)
			break;
		const char *d = memmem(b, (size_t)(rec_end - b), "data: ", 6);
		if (d) {
			const char *e = memchr(d, '\n', (size_t)(rec_end - d) + 1);
			on_event(w, s, idx, d + 6, (size_t)(e - d - 6), t);
		}
		off = (size_t)(rec_end + 2 - s->buf);
	}
	memmove(s->buf, s->buf + off, s->n - off);
	s->n -= off;
	return 0;
}

static int sub_open(Sub *s)
{
	s->fd = tcp_connect(0);
	if (s->fd < 0)
		return -1;
	struct timeval tv = {5, 0};
	setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	char req[1024];
	int k = sse_mode ?
		snprintf(req, sizeof req,
			 "GET /events?access_token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
			 "Accept: text/event-stream\r\n\r\n", token) :
		snprintf(req, sizeof req,
			 "GET /ws?access_token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
			 "Upgrade: websocket\r\nConnection: Upgrade\r\n"
			 "Sec-WebSocket-Key: amdiZW5jaC1rZXktMDAwMQ==\r\n"
			 "Sec-WebSocket-Version: 13\r\n\r\n", token);
	if (write(s->fd, req, (size_t)k) != k)
		return -1;
	s->cap = 1 << 16;
	s->buf = malloc(s->cap);
	s->n = 0;
	for (;;) {
		ssize_t r = read(s->fd, s->buf + s->n, s->cap - 1 - s->n);
		if (r <= 0)
			return -1;
		s->n += (size_t)r;
		s->buf[s->n] = 0;
		char *e = strstr(s->buf, "\r\n\r\n");
		if (e) {
			if (strncmp(s->buf + 9, sse_mode ? "200" : "101", 3) != 0)
				return -1;
			size_t hl = (size_t)(e + 4 - s->buf);
			memmove(s->buf, s->buf + hl, s->n - hl);
			s->n -= hl;
			break;
		}
		if (s->n >= s->cap - 1)
			return -1;
	}
	fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK);
	s->open = 1;
	s->first = s->last = -1;
	return 0;
}

static void *sub_worker(void *arg)
{
	SubWorker *w = arg;
	int ep = epoll_create1(0);
	for (int i = w->lo; i < w->hi; i++) {
		if (!subs[i].open)
			continue;
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
		epoll_ctl(ep, EPOLL_CTL_ADD, subs[i].fd, &ev);
	}
	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(ep, evs, 256, 50);
		int64_t t = now_us();
		for (int j = 0; j < n; j++) {
			int i = (int)evs[j].data.u32;
			Sub *s = &subs[i];
			for (;;) {
				if (s->cap - s->n < 4096) {
					s->cap *= 2;
					s->buf = realloc(s->buf, s->cap);
				}
				ssize_t r = read(s->fd, s->buf + s->n, s->cap - s->n);
				if (r > 0) {
					s->n += (size_t)r;
					if ((sse_mode ? sse_parse(w, s, i, t) : ws_parse(w, s, i, t)) < 0)
						break;
					if (r < 65536)
						break;
					continue;
				}
				if (r < 0 && (errno == EAGAIN || errno == EINTR))
					break;
				s->open = 0;
				break;
			}
			if (!s->open) {
				epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
				close(s->fd);
				s->fd = -1;
			}
		}
		long long tgt = atomic_load(&target_seq);
		if (atomic_load(&stop_subs)) {
			if (t > sub_deadline_us)
				break;
			if (tgt >= 0) {
				int done = 1;
				for (int i = w->lo; i < w->hi && done; i++)
					if (subs[i].open && subs[i].last < tgt)
						done = 0;
				if (done)
					break;
			}
		}
	}
	close(ep);
	return NULL;
}

/* Connects every subscriber, then runs the workers until they finish. */
static void *sub_thread(void *arg)
{
	(void)arg;
	subs = calloc((size_t)subs_n, sizeof *subs);
	for (int i = 0; i < subs_n; i++) {
		if (sub_open(&subs[i]) < 0) {
			subs_failed++;
			if (subs[i].fd >= 0)
				close(subs[i].fd);
			subs[i].fd = -1;
			subs[i].open = 0;
			continue;
		}
		subs_connected++;
	}
	int k = sub_threads < subs_n ? sub_threads : subs_n;
	SubWorker *ws = calloc((size_t)k, sizeof *ws);
	if (!ws)
		die("out of memory");
	for (int j = 0; j < k; j++) {
		ws[j].lo = (int)((long)subs_n * j / k);
		ws[j].hi = (int)((long)subs_n * (j + 1) / k);
	}
	atomic_store(&subs_ready, 1);
	for (int j = 0; j < k; j++)
		pthread_create(&ws[j].th, NULL, sub_worker, &ws[j]);
	for (int j = 0; j < k; j++) {
		pthread_join(ws[j].th, NULL);
		events_total += ws[j].events;
		for (int i = 0; i <= 100000; i++)
			deliver_hist[i] += ws[j].hist[i];
		if (ws[j].first_us && (!sub_first_event_us || ws[j].first_us < sub_first_event_us))
			sub_first_event_us = ws[j].first_us;
		if (ws[j].last_us > sub_last_event_us)
			sub_last_event_us = ws[j].last_us;
	}
	free(ws);
	return NULL;
}

/* ---------- load connections ---------- */
typedef struct {
	int fd, busy;
	int64_t t_sched, t_sent;
	char buf[16384];
	size_t n;
} Conn;

static char req[8192];
static size_t req_len;
static I64s lat_us, job_id, job_t;
static long long sent, ok2xx, non2xx, sock_err, resp_total;
static long long status_count[6];
static long long first_seq = -1, last_seq = -1;

static int conn_open(Conn *c, int ep, int i)
{
	c->fd = tcp_connect(1);
	c->busy = 0;
	c->n = 0;
	if (c->fd < 0)
		return -1;
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
	epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
	return 0;
}

static void conn_fail(Conn *c, int ep, int i)
{
	sock_err++;
	if (c->fd >= 0) {
		epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	if (conn_open(c, ep, i) < 0)
		c->fd = -1;
}

/* Returns 1 when a full response was consumed. */
static int conn_response(Conn *c, int64_t t)
{
	char *e = memmem(c->buf, c->n, "\r\n\r\n", 4);
	if (!e)
		return 0;
	size_t hl = (size_t)(e + 4 - c->buf);
	size_t total;
	const char *cl = memcasemem(c->buf, hl, "\r\ncontent-length:");
	if (cl) {
		long long v = num_after(cl + 17, c->buf + hl);
		total = hl + (size_t)(v > 0 ? v : 0);
	} else if (memcasemem(c->buf, hl, "\r\ntransfer-encoding: chunked")) {
		char *z = memmem(c->buf + hl, c->n - hl, "\r\n0\r\n\r\n", 7);
		if (!z && !(c->n - hl >= 5 && memcmp(c->buf + hl, "0\r\n\r\n", 5) == 0))
			return 0;
		total = z ? (size_t)(z + 7 - c->buf) : hl + 5;
	} else {
		total = hl;
	}
	if (c->n < total)
		return 0;
	int st = atoi(c->buf + 9);
	resp_total++;
	if (st >= 100 && st < 600)
		status_count[st / 100]++;
	if (st >= 200 && st < 300) {
		ok2xx++;
		const char *p = memmem(c->buf + hl, total - hl, "\"id\":", 5);
		long long id = p ? num_after(p + 5, c->buf + total) : -1;
		if (id < 0) {
			p = memcasemem(c->buf, hl, "\r\nx-log-seq:");
			id = p ? num_after(p + 12, c->buf + hl) : -1;
		}
		if (id >= 0) {
			if (first_seq < 0 || id < first_seq)
				first_seq = id;
			if (id > last_seq)
				last_seq = id;
			if (e2e) {
				push(&job_id, id);
				push(&job_t, rate > 0 ? c->t_sched : c->t_sent);
			}
		}
	} else {
		non2xx++;
	}
	push(&lat_us, t - (rate > 0 ? c->t_sched : c->t_sent));
	memmove(c->buf, c->buf + total, c->n - total);
	c->n -= total;
	c->busy = 0;
	return 1;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: jgload --port P [--token T] [--path P] [--body JSON] [--conns N]\n"
		"              [--rate R|0] [--duration S] [--max N] [--subs N] [--sub-threads K] [--sse] [--e2e]\n"
		"              [--drain S]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--e2e")) {
			e2e = 1;
			continue;
		}
		if (!strcmp(a, "--sse")) {
			sse_mode = 1;
			continue;
		}
		if (!v)
			usage();
		i++;
		if (!strcmp(a, "--port"))
			port = atoi(v);
		else if (!strcmp(a, "--token"))
			token = v;
		else if (!strcmp(a, "--path"))
			path = v;
		else if (!strcmp(a, "--body"))
			body = v;
		else if (!strcmp(a, "--conns"))
			conns = atoi(v);
		else if (!strcmp(a, "--rate"))
			rate = atof(v);
		else if (!strcmp(a, "--duration"))
			duration = atof(v);
		else if (!strcmp(a, "--max"))
			max_req = atol(v);
		else if (!strcmp(a, "--subs"))
			subs_n = atoi(v);
		else if (!strcmp(a, "--sub-threads"))
			sub_threads = atoi(v) > 0 ? atoi(v) : 1;
		else if (!strcmp(a, "--drain"))
			drain_s = atof(v);
		else
			usage();
	}
	if (!port || conns < 1)
		usage();
	if (getenv("JOBGATE_TOKEN") && !*token)
		token = getenv("JOBGATE_TOKEN");
	signal(SIGPIPE, SIG_IGN);
	req_len = (size_t)snprintf(req, sizeof req,
				   "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
				   "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
				   "Content-Length: %zu\r\n\r\n%s", path, token, strlen(body), body);

	pthread_t th;
	int64_t t_sub0 = now_us();
	if (subs_n > 0) {
		pthread_create(&th, NULL, sub_thread, NULL);
		while (!atomic_load(&subs_ready))
			usleep(1000);
	}
	int64_t t_sub_connected = now_us();

	int ep = epoll_create1(0);
	Conn *cs = calloc((size_t)conns, sizeof *cs);
	for (int i = 0; i < conns; i++)
		if (conn_open(&cs[i], ep, i) < 0)
			die("cannot connect to 127.0.0.1:%d", port);

	int64_t t0 = now_us(), t_end = t0 + (int64_t)(duration * 1e6);
	int64_t interval = rate > 0 ? (int64_t)(1e6 / rate) : 0;
	long long next = 0;	/* index of the next scheduled request */
	int64_t t_last_send = t0;
	struct epoll_event evs[256];
	int sending = 1;
	int64_t hard_end = t_end + 10 * 1000000LL;	/* outstanding replies */
	for (;;) {
		int64_t t = now_us();
		if (sending && (t >= t_end || (max_req && next >= max_req)))
			sending = 0;
		if (sending) {
			for (int i = 0; i < conns; i++) {
				Conn *c = &cs[i];
				if (c->busy || c->fd < 0)
					continue;
				int64_t sched = t0 + next * interval;
				if (rate > 0 && sched > t)
					break;
				if (max_req && next >= max_req)
					break;
				if (rate > 0 && sched >= t_end)
					break;
				c->t_sched = sched;
				c->t_sent = t;
				ssize_t w = write(c->fd, req, req_len);
				if (w != (ssize_t)req_len) {
					conn_fail(c, ep, i);
					continue;
				}
				c->busy = 1;
				next++;
				sent++;
				t_last_send = t;
			}
		}
		int busy = 0, usable = 0;
		for (int i = 0; i < conns; i++) {
			busy += cs[i].busy;
			usable += cs[i].fd >= 0;
		}
		if (!sending && !busy)
			break;
		if (t > hard_end)
			break;
		struct timespec to = {0, 50 * 1000 * 1000};
		if (sending && rate > 0 && busy < usable) {	/* else: wait for a reply */
			int64_t d = t0 + next * interval - t;
			if (d < 0)
				d = 0;
			if (d < 50000)
				to.tv_nsec = d * 1000;
		}
		int n = epoll_pwait2(ep, evs, 256, &to, NULL);
		t = now_us();
		for (int j = 0; j < n; j++) {
			int i = (int)evs[j].data.u32;
			Conn *c = &cs[i];
			if (c->fd < 0)
				continue;
			ssize_t r = read(c->fd, c->buf + c->n, sizeof c->buf - c->n);
			if (r <= 0) {
				if (r < 0 && (errno == EAGAIN || errno == EINTR))
					continue;
				conn_fail(c, ep, i);
				continue;
			}
			c->n += (size_t)r;
			while (c->n && conn_response(c, t))
				;
			if (c->n == sizeof c->buf)
				conn_fail(c, ep, i);
		}
	}
	int64_t t_load_end = now_us();
	for (int i = 0; i < conns; i++)
		if (cs[i].fd >= 0)
			close(cs[i].fd);

	/* Wait for the head to settle (runner drained), bounded by drain_s. */
	int64_t drain_end = now_us() + (int64_t)(drain_s * 1e6);
	long long head = healthz_log_seq(), prev = -2;
	int64_t stable_since = now_us();
	while (now_us() < drain_end) {
		usleep(200000);
		head = healthz_log_seq();
		if (head != prev) {
			prev = head;
			stable_since = now_us();
		} else if (now_us() - stable_since >= 1000000 &&
			   (!e2e || subs_n < 1 || atomic_load(&succ_seen) >= ok2xx)) {
			break;	/* with --e2e: until every acknowledged job succeeded */
		}
	}
	int64_t t_settled = now_us();
	if (subs_n > 0) {
		sub_deadline_us = now_us() + (int64_t)(drain_s * 1e6);
		atomic_store(&target_seq, head);
		atomic_store(&stop_subs, 1);
		pthread_join(th, NULL);
	}
	int64_t t_done = now_us();

	/* ---------- report ---------- */
	qsort(lat_us.v, lat_us.n, sizeof(int64_t), cmp64);
	double load_s = (double)(t_last_send - t0) / 1e6;
	double wall_s = (double)(t_load_end - t0) / 1e6;
	printf("{\"port\":%d,\"path\":\"%s\",\"conns\":%d,\"rate_target\":%.1f,"
	       "\"duration_target_s\":%.2f,\"max\":%ld,\n", port, path, conns, rate, duration, max_req);
	printf(" \"sent\":%lld,\"responses\":%lld,\"ok2xx\":%lld,\"non2xx\":%lld,\"sock_err\":%lld,"
	       "\"status_classes\":{\"2xx\":%lld,\"3xx\":%lld,\"4xx\":%lld,\"5xx\":%lld},\n",
	       sent, resp_total, ok2xx, non2xx, sock_err, status_count[2], status_count[3],
	       status_count[4], status_count[5]);
	printf(" \"t0_us\":%lld,\"send_span_s\":%.3f,\"wall_s\":%.3f,\"achieved_rps\":%.1f,\n",
	       (long long)t0, load_s, wall_s, wall_s > 0 ? (double)ok2xx / wall_s : 0);
	printf(" \"lat_us\":{\"p50\":%lld,\"p90\":%lld,\"p99\":%lld,\"p999\":%lld,\"max\":%lld},\n",
	       (long long)pct(&lat_us, 50), (long long)pct(&lat_us, 90), (long long)pct(&lat_us, 99),
	       (long long)pct(&lat_us, 99.9), (long long)pct(&lat_us, 100));
	printf(" \"first_id\":%lld,\"last_id\":%lld,\"head_after\":%lld,\"settle_s\":%.3f,\n",
	       first_seq, last_seq, head, (double)(t_settled - t_load_end) / 1e6);

	if (e2e) {
		/* join trigger send time with subscriber 0's job.succeeded */
		size_t nj = job_id.n, ns = succ_id.n;
		int64_t *pairs = malloc((nj + 1) * 2 * sizeof(int64_t));
		for (size_t i = 0; i < nj; i++) {
			pairs[2 * i] = job_id.v[i];
			pairs[2 * i + 1] = job_t.v[i];
		}
		qsort(pairs, nj, 2 * sizeof(int64_t), cmp64);	/* sorts by id (first field) */
		I64s seen = {0}, atl = {0};
		int64_t last_done = 0, first_send = INT64_MAX;
		for (size_t i = 0; i < ns; i++) {
			int64_t id = succ_id.v[i];
			size_t lo = 0, hi = nj;
			while (lo < hi) {
				size_t mid = (lo + hi) / 2;
				if (pairs[2 * mid] < id)
					lo = mid + 1;
				else
					hi = mid;
			}
			if (lo < nj && pairs[2 * lo] == id) {
				int64_t ts = pairs[2 * lo + 1];
				push(&seen, succ_seen_us.v[i] - ts);
				if (succ_at_ms.v[i] > 0)
					push(&atl, succ_at_ms.v[i] * 1000 - ts);
				if (succ_seen_us.v[i] > last_done)
					last_done = succ_seen_us.v[i];
				if (ts < first_send)
					first_send = ts;
			}
		}
		qsort(seen.v, seen.n, sizeof(int64_t), cmp64);
		qsort(atl.v, atl.n, sizeof(int64_t), cmp64);
		double span = seen.n ? (double)(last_done - first_send) / 1e6 : 0;
		printf(" \"e2e\":{\"jobs_acked\":%zu,\"succeeded_seen\":%zu,\"matched\":%zu,"
		       "\"span_s\":%.3f,\"jobs_per_s\":%.1f,\n", nj, ns, seen.n, span,
		       span > 0 ? (double)seen.n / span : 0);
		printf("   \"seen_ms\":{\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,\"max\":%.2f},\n",
		       pct(&seen, 50) / 1e3, pct(&seen, 90) / 1e3, pct(&seen, 99) / 1e3,
		       pct(&seen, 100) / 1e3);
		printf("   \"at_ms\":{\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,\"max\":%.2f}},\n",
		       pct(&atl, 50) / 1e3, pct(&atl, 90) / 1e3, pct(&atl, 99) / 1e3,
		       pct(&atl, 100) / 1e3);
	}
	if (subs_n > 0) {
		long long complete = 0, gaps = 0, disorder = 0, min_count = -1, max_count = 0;
		long long open_end = 0;
		for (int i = 0; i < subs_n; i++) {
			Sub *s = &subs[i];
			if (s->first >= 0 && s->last >= head && s->count == s->last - s->first + 1 &&
			    !s->gaps && !s->disorder)
				complete++;
			gaps += s->gaps;
			disorder += s->disorder;
			open_end += s->open;
			if (min_count < 0 || s->count < min_count)
				min_count = s->count;
			if (s->count > max_count)
				max_count = s->count;
		}
		uint64_t tot = 0;
		for (int i = 0; i <= 100000; i++)
			tot += deliver_hist[i];
		double p[4] = {50, 90, 99, 99.9};
		long long pv[5] = {-1, -1, -1, -1, -1};
		uint64_t acc = 0;
		int k = 0;
		for (int i = 0; i <= 100000 && tot; i++) {
			acc += deliver_hist[i];
			while (k < 4 && (double)acc >= p[k] / 100.0 * (double)tot)
				pv[k++] = i;
			if (deliver_hist[i])
				pv[4] = i;
		}
		double span = (double)(sub_last_event_us - sub_first_event_us) / 1e6;
		printf(" \"subs\":{\"n\":%d,\"connected\":%lld,\"failed\":%lld,\"connect_s\":%.3f,"
		       "\"open_at_end\":%lld,\"complete\":%lld,\"gaps\":%lld,\"disorder\":%lld,"
		       "\"min_events\":%lld,\"max_events\":%lld,\"events_total\":%lld,"
		       "\"delivery_span_s\":%.3f,\"delivered_per_s\":%.1f,"
		       "\"finish_s_after_settle\":%.3f,\n", subs_n, subs_connected, subs_failed,
		       (double)(t_sub_connected - t_sub0) / 1e6, open_end, complete, gaps, disorder,
		       min_count, max_count, events_total, span,
		       span > 0 ? (double)events_total / span : 0, (double)(t_done - t_settled) / 1e6);
		printf("   \"deliver_ms\":{\"p50\":%lld,\"p90\":%lld,\"p99\":%lld,\"p999\":%lld,"
		       "\"max\":%lld}},\n", pv[0], pv[1], pv[2], pv[3], pv[4]);
	}
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf(" \"client_cpu_s\":%.2f,\"ok\":true}\n",
	       (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
		       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
	return 0;
}

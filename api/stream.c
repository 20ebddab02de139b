/*
 * stream.c -- live job status streams: WebSocket GET /ws and SSE GET /events
 * (SPEC §4 Streams, §5 Events).  Runs entirely on the api thread.
 *
 * Design: a subscriber is a cursor into the log, not a queue.
 *
 *   A StreamSub holds its filter (every job, one job name, or one job id)
 *   and next_seq, the first seq it has not examined yet.  Nothing is ever
 *   queued per subscriber.  When its socket is writable, streams_fill() takes
 *   a short LMDB read snapshot (the one LogReader the Streams own), reads the
 *   next matching events after the cursor -- a bounded batch: at most
 *   STREAMS_BATCH_EVENTS events, STREAMS_BATCH_BYTES of output, and
 *   STREAMS_SCAN_MAX events examined -- renders them into one scratch buffer
 *   (complete WS frames or SSE records), and ends the snapshot *before*
 *   anything is written, so no read txn is ever held across lws_write() (a
 *   held reader would pin LMDB pages and grow the map).  The batch goes out
 *   in one lws_write() and the cursor moves past it.
 *
 *   lws_write() never blocks: when the kernel takes only part of a batch,
 *   lws keeps the rest and calls us back only after it has flushed it.  So
 *   memory per subscriber is bounded by one batch in lws's partial-send
 *   buffer, whatever the client's speed: a slow client just has a cursor
 *   further behind and catches up from LMDB later.  No event is dropped,
 *   none is sent twice, and order is seq order, because the cursor only
 *   moves forward, past what lws accepted.  Subscribers at the same cursor
 *   (the caught-up ones, after a commit) share one rendered batch.
 *
 *   Waking.  A subscriber whose cursor has passed the log head is idle: it
 *   asks for nothing (no spinning).  streams_on_head() (after each commit)
 *   asks for writable on every idle subscriber whose cursor is <= the new
 *   head, at once or, with many subscribers, at the end of a short
 *   coalescing interval.  `armed` remembers an outstanding request so a
 *   burst of commits costs one lws_callback_on_writable() per subscriber,
 *   not one per commit.  Invariant: every subscriber with next_seq <=
 *   s->head is armed or has a wake pending; after its write a subscriber
 *   re-arms itself only when a cap cut its batch short, and otherwise, if
 *   still behind, makes sure a wake is owed (streams_kick).
 *
 *   Filters.  job_id=ID walks the by-job index (log_reader_job_seek), so a
 *   job stream costs one index seek per wake.  job=NAME compares the name in
 *   the decoded record header (no JSON parse).  A job_id stream ends after
 *   an event whose status is final (log_status_final) and that is the job's
 *   last event when it is read: a replay goes on past a failure that a
 *   retry followed.  WS close 1000, or the end of the SSE response; the
 *   close happens on the next writable callback, i.e. after lws has flushed
 *   everything written before it.  An SSE job stream with nothing left to
 *   send when it is asked for is answered 204 (an EventSource stops
 *   reconnecting on 204).
 *
 *   Pings.  One timer for all subscribers sweeps them every fifth of the
 *   ping period; a subscriber that wrote nothing for three fifths of it
 *   sends a WS ping frame or the SSE comment ": ping", so an idle stream
 *   carries something at least every ping period (25 s by default, env
 *   JOBGATE_STREAM_PING_MS for tests).  Not one timer each: lws 4.1 keeps
 *   its timers in one sorted list and inserts by walking it, and every
 *   keep-alive HTTP answer inserts one; 1,000 subscriber timers in that
 *   list cost the api thread ~5 % at 2,000 triggers/s.
 *
 * Resume semantics (see docs/streams.md): from_seq=N starts the cursor at N
 * (replay, then live); no from_seq means live only (cursor = head + 1).
 * SSE Last-Event-ID: K starts at K + 1 and wins over from_seq, because an
 * EventSource reconnects with the same URL (old from_seq) plus the header.
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_int.h"
#include "../common/jg.h"

#define STREAMS_BATCH_EVENTS 1024	/* messages rendered per writable */
#define STREAMS_BATCH_BYTES  (64 * 1024)	/* text rendered per writable */
/* Head moves closer than this share one wake: 1 ms per 20 subscribers, at
 * most 50 ms, so the syscalls per event fall as fan-out grows while fewer
 * than 20 subscribers see each commit at once (a 1 ms floor cost a lone
 * subscriber ~1 ms of p99 at 6k triggers/s in paired runs) and 1,000
 * still get theirs well under 100 ms. */
#define STREAMS_NSUB(s)        ((s)->nsub[SESS_WS] + (s)->nsub[SESS_SSE])
#define STREAMS_COALESCE_MS(s) (STREAMS_NSUB(s) >= 50 * 20 ? 50 : STREAMS_NSUB(s) / 20)
#define STREAMS_SCAN_MAX     4096	/* events examined per writable (job= filter) */
#define STREAMS_PING_MS      25000	/* idle ping period; SPEC says <= 30 s */
#define STREAMS_ARG_MAX      128	/* longest query value we accept */

typedef struct StreamArgs {
	uint64_t job_id;		/* 0: no job_id filter */
	char     job[JG_NAME_MAX + 1];
	size_t   job_len;		/* 0: no job filter */
	uint64_t start;			/* first seq to deliver; 0: live (head + 1) */
} StreamArgs;

struct StreamSub {
	StreamSub  *prev, *next;	/* Streams.subs */
	Streams    *s;
	struct lws *wsi;
	int         kind;		/* SESS_SSE or SESS_WS */
	uint64_t    job_id;		/* 0: no job_id filter */
	char        job[JG_NAME_MAX + 1];
	size_t      job_len;		/* 0: no job filter */
	uint64_t    next_seq;		/* cursor: first seq not yet examined */
	int         armed;		/* writable requested, callback not yet run */
	int         finished;		/* job stream sent its final event: close next */
	int         ahead;		/* job stream whose cursor is past head + 1 */
	int         ping_due;
	int         hup;		/* SSE: the client closed or wrote: end it */
	int         going_away;		/* the server is stopping: end it */
	ApiFdWatch *rdw;		/* SSE: tells us the socket polls readable */
	int64_t     last_tx_ns;		/* monotonic time of the last write */
};

struct Streams {
	const Config *cfg;
	Log       *log;
	LogReader *rd;			/* one snapshot at a time, begun/ended per batch */
	StreamSub *subs;		/* every open subscriber */
	int        nsub[3];		/* by SESS_* kind */
	uint64_t   head;		/* highest head seen (on_head or a snapshot) */
	uint64_t   delivered;		/* events written, all subscribers */
	int64_t    ping_ms;
	struct lws_context *ctx;	/* set by the first subscriber */
	lws_sorted_usec_list_t wake;	/* coalesced head-move wake-up */
	int        wake_pending;
	int64_t    last_wake_ns;
	lws_sorted_usec_list_t ping_sweep;	/* while any subscriber is open */
	int        sweeping;
	pthread_t  owner;		/* the api thread, set on first use */
	int        owned;
	Buf        out;			/* one batch on the wire, after LWS_PRE bytes */
	Buf        ev;			/* one event's JSON while framing it */
	struct {			/* what s->out holds, when reusable */
		int      n, kind;	/* n == 0: nothing reusable */
		int      more;		/* the batch stopped short of its head */
		uint64_t from, end;	/* cursor before and after the batch */
	} reuse;
};

static const unsigned char streams_zero[LWS_PRE];
/* Ping frames and SSE comments; lws writes its framing into the LWS_PRE
 * room, so it is not const.  Only the api thread uses it. */
static unsigned char streams_ping_buf[LWS_PRE + 16];

/* Any thread that is not the api thread touching Streams is a bug. */
static void streams_own(Streams *s)
{
	if (!s->owned) {
		s->owner = pthread_self();
		s->owned = 1;
	}
	assert(pthread_equal(s->owner, pthread_self()));
}

int streams_open(Streams **out, const Config *cfg, Log *log)
{
	Streams *s;
	int rc;

	if (!(s = calloc(1, sizeof *s)))
		return ENOMEM;
	s->cfg = cfg;
	s->log = log;
	/* Tests shorten the period to see pings without waiting 25 s. */
	s->ping_ms = api_env_num("JOBGATE_STREAM_PING_MS", 50, STREAMS_PING_MS, STREAMS_PING_MS);
	if ((rc = log_reader_open(log, &s->rd)) != 0) {
		free(s);
		return rc;
	}
	*out = s;
	return 0;
}

static void streams_sub_free(Streams *s, StreamSub *sub)
{
	api_loop_unwatch(sub->rdw);
	if (sub->prev)
		sub->prev->next = sub->next;
	else
		s->subs = sub->next;
	if (sub->next)
		sub->next->prev = sub->prev;
	s->nsub[sub->kind]--;
	free(sub);
}

/* Call after lws_context_destroy(): that closes every stream, and each
 * close frees its StreamSub through streams_*_closed(). */
void streams_close(Streams *s)
{
	if (!s)
		return;
	while (s->subs)
		streams_sub_free(s, s->subs);
	log_reader_close(s->rd);
	buf_free(&s->out);
	buf_free(&s->ev);
	free(s);
}

static void streams_arm(StreamSub *sub)
{
	if (!sub->armed) {
		sub->armed = 1;
		lws_callback_on_writable(sub->wsi);
	}
}

/* Api thread: ask every subscriber behind the head for a writable, and
 * every job stream that started past it until the head reaches its cursor
 * (its job may end below the cursor: see streams_fill). */
static void streams_wake_all(Streams *s)
{
	StreamSub *sub;

	s->wake_pending = 0;
	s->last_wake_ns = jg_mono_ns();
	for (sub = s->subs; sub; sub = sub->next)
		if (sub->next_seq <= s->head || sub->ahead)
			streams_arm(sub);
}

static void streams_wake_cb(lws_sorted_usec_list_t *sul)
{
	streams_wake_all(lws_container_of(sul, Streams, wake));
}

/*
 * Api thread: a wake is owed.  Under load the log commits every ms or so;
 * waking 1,000 subscribers per commit would cost a syscall per subscriber
 * per commit.  So a wake within STREAMS_COALESCE_MS of the last one is
 * deferred to a timer, and each subscriber then writes the whole interval
 * in one batch.  An idle stream still gets a new event at once.
 */
static void streams_kick(Streams *s)
{
	int64_t since;

	if (s->wake_pending || !s->subs)
		return;
	since = (jg_mono_ns() - s->last_wake_ns) / 1000;
	if (since >= STREAMS_COALESCE_MS(s) * 1000 || !s->ctx) {
		streams_wake_all(s);
		return;
	}
	s->wake_pending = 1;
	api_sul_schedule(s->ctx, &s->wake, streams_wake_cb,
			 STREAMS_COALESCE_MS(s) * 1000 - since);
}

/* Api thread, after commits. */
void streams_on_head(Streams *s, uint64_t head)
{
	streams_own(s);
	if (head > s->head)
		s->head = head;
	streams_kick(s);
}

void streams_shutdown(Streams *s)
{
	streams_own(s);
	for (StreamSub *sub = s->subs; sub; sub = sub->next) {
		sub->going_away = 1;
		lws_callback_on_writable(sub->wsi);
	}
}

void streams_metrics(Streams *s, Buf *out)
{
	StreamSub *sub;
	uint64_t head = log_head(s->log), lag = 0;

	streams_own(s);
	for (sub = s->subs; sub; sub = sub->next)
		if (sub->next_seq <= head && head - sub->next_seq + 1 > lag)
			lag = head - sub->next_seq + 1;
	buf_puts(out, "# HELP jobgate_subscribers Open stream subscribers by kind.\n"
		 "# TYPE jobgate_subscribers gauge\n");
	buf_printf(out, "jobgate_subscribers{kind=\"ws\"} %d\n", s->nsub[SESS_WS]);
	buf_printf(out, "jobgate_subscribers{kind=\"sse\"} %d\n", s->nsub[SESS_SSE]);
	buf_puts(out, "# HELP jobgate_stream_events_delivered_total Events written to stream subscribers.\n"
		 "# TYPE jobgate_stream_events_delivered_total counter\n"
		 "jobgate_stream_events_delivered_total ");
	buf_u64(out, s->delivered);
	buf_puts(out, "\n# HELP jobgate_stream_slowest_lag_events Committed events the slowest subscriber has not examined yet.\n"
		 "# TYPE jobgate_stream_slowest_lag_events gauge\n"
		 "jobgate_stream_slowest_lag_events ");
	buf_u64(out, lag);
	buf_puts(out, "\n");
}

/* ---- arguments ---- */

/* Query arg name as an id (> 0 unless zero_ok).  0 and *v set, JG_ENOTFOUND,
 * or JG_EINVAL with msg written. */
static int streams_arg_u64(struct lws *wsi, const char *name, int zero_ok,
			   uint64_t *v, char *msg, size_t cap)
{
	char val[STREAMS_ARG_MAX];
	int rc = api_query_arg(wsi, name, val, sizeof val);

	if (rc == JG_ENOTFOUND)
		return rc;
	/* Strict decimal, like ids in paths: "01" is not job 1. */
	if (rc != 0 || (val[0] == '0' && val[1]) || jg_parse_u64(val, strlen(val), v) != 0 ||
	    (!*v && !zero_ok)) {
		snprintf(msg, cap, "%s: expected a %s integer", name,
			 zero_ok ? "non-negative" : "positive");
		return JG_EINVAL;
	}
	return 0;
}

/* SSE Last-Event-ID header: 0 and *v set, JG_ENOTFOUND, or JG_EINVAL.
 * lws keeps unknown header names as received, so try the usual spellings. */
static int streams_last_event_id(struct lws *wsi, uint64_t *v, char *msg, size_t cap)
{
	static const char *names[] = { "last-event-id:", "Last-Event-ID:" };
	char val[STREAMS_ARG_MAX];
	size_t i;
	int n, nlen;

	for (i = 0; i < sizeof names / sizeof names[0]; i++) {
		nlen = (int)strlen(names[i]);
		if ((n = lws_hdr_custom_length(wsi, names[i], nlen)) < 0)
			continue;
		if ((size_t)n >= sizeof val ||
		    (n = lws_hdr_custom_copy(wsi, val, sizeof val, names[i], nlen)) < 0) {
			snprintf(msg, cap, "Last-Event-ID: expected a non-negative integer");
			return JG_EINVAL;
		}
		/* Whitespace around a field value is not part of it (lws drops
		 * the leading run); then strict decimal, as from_seq. */
		while (n > 0 && (val[n - 1] == ' ' || val[n - 1] == '\t'))
			n--;
		if ((n > 1 && val[0] == '0') || jg_parse_u64(val, (size_t)n, v) != 0) {
			snprintf(msg, cap, "Last-Event-ID: expected a non-negative integer");
			return JG_EINVAL;
		}
		return 0;
	}
	return JG_ENOTFOUND;
}

/* The request's filter and start into a (start 0 = live); 0 or JG_EINVAL
 * with msg written. */
static int streams_parse_args(struct lws *wsi, int kind, StreamArgs *a,
			      char *msg, size_t cap)
{
	char job[STREAMS_ARG_MAX];
	uint64_t from = 0, last_id = 0;
	int rc, has_from, has_last = 0;

	memset(a, 0, sizeof *a);
	if ((rc = streams_arg_u64(wsi, "job_id", 0, &a->job_id, msg, cap)) == JG_EINVAL)
		return JG_EINVAL;
	rc = api_query_arg(wsi, "job", job, sizeof job);
	if (rc == 0) {
		if (!config_name_ok(job, strlen(job))) {
			snprintf(msg, cap, "job: expected a job name ([A-Za-z0-9_.-]{1,64})");
			return JG_EINVAL;
		}
		if (a->job_id) {
			snprintf(msg, cap, "give job_id or job, not both");
			return JG_EINVAL;
		}
		a->job_len = strlen(job);
		memcpy(a->job, job, a->job_len + 1);
	} else if (rc != JG_ENOTFOUND) {
		snprintf(msg, cap, "job: expected a job name ([A-Za-z0-9_.-]{1,64})");
		return JG_EINVAL;
	}
	if ((rc = streams_arg_u64(wsi, "from_seq", 1, &from, msg, cap)) == JG_EINVAL)
		return JG_EINVAL;
	has_from = rc == 0;
	if (kind == SESS_SSE) {
		if ((rc = streams_last_event_id(wsi, &last_id, msg, cap)) == JG_EINVAL)
			return JG_EINVAL;
		has_last = rc == 0;
	}
	if (has_last)	/* resume after it; the largest seq means "nothing old" */
		a->start = last_id < UINT64_MAX ? last_id + 1 : UINT64_MAX;
	else if (has_from)
		a->start = from ? from : 1;	/* from_seq=0: from the beginning */
	return 0;
}

/*
 * Parse and check a stream request (api thread).  Returns 0, or the HTTP
 * status to refuse with (400 bad arguments, 404 unknown job_id, 503 log
 * unreadable) with msg written.  *finished is set when a job_id stream
 * starts after that job's final event: there is nothing left to wait for.
 */
static int streams_parse(Streams *s, struct lws *wsi, int kind, StreamArgs *a,
			 int *finished, char *msg, size_t cap)
{
	uint64_t last, head;
	LogEvent ev;
	int rc;

	*finished = 0;
	if (streams_parse_args(wsi, kind, a, msg, cap) != 0)
		return 400;
	if ((rc = log_reader_begin(s->rd)) != 0) {
		snprintf(msg, cap, "log unreadable: %s", jg_strerror(rc));
		return 503;
	}
	head = log_reader_head(s->rd);
	if (!a->start)
		a->start = head + 1;
	if (a->job_id) {
		last = log_reader_job_last(s->rd, a->job_id);
		if (!last) {
			log_reader_end(s->rd);
			snprintf(msg, cap, "no job with id %llu",
				 (unsigned long long)a->job_id);
			return 404;
		}
		if (last < a->start && log_reader_get(s->rd, last, &ev) == 0 &&
		    log_status_final(ev.status))
			*finished = 1;
	}
	log_reader_end(s->rd);
	if (head > s->head)
		s->head = head;
	return 0;
}

int streams_check_args(struct lws *wsi, char *msg, size_t cap)
{
	Streams *s = api_streams(api_from_wsi(wsi));
	StreamArgs a;
	int finished;

	streams_own(s);
	return streams_parse(s, wsi, SESS_WS, &a, &finished, msg, cap);
}

/* ---- subscribers ---- */

/* Every ping_ms / 5: subscribers idle for 3/5 of the period ping next, so
 * the longest quiet is 4/5 of it plus the loop's latency. */
static void streams_ping_sweep(lws_sorted_usec_list_t *sul)
{
	Streams *s = lws_container_of(sul, Streams, ping_sweep);
	int64_t now = jg_mono_ns(), quiet_ns = (s->ping_ms / 5 * 3) * 1000000;
	StreamSub *sub;

	if (!s->subs) {
		s->sweeping = 0;
		return;
	}
	for (sub = s->subs; sub; sub = sub->next)
		if (now - sub->last_tx_ns >= quiet_ns) {
			sub->ping_due = 1;
			streams_arm(sub);
		}
	api_sul_schedule(s->ctx, &s->ping_sweep, streams_ping_sweep,
			 s->ping_ms / 5 * LWS_US_PER_MS);
}

static StreamSub *streams_sub_add(Streams *s, struct lws *wsi, int kind,
				  const StreamArgs *a)
{
	StreamSub *sub = calloc(1, sizeof *sub);

	if (!sub)
		return NULL;
	sub->s = s;
	sub->wsi = wsi;
	sub->kind = kind;
	sub->job_id = a->job_id;
	sub->job_len = a->job_len;
	memcpy(sub->job, a->job, sizeof sub->job);
	sub->next_seq = a->start;
	sub->ahead = a->job_id && a->start > s->head + 1;
	sub->last_tx_ns = jg_mono_ns();
	sub->next = s->subs;
	if (s->subs)
		s->subs->prev = sub;
	s->subs = sub;
	s->nsub[kind]++;
	s->ctx = lws_get_context(wsi);
	if (!s->sweeping) {
		s->sweeping = 1;
		api_sul_schedule(s->ctx, &s->ping_sweep, streams_ping_sweep,
				 s->ping_ms / 5 * LWS_US_PER_MS);
	}
	return sub;
}

static int streams_fail(StreamSub *sub, int rc)
{
	jg_log(JG_ERROR, "stream read failed", "error", jg_strerror(rc), NULL);
	if (sub->kind == SESS_WS)
		lws_close_reason(sub->wsi, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION,
				 (unsigned char *)"log read failed", 15);
	return -1;
}

/* Append one WebSocket text frame holding s->ev (server frames: FIN,
 * opcode 1, no mask, 7/16/64-bit length, RFC 6455 §5.2). */
static void streams_ws_frame(Buf *out, const Buf *msg)
{
	unsigned char h[10];
	size_t n = msg->len, hl;

	h[0] = 0x81;
	if (n < 126) {
		h[1] = (unsigned char)n;
		hl = 2;
	} else if (n < 65536) {
		h[1] = 126;
		h[2] = (unsigned char)(n >> 8);
		h[3] = (unsigned char)n;
		hl = 4;
	} else {
		int i;

		h[1] = 127;
		for (i = 0; i < 8; i++)
			h[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
		hl = 10;
	}
	buf_add(out, h, hl);
	buf_add(out, msg->p, n);
}

/* Render ev as the subscriber's wire form at the end of s->out. */
static void streams_render(Streams *s, StreamSub *sub, const LogEvent *ev)
{
	if (sub->kind == SESS_WS) {
		buf_reset(&s->ev);
		log_event_json(ev, &s->ev, 0);
		if (s->ev.oom)
			s->out.oom = 1;	/* the next reset would hide it */
		else
			streams_ws_frame(&s->out, &s->ev);
		return;
	}
	/* The §5 JSON has no raw newline (strings are escaped), so one data:
	 * line holds it. */
	buf_puts(&s->out, "id: ");
	buf_u64(&s->out, ev->seq);
	buf_puts(&s->out, "\ndata: ");
	log_event_json(ev, &s->out, 0);
	buf_puts(&s->out, "\n\n");
}

/*
 * Render the batch after sub's cursor into s->out (api thread), after one
 * LWS_PRE gap: complete WS frames or SSE records, ready for one write.
 * Returns 0 or an error; *np is the number of events, *scan_end the cursor
 * after the batch, *final 1 when the batch ends with a job stream's final
 * event, *more 1 when a cap stopped it before the snapshot's head.  The
 * read snapshot is ended before returning.
 */
static int streams_fill(Streams *s, StreamSub *sub, int *np, uint64_t *scan_end,
			int *final, int *more)
{
	uint64_t head, end = sub->next_seq, last_final = 0;
	int rc, n = 0, scanned = 0, was_ahead = 0;
	LogEvent ev;

	*final = 0;
	*more = 0;
	*np = 0;
	buf_reset(&s->out);
	buf_add(&s->out, streams_zero, LWS_PRE);
	if ((rc = log_reader_begin(s->rd)) != 0)
		return rc;
	head = log_reader_head(s->rd);
	if (head > s->head)
		s->head = head;
	/* From here every event of the job has a seq >= the cursor or was
	 * seen by the check at the end: the usual wake rule covers it. */
	was_ahead = sub->ahead;
	if (end <= head + 1)
		sub->ahead = 0;
	if (end > head) {
		rc = JG_ENOTFOUND;
		goto out;
	}
	rc = sub->job_id ? log_reader_job_seek(s->rd, sub->job_id, end, &ev)
			 : log_reader_seek(s->rd, end, &ev);
	for (; rc == 0; rc = sub->job_id ? log_reader_job_next(s->rd, &ev)
					 : log_reader_next(s->rd, &ev)) {
		if (ev.seq > head) {	/* never past the head we measured */
			rc = JG_ENOTFOUND;
			break;
		}
		end = ev.seq + 1;
		if (!sub->job_len || (ev.job_len == sub->job_len &&
				      memcmp(ev.job, sub->job, ev.job_len) == 0)) {
			streams_render(s, sub, &ev);
			n++;
			last_final = sub->job_id && log_status_final(ev.status) ? ev.seq : 0;
			if (n >= STREAMS_BATCH_EVENTS || s->out.len >= STREAMS_BATCH_BYTES)
				break;
		}
		if (++scanned >= STREAMS_SCAN_MAX)
			break;
	}
out:
	/* End of the log (or of this job's events) in this snapshot: every
	 * event up to head has been examined. */
	if (rc == JG_ENOTFOUND) {
		rc = 0;
		if (end < head + 1)
			end = head + 1;
	}
	/* A final event ends a job stream only if it is the job's last one
	 * in this snapshot: a job that was retried after it lives on. */
	if (rc == 0 && last_final && log_reader_job_last(s->rd, sub->job_id) == last_final)
		*final = 1;
	/* A job stream that started past its job's events (from_seq beyond
	 * the head) sees none of them, the final one included: the job's
	 * last event, final and before the cursor, ends it all the same.
	 * Only such a stream can have its job end below its cursor (any
	 * other examined every event it passed), so only it pays the look. */
	if (rc == 0 && was_ahead && n == 0) {
		uint64_t last = log_reader_job_last(s->rd, sub->job_id);

		if (last && last < sub->next_seq && log_reader_get(s->rd, last, &ev) == 0 &&
		    log_status_final(ev.status))
			*final = 1;
	}
	log_reader_end(s->rd);
	if (rc != 0)
		return rc;
	if (s->out.oom)
		return ENOMEM;
	*more = end <= head;	/* a cap cut the batch short of this snapshot */
	*scan_end = end;
	*np = n;
	return 0;
}

/*
 * The batch for sub in s->out: reused when the previous one was rendered
 * for the same wire form and start seq without a filter, else rendered.
 * Subscribers that are caught up sit at the same cursor, so after a commit
 * the first one renders and the other N-1 write the same bytes: one LMDB
 * read and one render per commit instead of one per subscriber.  Reuse is
 * safe although the head may have moved since: events never change, and a
 * batch that stops short of the head only means one more round.
 */
static int streams_batch(Streams *s, StreamSub *sub, int *np, uint64_t *scan_end,
			 int *final, int *more)
{
	int rc, plain = !sub->job_id && !sub->job_len;

	if (plain && s->reuse.n > 0 && s->reuse.kind == sub->kind &&
	    s->reuse.from == sub->next_seq) {
		*np = s->reuse.n;
		*scan_end = s->reuse.end;
		*final = 0;
		*more = s->reuse.more;
		return 0;
	}
	s->reuse.n = 0;
	rc = streams_fill(s, sub, np, scan_end, final, more);
	if (rc == 0 && plain && *np > 0) {
		s->reuse.n = *np;
		s->reuse.kind = sub->kind;
		s->reuse.more = *more;
		s->reuse.from = sub->next_seq;
		s->reuse.end = *scan_end;
	}
	return rc;
}

/* Idle for a ping period: a WS ping frame or an SSE comment. */
static int streams_ping(StreamSub *sub)
{
	unsigned char *p = streams_ping_buf + LWS_PRE;

	if (sub->kind == SESS_WS)
		return lws_write(sub->wsi, p, 0, LWS_WRITE_PING);
	memcpy(p, ": ping\n\n", 8);
	return lws_write(sub->wsi, p, 8, LWS_WRITE_HTTP);
}

/*
 * One writable callback of either kind (api thread): write the next batch
 * with a single lws_write and move the cursor past it (see the end for when
 * it asks again).  lws calls us only when nothing of ours is
 * pending, so a batch partly taken by the kernel is finished by lws (its
 * buffer holds at most one batch) before we render the next one.
 *
 * WS batches are pre-framed and written raw (LWS_WRITE_RAW) so that a batch
 * costs one lws_write (one send(2) when the socket has room, since
 * tx_packet_size is above a normal batch), not one per event: with 1,000
 * subscribers that is the
 * difference between a few thousand and millions of syscalls a second.
 * Frames are plain text frames with RSV1 clear, valid even when an
 * extension such as permessage-deflate was negotiated.
 */
static int streams_writeable(Streams *s, StreamSub *sub)
{
	uint64_t scan_end = sub->next_seq;
	int rc, n, final, more, wrote = 0;

	sub->armed = 0;
	if (sub->hup)
		return -1;	/* lws closes it; the close callback frees sub */
	if (sub->going_away) {
		if (sub->kind == SESS_WS)
			lws_close_reason(sub->wsi, LWS_CLOSE_STATUS_GOINGAWAY,
					 (unsigned char *)"server shutting down", 20);
		return -1;
	}
	if (sub->finished) {
		/* The final event was flushed (we are called only when nothing is
		 * pending): close.  For SSE without Content-Length, the end of
		 * the HTTP/1.1 body is the close of the connection. */
		if (sub->kind == SESS_WS)
			lws_close_reason(sub->wsi, LWS_CLOSE_STATUS_NORMAL,
					 (unsigned char *)"job finished", 12);
		return -1;
	}
	if ((rc = streams_batch(s, sub, &n, &scan_end, &final, &more)) != 0)
		return streams_fail(sub, rc);
	if (n > 0) {
		size_t len = s->out.len - LWS_PRE;

		if (lws_write(sub->wsi, (unsigned char *)s->out.p + LWS_PRE, len,
			      LWS_WRITE_RAW) < (int)len)
			return -1;
		s->delivered += (uint64_t)n;
		wrote = 1;
	}
	sub->next_seq = scan_end;
	sub->finished = final;
	if (!wrote && sub->ping_due) {
		if (streams_ping(sub) < 0)
			return -1;
		wrote = 1;
	}
	if (wrote) {
		sub->ping_due = 0;
		sub->last_tx_ns = jg_mono_ns();
	}
	/* Ask again at once only to close, or when a cap cut the batch short
	 * (a subscriber catching up).  One that is behind the head only
	 * because commits landed meanwhile (or because it wrote a shared batch
	 * rendered before them) waits for the next coalesced wake: asking at
	 * once made each of 1,000 subscribers write again as soon as the
	 * round over all of them ended, with the few events committed during
	 * it -- one small send per subscriber per round, each at its own
	 * cursor, so the shared batch was lost.  That wake must be owed,
	 * though: the commit's own wake may have come while this subscriber
	 * was still armed, and found nothing to do.  A choked socket is not a
	 * spin: lws calls back only once the kernel takes data again. */
	if (sub->finished || more)
		streams_arm(sub);
	else if (sub->next_seq <= s->head)
		streams_kick(s);
	return 0;
}

/* ---- WebSocket ---- */

int streams_ws_open(Streams *s, struct lws *wsi, ApiSession *sess)
{
	char msg[120];
	StreamArgs a;
	int st, finished;

	streams_own(s);
	sess->kind = SESS_WS;
	sess->sub = NULL;
	if ((st = streams_parse(s, wsi, SESS_WS, &a, &finished, msg, sizeof msg)) != 0) {
		/* 1008 policy violation for the client's mistakes, 1011 for ours.
		 * A close reason must fit a control frame (<= 123 bytes). */
		lws_close_reason(wsi, st == 503 ? LWS_CLOSE_STATUS_UNEXPECTED_CONDITION
						: LWS_CLOSE_STATUS_POLICY_VIOLATION,
				 (unsigned char *)msg, strlen(msg));
		return -1;
	}
	if (!(sess->sub = streams_sub_add(s, wsi, SESS_WS, &a))) {
		lws_close_reason(wsi, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION,
				 (unsigned char *)"out of memory", 13);
		return -1;
	}
	sess->sub->finished = finished;
	streams_arm(sess->sub);
	return 0;
}

int streams_ws_writeable(Streams *s, struct lws *wsi, ApiSession *sess)
{
	streams_own(s);
	if (!sess->sub)
		return -1;
	assert(sess->sub->wsi == wsi);
	return streams_writeable(s, sess->sub);
}

void streams_ws_closed(Streams *s, ApiSession *sess)
{
	streams_own(s);
	if (sess->sub) {
		streams_sub_free(s, sess->sub);
		sess->sub = NULL;
	}
}

/* ---- SSE ---- */

/* The SSE socket polls readable: the client closed it, or sent bytes on a
 * one-way stream.  lws 4.1 does not read an h1 connection whose response
 * is still open, so without this a closed client would go unnoticed until
 * the next write (and lws would spin on the readable socket). */
static void streams_sse_hup(void *ctx)
{
	StreamSub *sub = ctx;

	sub->hup = 1;
	lws_callback_on_writable(sub->wsi);
}

int streams_sse_open(Streams *s, struct lws *wsi, ApiSession *sess)
{
	unsigned char hdr[LWS_PRE + 1024], *start = hdr + LWS_PRE, *p = start,
		      *end = hdr + sizeof hdr - 1;
	char msg[120];
	StreamArgs a;
	int st, finished;

	streams_own(s);
	sess->kind = SESS_SSE;
	sess->sub = NULL;
	if ((st = streams_parse(s, wsi, SESS_SSE, &a, &finished, msg, sizeof msg)) != 0)
		return api_error(wsi, st, st == 400 ? "bad_request" :
				 st == 404 ? "not_found" : "overloaded", msg);
	if (finished)	/* the job ended before the resume point */
		return api_no_content(wsi);
	if (lws_add_http_common_headers(wsi, HTTP_STATUS_OK, "text/event-stream",
					LWS_ILLEGAL_HTTP_CONTENT_LEN, &p, end) ||
	    lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
					 (unsigned char *)"no-cache", 8, &p, end) ||
	    lws_finalize_write_http_header(wsi, start, &p, end))
		return -1;
	/* A stream is long-lived by design: no transaction timeout.  Not
	 * lws_http_mark_sse(): in lws 4.1 it calls lws_mux_mark_immortal(),
	 * which is for h2 substreams and logs an error on our h1 connections.
	 * Its other half, giving back the header table (an lws pool slot) that
	 * a stream no longer needs, we do ourselves. */
	lws_http_headers_detach(wsi);
	lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
	if (!(sess->sub = streams_sub_add(s, wsi, SESS_SSE, &a)))
		return -1;
	sess->sub->finished = finished;
	sess->sub->rdw = api_loop_watch_read(api_from_wsi(wsi), (int)lws_get_socket_fd(wsi),
					     streams_sse_hup, sess->sub);
	streams_arm(sess->sub);
	return 0;
}

int streams_sse_writeable(Streams *s, struct lws *wsi, ApiSession *sess)
{
	streams_own(s);
	if (!sess->sub)
		return -1;
	assert(sess->sub->wsi == wsi);
	return streams_writeable(s, sess->sub);
}

void streams_sse_closed(Streams *s, ApiSession *sess)
{
	streams_own(s);
	if (sess->sub) {
		streams_sub_free(s, sess->sub);
		sess->sub = NULL;
	}
}

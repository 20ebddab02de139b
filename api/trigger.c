/*
 * trigger.c -- POST /trigger/{job}[/poll|/wait]: the durable enqueue.
 *
 * Header time (api_trigger_head): the job, the caller (bearer token, or
 * the job's HMAC signature, checked once the raw body is in), the mode,
 * the wait timeout and the Idempotency-Key.  Body time
 * (api_trigger_run): signature, JSON validation, then the request's own
 * LogEntry goes to the writer with log_submit() -- the api thread never
 * touches the disk.  The writer's done() (api_trigger_cb, writer thread)
 * only queues the request back; the drain answers it from one LMDB
 * snapshot per batch (api_trigger_done).
 *
 * Idempotency is decided by the writer (the idem index is written in the
 * same txn as the event), so concurrent repeats of one key cannot both
 * append: the loser comes back with replayed = 1 and the original seq.
 * The scope is actor \0 job \0 key, where actor is the token's name or
 * "hmac:" for signed webhooks.
 *
 * /wait parks the request (server.c) until the job's final event or the
 * deadline; api_wait_done() answers 200 with a finished job, else 202.
 */
#include <errno.h>
#include <string.h>

#include "api_int.h"
#include "../common/jg.h"
#include "../common/json.h"
#include "../projector/job.h"

#define API_HMAC_ACTOR "hmac:"

/* Decimal v into p (no NUL); returns the length. */
static size_t api_u64(char *p, uint64_t v)
{
	char t[20];
	size_t n = 0, i;

	do {
		t[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		p[i] = t[n - 1 - i];
	return n;
}

/* "location: /jobs/ID\r\nx-log-seq: SEQ\r\n" (+ the replay header). */
static const char *api_trigger_hdrs(char *h, uint64_t id, uint64_t seq, int replayed)
{
	static const char loc[] = "location: /jobs/", xs[] = "\r\nx-log-seq: ",
			  rp[] = "\r\nidempotent-replayed: true";
	char *p = h;

	memcpy(p, loc, sizeof loc - 1);
	p += sizeof loc - 1;
	p += api_u64(p, id);
	memcpy(p, xs, sizeof xs - 1);
	p += sizeof xs - 1;
	p += api_u64(p, seq);
	if (replayed) {
		memcpy(p, rp, sizeof rp - 1);
		p += sizeof rp - 1;
	}
	memcpy(p, "\r\n", 3);
	return h;
}

static void api_trigger_idem(ApiReq *r, int n);

/* /wait's timeout: "S" or "S.F" seconds (milliseconds kept), in ms; a
 * value over cap_ms is the cap (the spec's "default and cap"), not an
 * error.  -1 for anything else (signs, exponents, empty). */
static int64_t api_timeout_ms(const char *s, size_t n, int64_t cap_ms)
{
	int64_t ms = 0, f = 100;
	size_t i;

	if (n == 0 || s[0] < '0' || s[0] > '9')
		return -1;
	for (i = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++)
		if (ms <= cap_ms)	/* beyond the cap the rest only has to parse */
			ms = ms * 10 + (s[i] - '0') * 1000;
	if (i < n && s[i] == '.') {
		if (++i == n)
			return -1;
		for (; i < n && s[i] >= '0' && s[i] <= '9'; i++, f /= 10)
			ms += (s[i] - '0') * f;
	}
	if (i != n)
		return -1;
	return ms < cap_ms ? ms : cap_ms;
}

/* Api thread, header time.  Refusals are pending errors (routes.c). */
void api_trigger_head(Api *a, ApiReq *r, const RouteSeg *caps)
{
	const RouteSeg *name = &caps[0];
	struct lws *wsi = r->wsi;
	char v[256];
	int n;

	r->job = config_name_ok(name->p, name->n) ? config_job(a->cfg, name->p, name->n) : NULL;
	/* Without a valid token only a job that takes signatures may go on,
	 * and only once its signature is checked (api_route_body_done); until
	 * then the caller is told nothing that depends on the job (routes.c). */
	if (!r->tok) {
		r->unauth = 1;
		if (!r->job || !r->job->hmac_secret) {
			api_pend_error(r, 401, "unauthorized", API_UNAUTH_TRIGGER);
			return;
		}
		r->hmac = 1;
	}
	if (!r->job) {
		api_pend_error(r, 404, "unknown_job", "no such job");
		return;
	}
	r->job_idx = (int)(r->job - a->cfg->jobs);
	if (r->tok && !config_token_allows(r->tok, r->job->name)) {
		api_pend_error(r, 403, "forbidden", "this token may not trigger this job");
		return;
	}
	if (strstr(r->route->pattern, "{mode}")) {
		const RouteSeg *m = &caps[1];
		if (m->n == 4 && memcmp(m->p, "wait", 4) == 0)
			r->mode = API_MODE_WAIT;
		else if (!(m->n == 4 && memcmp(m->p, "poll", 4) == 0)) {
			api_pend_error(r, 400, "bad_request", "mode must be poll or wait");
			return;
		}
	}
	if (r->mode != API_MODE_WAIT && api_query_arg(wsi, "timeout", v, sizeof v) != JG_ENOTFOUND) {
		api_pend_error(r, 400, "bad_request", "timeout applies to /wait only");
		return;
	}
	if (r->mode == API_MODE_WAIT) {
		r->wait_ms = (int64_t)a->cfg->max_wait_s * 1000;
		n = api_query_arg(wsi, "timeout", v, sizeof v);
		if (n == JG_EINVAL ||
		    (n == 0 && (r->wait_ms = api_timeout_ms(v, strlen(v), r->wait_ms)) < 0)) {
			api_pend_error(r, 400, "bad_request",
				       "timeout must be a number of seconds, like 30 or 2.5");
			return;
		}
	}
	n = lws_hdr_custom_length(wsi, "idempotency-key:", 16);
	if (n >= 0)
		api_trigger_idem(r, n);
}

/* The Idempotency-Key header (n bytes as lws stored it) into r->idem.
 * Optional whitespace around a field value is not part of it (RFC 9110
 * §5.5): lws drops the leading run, we drop the trailing one, so
 * "Idempotency-Key:  k1 " is the key "k1". */
static void api_trigger_idem(ApiReq *r, int n)
{
	char v[2 * API_IDEM_MAX + 2];
	const char *p = v;

	if (n >= (int)sizeof v ||
	    lws_hdr_custom_copy(r->wsi, v, sizeof v, "idempotency-key:", 16) != n) {
		api_pend_error(r, 400, "bad_request", "Idempotency-Key must be 1..255 bytes");
		return;
	}
	while (n > 0 && (*p == ' ' || *p == '\t'))
		p++, n--;
	while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	if (n == 0 || n > API_IDEM_MAX) {
		api_pend_error(r, 400, "bad_request", "Idempotency-Key must be 1..255 bytes");
		return;
	}
	if (!json_utf8_ok(p, (size_t)n)) {
		api_pend_error(r, 400, "bad_request", "Idempotency-Key must be UTF-8");
		return;
	}
	memcpy(r->idem, p, (size_t)n);
	r->idem[n] = 0;
	r->idem_len = (size_t)n;
	r->has_idem = 1;
}

/* Log writer thread: the batch holding r is durable (or failed). */
static void api_trigger_cb(LogEntry *e, void *ctx)
{
	ApiReq *r = ctx;

	(void)e;
	api_cq_push(r->a, r);
}

static int api_trigger_shed(Api *a, ApiReq *r, int outcome, const char *msg)
{
	a->enq[r->job_idx * API_NOUTCOMES + outcome]++;
	return api_reply_error(a, r, 503, "overloaded", msg);
}

/* Api thread: the whole request is in. */
int api_trigger_run(Api *a, ApiReq *r)
{
	const char *actor = r->tok ? r->tok->name : API_HMAC_ACTOR;
	int rc;

	if (r->body.len && (rc = json_valid(r->body.p, r->body.len)) != 0) {
		size_t at;
		return api_reply_error(a, r, 400, "invalid_json", rc == JG_ETOODEEP ?
				       "body nests arrays/objects deeper than 512 levels" :
				       json_error_at(r->body.p, r->body.len, &at) == 0 ?
				       "body holds a lone surrogate escape (\\ud800-\\udfff "
				       "without its pair): not Unicode text" :
				       "body is not valid JSON");
	}
	rc = event_enqueued(&r->le, r->job->name, r->body.p, r->body.len,
			    r->has_idem ? r->idem : NULL, r->idem_len, actor,
			    r->job->max_attempts);
	/* The payload now lives in the entry: give the body budget back. */
	api_budget_put(a, r);
	if (rc != 0)
		return api_trigger_shed(a, r, API_OUT_OVERLOADED, "out of memory");
	r->le.done = api_trigger_cb;
	r->le.ctx = r;
	r->kind = API_KIND_TRIGGER;
	r->state = RQ_LOG;
	rc = log_submit(a->log, &r->le);
	if (rc == JG_EFULL || rc == JG_ECLOSED) {
		r->state = RQ_BODY;
		return api_trigger_shed(a, r, API_OUT_OVERLOADED, rc == JG_EFULL ?
					"append queue full" : "shutting down");
	}
	if (rc != 0) {
		r->state = RQ_BODY;
		return api_trigger_shed(a, r, API_OUT_FAILED, "cannot append");
	}
	a->inflight++;
	return 0;
}

int api_job_fold(Api *a, uint64_t id, int *status)
{
	JobState js;
	EventView v;
	LogEvent ev;
	int rc, n = 0;

	memset(&js, 0, sizeof js);
	for (rc = log_reader_job_seek(a->rd, id, 0, &ev); rc == 0;
	     rc = log_reader_job_next(a->rd, &ev)) {
		if ((rc = event_decode(&ev, &v)) != 0)
			return rc;
		job_fold(&js, &v);
		n++;
	}
	if (rc != JG_ENOTFOUND)
		return rc;
	if (n == 0)
		return JG_ENOTFOUND;
	buf_reset(&a->job);
	job_json(&js, &a->job);
	*status = js.status;
	return a->job.oom ? ENOMEM : 0;
}

/* The fresh job from its enqueued event alone: status queued, whatever
 * the runner did since. */
static int api_job_enqueued(Api *a, uint64_t seq)
{
	JobState js;
	EventView v;
	LogEvent ev;
	int rc;

	if ((rc = log_reader_get(a->rd, seq, &ev)) != 0 || (rc = event_decode(&ev, &v)) != 0)
		return rc;
	memset(&js, 0, sizeof js);
	job_fold(&js, &v);
	buf_reset(&a->job);
	job_json(&js, &a->job);
	return a->job.oom ? ENOMEM : 0;
}

/* Api thread, drain (snapshot open): the writer answered r. */
void api_trigger_done(Api *a, ApiReq *r)
{
	uint64_t *enq = &a->enq[r->job_idx * API_NOUTCOMES];
	char h[128];
	int rc = r->le.rc, st = 0;

	r->state = RQ_BODY;
	if (rc != 0) {
		enq[rc == JG_ESTORAGE ? API_OUT_STORAGE_FULL : API_OUT_FAILED]++;
		if (rc == JG_ESTORAGE)
			api_defer_error(a, r, 503, "storage_full", "the log is out of space");
		else if (rc == JG_ECLOSED)
			api_defer_error(a, r, 503, "overloaded", "shutting down");
		else
			api_defer_error(a, r, 500, "internal", "the log could not be written");
		return;
	}
	r->id = r->le.seq;
	enq[r->le.replayed ? API_OUT_REPLAYED : API_OUT_ACCEPTED]++;
	if (r->le.replayed && r->mode != API_MODE_WAIT) {
		if ((rc = api_job_fold(a, r->id, &st)) != 0)
			goto read_failed;
		api_defer(a, r, 200, api_trigger_hdrs(h, r->id, r->le.seq, 1),
			  a->job.p, a->job.len);
		return;
	}
	if (r->mode == API_MODE_WAIT) {
		/* A repeat of a /wait (a client retrying after a lost answer)
		 * waits like the first one did: 200 always means finished. */
		if ((rc = api_job_fold(a, r->id, &st)) != 0)
			goto read_failed;
		/* Stopping: the parked waits were answered already
		 * (api_wait_flush); one whose commit lands now is answered
		 * at once too, never parked past the drain. */
		if (log_status_final(st) || r->wait_ms == 0 || atomic_load(&a->stop)) {
			api_defer(a, r, log_status_final(st) ? 200 : 202,
				  api_trigger_hdrs(h, r->id, r->le.seq, r->le.replayed),
				  a->job.p, a->job.len);
			return;
		}
		api_wait_park(a, r);
		return;
	}
	if ((rc = api_job_enqueued(a, r->le.seq)) != 0)
		goto read_failed;
	api_defer(a, r, 202, api_trigger_hdrs(h, r->id, r->le.seq, 0), a->job.p, a->job.len);
	return;
read_failed:
	jg_log(JG_ERROR, "cannot read back an acknowledged job", "error", jg_strerror(rc), NULL);
	api_defer_error(a, r, 500, "internal", "the job was stored but cannot be read back");
}

/* Api thread: a parked /wait ends -- final event seen (in the drain's
 * snapshot), deadline or shutdown (the caller ends the snapshot that
 * the read began). */
void api_wait_done(Api *a, ApiReq *r)
{
	char h[128];
	int st = 0, rc;

	r->state = RQ_BODY;
	rc = api_job_fold(a, r->id, &st);
	if (rc != 0) {
		api_defer_error(a, r, 500, "internal", "the job cannot be read back");
		return;
	}
	api_defer(a, r, log_status_final(st) ? 200 : 202,
		  api_trigger_hdrs(h, r->id, r->le.seq, r->le.replayed), a->job.p, a->job.len);
}

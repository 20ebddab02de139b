/*
 * jobs.c -- the job endpoints: GET /jobs/{id}, GET /jobs, GET
 * /jobs/{id}/events, POST /jobs/{id}/cancel and /retry.  Api thread.
 *
 * Read-your-writes.  The read model (SQLite, projector thread) may lag the
 * log.  GET /jobs/{id} first looks up the job's last seq L in the log's
 * by-job index (one LMDB read); if the projector has applied L the row is
 * current and comes from SQLite, else the job is folded from its events in
 * the log.  So an acknowledged job is never 404 and never stale.
 *
 * Cancel and retry change a job's status, which only the runner decides:
 * the request's RunnerReq goes to runner_submit() and comes back through
 * the completion queue once the event is durable (api_runner_done).
 */
#include <stdlib.h>
#include <string.h>

#include "api_int.h"
#include "../common/jg.h"

#define API_LIST_DEFAULT 100
#define API_LIST_MAX     1000
#define API_LIST_WAIT_MS PROJ_STALL_MS	/* longest a list waits for the projector */

/* Api thread, header time: the {id} capture, strictly decimal. */
void api_jobs_id_head(Api *a, ApiReq *r, const RouteSeg *caps)
{
	(void)a;
	if (route_id(caps[0].p, caps[0].n, &r->id) != 0)
		api_pend_error(r, 404, "not_found", "job ids are positive decimal numbers");
}

static int api_reply_job(Api *a, ApiReq *r)
{
	return api_reply(a, r, 200, NULL, a->job.p, a->job.len);
}

int api_jobs_get(Api *a, ApiReq *r)
{
	uint64_t last, seq;
	int rc, st;

	last = log_reader_job_last(a->rd, r->id);
	if (last == 0) {
		log_reader_end(a->rd);
		return api_reply_error(a, r, 404, "not_found", "no job with this id");
	}
	if (proj_applied(a->proj) >= last) {
		log_reader_end(a->rd);
		buf_reset(&a->job);
		if (query_job(a->q, r->id, &a->job, &seq) == 0 && seq >= last)
			return api_reply_job(a, r);
	}
	rc = api_job_fold(a, r->id, &st);
	log_reader_end(a->rd);
	if (rc == JG_ENOTFOUND)
		return api_reply_error(a, r, 404, "not_found", "no job with this id");
	if (rc != 0)
		return api_reply_error(a, r, 500, "internal", "the job cannot be read");
	return api_reply_job(a, r);
}

/* Query arg into out: 0 absent, 1 present, -1 malformed (too long). */
static int api_arg(ApiReq *r, const char *name, char *out, size_t cap)
{
	int rc = api_query_arg(r->wsi, name, out, cap);

	return rc == 0 ? 1 : rc == JG_ENOTFOUND ? 0 : -1;
}

/* GET /jobs's query, parsed; kept while the request is parked. */
typedef struct ApiListArgs {
	char     job[JG_NAME_MAX + 2], cursor[256];
	int      has_job, has_cur, st;
	uint64_t lim;
} ApiListArgs;

/* The list from the read model, answered now (reply) or from the drain
 * or a timer (defer). */
static int api_list_answer(Api *a, ApiReq *r, const ApiListArgs *la, int defer)
{
	int rc;

	buf_reset(&a->job);
	rc = query_list(a->q, la->has_job ? la->job : NULL, la->st, (int)la->lim,
			QUERY_PAGE_BYTES, la->has_cur ? la->cursor : NULL, &a->job);
	if (rc != 0 || a->job.oom) {
		int bad = rc == JG_EINVAL;
		const char *code = bad ? "bad_request" : "internal";
		const char *msg = bad ? "bad cursor" : "the read model cannot be queried";
		if (defer) {
			api_defer_error(a, r, bad ? 400 : 500, code, msg);
			return 0;
		}
		return api_reply_error(a, r, bad ? 400 : 500, code, msg);
	}
	if (defer) {
		api_defer(a, r, 200, NULL, a->job.p, a->job.len);
		return 0;
	}
	return api_reply_job(a, r);
}

/* Api thread: take r off a->proj_wait (no-op if it is not there). */
void api_list_unhook(Api *a, ApiReq *r)
{
	if (r->state != RQ_PROJ)
		return;
	lws_dll2_remove(&r->proj_link);
	atomic_fetch_sub(&a->nproj_wait, 1);
	lws_sul_cancel(&r->sul);
	api_park_unwatch(r);
	free(r->la);
	r->la = NULL;
	r->state = RQ_BODY;
}

static void api_list_done(Api *a, ApiReq *r)
{
	ApiListArgs *la = r->la;

	r->la = NULL;		/* keep it past the unhook */
	api_list_unhook(a, r);
	api_list_answer(a, r, la, 1);
	free(la);
}

/* The projector did not catch up in time (it is failing: /healthz says
 * so): answer from the read model as it is. */
static void api_list_timer(lws_sorted_usec_list_t *sul)
{
	ApiReq *r = lws_container_of(sul, ApiReq, sul);

	api_list_done(r->a, r);
}

/* Api thread (drain): answer the parked lists the projector has caught
 * up for.  Targets grow with arrival, so the oldest go first. */
void api_list_wake(Api *a)
{
	uint64_t applied = proj_applied(a->proj);
	lws_dll2_t *d;

	while ((d = lws_dll2_get_head(&a->proj_wait)) != NULL) {
		ApiReq *r = lws_container_of(d, ApiReq, proj_link);
		if (r->proj_target > applied)
			break;
		api_list_done(a, r);
	}
}

/* Api thread, shutdown: answer every parked list now, as the read model
 * stands. */
void api_list_flush(Api *a)
{
	lws_dll2_t *d;

	while ((d = lws_dll2_get_head(&a->proj_wait)) != NULL)
		api_list_done(a, lws_container_of(d, ApiReq, proj_link));
}

int api_jobs_list(Api *a, ApiReq *r)
{
	char limit[16];
	int has_st, has_lim;
	ApiListArgs la;
	uint64_t head;
	char status[32];

	memset(&la, 0, sizeof la);
	la.lim = API_LIST_DEFAULT;
	la.has_job = api_arg(r, "job", la.job, sizeof la.job);
	has_st = api_arg(r, "status", status, sizeof status);
	has_lim = api_arg(r, "limit", limit, sizeof limit);
	la.has_cur = api_arg(r, "cursor", la.cursor, sizeof la.cursor);
	if (la.has_job < 0 || (la.has_job && !config_name_ok(la.job, strlen(la.job))))
		return api_reply_error(a, r, 400, "bad_request", "job must be a job name");
	if (has_st < 0 || (has_st && !(la.st = log_status_parse(status, strlen(status)))))
		return api_reply_error(a, r, 400, "bad_request",
				       "status must be queued, running, succeeded, failed or canceled");
	if (has_lim < 0 || (has_lim && (route_id(limit, strlen(limit), &la.lim) != 0 ||
					la.lim > API_LIST_MAX)))
		return api_reply_error(a, r, 400, "bad_request", "limit must be 1..1000");
	if (la.has_cur < 0 || (la.has_cur && !la.cursor[0]))
		return api_reply_error(a, r, 400, "bad_request", "bad cursor");
	/* Read-your-writes for lists too: every job acknowledged before this
	 * request is at or below the log head now.  If the read model is
	 * behind it, wait for the projector (woken by api_proj_watch), at
	 * most API_LIST_WAIT_MS. */
	head = log_head(a->log);	/* stored before any ack of that commit */
	if (proj_applied(a->proj) >= head)
		return api_list_answer(a, r, &la, 0);
	if (!(r->la = malloc(sizeof la)))
		return api_list_answer(a, r, &la, 0);
	*r->la = la;
	r->proj_target = head;
	r->state = RQ_PROJ;
	lws_dll2_clear(&r->proj_link);
	lws_dll2_add_tail(&r->proj_link, &a->proj_wait);
	atomic_fetch_add(&a->nproj_wait, 1);
	api_sul_schedule(a->ctx, &r->sul, api_list_timer,
			 (lws_usec_t)API_LIST_WAIT_MS * LWS_US_PER_MS);
	api_park_watch(a, r);
	/* The projector may have passed head since we looked; its watcher
	 * saw no waiter then.  Check once more now that we are parked. */
	api_list_wake(a);
	return 0;
}

/* {"events":[...]}: an object, like GET /jobs, so fields can be added. */
int api_jobs_events(Api *a, ApiReq *r)
{
	LogEvent ev;
	int rc, n = 0;

	buf_reset(&a->job);
	buf_puts(&a->job, "{\"events\":[");
	for (rc = log_reader_job_seek(a->rd, r->id, 0, &ev); rc == 0;
	     rc = log_reader_job_next(a->rd, &ev)) {
		/* A damaged record would not be JSON: refuse, never relay it. */
		if ((rc = log_event_verify(&ev, a->err, sizeof a->err)) != 0)
			break;
		if (n++)
			buf_puts(&a->job, ",");
		log_event_json(&ev, &a->job, 1);
	}
	log_reader_end(a->rd);
	buf_puts(&a->job, "]}");
	if (rc == JG_ECORRUPT) {
		jg_log(JG_ERROR, "damaged log record", "error", a->err, NULL);
		return api_reply_error(a, r, 500, "internal", "a log record of this job is damaged");
	}
	if (rc != JG_ENOTFOUND || a->job.oom)
		return api_reply_error(a, r, 500, "internal", "the log cannot be read");
	if (n == 0)
		return api_reply_error(a, r, 404, "not_found", "no job with this id");
	return api_reply_job(a, r);
}

/* Runner thread: the runner answered (event durable, or refused). */
static void api_runner_cb(RunnerReq *q, void *ctx)
{
	ApiReq *r = ctx;

	(void)q;
	api_cq_push(r->a, r);
}

/* Cancel or retry: the job must exist and the token may touch it. */
static int api_jobs_change(Api *a, ApiReq *r, int op)
{
	char name[JG_NAME_MAX + 1];
	LogEvent ev;
	int rc;

	rc = log_reader_job_seek(a->rd, r->id, 0, &ev);
	if (rc == 0) {
		size_t n = ev.job_len < JG_NAME_MAX ? ev.job_len : JG_NAME_MAX;
		memcpy(name, ev.job, n);
		name[n] = 0;
	}
	log_reader_end(a->rd);
	if (rc == JG_ENOTFOUND)
		return api_reply_error(a, r, 404, "not_found", "no job with this id");
	if (rc != 0)
		return api_reply_error(a, r, 500, "internal", "the log cannot be read");
	if (!config_token_allows(r->tok, name))
		return api_reply_error(a, r, 403, "forbidden", "this token may not change this job");
	memset(&r->rr, 0, sizeof r->rr);
	r->rr.op = op;
	r->rr.job_id = r->id;
	snprintf(r->rr.actor, sizeof r->rr.actor, "%s", r->tok->name);
	r->rr.done = api_runner_cb;
	r->rr.ctx = r;
	r->kind = API_KIND_RUNNER;
	r->state = RQ_RUNNER;
	if ((rc = runner_submit(a->run, &r->rr)) != 0) {
		r->state = RQ_BODY;
		return api_reply_error(a, r, 503, "overloaded",
				       rc == JG_ECLOSED ? "shutting down" : "runner queue full");
	}
	a->inflight++;
	return 0;
}

int api_jobs_cancel(Api *a, ApiReq *r)
{
	return api_jobs_change(a, r, RUNNER_CANCEL);
}

int api_jobs_retry(Api *a, ApiReq *r)
{
	return api_jobs_change(a, r, RUNNER_RETRY);
}

/* Api thread, drain (snapshot open). */
void api_runner_done(Api *a, ApiReq *r)
{
	int st;

	r->state = RQ_BODY;
	switch (r->rr.rc) {
	case 0: {
		char h[48];	/* like a trigger's: the seq a read can wait for */

		if (api_job_fold(a, r->id, &st) != 0)
			break;
		snprintf(h, sizeof h, "x-log-seq: %llu\r\n", (unsigned long long)r->rr.seq);
		api_defer(a, r, 200, h, a->job.p, a->job.len);
		return;
	}
	case JG_ENOTFOUND:
		api_defer_error(a, r, 404, "not_found", "no job with this id");
		return;
	case JG_ECONFLICT:
		api_defer_error(a, r, 409, "conflict", r->rr.op == RUNNER_CANCEL ?
				"the job has already finished" :
				"only failed or canceled jobs can be retried");
		return;
	case JG_ESTORAGE:
		api_defer_error(a, r, 503, "storage_full", "the log is out of space");
		return;
	case JG_ECLOSED:
		api_defer_error(a, r, 503, "overloaded", "shutting down");
		return;
	}
	api_defer_error(a, r, 500, "internal", "the change could not be recorded");
}

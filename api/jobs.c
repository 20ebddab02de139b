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
#include <string.h>

#include "api_int.h"
#include "../common/jg.h"

#define API_LIST_DEFAULT 100
#define API_LIST_MAX     1000

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

int api_jobs_list(Api *a, ApiReq *r)
{
	char job[JG_NAME_MAX + 2], status[32], limit[16], cursor[256];
	int has_job, has_st, has_lim, has_cur, st = 0, rc;
	uint64_t lim = API_LIST_DEFAULT;

	has_job = api_arg(r, "job", job, sizeof job);
	has_st = api_arg(r, "status", status, sizeof status);
	has_lim = api_arg(r, "limit", limit, sizeof limit);
	has_cur = api_arg(r, "cursor", cursor, sizeof cursor);
	if (has_job < 0 || (has_job && !config_name_ok(job, strlen(job))))
		return api_reply_error(a, r, 400, "bad_request", "job must be a job name");
	if (has_st < 0 || (has_st && !(st = log_status_parse(status, strlen(status)))))
		return api_reply_error(a, r, 400, "bad_request",
				       "status must be queued, running, succeeded, failed or canceled");
	if (has_lim < 0 || (has_lim && (route_id(limit, strlen(limit), &lim) != 0 ||
					lim > API_LIST_MAX)))
		return api_reply_error(a, r, 400, "bad_request", "limit must be 1..1000");
	if (has_cur < 0 || (has_cur && !cursor[0]))
		return api_reply_error(a, r, 400, "bad_request", "bad cursor");
	buf_reset(&a->job);
	rc = query_list(a->q, has_job ? job : NULL, st, (int)lim, has_cur ? cursor : NULL, &a->job);
	if (rc == JG_EINVAL)
		return api_reply_error(a, r, 400, "bad_request", "bad cursor");
	if (rc != 0 || a->job.oom)
		return api_reply_error(a, r, 500, "internal", "the read model cannot be queried");
	return api_reply_job(a, r);
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
		if (n++)
			buf_puts(&a->job, ",");
		log_event_json(&ev, &a->job, 1);
	}
	log_reader_end(a->rd);
	buf_puts(&a->job, "]}");
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
	case 0:
		if (api_job_fold(a, r->id, &st) != 0)
			break;
		api_defer(a, r, 200, NULL, a->job.p, a->job.len);
		return;
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

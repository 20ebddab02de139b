/*
 * recover.c -- the log side of the runner thread: new jobs from the log
 * tail, state of jobs no longer held (read back from the log), cancel and
 * retry requests, and start-up recovery.  See runner.c for the design.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include "runner_int.h"

/* ---- the log: new work, and the state of jobs we no longer hold */

/* A new job: run it now if it is an echo (the payload is in hand). */
static void on_enqueued(Runner *r, const LogEvent *ev, int closing)
{
	RJob *j;
	const char *p;
	size_t n;

	if (map_get(r, ev->job_id))
		return;
	if (!(j = runner_job_new(r, ev->job_id, ev->job, ev->job_len))) {
		jg_log(JG_ERROR, "runner: out of memory; job left queued", NULL);
		return;
	}
	if (!closing && j->spec >= 0 && r->cfg->jobs[j->spec].builtin_echo &&
	    !r->specs[j->spec].head) {
		runner_payload(ev, &p, &n);
		runner_attempt_start(r, j, p, n);
	} else {
		runner_job_ready(r, j);
	}
}

/* A record of the log that does not decode (restored badly, a disk
 * fault): say so and go on past it, so one damaged record does not stop
 * every job after it.  What it said is lost to the runner (a damaged final
 * event: recovery sees the job unfinished and runs it again; the cases are
 * in docs/operations.md).  0 when the record cannot even be named (its key
 * is damaged): stop there. */
static int skip_damaged(Runner *r, const LogEvent *ev)
{
	char seq[24];

	if (ev->seq <= r->tail)
		return 0;
	snprintf(seq, sizeof seq, "%llu", (unsigned long long)ev->seq);
	jg_log(JG_ERROR, "runner: skipping a damaged log record (restore the log from a backup)",
	       "#seq", seq, NULL);
	r->tail = ev->seq;
	return 1;
}

/* Read new events up to the head (at most TAIL_BATCH per call). */
void runner_tail(Runner *r, int closing)
{
	LogEvent ev;
	int rc, i;

	r->more = 0;
	if (log_head(r->log) <= r->tail)
		return;
	if (runner_snap_begin(r) != 0)
		return;
	ev.seq = 0;
	rc = log_reader_seek(r->rd, r->tail + 1, &ev);
	for (i = 0; i < TAIL_BATCH; i++) {
		if (rc == JG_ECORRUPT && skip_damaged(r, &ev)) {
			rc = log_reader_next(r->rd, &ev);
			continue;
		}
		if (rc != 0)
			break;
		r->tail = ev.seq;
		if (ev.type == JG_EV_ENQUEUED)
			on_enqueued(r, &ev, closing);
		rc = log_reader_next(r->rd, &ev);
	}
	if (rc == 0 || (rc == JG_ECORRUPT && ev.seq > r->tail))
		r->more = 1;	/* a damaged record next is skipped next time */
	else if (rc != JG_ENOTFOUND)
		jg_log(JG_ERROR, "runner: log read failed", "error", jg_strerror(rc), NULL);
}

/* A job we do not hold is final or unknown: read its last event.  Status
 * 0 = no such job. */
static int job_lookup(Runner *r, uint64_t id, LogEvent *ev)
{
	uint64_t last;

	if (runner_snap_begin(r) != 0 || !(last = log_reader_job_last(r->rd, id)))
		return 0;
	if (log_reader_get(r->rd, last, ev) != 0)
		return 0;
	return ev->status;
}

/* The job's attempt cap as the log has it: the max_attempts of its last
 * job.retried (an old one without the member meant "this attempt is the
 * last"), else of its job.enqueued; 0 when neither says. */
static uint32_t job_max_attempts(Runner *r, uint64_t id)
{
	LogEvent ev;
	EventView v;
	uint32_t max = 0;
	int rc;

	if (runner_snap_begin(r) != 0)
		return 0;
	for (rc = log_reader_job_seek(r->rd, id, 0, &ev); rc == 0;
	     rc = log_reader_job_next(r->rd, &ev)) {
		if (ev.type != JG_EV_ENQUEUED && ev.type != JG_EV_RETRIED)
			continue;
		if (event_decode(&ev, &v) == 0 && v.max_attempts > 0)
			max = (uint32_t)v.max_attempts;
		else if (ev.type == JG_EV_RETRIED)
			max = ev.attempt;
	}
	return max;
}

/* ---- cancel and retry */

void runner_req_answer(RunnerReq *q, int rc)
{
	q->rc = rc;
	q->seq = 0;
	q->done(q, q->ctx);
}

/* A job with events not yet durable: q waits until they are (answered
 * with the error instead if the next commit of them fails, or at once if
 * the log refused the last one).  1 if q was taken. */
static int req_defer(RJob *j, RunnerReq *q)
{
	if (!j || !j->inflight)
		return 0;
	if (j->evq && j->evq->retry_ns) {
		runner_req_answer(q, j->evq->e.rc);	/* e.g. 503 storage_full */
		return 1;
	}
	runner_req_defer(j, q);
	return 1;
}

void runner_req_run(Runner *r, RunnerReq *q)
{
	if (q->op == RUNNER_CANCEL)
		runner_req_cancel(r, q);
	else if (q->op == RUNNER_RETRY)
		runner_req_retry(r, q);
	else
		runner_req_answer(q, JG_EINVAL);
}

/* The job a request names.  One the tail has not reached yet (a burst of
 * triggers ahead of it) is read first: without it, "not held" would be
 * taken for "final" and a queued job's cancel answered 409. */
static RJob *req_job(Runner *r, uint64_t id)
{
	RJob *j;
	uint64_t t;

	while (!(j = map_get(r, id)) && id > r->tail && log_head(r->log) > r->tail) {
		t = r->tail;
		runner_tail(r, r->closing_seen);
		if (r->tail == t)
			break;		/* the read failed: logged there */
	}
	return j;
}

void runner_req_cancel(Runner *r, RunnerReq *q)
{
	RJob *j = req_job(r, q->job_id);
	LogEvent ev;

	if (req_defer(j, q))
		return;
	if (!j) {
		runner_req_answer(q, job_lookup(r, q->job_id, &ev) ? JG_ECONFLICT : JG_ENOTFOUND);
		return;
	}
	if (j->status == JG_ST_RUNNING && j->proc) {
		RunnerReq **tail = &j->waiters;	/* in arrival order: the */

		if (!runner_attempt_stop(j->proc, WHY_CANCEL, KILL_GRACE_NS)) {
			/* It ended on its own before this cancel came: decide
			 * on its outcome (409 if final, a cancel if a retry is
			 * queued) once the event that records it is durable. */
			runner_req_defer(j, q);
			return;
		}
		while (*tail)			/* event names the first */
			tail = &(*tail)->next;
		q->next = NULL;
		*tail = q;
	} else if (j->status == JG_ST_QUEUED) {
		runner_fifo_del(r, j);
		runner_heap_del(r, j);
		j->status = JG_ST_CANCELED;
		q->next = NULL;
		EMIT(r, j, x, event_canceled(&x->e, j->name, j->id, j->attempt, q->actor), q);
		runner_job_forget(r, j);
	} else {
		runner_req_answer(q, JG_ECONFLICT);
	}
}

void runner_req_retry(Runner *r, RunnerReq *q)
{
	RJob *j = req_job(r, q->job_id);
	LogEvent ev;
	int st;

	if (req_defer(j, q))
		return;
	if (!j) {
		st = job_lookup(r, q->job_id, &ev);
		if (!st) {
			runner_req_answer(q, JG_ENOTFOUND);
			return;
		}
		if (st != JG_ST_FAILED && st != JG_ST_CANCELED) {
			runner_req_answer(q, JG_ECONFLICT);
			return;
		}
		if (!(j = runner_job_new(r, q->job_id, ev.job, ev.job_len))) {
			runner_req_answer(q, ENOMEM);
			return;
		}
		j->status = (uint8_t)st;
		j->attempt = ev.attempt;
		uint32_t max = job_max_attempts(r, j->id);
		if (max)
			j->max_attempts = max;
	}
	if (j->status != JG_ST_FAILED && j->status != JG_ST_CANCELED) {
		runner_req_answer(q, JG_ECONFLICT);
		return;
	}
	/* A manual retry runs the job's policy again from where it stopped:
	 * a job canceled before its first run keeps all its attempts; one
	 * that used them all gets exactly one more. */
	if (j->max_attempts < j->attempt + 1)
		j->max_attempts = j->attempt + 1;
	j->status = JG_ST_QUEUED;
	q->next = NULL;
	EMIT(r, j, x, event_retried(&x->e, j->name, j->id, j->attempt + 1, q->actor,
				    j->max_attempts), q);
	runner_job_ready(r, j);
}

/* ---- recovery */

static int by_id(const void *a, const void *b)
{
	uint64_t x = (*(RJob *const *)a)->id, y = (*(RJob *const *)b)->id;

	return x < y ? -1 : x > y;
}

/* Fold one event's header into the map (recovery pass). */
static void recover_fold(Runner *r, const LogEvent *ev)
{
	RJob *j = map_get(r, ev->job_id);

	/* A job's first event, or its first after a final one, is its
	 * job.enqueued or job.retried; one that was damaged and skipped
	 * leaves the next unfinished status to introduce the job, so it is
	 * not left "running" in the log for good. */
	if (!j && (ev->type == JG_EV_ENQUEUED || ev->type == JG_EV_RETRIED ||
		   !log_status_final(ev->status)))
		j = runner_job_new(r, ev->job_id, ev->job, ev->job_len);
	if (!j)
		return;
	j->status = ev->status;
	j->last_type = ev->type;
	if (ev->type == JG_EV_ENQUEUED || ev->type == JG_EV_RETRIED)
		j->max_attempts = 0;	/* from the event, decoded later */
	/* job.retried names the attempt that runs next; every other event
	 * the attempt that ran (runner_attempt_start counts it up). */
	if (ev->type == JG_EV_RETRIED)
		j->attempt = ev->attempt ? ev->attempt - 1 : 0;
	else if (ev->type != JG_EV_ENQUEUED)
		j->attempt = ev->attempt;
	if (ev->type == JG_EV_STARTED)
		j->started_at = ev->at_ms;
	if (log_status_final(j->status)) {
		map_del(r, j->id);
		free(j);
	}
}

/* A surviving job: finish its state from decoded JSON, then resume it. */
static void recover_job(Runner *r, RJob *j)
{
	LogEvent ev;
	EventView v;
	uint64_t last;

	if (!j->max_attempts && !(j->max_attempts = job_max_attempts(r, j->id)))
		j->max_attempts = j->spec >= 0 ? (uint32_t)r->cfg->jobs[j->spec].max_attempts : 1;
	if (j->status == JG_ST_RUNNING) {
		/* The attempt ran from its job.started until the previous
		 * process died, some time before now: we count up to now (the
		 * recovery), an upper bound, rather than a made-up 0. */
		int64_t dur = j->started_at ? now_ms() - j->started_at : 0;
		if (dur < 0)
			dur = 0;	/* the wall clock stepped back */
		if (j->spec < 0)
			runner_job_fail(r, j, -1, 0, "unknown job", dur, 0);
		else
			runner_job_fail(r, j, -1, 0, "interrupted", dur, 1);
		return;
	}
	j->retry_at = 0;
	if (j->last_type == JG_EV_FAILED && (last = log_reader_job_last(r->rd, j->id)) &&
	    log_reader_get(r->rd, last, &ev) == 0 && event_decode(&ev, &v) == 0)
		j->retry_at = v.retry_at_ms;
	if (j->spec >= 0 && j->retry_at > now_ms() && runner_heap_push(r, j) == 0)
		return;
	runner_job_ready(r, j);
}

/* Runner thread, before the loop.  See the essay at the top. */
int runner_recover(Runner *r)
{
	LogEvent ev;
	RJob **all;
	size_t i, n = 0;
	int rc;

	if ((rc = runner_snap_begin(r)) != 0)
		return rc;
	ev.seq = 0;
	for (rc = log_reader_seek(r->rd, 1, &ev); rc == 0 || (rc == JG_ECORRUPT && skip_damaged(r, &ev));
	     rc = log_reader_next(r->rd, &ev)) {
		if (rc != 0)
			continue;	/* skipped */
		r->tail = ev.seq;
		recover_fold(r, &ev);
	}
	if (rc != JG_ENOTFOUND)
		goto out;
	rc = 0;
	if (!(all = malloc((r->map.n + 1) * sizeof *all))) {
		rc = ENOMEM;
		goto out;
	}
	for (i = 0; i < r->map.cap; i++)
		if (r->map.slot[i])
			all[n++] = r->map.slot[i];
	qsort(all, n, sizeof *all, by_id);	/* oldest first into the FIFOs */
	for (i = 0; i < n; i++)
		recover_job(r, all[i]);
	free(all);
	if (n) {
		char cnt[24];

		snprintf(cnt, sizeof cnt, "%zu", n);
		jg_log(JG_INFO, "runner: recovered unfinished jobs", "#jobs", cnt, NULL);
	}
out:
	runner_snap_end(r);
	return rc;
}


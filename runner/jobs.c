/*
 * jobs.c -- job state on the runner thread: the delay heap, the ready
 * FIFOs, the events we append (RunEnt: a LogEntry plus what to do once it
 * is durable), and attempts from start to outcome.  See runner.c for the
 * design.
 */
#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include "runner_int.h"

static void orphans_add(Runner *r, pid_t pgid);

/* ---- the delay heap (min retry_at) */

static void heap_set(Runner *r, int i, RJob *j)
{
	r->heap[i] = j;
	j->heap_at = i;
}

static void heap_fix(Runner *r, int i)
{
	RJob *j = r->heap[i];

	while (i > 0 && r->heap[(i - 1) / 2]->retry_at > j->retry_at) {
		heap_set(r, i, r->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	for (;;) {
		int c = 2 * i + 1;
		if (c >= r->heap_n)
			break;
		if (c + 1 < r->heap_n && r->heap[c + 1]->retry_at < r->heap[c]->retry_at)
			c++;
		if (r->heap[c]->retry_at >= j->retry_at)
			break;
		heap_set(r, i, r->heap[c]);
		i = c;
	}
	heap_set(r, i, j);
}

int runner_heap_push(Runner *r, RJob *j)
{
	if (r->heap_n == r->heap_cap) {
		int cap = r->heap_cap ? r->heap_cap * 2 : 64;
		RJob **h = realloc(r->heap, (size_t)cap * sizeof *h);
		if (!h)
			return ENOMEM;
		r->heap = h, r->heap_cap = cap;
	}
	heap_set(r, r->heap_n++, j);
	heap_fix(r, r->heap_n - 1);
	return 0;
}

void runner_heap_del(Runner *r, RJob *j)
{
	int i = j->heap_at;

	if (i < 0)
		return;
	j->heap_at = -1;
	if (i != --r->heap_n) {
		heap_set(r, i, r->heap[r->heap_n]);
		heap_fix(r, i);
	}
}

/* ---- ready FIFOs */

static void fifo_push(Runner *r, RJob *j)
{
	Spec *s = &r->specs[j->spec];

	j->next = NULL;
	j->prev = s->tail;
	if (s->tail)
		s->tail->next = j;
	else
		s->head = j;
	s->tail = j;
	j->in_fifo = 1;
}

void runner_fifo_del(Runner *r, RJob *j)
{
	Spec *s = &r->specs[j->spec];

	if (!j->in_fifo)
		return;
	if (j->prev)
		j->prev->next = j->next;
	else
		s->head = j->next;
	if (j->next)
		j->next->prev = j->prev;
	else
		s->tail = j->prev;
	j->prev = j->next = NULL;
	j->in_fifo = 0;
}

/* ---- jobs */

RJob *runner_job_new(Runner *r, uint64_t id, const char *name, size_t n)
{
	RJob *j = calloc(1, sizeof *j);

	if (!j)
		return NULL;
	j->id = id;
	if (n > JG_NAME_MAX)
		n = JG_NAME_MAX;
	memcpy(j->name, name, n);
	const JgJob *spec = config_job(r->cfg, j->name, n);
	j->spec = spec ? (int)(spec - r->cfg->jobs) : -1;
	j->max_attempts = spec ? (uint32_t)spec->max_attempts : 1;
	j->status = JG_ST_QUEUED;
	j->heap_at = -1;
	if (map_put(r, j) != 0) {
		free(j);
		return NULL;
	}
	return j;
}

/* Forget j once nothing refers to it: final, durable, no process. */
void runner_job_forget(Runner *r, RJob *j)
{
	if (!log_status_final(j->status) || j->inflight || j->proc || j->waiters ||
	    j->deferred || j->starting)
		return;
	runner_fifo_del(r, j);
	runner_heap_del(r, j);
	map_del(r, j->id);
	free(j);
}

/* ---- events out
 *
 * Every event of ours is durable before anything that depends on it, and
 * no event is ever dropped while the runner runs:
 *
 * - Per job, events wait in j->evq in the order they were made, and only
 *   the head is in the log's hands.  The next one is submitted when the
 *   head is durable.  So a job's events reach the log in order even when a
 *   commit fails: a refused job.started can never be overtaken by the
 *   job.succeeded behind it.  (Different jobs' events still share commits.)
 * - A commit that fails (JG_ESTORAGE: map or disk full; JG_ELMDB) only
 *   delays the event: it is resubmitted after EV_RETRY_MIN_MS, doubling up
 *   to EV_RETRY_MAX_MS, until it commits.  The requests waiting on it (and
 *   the job's deferred ones) are answered with the error at the first
 *   failure, so an api request never waits for an outage to end; the
 *   change itself stands and is written when the log has room.
 * - The job keeps its in-memory status but stays held (inflight) until
 *   its events are durable, and cancel/retry of a job with events not yet
 *   durable wait for them (j->deferred): answers are decided on what the
 *   log says, never on a state it has not recorded.
 * - Only at shutdown (after DRAIN_MAX_NS) or when the log is closed are
 *   unwritten events given up; the next start recovers from the log's view.
 */

/* Log writer thread (or the runner thread, for a refusal it makes
 * itself): the entry is durable or failed; hand it back. */
static void ent_done(LogEntry *e, void *ctx)
{
	Runner *r = ctx;
	RunEnt *x = (RunEnt *)e;

	x->next = NULL;
	pthread_mutex_lock(&r->mu);
	if (r->done_tail)
		r->done_tail->next = x;
	else
		r->done_head = x;
	r->done_tail = x;
	pthread_mutex_unlock(&r->mu);
	runner_wake(r);
}

RunEnt *runner_ent_new(Runner *r)
{
	RunEnt *x = r->free_ents;

	if (x) {
		r->free_ents = x->next;
		buf_reset(&x->e.extra);
		Buf keep = x->e.extra;
		memset(x, 0, sizeof *x);
		x->e.extra = keep;
	} else {
		x = calloc(1, sizeof *x);
	}
	return x;
}

static void ent_release(Runner *r, RunEnt *x)
{
	free(x->e.idem);
	x->e.idem = NULL;
	x->next = r->free_ents;
	r->free_ents = x;
}

void runner_req_defer(RJob *j, RunnerReq *q)
{
	q->next = j->deferred;	/* newest first: evq_pop turns the list round */
	j->deferred = q;
}

void runner_reqs_answer(RunnerReq **list, int rc, uint64_t seq)
{
	RunnerReq *q, *qn;

	for (q = *list, *list = NULL; q; q = qn) {
		qn = q->next;
		q->rc = rc;
		q->seq = seq;
		q->done(q, q->ctx);
	}
}

/* Hand the head of j's evq to the log unless it is there already or
 * waiting to be resubmitted; with the event behind it when the two are a
 * pair (one txn, so still in order).  A refusal (build failure, log closed)
 * comes back through ent_done like a failed commit, on the next turn. */
static void evq_kick(Runner *r, RJob *j)
{
	RunEnt *x = j->evq, *y;
	int rc;

	if (!x || x->submitted || x->retry_ns || (x->pair && !x->jnext))
		return;
	y = x->pair && x->jnext && !x->brc && !x->jnext->brc ? x->jnext : NULL;
	x->submitted = 1;
	r->nsub++;
	if (y) {
		y->submitted = 1;
		r->nsub++;
		if ((rc = log_submit_pair(r->log, &x->e, &y->e)) == 0)
			return;
		x->e.rc = y->e.rc = rc;
		ent_done(&x->e, r);	/* in order: x, then y */
		ent_done(&y->e, r);
		return;
	}
	if ((rc = x->brc) == 0 && (rc = log_submit(r->log, &x->e)) == 0)
		return;
	x->e.rc = rc;
	ent_done(&x->e, r);
}

/* Submit the event built in x (build rc in brc) for job j: it joins the
 * job's evq and goes to the log when all before it are durable. */
void runner_ent_submit(Runner *r, RJob *j, RunEnt *x, int brc)
{
	x->job_id = j->id;
	x->brc = brc;
	x->e.done = ent_done;
	x->e.ctx = r;
	x->jnext = NULL;
	if (j->evq_tail)
		j->evq_tail->jnext = x;
	else
		j->evq = x;
	j->evq_tail = x;
	j->inflight++;
	r->inflight++;
	evq_kick(r, j);
}

/* j's job.started was given up (no memory to build it, or the log closed
 * under it): the log still shows j queued, so it is queued again, a second
 * from now, and its run slot is free for others.  At shutdown it stays
 * queued in the log for the next start. */
static void attempt_not_started(Runner *r, RJob *j)
{
	if (!j->starting)
		return;
	j->starting = 0;
	r->nstarting--;
	r->specs[j->spec].running--;
	j->attempt--;
	j->status = JG_ST_QUEUED;
	if (r->closing_seen)
		return;
	j->retry_at = now_ms() + 1000;
	if (runner_heap_push(r, j) != 0)
		runner_job_ready(r, j);
}

/* The head x of j's evq is done with: durable (rc 0) or given up. */
static void evq_pop(Runner *r, RJob *j, RunEnt *x, int rc)
{
	assert(j->evq == x);
	runner_reqs_answer(&x->reqs, rc, rc ? 0 : x->e.seq);
	if (!(j->evq = x->jnext))
		j->evq_tail = NULL;
	j->inflight--;
	r->inflight--;
	if (x->spawn && rc == 0)
		runner_attempt_spawn(r, j);
	else if (x->spawn)
		attempt_not_started(r, j);
	ent_release(r, x);
	evq_kick(r, j);
	if (!j->inflight && j->deferred) {
		/* Decide the waiting requests on durable state, oldest first. */
		RunnerReq *q = j->deferred, *rev = NULL, *qn;
		for (j->deferred = NULL; q; q = qn) {
			qn = q->next;
			q->next = rev;
			rev = q;
		}
		for (q = rev; q; q = qn) {
			qn = q->next;
			runner_req_run(r, q);
		}
	}
	runner_job_forget(r, j);
}

static void ent_log(int level, const char *msg, const RunEnt *x, int rc)
{
	char id[24];

	snprintf(id, sizeof id, "%llu", (unsigned long long)x->job_id);
	jg_log(level, msg, "job", x->e.job, "#job_id", id, "type", log_type_name(x->e.type),
	       rc ? "error" : NULL, jg_strerror(rc), NULL);
}

/* Runner thread: the log is done with x: durable (rc 0) or refused. */
void runner_ent_finish(Runner *r, RunEnt *x)
{
	RJob *j = map_get(r, x->job_id);
	int rc = x->e.rc;

	assert(j && x->submitted);
	x->submitted = 0;
	r->nsub--;
	if (j->evq != x) {
		/* The second of a pair whose first was refused (same txn, same
		 * rc): it goes again with the first. */
		assert(rc != 0);
		return;
	}
	if (rc == 0) {
		if (x->failures)
			ent_log(JG_INFO, "runner: event written after retries", x, 0);
		evq_pop(r, j, x, 0);
		return;
	}
	if (x->brc || rc == JG_ECLOSED) {
		/* Nothing to write, or no log to write to: give it up. */
		ent_log(JG_ERROR, "runner: event not written", x, rc);
		evq_pop(r, j, x, rc);
		return;
	}
	if (!x->failures++)
		ent_log(JG_ERROR, "runner: event not written; retrying until it is", x, rc);
	/* Answer who waits now (503 storage_full), not when the outage ends. */
	runner_reqs_answer(&x->reqs, rc, 0);
	runner_reqs_answer(&j->deferred, rc, 0);
	if (r->drain_until_ns && now_ns() >= r->drain_until_ns) {
		x->retry_ns = INT64_MAX;	/* shutting down: left to runner_ent_drop_all */
		return;
	}
	x->backoff_ms = x->backoff_ms ? x->backoff_ms * 2 : EV_RETRY_MIN_MS;
	if (x->backoff_ms > EV_RETRY_MAX_MS)
		x->backoff_ms = EV_RETRY_MAX_MS;
	x->retry_ns = now_ns() + x->backoff_ms * 1000000;
	x->next = r->retry_head;
	r->retry_head = x;
}

/* Runner thread: resubmit the refused events due at t. */
void runner_ent_retry_due(Runner *r, int64_t t)
{
	RunEnt **pp = &r->retry_head, *x;

	while ((x = *pp) != NULL) {
		if (x->retry_ns > t) {
			pp = &x->next;
			continue;
		}
		*pp = x->next;
		x->next = NULL;
		x->retry_ns = 0;
		evq_kick(r, map_get(r, x->job_id));
	}
}

/* Mono ns of the next resubmit, INT64_MAX for none. */
int64_t runner_ent_retry_next(Runner *r)
{
	int64_t t = INT64_MAX;

	for (RunEnt *x = r->retry_head; x; x = x->next)
		if (x->retry_ns < t)
			t = x->retry_ns;
	return t;
}

/* Runner thread, at exit: give up what was never written (none of it is
 * in the log's hands), answering its requests with JG_ECLOSED. */
void runner_ent_drop_all(Runner *r)
{
	size_t i;
	int dropped = 0;

	for (i = 0; i < r->map.cap; i++) {
		RJob *j = r->map.slot[i];
		RunEnt *x, *xn;

		if (!j)
			continue;
		for (x = j->evq; x; x = xn) {
			xn = x->jnext;
			assert(!x->submitted);
			runner_reqs_answer(&x->reqs, JG_ECLOSED, 0);
			event_entry_free(&x->e);
			free(x);
			dropped++;
		}
		j->evq = j->evq_tail = NULL;
		j->inflight = 0;
		runner_reqs_answer(&j->deferred, JG_ECLOSED, 0);
		runner_reqs_answer(&j->waiters, JG_ECLOSED, 0);
	}
	r->retry_head = NULL;
	r->inflight = 0;
	if (dropped)
		jg_log(JG_ERROR, "runner: closed with events not written; the next start "
		       "recovers from the log", NULL);
}

/* ---- attempts */

/* The attempt of j ended without success.  allow_retry: apply the job's
 * retry policy (attempts left -> retry_at and back to queued). */
void runner_job_fail(Runner *r, RJob *j, int exit_code, int sig, const char *err,
		     int64_t dur_ms, int allow_retry)
{
	int64_t retry_at = 0;

	if (allow_retry && j->spec >= 0 &&
	    (j->attempt < j->max_attempts || allow_retry == RETRY_ANYWAY))
		retry_at = now_ms() + runner_backoff_ms(r->cfg->jobs[j->spec].backoff_s,
							j->attempt, &r->rng);
	j->status = retry_at ? JG_ST_QUEUED : JG_ST_FAILED;
	EMIT(r, j, x, event_failed(&x->e, j->name, j->id, j->attempt, exit_code, sig, err,
				   retry_at, dur_ms), NULL);
	if (retry_at) {
		j->retry_at = retry_at;
		if (runner_heap_push(r, j) != 0)
			runner_job_ready(r, j);	/* no memory for the heap: run it now */
	}
}

/* Queued j may run now: into its FIFO, or failed if no longer configured. */
void runner_job_ready(Runner *r, RJob *j)
{
	j->retry_at = 0;
	if (j->spec < 0) {
		runner_job_fail(r, j, -1, 0, "unknown job", 0, 0);
		return;
	}
	fifo_push(r, j);
}

void runner_payload(const LogEvent *ev, const char **p, size_t *n)
{
	static const char pre[] = ",\"payload\":";
	EventView v;

	if (ev->pay_len > sizeof pre - 1 &&
	    memcmp(ev->json + ev->pay_off, pre, sizeof pre - 1) == 0) {
		*p = ev->json + ev->pay_off + sizeof pre - 1;
		*n = ev->pay_len - (sizeof pre - 1);
	} else if (event_decode(ev, &v) == 0 && v.payload.n) {
		*p = v.payload.p, *n = v.payload.n;
	} else {
		*p = "null", *n = 4;
	}
}

int runner_snap_begin(Runner *r)
{
	int rc = 0;

	if (!r->snap && (rc = log_reader_begin(r->rd)) == 0)
		r->snap = 1;
	return rc;
}

void runner_snap_end(Runner *r)
{
	if (r->snap)
		log_reader_end(r->rd);
	r->snap = 0;
}

/* Start the next attempt of queued j with payload p[0..n).  An echo
 * completes at once (job.started and job.succeeded go to the log as a
 * pair).  A process takes a run slot now but is spawned only once
 * job.started is durable (runner_attempt_spawn): no process ever runs
 * that the log does not show as started, even while commits fail. */
void runner_attempt_start(Runner *r, RJob *j, const char *p, size_t n)
{
	const JgJob *spec = &r->cfg->jobs[j->spec];
	RunEnt *st;

	j->attempt++;
	j->status = JG_ST_RUNNING;
	if (spec->builtin_echo) {
		/* Nothing runs, so nothing waits for job.started to be durable:
		 * it and job.succeeded share one txn, both or neither.  (Only
		 * when memory runs out can one go alone: a started that cannot
		 * be built or a succeeded that cannot be allocated.) */
		RunEnt *su;
		runner_stats_started(r->stats, j->spec);
		st = runner_ent_new(r);
		su = runner_ent_new(r);
		if (st && su)
			st->pair = 1;		/* evq_kick holds it until su is queued */
		if (st)
			runner_ent_submit(r, j, st, event_started(&st->e, j->name, j->id,
								  j->attempt));
		j->status = JG_ST_SUCCEEDED;
		if (su && n > (size_t)r->cfg->max_result_bytes) {
			/* The result cap holds for echo too: cut as stdout is. */
			Buf b = {0};

			runner_result_json(p, (size_t)r->cfg->max_result_bytes, 1, &b);
			runner_ent_submit(r, j, su, b.oom ? ENOMEM :
					  event_succeeded(&su->e, j->name, j->id, j->attempt,
							  0, b.p, b.len, 1, 0));
			buf_free(&b);
		} else if (su) {
			runner_ent_submit(r, j, su, event_succeeded(&su->e, j->name, j->id,
								    j->attempt, 0, p, n, 0, 0));
		}
		if (!st || !su)
			jg_log(JG_ERROR, "runner: out of memory", "job", j->name, NULL);
		runner_stats_finished(r->stats, j->spec, JG_ST_SUCCEEDED, 0);
		return;
	}
	r->specs[j->spec].running++;
	r->nstarting++;
	j->starting = 1;
	if (!(st = runner_ent_new(r))) {
		jg_log(JG_ERROR, "runner: out of memory", "job", j->name, NULL);
		runner_attempt_spawn(r, j);	/* as if durable: better than stuck */
		return;
	}
	st->spawn = 1;
	runner_ent_submit(r, j, st, event_started(&st->e, j->name, j->id, j->attempt));
}

/* Runner thread: a spawn did not happen (rc): free the slot, record why
 * (hint: runner_proc_spawn's spawn_hint, or NULL). */
static void spawn_failed(Runner *r, RJob *j, int rc, const char *hint)
{
	Spec *s = &r->specs[j->spec];
	char msg[160];

	runner_resolve(r->cfg->jobs[j->spec].argv[0], s->path, sizeof s->path);	/* PATH may have changed */
	snprintf(msg, sizeof msg, "spawn failed: %s%s", jg_strerror(rc), hint ? hint : "");
	s->running--;
	runner_stats_finished(r->stats, j->spec, JG_ST_FAILED, 0);
	runner_job_fail(r, j, -1, 0, msg, 0, 1);
}

/* j's payload cannot be read from the log (a record that no longer
 * decodes): the attempt fails for good, since running the job on any
 * other input would record a result for a payload it never saw. */
static void payload_unreadable(Runner *r, RJob *j, int rc)
{
	char msg[160], id[24];

	snprintf(id, sizeof id, "%llu", (unsigned long long)j->id);
	jg_log(JG_ERROR, "cannot read a job's payload from the log", "job", j->name,
	       "#job_id", id, "error", jg_strerror(rc), NULL);
	snprintf(msg, sizeof msg, "payload unreadable: %s", jg_strerror(rc));
	runner_job_fail(r, j, -1, 0, msg, 0, 0);
}

/* Runner thread: j's job.started is durable: hand its process to a
 * spawner (the run slot is already held), or record why it cannot run. */
void runner_attempt_spawn(Runner *r, RJob *j)
{
	const JgJob *spec = &r->cfg->jobs[j->spec];
	Spec *s = &r->specs[j->spec];
	const char *p = "null";
	size_t n = 4, plen;
	LogEvent ev;
	RProc *rp;
	int rc;

	if (!j->starting)
		return;
	j->starting = 0;
	r->nstarting--;
	/* Counted once job.started is durable: a start given up
	 * (attempt_not_started) is no attempt. */
	runner_stats_started(r->stats, j->spec);
	if (r->closing_seen) {
		/* Its job.started is durable, but the server is stopping:
		 * nothing was run, so another attempt follows whatever the
		 * count (a last attempt must not be used up unrun). */
		s->running--;
		runner_stats_finished(r->stats, j->spec, JG_ST_FAILED, 0);
		runner_job_fail(r, j, -1, 0, "interrupted", 0, RETRY_ANYWAY);
		return;
	}
	if ((rc = runner_snap_begin(r)) != 0) {
		spawn_failed(r, j, rc, NULL);	/* a passing condition: retried */
		return;
	}
	if ((rc = log_reader_get(r->rd, j->id, &ev)) != 0) {
		s->running--;
		runner_stats_finished(r->stats, j->spec, JG_ST_FAILED, 0);
		payload_unreadable(r, j, rc);
		return;
	}
	runner_payload(&ev, &p, &n);
	/* The spawner gets its own copies: the snapshot ends with this turn
	 * and s->path is rewritten after a failed spawn. */
	plen = strlen(s->path) + 1;
	if (!(rp = calloc(1, sizeof *rp)) || !(rp->sp_buf = malloc(plen + n))) {
		free(rp);
		spawn_failed(r, j, ENOMEM, NULL);
		return;
	}
	memcpy(rp->sp_buf, s->path, plen);
	memcpy(rp->sp_buf + plen, p, n);
	rp->sp = (RunnerSpawn){ .path = rp->sp_buf, .argv = spec->argv, .job_id = j->id,
				.job = j->name, .attempt = j->attempt,
				.in = rp->sp_buf + plen, .in_len = n,
				.out_cap = (size_t)r->cfg->max_result_bytes };
	rp->job = j;
	j->proc = rp;
	runner_spawn_push(r, rp);
}

/* Runner thread: rp is back from its spawner (spawnq.c). */
void runner_attempt_spawned(Runner *r, RProc *rp)
{
	const JgJob *spec = &r->cfg->jobs[rp->job->spec];
	RJob *j = rp->job;

	rp->spawning = 0;
	r->nspawning--;
	free(rp->sp_buf);
	rp->sp_buf = NULL;
	if (rp->sp_rc != 0) {
		int rc = rp->sp_rc, why = rp->why;
		const char *hint = rp->p.spawn_hint;
		j->proc = NULL;
		free(rp);
		if (why == WHY_CANCEL) {
			/* Canceled while it was being spawned: a cancel it is,
			 * and its requests wait for that event, not a retry. */
			RunnerReq *q = j->waiters;
			j->waiters = NULL;
			r->specs[j->spec].running--;
			j->status = JG_ST_CANCELED;
			runner_stats_finished(r->stats, j->spec, JG_ST_CANCELED, 0);
			EMIT(r, j, x, event_canceled(&x->e, j->name, j->id, j->attempt,
						     q ? q->actor : ""), q);
			return;
		}
		spawn_failed(r, j, rc, hint);
		return;
	}
	rp->start_ns = now_ns();
	rp->deadline_ns = rp->start_ns + (int64_t)spec->timeout_s * 1000000000;
	r->procs[r->nprocs++] = rp;
	runner_stats_running(r->stats, 1);
	if (rp->why != WHY_NONE && runner_proc_exited(&rp->p)) {
		/* Canceled while it was being spawned, but it already ran to
		 * its end: that outcome stands.  The cancels are decided once
		 * it is durable, as in runner_req_cancel. */
		RunnerReq *q, *qn;

		rp->why = WHY_NONE;
		for (q = j->waiters, j->waiters = NULL; q; q = qn) {
			qn = q->next;
			runner_req_defer(j, q);
		}
	} else if (rp->why != WHY_NONE) {
		/* Stopped (a cancel) while it was being spawned. */
		runner_proc_terminate(&rp->p);
		rp->kill_ns = rp->start_ns + rp->stop_grace_ns;
	}
}

/* Start what the caps allow, one job per spec per pass.  A pass begins
 * at the spec after the last one that got a slot, so when max_running is
 * what holds jobs back, freed slots go round the specs in turn. */
void runner_dispatch(Runner *r)
{
	const Config *c = r->cfg;
	int progress = 1, k, rc;

	while (progress) {
		int first = r->rr;

		progress = 0;
		for (k = 0; k < c->njobs; k++) {
			int i = (first + k) % c->njobs;
			Spec *s = &r->specs[i];
			RJob *j = s->head;
			LogEvent ev;
			const char *p;
			size_t n;

			if (!j)
				continue;
			if (!c->jobs[i].builtin_echo &&
			    (s->running >= c->jobs[i].concurrency ||
			     r->nprocs + r->nspawning + r->nstarting >= c->max_running))
				continue;
			p = "null", n = 4;
			rc = 0;
			if (c->jobs[i].builtin_echo) {	/* a process reads it at spawn */
				if (runner_snap_begin(r) != 0)
					return;
				if ((rc = log_reader_get(r->rd, j->id, &ev)) == 0)
					runner_payload(&ev, &p, &n);
			}
			runner_fifo_del(r, j);
			if (rc == 0)
				runner_attempt_start(r, j, p, n);
			else
				payload_unreadable(r, j, rc);
			progress = 1;
			r->rr = (i + 1) % c->njobs;
		}
	}
}

/* The process of rp ended (p.status valid): record the outcome. */
void runner_attempt_end(Runner *r, int idx)
{
	RProc *rp = r->procs[idx];
	RJob *j = rp->job;
	RunnerProc *p = &rp->p;
	int64_t dur = (now_ns() - rp->start_ns) / 1000000;
	int code = WIFEXITED(p->status) ? WEXITSTATUS(p->status) : -1;
	int sig = WIFSIGNALED(p->status) ? WTERMSIG(p->status) : 0;
	Buf b = {0};

	r->procs[idx] = r->procs[--r->nprocs];
	r->specs[j->spec].running--;
	runner_stats_running(r->stats, -1);
	j->proc = NULL;
	if (rp->why == WHY_CANCEL) {
		RunnerReq *q = j->waiters;
		j->waiters = NULL;
		j->status = JG_ST_CANCELED;
		EMIT(r, j, x, event_canceled(&x->e, j->name, j->id, j->attempt, q ? q->actor : ""), q);
	} else if (rp->why == WHY_CLOSE) {
		runner_job_fail(r, j, code, sig, "interrupted", dur, 1);
	} else if (rp->why == WHY_TIMEOUT) {
		runner_job_fail(r, j, code, sig, "timeout", dur, 1);
	} else if (code == 0) {
		/* Only whitespace dropped at the cap: a JSON result lost nothing,
		 * a string result lost its tail. */
		int json = runner_result_json(p->out.p ? p->out.p : "", p->out.len,
					      p->out_truncated, &b);
		int cut = p->out_truncated || (p->out_ws_cut && !json);

		j->status = JG_ST_SUCCEEDED;
		EMIT(r, j, x, event_succeeded(&x->e, j->name, j->id, j->attempt, 0, b.p, b.len,
					      cut, dur), NULL);
	} else {
		runner_error_text(p, &b);
		buf_add(&b, "", 1);
		runner_job_fail(r, j, code, sig, b.oom ? "failed" : b.p, dur, 1);
	}
	runner_stats_finished(r->stats, j->spec,
			      rp->why == WHY_CANCEL ? JG_ST_CANCELED :
			      j->status == JG_ST_SUCCEEDED ? JG_ST_SUCCEEDED : JG_ST_FAILED, dur);
	buf_free(&b);
	runner_proc_release(p);
	if (!runner_proc_reap_group(rp->p.pid))
		orphans_add(r, rp->p.pid);
	free(rp);
	runner_job_forget(r, j);
}

/* Reap what group pgid still holds from the loop until it is empty. */
static void orphans_add(Runner *r, pid_t pgid)
{
	if (r->norph == r->orph_cap) {
		int cap = r->orph_cap ? r->orph_cap * 2 : 16;
		Orphans *o = realloc(r->orph, (size_t)cap * sizeof *o);
		if (!o)
			return;		/* init (or nobody) reaps them */
		r->orph = o, r->orph_cap = cap;
	}
	r->orph[r->norph++] = (Orphans){ pgid, now_ns() + ORPHAN_NS };
}

/* Runner thread: reap left-behind groups; drop the empty or expired. */
void runner_orphans_reap(Runner *r)
{
	int64_t t = now_ns();
	int i, k;

	for (i = r->norph - 1; i >= 0; i--) {
		pid_t pg = r->orph[i].pgid;
		/* A live job now leads pg: the old group is long empty. */
		for (k = 0; k < r->nprocs && r->procs[k]->p.pid != pg; k++) {}
		if (k == r->nprocs && !runner_proc_reap_group(pg) && t < r->orph[i].until_ns)
			continue;
		if (k == r->nprocs && t >= r->orph[i].until_ns)
			jg_log(JG_WARN, "runner: job processes outlived their group leader", NULL);
		r->orph[i] = r->orph[--r->norph];
	}
}

/* Ask rp's group to stop: SIGTERM (and SIGCONT) now, SIGKILL after
 * grace_ns.  0 when its leader had already exited on its own (since the
 * last poll): that outcome stands, and a cancel, timeout or shutdown must
 * not rewrite it. */
int runner_attempt_stop(RProc *rp, int why, int64_t grace_ns)
{
	if (!rp->spawning && rp->why == WHY_NONE && runner_proc_exited(&rp->p))
		return 0;
	if (rp->why == WHY_NONE || why == WHY_CANCEL)
		rp->why = why;
	if (rp->kill_ns)
		return 1;	/* already stopping: keep the earlier SIGKILL */
	if (rp->spawning) {
		rp->stop_grace_ns = grace_ns;	/* sent once the pid is known */
		return 1;
	}
	runner_proc_terminate(&rp->p);
	rp->kill_ns = now_ns() + grace_ns;
	return 1;
}


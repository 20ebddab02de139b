/*
 * runner.c -- the runner thread ("jg-run"): which job runs when, and the
 * events that record it.  Spawning and capture are in spawn.c, metrics in
 * metrics.c; docs/runner.md is the user-facing description.
 *
 * Source of truth.  The runner keeps in memory only jobs that are not
 * final (plus final ones whose last event is not durable yet), each as an
 * RJob in a hash map by id.  It is the only appender of status events of
 * existing jobs, so after start-up it reads from the log only job.enqueued
 * events (new work), and its own view of every other transition is
 * authoritative: it changes the RJob, then queues the event.  Each job's
 * events reach the log in that order, one commit after the other.
 *
 * Wake-ups.  The thread sleeps in poll() on an eventfd, the pidfds and
 * pipes of its processes, with a timeout to the nearest deadline (a
 * retry_at, a timeout, a SIGKILL after grace).  The eventfd is written by
 * the log watcher (new head: tail the log), by done() of our entries
 * (durable: answer requests, forget final jobs) and by runner_submit and
 * runner_close.  An atomic flag makes that one write per wake-up, not one
 * per event.  Nothing polls SQLite or sleeps.
 *
 * Scheduling.  Runnable jobs wait in one FIFO per configured job; a pass
 * takes one job from each FIFO in turn while that job's running count is
 * below its concurrency and the process count below cfg->max_running.
 * Jobs waiting for a retry sit in a min-heap by retry_at (wall clock, as
 * it is stored in the event).  Builtin echo has no process: a new echo job
 * is completed while its enqueued event is in hand (started + succeeded,
 * result = payload), which costs no extra log read.
 *
 * Durability.  A job's events go to the log one at a time, in order; one
 * the log refuses (map or disk full) is resubmitted with backoff until it
 * commits, never dropped (jobs.c, "events out").  A process is spawned
 * only once its job.started is durable, so nothing runs that the log does
 * not show.  Requests (cancel/retry) are decided only on a job whose
 * events are all durable (else they wait) and answered from the done() of
 * the event they caused, so the api answers only durable outcomes.
 *
 * Recovery (start-up, before the first poll).  One pass over the log
 * folds each job's status and attempt from the binary headers only; jobs
 * become final and are dropped as the pass goes.  For the survivors the
 * enqueued event is decoded for max_attempts (a job.retried overrides it)
 * and a job.failed last event for retry_at.  A job whose last event is
 * job.started was running when the previous process died: it gets
 * job.failed "interrupted", retried by its policy.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>

#include "runner_int.h"

void runner_wake(Runner *r)
{
	uint64_t one = 1;

	if (!atomic_exchange(&r->wake_pending, 1))
		if (write(r->efd, &one, sizeof one) < 0) { /* counter full: awake anyway */ }
}

/* ---- the loop */

/* Shutting down and the time to get events written is up: no resubmits. */
static int drain_over(const Runner *r, int64_t t)
{
	return r->drain_until_ns && t >= r->drain_until_ns;
}

/* Runner thread: reap every exited child of ours that no one waits for,
 * and say whether one is left for its owner (1: the group sweep may have
 * work).  As a child subreaper the gateway inherits what a job leaves
 * behind: a process that left the job's group (`timeout`, `set -m`) or
 * its session (`setsid`) outlives the leader's group kill, and when it
 * exits nothing else reaps it: it stayed a zombie for the gateway's life,
 * and, being listed first, hid every later exit from this walk.  The
 * reaper process is reaped by reaper.c (at once: it says so).  Left
 * alone: a job leader (its exit belongs to its pidfd) and, while a spawn
 * is in flight, anything in our session (a new leader the runner does not
 * know yet; one in another session cannot be that: a group leader cannot
 * call setsid, short of moving to another group first).  The kernel
 * lists the oldest child first, so one left alone stops the walk until
 * its owner reaps it. */
static int reap_strays(Runner *r)
{
	static pid_t own_sid;
	pid_t z;
	int k, n;

	if (!own_sid)
		own_sid = getsid(0);
	for (n = 0; n < 64 && (z = runner_child_exited()) > 0; n++) {
		for (k = 0; k < r->nprocs; k++)	/* p is a spawner's while spawning */
			if (!r->procs[k]->spawning && r->procs[k]->p.pid == z)
				break;
		if (k < r->nprocs)
			return 1;
		if (runner_reaper_exited(z))
			continue;
		if (r->nspawning && getsid(z) == own_sid)
			return 1;
		if (waitpid(z, NULL, WNOHANG) <= 0)
			return 1;	/* not ours after all: leave it */
	}
	return n == 64;
}

/* Take queued done entries and requests; note a close request. */
static void take_inputs(Runner *r, RunEnt **done, RProc **spawned, RunnerReq **reqs,
			int *closing)
{
	int first = 0;

	pthread_mutex_lock(&r->mu);
	*done = r->done_head;
	r->done_head = r->done_tail = NULL;
	*spawned = r->spawned_head;
	r->spawned_head = r->spawned_tail = NULL;
	*reqs = r->req_head;
	r->req_head = r->req_tail = NULL;
	r->nreq = 0;
	*closing = r->closing;
	if (*closing && !r->closing_seen) {
		r->closing_seen = 1;
		r->close_at_ns = now_ns() + (int64_t)r->grace_s * 1000000000;
		first = 1;
	}
	pthread_mutex_unlock(&r->mu);
	/* Say why the stop takes a while.  Count the processes the spawners
	 * are starting too (those still waiting for their job.started to be
	 * durable are recorded interrupted instead and hold nothing up). */
	if (first && r->nprocs + r->nspawning) {
		char n[24], g[24];

		snprintf(n, sizeof n, "%d", r->nprocs + r->nspawning);
		snprintf(g, sizeof g, "%d", r->grace_s);
		jg_log(JG_INFO, "waiting for running jobs before stopping them", "#running", n,
		       "#grace_s", g, NULL);
	}
}

static void timers(Runner *r, int closing)
{
	int64_t t = now_ns(), wall = now_ms();
	int i;

	for (i = 0; i < r->nprocs; i++) {
		RProc *rp = r->procs[i];
		if (closing && t >= r->close_at_ns)
			runner_attempt_stop(rp, WHY_CLOSE, CLOSE_KILL_NS);
		if (rp->why == WHY_NONE && t >= rp->deadline_ns)
			runner_attempt_stop(rp, WHY_TIMEOUT, KILL_GRACE_NS);
		if (rp->kill_ns && t >= rp->kill_ns) {
			runner_proc_signal(&rp->p, SIGKILL);
			rp->kill_ns = INT64_MAX;	/* sent; wait for the exit */
		}
	}
	if (r->norph)
		runner_orphans_reap(r);
	if (r->nprocs && t >= r->sweep_ns) {
		/* Each group's waitid walks all our children: with many
		 * processes a sweep costs ms, so it runs only when a child has
		 * exited, and the next one waits at least 10 times as long as
		 * this one took (from its end: never back to back). */
		int64_t t1;

		if (reap_strays(r))
			for (i = 0; i < r->nprocs; i++)
				if (!r->procs[i]->spawning && r->procs[i]->p.pid > 0 &&
				    !r->procs[i]->p.reaped)
					runner_proc_reap_members(r->procs[i]->p.pid);
		t1 = now_ns();
		r->sweep_ns = t1 + (10 * (t1 - t) > SWEEP_NS ? 10 * (t1 - t) : SWEEP_NS);
	}
	runner_reaper_retry();
	if (r->retry_head && !drain_over(r, t))
		runner_ent_retry_due(r, t);
	while (!closing && r->heap_n && r->heap[0]->retry_at <= wall) {
		RJob *j = r->heap[0];
		runner_heap_del(r, j);
		runner_job_ready(r, j);
	}
}

/* Milliseconds until the nearest deadline, -1 for none.  One side effect,
 * on purpose: reaper notes still waiting are sent here, the last moment
 * before the runner sleeps. */
static int poll_timeout(Runner *r, int closing)
{
	int64_t t = now_ns(), next = INT64_MAX, ms;
	int i;

	if (r->more)
		return 0;
	for (i = 0; i < r->nprocs; i++) {
		RProc *rp = r->procs[i];
		if (rp->why == WHY_NONE && rp->deadline_ns < next)
			next = rp->deadline_ns;
		if (rp->kill_ns && rp->kill_ns != INT64_MAX && rp->kill_ns < next)
			next = rp->kill_ns;
	}
	if (closing && r->nprocs && r->close_at_ns < next)
		next = r->close_at_ns;
	if (closing && r->drain_until_ns && r->drain_until_ns < next)
		next = r->drain_until_ns;
	if (!closing && r->heap_n) {
		int64_t w = (r->heap[0]->retry_at - now_ms()) * 1000000 + t;
		if (w < next)
			next = w;
	}
	if (r->retry_head && !drain_over(r, t)) {
		int64_t w = runner_ent_retry_next(r);
		if (w < next)
			next = w;
	}
	if (r->nprocs && r->sweep_ns < next)
		next = r->sweep_ns;
	if (r->norph && t + ORPHAN_POLL_MS * 1000000LL < next)
		next = t + ORPHAN_POLL_MS * 1000000LL;
	if (runner_reaper_retry() && t + 100 * 1000000LL < next)	/* sends, see above */
		next = t + 100 * 1000000LL;	/* the reaper's pipe had no room */
	if (next == INT64_MAX)
		return -1;
	ms = (next - t + 999999) / 1000000;
	return ms < 0 ? 0 : ms > 60000 ? 60000 : (int)ms;
}

/* pollfds: the eventfd, then each process's slice. */
static int build_pollfds(Runner *r)
{
	int need = 1 + r->nprocs * RUNNER_PROC_FDS, n = 1, i;

	if (need > r->pf_cap) {
		struct pollfd *pf = realloc(r->pf, (size_t)need * sizeof *pf);
		if (!pf)
			return -1;
		r->pf = pf, r->pf_cap = need;
	}
	r->pf[0] = (struct pollfd){ .fd = r->efd, .events = POLLIN };
	for (i = 0; i < r->nprocs; i++) {
		RProc *rp = r->procs[i];
		rp->pf_at = n;
		rp->pf_n = runner_proc_fds(&rp->p, r->pf + n);
		n += rp->pf_n;
	}
	return n;
}

static void procs_step(Runner *r)
{
	int i, k;

	/* Backwards: runner_attempt_end moves the last process into slot i. */
	for (i = r->nprocs - 1; i >= 0; i--) {
		RProc *rp = r->procs[i];
		for (k = 0; k < rp->pf_n && !r->pf[rp->pf_at + k].revents; k++) {}
		if (k < rp->pf_n && runner_proc_step(&rp->p, r->pf + rp->pf_at, rp->pf_n))
			runner_attempt_end(r, i);
	}
}

/* One turn: returns 0 when closed and drained. */
static int loop_once(Runner *r)
{
	RunEnt *done, *dn;
	RProc *sp, *spn;
	RunnerReq *reqs, *qn;
	uint64_t v;
	int closing, n;

	n = build_pollfds(r);
	if (n > 0 && poll(r->pf, (nfds_t)n, poll_timeout(r, r->closing_seen)) < 0 &&
	    errno != EINTR)
		jg_log(JG_ERROR, "runner: poll failed", "error", strerror(errno), NULL);
	if (n > 0 && r->pf[0].revents) {
		/* Read, then clear, then take: a push after the clear writes
		 * the eventfd again; one between read and clear is taken
		 * below.  (Clear-then-read could eat a write and leave the
		 * flag set with the eventfd empty: a lost wake-up.) */
		if (read(r->efd, &v, sizeof v) < 0) { /* EAGAIN: raced, fine */ }
		atomic_store(&r->wake_pending, 0);
	}
	take_inputs(r, &done, &sp, &reqs, &closing);
	for (; done; done = dn) {
		dn = done->next;
		runner_ent_finish(r, done);
	}
	for (; sp; sp = spn) {
		spn = sp->snext;
		runner_attempt_spawned(r, sp);
	}
	if (n > 0)
		procs_step(r);
	runner_tail(r, closing);
	for (; reqs; reqs = qn) {
		qn = reqs->next;
		if (closing)
			runner_req_answer(reqs, JG_ECLOSED);
		else
			runner_req_run(r, reqs);
	}
	timers(r, closing);
	if (!closing)
		runner_dispatch(r);
	runner_snap_end(r);
	if (!closing || r->nprocs || r->nspawning || r->norph)
		return 1;
	if (!r->drain_until_ns)
		r->drain_until_ns = now_ns() + DRAIN_MAX_NS;
	if (r->nsub)
		return 1;	/* the log answers each entry it holds: wait for it */
	return r->inflight > 0 && now_ns() < r->drain_until_ns;
}

static void *runner_main(void *arg)
{
	Runner *r = arg;
	sigset_t pipe;
	int rc;

	pthread_setname_np(pthread_self(), "jg-run");
	/* A write to a child's closed stdin gives EPIPE, not a process kill. */
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe, NULL);
	if ((rc = runner_recover(r)) != 0)
		jg_log(JG_ERROR, "runner: recovery failed", "error", jg_strerror(rc), NULL);
	runner_dispatch(r);	/* recovered work: nothing else would wake us for it */
	runner_snap_end(r);
	while (loop_once(r)) {}
	runner_reaper_retry();		/* best effort: the "-" of the last groups */
	runner_ent_drop_all(r);
	return NULL;
}

/* ---- public */

static void on_head(void *ctx, uint64_t head)
{
	(void)head;
	runner_wake(ctx);	/* log writer thread: just runner_wake */
}

/* Any thread (before log_start).  See runner.h. */
int runner_open(Runner **out, const Config *cfg, Log *log)
{
	Runner *r = calloc(1, sizeof *r);
	int rc, i;

	if (!r)
		return ENOMEM;
	r->cfg = cfg;
	r->log = log;
	r->efd = -1;
	pthread_mutex_init(&r->mu, NULL);
	pthread_mutex_init(&r->sq_mu, NULL);
	pthread_cond_init(&r->sq_cv, NULL);
	r->rng = (uint64_t)jg_now_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)r;
	if (!(r->specs = calloc((size_t)cfg->njobs + 1, sizeof *r->specs)) ||
	    !(r->procs = calloc((size_t)(cfg->max_running > 0 ? cfg->max_running : 1),
				sizeof *r->procs))) {
		rc = ENOMEM;
		goto fail;
	}
	for (i = 0; i < cfg->njobs; i++)
		if (!cfg->jobs[i].builtin_echo && cfg->jobs[i].argv)
			runner_resolve(cfg->jobs[i].argv[0], r->specs[i].path, sizeof r->specs[i].path);
	if ((rc = runner_reaper_start()) != 0)
		jg_log(JG_WARN, "runner: cannot start the reaper process; a job's own children "
		       "may outlive a killed gateway", "error", strerror(rc), NULL);
	if ((r->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
		rc = errno;
		goto fail;
	}
	if ((rc = runner_stats_open(&r->stats, cfg)) != 0 ||
	    (rc = log_reader_open(log, &r->rd)) != 0 ||
	    (rc = log_watch(log, on_head, r)) != 0)
		goto fail;
	*out = r;
	return 0;
fail:
	runner_close(r, 0);
	return rc;
}

/* Caller's thread (after log_start).  See runner.h. */
int runner_start(Runner *r)
{
	int rc;

	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		jg_log(JG_WARN, "runner: cannot become child subreaper", "error", strerror(errno), NULL);
	runner_spawners_start(r);
	rc = pthread_create(&r->th, NULL, runner_main, r);

	if (rc == 0)
		r->started = 1;
	return rc;
}

/* Any thread. */
int runner_submit(Runner *r, RunnerReq *q)
{
	int rc = 0;

	q->next = NULL;
	pthread_mutex_lock(&r->mu);
	if (r->closing)
		rc = JG_ECLOSED;
	else if (r->nreq >= REQ_MAX)
		rc = JG_EFULL;
	else {
		if (r->req_tail)
			r->req_tail->next = q;
		else
			r->req_head = q;
		r->req_tail = q;
		r->nreq++;
	}
	pthread_mutex_unlock(&r->mu);
	if (rc == 0)
		runner_wake(r);
	return rc;
}

/* Any thread. */
void runner_metrics(Runner *r, Buf *out)
{
	runner_stats_write(r->stats, out);
}

/* Caller's thread; the log must still be open (it records what stops). */
void runner_close(Runner *r, int grace_s)
{
	size_t i;

	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->closing = 1;
	r->grace_s = grace_s < 0 ? 0 : grace_s;
	pthread_mutex_unlock(&r->mu);
	if (r->started) {
		runner_wake(r);
		pthread_join(r->th, NULL);
	}
	runner_spawners_stop(r);	/* after the last process: see spawnq.c */
	/* After this the writer can no longer call on_head(r): safe to free. */
	log_unwatch(r->log, on_head, r);
	for (i = 0; i < r->map.cap; i++)
		free(r->map.slot[i]);
	runner_map_free(&r->map);
	while (r->free_ents) {
		RunEnt *x = r->free_ents;
		r->free_ents = x->next;
		event_entry_free(&x->e);
		free(x);
	}
	log_reader_close(r->rd);
	runner_stats_close(r->stats);
	if (r->efd >= 0)
		close(r->efd);
	pthread_mutex_destroy(&r->mu);
	pthread_mutex_destroy(&r->sq_mu);
	pthread_cond_destroy(&r->sq_cv);
	free(r->heap);
	free(r->orph);
	free(r->pf);
	free(r->procs);
	free(r->specs);
	free(r);
}

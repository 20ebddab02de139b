/*
 * projector.c -- the jg-proj thread that keeps DATA/jobs.db equal to a
 * fold of the log, plus rebuilds (replay) and comparisons of projections.
 *
 * Exactly-once.  Each batch is one SQLite transaction that folds events
 * applied+1 .. applied+n and sets meta.applied_seq = applied+n.  SQLite
 * commits both or neither, so after a crash the projector resumes from
 * the stored seq: no event is lost (the log still has it) and none is
 * applied twice (its effect and the seq moved together).  The schema and
 * the per-event SQL live in schema.c.
 *
 * Waking.  The log calls a watcher on its writer thread after every
 * commit.  The watcher only sets a flag and signals our condvar; the
 * thread then reads the log up to log_head() in batches of PROJ_BATCH
 * events, each under a short LMDB read txn.  A wake is only a hint, so a
 * spurious one costs one look at the head.
 *
 * Watcher lifetime.  log.h has no way to unregister a watcher, and the
 * log commits (and calls watchers) until log_close(), possibly after
 * proj_close().  So the log is given a pointer into a static slot table,
 * never to the Projector: proj_close() empties the slot under slots_mu,
 * after which the log's calls find nothing to wake.  A slot reused by a
 * later projector may get stray wakes from an old log: harmless, see
 * above.
 *
 * Errors.  A failed batch is rolled back whole (rows and applied seq) and
 * retried after a backoff (1 s doubling to 30 s) that ignores new wakes,
 * so a full disk does not turn every log commit into a retry and a log
 * line.  The api keeps serving: reads fall back to the log.
 */
#include "projector.h"
#include "proj_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/jg.h"

#define PROJ_BATCH   4096	/* events per live transaction */
#define PROJ_BATCH_BYTES (16u << 20)	/* and at most about this much event text */
#define PROJ_SLOTS   64
#define PROJ_WATCHERS 4

struct Projector {
	ProjDb     d;		/* jg-proj thread once started */
	Log       *log;
	LogReader *rd;		/* jg-proj thread once started */
	int        slot;
	pthread_t  th;
	int        started;
	pthread_mutex_t mu;
	pthread_cond_t  cv;	/* CLOCK_MONOTONIC, for the backoff */
	int        kick;	/* {mu} the log moved since we last looked */
	int        stop;	/* {mu} proj_close() wants us to finish */
	uint64_t   applied;	/* atomic: published after each commit */
	uint64_t   batches, events, apply_ns, errors;	/* atomic counters */
	int        fail_rc;	/* atomic: the last catch-up failed (0: it did not) */
	uint64_t   fail_seq;	/* atomic: the seq it could not apply */
	pthread_mutex_t wmu;	/* the watcher list: proj_unwatch waits out a call */
	int        nwatch;	/* {wmu} */
	struct { void (*fn)(void *, uint64_t); void *ctx; } watch[PROJ_WATCHERS];	/* {wmu} */
	int64_t    pending_ckpt;	/* jg-proj: batches since the last checkpoint */
};

static pthread_mutex_t slots_mu = PTHREAD_MUTEX_INITIALIZER;
static Projector *slots[PROJ_SLOTS];	/* {slots_mu} */
static int slot_used[PROJ_SLOTS];	/* {slots_mu} ever given to a log */
static const int slot_ids[PROJ_SLOTS] = {
	 0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14, 15,
	16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
	32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
	48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
};

/* Log writer thread: must not block beyond two short mutexes. */
static void proj_on_commit(void *ctx, uint64_t head)
{
	int i = *(const int *)ctx;
	Projector *p;

	(void)head;		/* the thread reads log_head() itself */
	pthread_mutex_lock(&slots_mu);
	if ((p = slots[i]) != NULL) {
		pthread_mutex_lock(&p->mu);
		p->kick = 1;
		pthread_cond_signal(&p->cv);
		pthread_mutex_unlock(&p->mu);
	}
	pthread_mutex_unlock(&slots_mu);
}

/* Give p a fresh slot and register it with the log.  The slot is
 * reserved under slots_mu, but log_watch (which takes the log's watcher
 * lock) is called outside it: the writer calls proj_on_commit holding that
 * lock and then takes slots_mu, so the two must never nest the other way. */
static int proj_slot_take(Projector *p)
{
	int i, rc;

	pthread_mutex_lock(&slots_mu);
	for (i = 0; i < PROJ_SLOTS && (slots[i] || slot_used[i]); i++) {}
	if (i < PROJ_SLOTS)
		slot_used[i] = 1;	/* ours; slots[i] stays NULL until registered */
	pthread_mutex_unlock(&slots_mu);
	if (i == PROJ_SLOTS)
		return JG_EFULL;
	if ((rc = log_watch(p->log, proj_on_commit, (void *)&slot_ids[i])) != 0) {
		pthread_mutex_lock(&slots_mu);
		slot_used[i] = 0;	/* never registered: free again */
		pthread_mutex_unlock(&slots_mu);
		return rc;
	}
	pthread_mutex_lock(&slots_mu);
	slots[i] = p;
	p->slot = i;
	pthread_mutex_unlock(&slots_mu);
	return 0;
}

static void proj_slot_release(Projector *p)
{
	if (p->slot < 0)
		return;
	pthread_mutex_lock(&slots_mu);
	slots[p->slot] = NULL;
	/* slot_used stays set: that log may still call this slot, and a
	 * projector on another log must not be woken by it forever.  64
	 * projector opens per process is plenty (one per server). */
	pthread_mutex_unlock(&slots_mu);
	p->slot = -1;
}

int proj_open(Projector **out, const char *db_path, Log *log)
{
	Projector *p = calloc(1, sizeof *p);
	pthread_condattr_t ca;
	int rc;

	*out = NULL;
	if (!p)
		return ENOMEM;
	p->log = log;
	p->slot = -1;
	pthread_mutex_init(&p->mu, NULL);
	pthread_mutex_init(&p->wmu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cv, &ca);
	pthread_condattr_destroy(&ca);
	if ((rc = pdb_open(&p->d, db_path, PDB_LIVE)) != 0)
		goto out;
	if (p->d.applied > log_head(log)) {
		/* The log is the truth: a projection ahead of it belongs to
		 * another log.  Refuse rather than serve wrong rows. */
		jg_log(JG_ERROR, "read model is ahead of the log; rebuild it"
		       " with scripts/replay", "path", db_path, NULL);
		rc = JG_ECONFLICT;
		goto out;
	}
	p->applied = p->d.applied;
	if ((rc = log_reader_open(log, &p->rd)) != 0 ||
	    (rc = proj_slot_take(p)) != 0)
		goto out;
	*out = p;
	return 0;
out:
	proj_slot_release(p);
	log_reader_close(p->rd);
	pdb_close(&p->d);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	pthread_mutex_destroy(&p->wmu);
	free(p);
	return rc;
}

int64_t proj_stalled_ms(Projector *p, uint64_t *seq)
{
	int64_t ms = pdb_busy_ms(&p->d);

	*seq = proj_applied(p) + 1;
	return ms >= PROJ_STALL_MS ? ms : 0;
}

int proj_failing(Projector *p, uint64_t *seq)
{
	*seq = __atomic_load_n(&p->fail_seq, __ATOMIC_RELAXED);
	return __atomic_load_n(&p->fail_rc, __ATOMIC_RELAXED);
}

uint64_t proj_applied(Projector *p)
{
	return __atomic_load_n(&p->applied, __ATOMIC_ACQUIRE);
}

int proj_watch(Projector *p, void (*fn)(void *ctx, uint64_t applied), void *ctx)
{
	int rc = 0;

	pthread_mutex_lock(&p->wmu);
	if (p->nwatch == PROJ_WATCHERS) {
		rc = JG_EINVAL;
	} else {
		p->watch[p->nwatch].fn = fn;
		p->watch[p->nwatch].ctx = ctx;
		p->nwatch++;
	}
	pthread_mutex_unlock(&p->wmu);
	return rc;
}

void proj_unwatch(Projector *p, void (*fn)(void *ctx, uint64_t applied), void *ctx)
{
	int i;

	pthread_mutex_lock(&p->wmu);
	for (i = 0; i < p->nwatch; i++)
		if (p->watch[i].fn == fn && p->watch[i].ctx == ctx) {
			p->watch[i] = p->watch[--p->nwatch];
			break;
		}
	pthread_mutex_unlock(&p->wmu);
}

/*
 * Fold up to `max` events (and about PROJ_BATCH_BYTES of them: big
 * payloads make short batches) after d->applied, read from one snapshot of
 * the log, into the current transaction.  Returns 0 when it stopped at a
 * limit, at `upto` or at the snapshot's head; *n gets the number applied,
 * and *bad the seq of an event that failed to apply (else it is left
 * alone).
 */
static int proj_fold_some(ProjDb *d, LogReader *rd, uint64_t upto, int max, int *n,
			  uint64_t *bad)
{
	LogEvent ev;
	size_t bytes = 0;
	int rc;

	*n = 0;
	if ((rc = log_reader_begin(rd)) != 0)
		return rc;
	rc = d->applied < upto ? log_reader_seek(rd, d->applied + 1, &ev) : JG_ENOTFOUND;
	while (rc == 0) {
		if ((rc = pdb_apply(d, &ev)) != 0) {
			*bad = ev.seq;
			break;
		}
		bytes += ev.json_len;
		if (++*n == max || ev.seq >= upto || bytes >= PROJ_BATCH_BYTES)
			break;
		rc = log_reader_next(rd, &ev);
	}
	if (rc == 0 || rc == JG_ENOTFOUND) {
		int frc = pdb_flush(d);		/* while the snapshot lives */
		if (frc != 0)
			rc = frc;
	}
	log_reader_end(rd);
	return rc == JG_ENOTFOUND ? 0 : rc;
}

/* jg-proj: one transaction of at most PROJ_BATCH events. *n = events;
 * *bad as proj_fold_some. */
static int proj_batch(Projector *p, uint64_t upto, int *n, uint64_t *bad)
{
	int64_t t0 = jg_mono_ns();
	int rc, i;

	if ((rc = pdb_begin(&p->d)) != 0 ||
	    (rc = proj_fold_some(&p->d, p->rd, upto, PROJ_BATCH, n, bad)) != 0 ||
	    (rc = pdb_commit(&p->d)) != 0) {
		if (p->d.in_txn)	/* a failed commit rolled back already */
			pdb_rollback(&p->d);
		return rc;
	}
	__atomic_store_n(&p->applied, p->d.applied, __ATOMIC_RELEASE);
	__atomic_add_fetch(&p->batches, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&p->events, (uint64_t)*n, __ATOMIC_RELAXED);
	__atomic_add_fetch(&p->apply_ns, (uint64_t)(jg_mono_ns() - t0), __ATOMIC_RELAXED);
	p->pending_ckpt++;
	pthread_mutex_lock(&p->wmu);
	for (i = 0; i < p->nwatch; i++)
		p->watch[i].fn(p->watch[i].ctx, p->d.applied);
	pthread_mutex_unlock(&p->wmu);
	return 0;
}

#define PROJ_COALESCE_MS 5

/* jg-proj: apply everything the log had committed when we looked. */
static int proj_catch_up(Projector *p)
{
	uint64_t head = log_head(p->log), bad;
	char seq[24];
	int n, rc;

	while (p->d.applied < head) {
		bad = p->d.applied + 1;	/* the batch, unless one event is named */
		if ((rc = proj_batch(p, head, &n, &bad)) != 0) {
			/* The events before a named bad one are good: apply
			 * them, so the read model stops just short of it. */
			uint64_t b2 = bad;
			if (bad > p->d.applied + 1)
				(void)proj_batch(p, bad - 1, &n, &b2);
			goto fail;
		}
		if (n == 0) {		/* head moved but the snapshot lacks it */
			rc = JG_ECORRUPT;
			goto fail;
		}
	}
	if (__atomic_load_n(&p->fail_rc, __ATOMIC_RELAXED) != 0) {
		/* Say it is over: the error line alone reads as still failing. */
		snprintf(seq, sizeof seq, "%llu", (unsigned long long)p->d.applied);
		jg_log(JG_INFO, "projector applying again", "#projected_seq", seq, NULL);
	}
	__atomic_store_n(&p->fail_rc, 0, __ATOMIC_RELAXED);
	return 0;
fail:
	__atomic_store_n(&p->fail_seq, bad, __ATOMIC_RELAXED);
	__atomic_store_n(&p->fail_rc, rc, __ATOMIC_RELAXED);
	__atomic_add_fetch(&p->errors, 1, __ATOMIC_RELAXED);
	snprintf(seq, sizeof seq, "%llu", (unsigned long long)bad);
	jg_log(JG_ERROR, "projector batch failed", "error", jg_strerror(rc),
	       "#seq", seq, NULL);
	return rc;
}

/* jg-proj, when idle: copy the WAL back without waiting for readers. */
static void proj_checkpoint(Projector *p)
{
	int rc;

	if (p->pending_ckpt == 0)
		return;
	p->pending_ckpt = 0;
	rc = sqlite3_wal_checkpoint_v2(p->d.db, NULL, SQLITE_CHECKPOINT_PASSIVE,
				       NULL, NULL);
	if (rc != SQLITE_OK && rc != SQLITE_BUSY)
		pdb_err(p->d.db, rc, "wal_checkpoint(PASSIVE)");
}

static void proj_wait_until(Projector *p, int64_t backoff_ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += backoff_ms / 1000;
	ts.tv_nsec += (backoff_ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000)
		ts.tv_sec++, ts.tv_nsec -= 1000000000;
	while (!p->stop && pthread_cond_timedwait(&p->cv, &p->mu, &ts) != ETIMEDOUT)
		;
}

/* The jg-proj thread: owns p->d and p->rd until it returns. */
static void *proj_main(void *arg)
{
	Projector *p = arg;
	int64_t backoff_ms = 0;
	int stopping, rc;

	for (;;) {
		pthread_mutex_lock(&p->mu);
		if (backoff_ms)
			proj_wait_until(p, backoff_ms);
		else
			while (!p->kick && !p->stop) {
				if (p->pending_ckpt) {
					pthread_mutex_unlock(&p->mu);
					proj_checkpoint(p);
					pthread_mutex_lock(&p->mu);
					continue;
				}
				pthread_cond_wait(&p->cv, &p->mu);
			}
		p->kick = 0;
		stopping = p->stop;
		pthread_mutex_unlock(&p->mu);

		rc = proj_catch_up(p);
		if (stopping)
			break;
		if (rc == 0) {
			backoff_ms = 0;
			/* Coalesce: under load the log commits every ms or
			 * so; one SQLite txn per commit would rewrite the same
			 * pages (jobs leaf, both indexes, meta) each time.
			 * Waiting a few ms lets the next txn carry many
			 * commits.  An idle projector still applies the first
			 * event at once: this wait comes after a batch. */
			pthread_mutex_lock(&p->mu);
			proj_wait_until(p, PROJ_COALESCE_MS);
			pthread_mutex_unlock(&p->mu);
		}
		else
			backoff_ms = backoff_ms ? (backoff_ms * 2 > 30000 ? 30000 : backoff_ms * 2) : 1000;
	}
	proj_checkpoint(p);
	return NULL;
}

int proj_start(Projector *p)
{
	int rc;

	if (p->started)
		return JG_EINVAL;
	/* Events committed before the watcher could see them. */
	p->kick = 1;
	if ((rc = pthread_create(&p->th, NULL, proj_main, p)) != 0)
		return rc;
	pthread_setname_np(p->th, "jg-proj");
	p->started = 1;
	return 0;
}

void proj_metrics(Projector *p, Buf *out)
{
	uint64_t applied = proj_applied(p), head = log_head(p->log);
	uint64_t ns = __atomic_load_n(&p->apply_ns, __ATOMIC_RELAXED);

	buf_puts(out, "# HELP jobgate_projector_applied_seq Last log seq applied to the read model.\n"
		 "# TYPE jobgate_projector_applied_seq gauge\njobgate_projector_applied_seq ");
	buf_u64(out, applied);
	buf_puts(out, "\n# HELP jobgate_projector_lag_events Log events not yet in the read model.\n"
		 "# TYPE jobgate_projector_lag_events gauge\njobgate_projector_lag_events ");
	buf_u64(out, head > applied ? head - applied : 0);
	buf_puts(out, "\n# HELP jobgate_projector_batches_total Transactions committed by the projector.\n"
		 "# TYPE jobgate_projector_batches_total counter\njobgate_projector_batches_total ");
	buf_u64(out, __atomic_load_n(&p->batches, __ATOMIC_RELAXED));
	buf_puts(out, "\n# HELP jobgate_projector_events_total Events applied by the projector.\n"
		 "# TYPE jobgate_projector_events_total counter\njobgate_projector_events_total ");
	buf_u64(out, __atomic_load_n(&p->events, __ATOMIC_RELAXED));
	buf_puts(out, "\n# HELP jobgate_projector_apply_seconds_total Time spent applying batches.\n"
		 "# TYPE jobgate_projector_apply_seconds_total counter\njobgate_projector_apply_seconds_total ");
	buf_printf(out, "%.6f", (double)ns / 1e9);
	buf_puts(out, "\n# HELP jobgate_projector_errors_total Batches that failed and were retried.\n"
		 "# TYPE jobgate_projector_errors_total counter\njobgate_projector_errors_total ");
	buf_u64(out, __atomic_load_n(&p->errors, __ATOMIC_RELAXED));
	buf_puts(out, "\n");
}

void proj_close(Projector *p)
{
	if (!p)
		return;
	if (p->started) {
		pthread_mutex_lock(&p->mu);
		p->stop = 1;
		pthread_cond_signal(&p->cv);
		pthread_mutex_unlock(&p->mu);
		pthread_join(p->th, NULL);
	} else {
		proj_catch_up(p);	/* same contract without a thread */
	}
	proj_slot_release(p);
	log_reader_close(p->rd);
	pdb_close(&p->d);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	pthread_mutex_destroy(&p->wmu);
	free(p);
}

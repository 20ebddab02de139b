/*
 * runner_int.h -- private to runner/: the runner thread's state, shared by
 * runner.c (thread, loop, public calls), jobs.c (job state, attempts,
 * events out) and recover.c (the log side: new work, lookups, cancel and
 * retry, start-up recovery).  Everything here runs on the runner thread
 * unless a field is marked {mu}.
 */
#ifndef JG_RUNNER_INT_H
#define JG_RUNNER_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "../common/jg.h"
#include "../log/event.h"
#include "runner.h"

#define KILL_GRACE_NS	(5LL * 1000000000)	/* SIGTERM -> SIGKILL (timeout, cancel) */
#define CLOSE_KILL_NS	(2LL * 1000000000)	/* the same at shutdown */
#define DRAIN_MAX_NS	(30LL * 1000000000)	/* wait for durability at close */
#define REQ_MAX		4096			/* queued cancel/retry requests */
#define ORPHAN_NS	(10LL * 1000000000)	/* reap left-behind group members */
#define ORPHAN_POLL_MS	20
#define SWEEP_NS	(50LL * 1000000)	/* live groups: reap exited orphans */
#define TAIL_BATCH	4096			/* events read per snapshot */
#define EV_RETRY_MIN_MS	100			/* first resubmit of a refused event */
#define EV_RETRY_MAX_MS	5000			/* backoff doubles up to this */
#define RUNNER_SPAWNERS	2			/* spawner threads (spawnq.c) */

enum { WHY_NONE, WHY_TIMEOUT, WHY_CANCEL, WHY_CLOSE };

typedef struct RJob RJob;

typedef struct RProc {
	RunnerProc p;
	RJob    *job;
	int64_t  start_ns, deadline_ns, kill_ns;	/* kill_ns 0: none pending */
	int      why;					/* WHY_*: why it was signaled */
	int      pf_at, pf_n;				/* its slice of the pollfds */
	/* The spawn request (spawnq.c).  While spawning, p, sp and sp_rc
	 * belong to a spawner; the runner may set only why and
	 * stop_grace_ns (a stop to send once the pid is known). */
	int      spawning;
	int64_t  stop_grace_ns;
	RunnerSpawn sp;
	char    *sp_buf;				/* path and payload copies */
	int      sp_rc;					/* runner_proc_spawn's result */
	struct RProc *snext;				/* spawn queue / spawned list */
} RProc;

struct RJob {
	uint64_t  id;			/* first: RunnerMap key */
	int       spec;			/* index in cfg->jobs, -1 not configured */
	char      name[JG_NAME_MAX + 1];
	uint8_t   status, last_type;
	uint32_t  attempt;		/* last attempt started, 0 none */
	uint32_t  max_attempts;
	int64_t   retry_at;		/* wall ms while in the delay heap */
	int64_t   started_at;		/* wall ms of the last job.started (recovery) */
	int       heap_at;		/* index in r->heap, -1 if not there */
	int       inflight;		/* our events not yet durable (in evq) */
	int       starting;		/* holds a run slot; spawns once started is durable */
	struct RunEnt *evq, *evq_tail;	/* those events, in order; only the head is
					 * ever in the log's hands (see jobs.c) */
	RProc    *proc;
	RJob     *prev, *next;		/* ready FIFO of its spec */
	int       in_fifo;
	RunnerReq *waiters;		/* cancels waiting for the process to end */
	RunnerReq *deferred;		/* cancel/retry waiting for evq to be durable */
};

/* One event of ours: the LogEntry plus what to do once durable. */
typedef struct RunEnt {
	LogEntry   e;
	uint64_t   job_id;
	RunnerReq *reqs;		/* answered with e.rc/e.seq (or the first failure) */
	int        brc;			/* the builder failed: nothing to write */
	int        spawn;		/* job.started of a process: spawn once durable */
	int        submitted;		/* in the log's hands (until done) */
	int        pair;		/* goes to the log with the job's next event,
					 * in one txn (echo: started + succeeded) */
	int        failures;		/* commits that refused it so far */
	int64_t    backoff_ms;		/* current resubmit delay */
	int64_t    retry_ns;		/* resubmit at (mono); 0 when not waiting */
	struct RunEnt *jnext;		/* the job's evq */
	struct RunEnt *next;		/* done list {r->mu} / retry list / free list */
} RunEnt;

/* A job's process group whose leader is reaped but members remain (they
 * were SIGKILLed): reaped until empty or until gives up. */
typedef struct Orphans {
	pid_t   pgid;
	int64_t until_ns;
} Orphans;

typedef struct Spec {
	RJob *head, *tail;		/* ready FIFO */
	int   running;
	char  path[4096];		/* resolved argv[0] */
} Spec;

struct Runner {
	const Config *cfg;
	Log          *log;
	RunnerStats  *stats;
	int           efd;
	atomic_int    wake_pending;
	pthread_t     th;
	int           started;

	pthread_mutex_t mu;
	RunEnt       *done_head, *done_tail;	/* {mu} */
	RunnerReq    *req_head, *req_tail;	/* {mu} */
	int           nreq;			/* {mu} */
	int           closing, grace_s;		/* {mu} */
	RProc        *spawned_head, *spawned_tail;	/* {mu}: back from spawners */

	/* The spawn queue (spawnq.c). */
	pthread_mutex_t sq_mu;
	pthread_cond_t  sq_cv;
	RProc        *sq_head, *sq_tail;	/* {sq_mu} */
	int           sq_stop;			/* {sq_mu} */
	pthread_t     spawners[RUNNER_SPAWNERS];
	int           nspawners;		/* started (0: spawn inline) */

	/* Runner thread only. */
	LogReader    *rd;
	int           snap;			/* rd holds a snapshot */
	uint64_t      tail;			/* last seq consumed */
	int           more;			/* tail stopped at TAIL_BATCH */
	RunnerMap     map;			/* id -> RJob */
	RJob        **heap;			/* by retry_at */
	int           heap_n, heap_cap;
	Spec         *specs;
	RProc       **procs;
	int           nprocs;
	int           rr;			/* round-robin start */
	int           inflight;		/* events not yet durable */
	int           nsub;			/* of those, in the log's hands */
	int           nstarting;		/* slots held by jobs waiting to spawn */
	int           nspawning;		/* RProcs in the spawners' hands */
	RunEnt       *retry_head;		/* refused events waiting to resubmit */
	RunEnt       *free_ents;
	uint64_t      rng;
	int           closing_seen;
	int64_t       close_at_ns, drain_until_ns;
	int64_t       sweep_ns;			/* next reap of live groups' orphans */
	struct pollfd *pf;
	int           pf_cap;
	Orphans      *orph;			/* groups left behind by leaders */
	int           norph, orph_cap;
};

static inline RJob *map_get(Runner *r, uint64_t id) { return runner_map_get(&r->map, id); }
static inline int   map_put(Runner *r, RJob *j)     { return runner_map_put(&r->map, j); }
static inline void  map_del(Runner *r, uint64_t id) { runner_map_del(&r->map, id); }
static inline int64_t now_ms(void) { return jg_now_ms(); }
static inline int64_t now_ns(void) { return jg_mono_ns(); }

int runner_heap_push(Runner *r, RJob *j);
void runner_heap_del(Runner *r, RJob *j);
void runner_fifo_del(Runner *r, RJob *j);
void runner_job_forget(Runner *r, RJob *j);
void runner_ent_finish(Runner *r, RunEnt *x);
void runner_ent_submit(Runner *r, RJob *j, RunEnt *x, int brc);
void runner_ent_retry_due(Runner *r, int64_t t);
int64_t runner_ent_retry_next(Runner *r);
void runner_ent_drop_all(Runner *r);
void runner_attempt_spawn(Runner *r, RJob *j);
void runner_attempt_spawned(Runner *r, RProc *rp);
void runner_spawners_start(Runner *r);
void runner_spawners_stop(Runner *r);
void runner_spawn_push(Runner *r, RProc *rp);
/* allow_retry: 0 final; 1 by the job's policy; RETRY_ANYWAY also past
 * max_attempts, for an attempt whose process never started (its number is
 * used up all the same: attempts may then exceed max_attempts by one). */
#define RETRY_ANYWAY 2
void runner_job_fail(Runner *r, RJob *j, int exit_code, int sig, const char *err,
		     int64_t dur_ms, int allow_retry);
void runner_job_ready(Runner *r, RJob *j);
void runner_payload(const LogEvent *ev, const char **p, size_t *n);
int runner_snap_begin(Runner *r);
void runner_snap_end(Runner *r);
void runner_attempt_start(Runner *r, RJob *j, const char *p, size_t n);
void runner_dispatch(Runner *r);
void runner_attempt_end(Runner *r, int idx);
int  runner_attempt_stop(RProc *rp, int why, int64_t grace_ns);
void runner_tail(Runner *r, int closing);
void runner_req_answer(RunnerReq *q, int rc);
/* q waits on j->deferred: decided, oldest first, once j has no event in
 * flight (evq_pop); at close answered JG_ECLOSED. */
void runner_req_defer(RJob *j, RunnerReq *q);
void runner_reqs_answer(RunnerReq **list, int rc, uint64_t seq);	/* a ->next chain */
void runner_req_run(Runner *r, RunnerReq *q);
void runner_req_cancel(Runner *r, RunnerReq *q);
void runner_req_retry(Runner *r, RunnerReq *q);
int runner_recover(Runner *r);
void runner_wake(Runner *r);
void runner_orphans_reap(Runner *r);
int  runner_reaper_start(void);			/* reaper.c: before threads exist */
int  runner_reaper_retry(void);			/* runner thread: 1 while notes wait */
int  runner_reaper_exited(pid_t z);		/* runner thread: reaps z if it is the reaper */

RJob *runner_job_new(Runner *r, uint64_t id, const char *name, size_t n);
RunEnt *runner_ent_new(Runner *r);

/* Build an event into a fresh RunEnt x with call, then submit it for job
 * j; reqs_ are answered once it is durable (at once with ENOMEM when there
 * is no memory for it: never left waiting, nor are the job's deferred
 * requests when no other event of it is in flight to decide them). */
#define EMIT(r, j, x, call, reqs_) do {					\
		RunEnt *x = runner_ent_new(r);					\
		if (!x) {						\
			RunnerReq *q_ = (reqs_);				\
			jg_log(JG_ERROR, "runner: out of memory", "job", (j)->name, NULL); \
			runner_reqs_answer(&q_, ENOMEM, 0);			\
			if (!(j)->inflight)					\
				runner_reqs_answer(&(j)->deferred, ENOMEM, 0);	\
			break;						\
		}							\
		x->reqs = (reqs_);					\
		runner_ent_submit(r, j, x, (call));				\
	} while (0)

#endif

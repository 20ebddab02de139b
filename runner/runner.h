/*
 * runner.h -- runs jobs: the runner thread ("jg-run") tails the log for
 * runnable work, spawns each attempt's command (argv, never a shell) in its
 * own process group with the payload on stdin, and appends every status
 * change (started, succeeded, failed, canceled, retried) through the log.
 *
 * It is the only place that decides status transitions of existing jobs,
 * so cancel and retry requests from the api are queued to it
 * (runner_submit) and answered through the request's done() on the runner
 * thread once the event is durable.
 */
#ifndef JG_RUNNER_H
#define JG_RUNNER_H

#include <stdint.h>
#include "../common/buf.h"
#include "../common/config.h"
#include "../log/log.h"

typedef struct Runner Runner;

enum { RUNNER_CANCEL = 1, RUNNER_RETRY = 2 };

typedef struct RunnerReq {
	int      op;		/* RUNNER_CANCEL or RUNNER_RETRY */
	uint64_t job_id;
	char     actor[65];	/* token name, or "" */
	void   (*done)(struct RunnerReq *q, void *ctx);	/* on the runner thread; must not block */
	void    *ctx;
	/* Set before done(): 0, JG_ENOTFOUND, JG_ECONFLICT (already final /
	 * not failed-or-canceled for retry), JG_ESTORAGE, JG_ECLOSED. */
	int      rc;
	uint64_t seq;		/* seq of the event appended */
	struct RunnerReq *next;	/* {runner queue} */
} RunnerReq;

/* Registers a log watcher: call before log_start(). cfg is borrowed for
 * the runner's lifetime. */
int  runner_open(Runner **out, const Config *cfg, Log *log);
/* Start the thread: it first records attempts left running by a previous
 * process as failed ("interrupted"), then runs queued work.  Also makes the
 * process a child subreaper (PR_SET_CHILD_SUBREAPER), so that orphans of
 * job groups are reaped by the runner even under an init that does not. */
int  runner_start(Runner *r);
int  runner_submit(Runner *r, RunnerReq *q);	/* 0 or JG_EFULL/JG_ECLOSED */
void runner_metrics(Runner *r, Buf *out);	/* Prometheus lines, any thread */
/* Stop taking work, let running jobs finish up to grace_s, then record the
 * rest as interrupted and stop.  NULL is a no-op. */
void runner_close(Runner *r, int grace_s);

/*
 * ---- Below: additions for the runner files and tests (not used by other modules).
 *
 * One attempt's process (runner/spawn.c).  The thread that calls
 * runner_proc_spawn() is the child's "parent" for PR_SET_PDEATHSIG, so it
 * must outlive the child (the spawner threads of spawnq.c do); the rest
 * is runner-thread only.  The caller polls the fds runner_proc_fds() fills and hands the results
 * to runner_proc_step() until it returns 1 (leader reaped, pipes drained,
 * rest of the group SIGKILLed).  Signals go to the whole process group and
 * only while the leader is unreaped, so the pgid can't have been reused.
 */
#include <poll.h>
#include <sys/types.h>

#define RUNNER_PATH	"/usr/local/bin:/usr/bin:/bin"	/* the child's PATH */
#define RUNNER_ERR_TAIL	4096	/* bytes of stderr kept (the last ones) */
#define RUNNER_PROC_FDS	4	/* pollfds per process at most */

typedef struct RunnerSpawn {
	const char *path;		/* resolved executable (runner_resolve) */
	char *const *argv;		/* NULL-terminated; borrowed during the call */
	uint64_t    job_id;
	const char *job;
	uint32_t    attempt;
	const char *in; size_t in_len;	/* stdin bytes; copied if not written at once */
	size_t      out_cap;		/* stdout kept at most (max_result_bytes) */
} RunnerSpawn;

typedef struct RunnerProc {
	pid_t   pid;			/* also the pgid */
	int     pidfd;			/* -1 once reaped */
	int     fd_in, fd_out, fd_err;	/* -1 when closed */
	char   *in_buf;			/* owned copy of unwritten stdin */
	size_t  in_len, in_off;
	Buf     out;			/* stdout, at most out_cap bytes */
	size_t  out_cap;
	int     out_truncated;
	int     out_ws_cut;		/* only whitespace was dropped at the cap */
	char    err[2 * RUNNER_ERR_TAIL];	/* stderr tail */
	size_t  err_len;
	int     err_cut;		/* earlier stderr bytes were dropped */
	int     reaped, status;		/* wait status once reaped */
	const char *spawn_hint;		/* a failed spawn: what its errno may mean (a
					 * static string, never freed), or NULL */
} RunnerProc;

/* Start s->argv in a new process group with env exactly PATH,
 * JOBGATE_JOB_ID, JOBGATE_JOB, JOBGATE_ATTEMPT.  0, or an errno (exec or
 * pipe failure; nothing is left running and p holds nothing but
 * spawn_hint). */
int  runner_proc_spawn(RunnerProc *p, const RunnerSpawn *s);
/* What the spawner threads call: runner_proc_spawn, or a test's stand-in
 * (set before runner_start). */
extern int (*runner_spawn_fn)(RunnerProc *p, const RunnerSpawn *s);
/* Tests: 1 = spawn as on a kernel without close_range (the fallback loop). */
extern int runner_close_range_off;
/* Fill pf (RUNNER_PROC_FDS entries at most) with what p waits for; count. */
int  runner_proc_fds(const RunnerProc *p, struct pollfd *pf);
/* Handle the poll results for pf[0..n) from runner_proc_fds: write stdin,
 * read stdout/stderr, reap.  1 when finished (p->status valid), else 0. */
int  runner_proc_step(RunnerProc *p, const struct pollfd *pf, int n);
void runner_proc_signal(RunnerProc *p, int sig);	/* killpg while unreaped */
/* SIGTERM to the group, then SIGCONT, so a stopped process sees it. */
void runner_proc_terminate(RunnerProc *p);
/* Before any spawn: the open file limit jobs get (soft; the hard one is
 * the gateway's).  serve raises its own to the hard limit for its sockets;
 * jobs keep what the gateway was started with.  0: leave as is. */
void runner_set_child_nofile(unsigned long long soft);
/* 1 if p's leader has exited (reaped or not), without reaping it. */
int  runner_proc_exited(const RunnerProc *p);
/* After the leader was reaped: reap our children left in group pgid (the
 * gateway is their subreaper, see runner_start) and say whether the group
 * is empty (1) or has members left (0).  The caller must not pass a pgid
 * that names a live job's group (the old one is empty then). */
int  runner_proc_reap_group(pid_t pgid);
/* While the job of group pgid runs: reap its members that became our
 * children (their parent in the job exited) and have exited, so a long
 * job that leaves short-lived orphans does not fill the gateway with
 * zombies (the runner calls it every 50 ms).  Never its leader: that
 * exit belongs to the job's pidfd. */
void runner_proc_reap_members(pid_t pgid);
/* The pid of a child of the gateway that has exited and waits to be
 * reaped (not reaped here), or 0. */
pid_t runner_child_exited(void);
/* Close and free everything; a still-running group is SIGKILLed and reaped. */
void runner_proc_release(RunnerProc *p);
/* Runner thread: tell the reaper process (reaper.c) that group pgid
 * started (add) or is about to be reaped (!add).  No-op without one. */
void runner_reaper_note(int add, pid_t pgid);
/* A job's child between vfork and exec, once it leads its own group:
 * announce it (async-signal-safe: one write).  1 when it could not (notes
 * are waiting, or the pipe is full): the parent must runner_reaper_note(1)
 * it after vfork returns, so it goes out in order. */
int  runner_reaper_child_note(pid_t pgid);

/* Executable for argv0: itself if it holds a '/', else the first match in
 * RUNNER_PATH, else argv0 unchanged (runner_proc_spawn then fails with
 * ENOENT: a bare name is never looked up in the working directory).
 * Writes out[cap]. */
void runner_resolve(const char *argv0, char *out, size_t cap);
/* The result member: stdout as JSON when it is valid JSON and complete
 * (surrounding whitespace dropped), else as a JSON string.  When truncated,
 * a UTF-8 character split by the cut is dropped whole first.  1 if it was
 * stored as JSON. */
int  runner_result_json(const char *p, size_t n, int truncated, Buf *out);
/* The error text of a failed exit: the last lines of the stderr tail, or
 * "exit status N" / "killed by signal N" when stderr was empty. */
void runner_error_text(const RunnerProc *p, Buf *out);
/* Backoff before attempt+1 after attempt failed: backoff_s * 2^(attempt-1)
 * seconds, capped at RUNNER_BACKOFF_CAP_S (or backoff_s if longer), times a
 * jitter in [0.9, 1.1] drawn from *rng (xorshift state, updated). */
#define RUNNER_BACKOFF_CAP_S 3600
int64_t runner_backoff_ms(int backoff_s, uint32_t attempt, uint64_t *rng);

/* Counters and duration histograms behind runner_metrics (runner/metrics.c).
 * Updated on the runner thread, read by any thread (a mutex inside).
 * spec is the job's index in cfg->jobs; status a final JG_ST_*. */
typedef struct RunnerStats RunnerStats;
int  runner_stats_open(RunnerStats **out, const Config *cfg);
void runner_stats_started(RunnerStats *s, int spec);
void runner_stats_finished(RunnerStats *s, int spec, int status, int64_t dur_ms);
void runner_stats_running(RunnerStats *s, int delta);	/* processes */
void runner_stats_write(RunnerStats *s, Buf *out);
void runner_stats_close(RunnerStats *s);		/* NULL is a no-op */

/* A hash map of items whose first member is their uint64_t id (runner/
 * table.c): open addressing with linear probing.  Zero-initialize; items
 * are borrowed.  Single-threaded. */
typedef struct RunnerMap { void **slot; size_t cap, n; } RunnerMap;
void *runner_map_get(const RunnerMap *m, uint64_t id);	/* NULL if absent */
int   runner_map_put(RunnerMap *m, void *item);		/* 0 or ENOMEM; id must be new */
void  runner_map_del(RunnerMap *m, uint64_t id);	/* absent: no-op */
void  runner_map_free(RunnerMap *m);			/* the table, not the items */

#endif

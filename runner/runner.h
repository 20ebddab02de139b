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
 * process as failed ("interrupted"), then runs queued work. */
int  runner_start(Runner *r);
int  runner_submit(Runner *r, RunnerReq *q);	/* 0 or JG_EFULL/JG_ECLOSED */
void runner_metrics(Runner *r, Buf *out);	/* Prometheus lines, any thread */
/* Stop taking work, let running jobs finish up to grace_s, then record the
 * rest as interrupted and stop.  NULL is a no-op. */
void runner_close(Runner *r, int grace_s);

#endif

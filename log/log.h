/*
 * log.h -- the ordered event log: an LMDB environment in DATA/log written
 * by one writer thread with group commit.  Record format: see log.c.
 *
 * Threads.  log_start() creates the writer thread ("jg-log"), the only
 * thread that opens LMDB write txns.  Appenders on any thread hand it a
 * LogEntry with log_submit(); the writer drains everything queued, writes it
 * in one txn, commits (one fsync), then calls each entry's done() on the
 * writer thread and every watcher with the new head.  done() and watchers
 * must not block: they push to the owner's queue and wake it.
 *
 * Readers (LogReader) are snapshots (LMDB read txns, MDB_NOTLS) used by one
 * thread at a time; keep them short: begin, read a bounded batch, end.
 */
#ifndef JG_LOG_H
#define JG_LOG_H

#include <stddef.h>
#include <stdint.h>
#include "../common/buf.h"

typedef struct Log Log;
typedef struct LogReader LogReader;

/* Event types and job statuses, as stored (values are part of record v1). */
enum { JG_EV_ENQUEUED = 1, JG_EV_STARTED, JG_EV_SUCCEEDED, JG_EV_FAILED,
       JG_EV_CANCELED, JG_EV_RETRIED };
enum { JG_ST_QUEUED = 1, JG_ST_RUNNING, JG_ST_SUCCEEDED, JG_ST_FAILED,
       JG_ST_CANCELED };
const char *log_type_name(int type);	/* "job.enqueued", ... or "?" */
const char *log_status_name(int st);	/* "queued", ... or "?" */
int log_status_parse(const char *s, size_t n);	/* JG_ST_* or 0 */
int log_status_final(int st);		/* succeeded, failed, canceled */

/*
 * One append request.  The appender owns the memory and fills the first
 * block (event.h has builders); the log owns it from log_submit() until
 * done() runs, which is exactly once, on the writer thread, after the batch
 * is durable (rc 0) or has failed (rc != 0: nothing of it was written).
 */
typedef struct LogEntry {
	uint8_t  type, status;
	uint32_t attempt;
	uint64_t job_id;	/* 0 with JG_EV_ENQUEUED: the writer sets it to seq */
	char     job[65];
	Buf      extra;		/* JSON members after the common ones, each ",\"k\":v" */
	uint32_t pay_off, pay_len;	/* span of ",\"payload\":V" in extra; len 0 = none */
	char    *idem;		/* enqueue only: idempotency scope+key bytes, or NULL */
	size_t   idem_len;
	uint8_t  joined;	/* set by log_submit_pair: written in the txn of the entry before */
	void   (*done)(struct LogEntry *e, void *ctx);
	void    *ctx;
	/* Set by the writer before done(). */
	int      rc;		/* 0, JG_ESTORAGE, JG_ECLOSED, JG_ELMDB */
	uint64_t seq;		/* seq of the event (the original one if replayed) */
	int      replayed;	/* 1: idempotency hit, nothing appended */
	struct LogEntry *next;	/* {log queue} */
} LogEntry;

typedef struct LogOptions {
	int      readonly;	/* open for dump/stat/verify/replay beside a server */
	int      queue_max;	/* entries queued before log_submit says JG_EFULL */
	int64_t  map_size_mb;
} LogOptions;

/* Open (creating if needed, unless readonly) DATA/log under dir. */
int  log_open(Log **out, const char *dir, const LogOptions *o);
int  log_start(Log *l);			/* start the writer thread */
/* Queue e.  0, JG_EFULL (queue at capacity: shed load), JG_ECLOSED. */
int  log_submit(Log *l, LogEntry *e);
/* Queue a then b to be written in one txn: both commit or neither (with
 * the same rc), a first.  For status events that must not be seen apart.
 * 0 or JG_ECLOSED (never JG_EFULL: use it for status events only). */
int  log_submit_pair(Log *l, LogEntry *a, LogEntry *b);
/* Stop accepting, commit what is queued, join the writer, close the env.
 * NULL is a no-op.  Readers must be closed first. */
void log_close(Log *l);
/* Delete what log_open made under dir (DATA/log and its two files), for a
 * start that failed before anything was written; closed logs only.  A
 * DATA/log that holds anything else stays. */
void log_remove(const char *dir);

/* Call fn(ctx, head) on the writer thread after every commit; at most 8
 * watchers.  Register before log_start() to see every commit.  fn runs
 * with the watcher lock held: it must not call log_watch/log_unwatch.
 * log_unwatch() returns once fn can no longer be running or called, so
 * the owner may free ctx after it. */
typedef void (*LogWatchFn)(void *ctx, uint64_t head);
int  log_watch(Log *l, LogWatchFn fn, void *ctx);
void log_unwatch(Log *l, LogWatchFn fn, void *ctx);

uint64_t log_head(Log *l);		/* last committed seq, any thread */
/* Any thread: when (wall ms) new jobs began to be refused for lack of
 * space (map or disk full), if no enqueue was written since and the last
 * refusal was within window_ms; else 0. */
int64_t  log_full_since(Log *l, int64_t window_ms);

typedef struct LogStats {		/* counters since start, any thread */
	uint64_t commits, events, fsync_ns_total, batch_max;
	uint64_t batch_hist[8];		/* batch sizes: 1,2-4,5-16,17-64,65-256,257-1024,1025-4096,more */
	uint64_t fsync_hist[8];		/* commit seconds: <.25ms,.5,1,2.5,5,10,25,more ms */
	uint64_t queue_len;
} LogStats;
void log_stats(Log *l, LogStats *out);

/* A decoded record.  Pointers are borrowed from the reader's snapshot and
 * valid until the next log_reader_* call that moves or ends it. */
typedef struct LogEvent {
	uint64_t seq, job_id;
	uint8_t  type, status;
	uint32_t attempt;
	int64_t  at_ms;
	const char *job;  size_t job_len;
	const char *json; size_t json_len;	/* "\"type\":...}" : the object minus "{\"seq\":N," */
	uint32_t pay_off, pay_len;		/* span of ",\"payload\":V" in json */
} LogEvent;

/* Render {"seq":N,...} into b, with or without the payload member. */
void log_event_json(const LogEvent *ev, Buf *b, int with_payload);

int  log_reader_open(Log *l, LogReader **out);
int  log_reader_begin(LogReader *r);	/* take a fresh snapshot */
void log_reader_end(LogReader *r);	/* drop the snapshot (keeps handle) */
void log_reader_close(LogReader *r);	/* NULL is a no-op */
uint64_t log_reader_head(LogReader *r);	/* last seq in the snapshot */
/* Exact seq; JG_ENOTFOUND if absent, JG_ECORRUPT if undecodable. */
int  log_reader_get(LogReader *r, uint64_t seq, LogEvent *ev);
/* First event with seq >= from, then the next ones; JG_ENOTFOUND at end.
 * JG_ECORRUPT for a record that does not decode: ev->seq then names it
 * (unless its key is damaged too), and next() goes on past it. */
int  log_reader_seek(LogReader *r, uint64_t from, LogEvent *ev);
int  log_reader_next(LogReader *r, LogEvent *ev);
/* This job's events with seq >= from, in order (by-job index). */
int  log_reader_job_seek(LogReader *r, uint64_t job_id, uint64_t from, LogEvent *ev);
int  log_reader_job_next(LogReader *r, LogEvent *ev);
/* Seq of the job's last event, or 0 if the job does not exist (or
 * cannot be read: damage ends a server, an unexpected LMDB code is logged,
 * a system error reads as 0 too). */
uint64_t log_reader_job_last(LogReader *r, uint64_t job_id);

/* Operator views for `jobgate log stat|verify` (readonly logs too). */
typedef struct LogInfo { uint64_t first, head, count, bytes, map_bytes; } LogInfo;
int  log_info(Log *l, LogInfo *out);
/* Check seqs 1..head (the head when it starts) are contiguous and every
 * record decodes, in bounded snapshots; *upto = that head.  The first
 * problem is written to msg[cap].  0 ok, JG_ECORRUPT damaged. */
int  log_verify(Log *l, uint64_t *upto, char *msg, size_t cap);
/* One record: its JSON decodes and its job_id is possible.  0, or
 * JG_ECORRUPT with the reason (naming the seq) in msg[cap]. */
int  log_event_verify(const LogEvent *ev, char *msg, size_t cap);

/* Fault seam for tests: replaces mdb_txn_commit (e.g. to return ENOSPC). */
extern int (*log_commit_fn)(void *mdb_txn);

#endif

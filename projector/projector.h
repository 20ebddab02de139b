/*
 * projector.h -- the SQLite (WAL) read model and the thread that keeps it.
 *
 * One thread ("jg-proj") owns the only write connection to DATA/jobs.db.
 * It tails the log from the seq stored in the database (table meta) and
 * applies events in batches, one transaction each, storing the new applied
 * seq in that same transaction: a crash anywhere neither loses nor doubles
 * an event.  It is woken by a log watcher, never by polling.
 *
 * Schema (versioned in PRAGMA user_version; documented in docs/read-model.md):
 *   jobs(id INTEGER PRIMARY KEY, job, status, attempts, max_attempts,
 *        payload, result, result_truncated, error, exit_code, signal,
 *        created_at, started_at, finished_at, seq, idempotency_key)
 *   meta(key TEXT PRIMARY KEY, value)  -- 'applied_seq'
 */
#ifndef JG_PROJECTOR_H
#define JG_PROJECTOR_H

#include <stdint.h>
#include "../common/buf.h"
#include "../log/log.h"

typedef struct Projector Projector;

/* Open or create db_path (schema migrated) and register a log watcher.
 * Call before log_start(). */
int  proj_open(Projector **out, const char *db_path, Log *log);
int  proj_start(Projector *p);		/* start the thread */
uint64_t proj_applied(Projector *p);	/* last applied seq, any thread */
/* Any thread: 0 while the projector keeps up; else the error of its last
 * attempt (it retries with backoff) and in *seq the event it could not
 * apply.  A damaged record keeps it failing until an operator acts. */
int  proj_failing(Projector *p, uint64_t *seq);
/* Any thread: how long (ms) the projector has been waiting for another
 * connection's lock on jobs.db (an operator's shell), when that is
 * PROJ_STALL_MS or more, else 0; *seq = the first event it would apply.
 * Lists stop waiting for the projector after as long.  A long batch that
 * makes progress is not a stall. */
#define PROJ_STALL_MS 2000
int64_t proj_stalled_ms(Projector *p, uint64_t *seq);
/* Called on the projector thread after each applied batch; must not block.
 * At most 4.  proj_unwatch returns once fn can no longer run for ctx. */
int  proj_watch(Projector *p, void (*fn)(void *ctx, uint64_t applied), void *ctx);
void proj_unwatch(Projector *p, void (*fn)(void *ctx, uint64_t applied), void *ctx);
/* Prometheus lines (projector lag, batches, apply seconds). Any thread. */
void proj_metrics(Projector *p, Buf *out);
/* Catch up to the log head, stop the thread, close the db.  NULL no-op. */
void proj_close(Projector *p);

/* Rebuild a projection of every event of log into out_path (which must not
 * exist).  *events gets the number applied. */
int  proj_replay(Log *log, const char *out_path, uint64_t *events);
/* 0 if the jobs tables and applied seq of a and b are equal; else
 * JG_ECONFLICT with the first difference in msg[cap]. */
int  proj_compare(const char *a, const char *b, char *msg, size_t cap);

/* Added by the read-model owner (issue 3): `jobgate replay --check`.
 * Hold one read snapshot of db_path, rebuild the log up to that
 * snapshot's applied seq into tmp_path (must not exist; left for the
 * caller to remove), and compare as proj_compare() does (tmp first).
 * Works beside a running server.  *events = events replayed. */
int  proj_check(Log *log, const char *db_path, const char *tmp_path,
		uint64_t *events, char *msg, size_t cap);
/* 1 if the directory holding path may be written.  A projection in a
 * read-only directory (a mounted backup) is read immutable: SQLite cannot
 * make its -shm there, and its -wal, if it holds anything, is not read. */
int  proj_dir_writable(const char *path);
/* Delete the projection at db_path with its -wal and -shm (closed, for a
 * start that failed before anything was projected). */
void proj_remove(const char *db_path);

#endif

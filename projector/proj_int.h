/*
 * proj_int.h -- internals shared by projector.c (the thread, replay and
 * compare) and schema.c (the schema, its migrations and the SQL that folds
 * events into rows).  Not a contract for other modules.
 *
 * A ProjDb is one write connection to a projection file with its prepared
 * statements.  It belongs to one thread at a time (the jg-proj thread for
 * the live projection, the caller of proj_replay() for a rebuild).
 */
#ifndef JG_PROJ_INT_H
#define JG_PROJ_INT_H

#include <sqlite3.h>
#include <stdint.h>
#include "../common/buf.h"
#include "../log/log.h"

/* Schema version stored in PRAGMA user_version; see schema.c to bump it. */
#define PDB_VERSION 1

enum {
	PDB_LIVE,	/* WAL, synchronous=NORMAL, schema migrated in place */
	PDB_BULK,	/* fresh file: no journal, no sync, indexes at the end */
};

enum {
	PS_ENQUEUED, PS_STARTED, PS_SUCCEEDED, PS_FAILED, PS_CANCELED,
	PS_RETRIED, PS_STARTED_SUCCEEDED, PS_ROW, PS_APPLIED, PS_BEGIN, PS_COMMIT,
	PS_ROLLBACK, PS_N
};

/* Jobs enqueued in the open snapshot, folded in memory and written as one
 * row each by pdb_flush (schema.c says why).  Tests may lower the cap
 * (0: every event is written as it comes). */
#define PDB_HOLD_MAX 1024
extern int pdb_hold_max;

struct JobState;

typedef struct ProjDb {
	sqlite3      *db;
	sqlite3_stmt *st[PS_N];
	Buf           tmp, tmp2;	/* unescaped JSON strings being bound */
	uint64_t      applied;		/* seq of the last event applied */
	uint64_t      committed;	/* applied as of the last commit */
	int           in_txn;
	int           mode;
	/* A job.started held back by pdb_apply (schema.c says why). */
	struct { int on; uint64_t id, seq; uint32_t attempt; int64_t at_ms; } pend;
	struct JobState *held;		/* [PDB_HOLD_MAX], spans into the snapshot */
	uint16_t     *slot;		/* [2 * PDB_HOLD_MAX]: 1 + index into held, 0 empty */
	int           nheld;
	int64_t       busy_since, busy_last;	/* atomic: pdb_busy's current wait */
} ProjDb;

/* Open path (created if missing) and bring its schema to PDB_VERSION.
 * PDB_BULK expects an empty file.  On failure d is closed.  Logs the
 * SQLite message once on SQLite failures. */
int  pdb_open(ProjDb *d, const char *path, int mode);
void pdb_close(ProjDb *d);			/* zeroed or closed: no-op */
int  pdb_begin(ProjDb *d);
/* Fold one log event into the rows; must be the event after d->applied
 * (JG_ECORRUPT on a gap or an undecodable record).  Inside a txn.  What
 * it holds borrows from the snapshot ev came from: call pdb_flush before
 * that snapshot ends. */
int  pdb_apply(ProjDb *d, const LogEvent *ev);
int  pdb_flush(ProjDb *d);			/* write the held jobs' rows */
int  pdb_commit(ProjDb *d);			/* stores d->applied, commits */
/* Any thread: how long (ms) d's connection has been waiting for another
 * connection's lock, while it still waits; else 0. */
int64_t pdb_busy_ms(ProjDb *d);
void pdb_rollback(ProjDb *d);			/* d->applied = committed */
/* PDB_BULK only: build the indexes, stamp the version, switch to WAL. */
int  pdb_bulk_finish(ProjDb *d);

/* Translate a SQLite result code for `what` into JG_ESQLITE, logging the
 * connection's message once (the boundary named in STYLE.md). */
int  pdb_err(sqlite3 *db, int rc, const char *what);
/* Run SQL without results; 0 or JG_ESQLITE (logged). */
int  pdb_exec(sqlite3 *db, const char *sql);
/* applied_seq of an open connection (in whatever txn it is in). */
int  pdb_read_applied(sqlite3 *db, uint64_t *out);

#endif

/*
 * log_int.h -- private to log/: the Log handle's fields and the helpers
 * log.c (the writer, open/close) shares with reader.c (snapshots, decode,
 * operator views).  The record format is described at the top of log.c.
 */
#ifndef JG_LOG_INT_H
#define JG_LOG_INT_H

#include <lmdb.h>
#include <pthread.h>
#include "log.h"

#define REC_VERSION 1
#define REC_HDR     32
#define MAX_WATCH   8

struct Log {
	MDB_env  *env;
	MDB_dbi   events, byjob, idem;
	int       readonly;
	int       queue_max;
	pthread_mutex_t mu;
	pthread_cond_t  cv;
	LogEntry *qhead, *qtail;	/* {mu} */
	int       qlen;			/* {mu} enqueue entries waiting */
	int       closing;		/* {mu} */
	int       started;
	pthread_t writer;
	uint64_t  head;			/* atomic: last committed seq */
	uint64_t  next;			/* {writer} next seq to assign */
	pthread_mutex_t wmu;		/* guards watch[]: held while calling them */
	struct { LogWatchFn fn; void *ctx; } watch[MAX_WATCH];	/* {wmu} */
	int       nwatch;		/* {wmu} */
	LogStats  st;			/* atomic counters */
	uint64_t  file_end;		/* {writer} bytes of data.mdb already allocated */
	uint64_t  used, map_bytes;	/* {writer} as of the last commit */
	uint64_t  txn_bytes;		/* {writer} records put in the open txn, x2 */
	int64_t   eio_said_ns;		/* {writer} last "EIO read as ENOSPC" line */
	int64_t   prealloc_retry_ns;	/* {writer} failed (ENOSPC): not before this */
	int64_t   fail_said_ns[2];	/* {writer} last logged: [0] batch warning, [1] error */
	uint64_t  fail_quiet[2];	/* {writer} lines of that kind not logged since */
	int64_t   rcheck_ns;		/* {writer} next look for dead readers' slots */
	int64_t   full_first_ms;	/* atomic (writer sets): wall time of the first refusal */
	int64_t   full_last_ns;		/* atomic (writer sets): monotonic, last refusal; 0 none */
	Buf       rec;			/* {writer} scratch record */
};

struct LogReader {
	Log        *l;
	MDB_txn    *txn;
	MDB_cursor *cur, *jcur;
	int         active;
	uint64_t    head;
};

/* LMDB code to ours (map/disk exhaustion is JG_ESTORAGE). */
int      log_mdb_rc(int rc);
/* Events log_verify reads per snapshot (a variable for the unit test). */
extern unsigned log_verify_batch;
/* How often the writer frees the snapshots of readers that died (a
 * variable for the unit test). */
extern int64_t  log_reader_check_ns;
/* One stored record (v) of seq into ev, borrowing from v: 0, or
 * JG_ECORRUPT when its framing does not hold (ev->seq is set either way). */
int      log_decode(uint64_t seq, const MDB_val *v, LogEvent *ev);
/* Last key of dbi in txn into *seq, 0 if empty; an error code if unreadable. */
int      log_last_seq(MDB_txn *txn, MDB_dbi dbi, uint64_t *seq);

#endif

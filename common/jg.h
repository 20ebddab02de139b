/*
 * jg.h -- what every jobgate module shares: error codes, logging, time.
 *
 * Errors: functions return 0 on success, a positive errno value passed
 * through, or a negative JG_E* code; jg_strerror() names both kinds (like
 * LMDB's MDB_* codes and mdb_strerror()).
 *
 * Logging: one JSON object per line on stderr, slog-shaped:
 *   {"time":"2026-02-11T22:03:14.120Z","level":"ERROR","msg":"...","error":"..."}
 * Extra attributes are key/value string pairs ending with NULL.  The level
 * is checked before anything is formatted.  Never pass a token or payload.
 * Thread-safe: each line is written with one write(2).
 */
#ifndef JG_H
#define JG_H

#include <stddef.h>
#include <stdint.h>

enum {
	JG_EINVAL   = -30001,	/* bad argument or input */
	JG_ENOTFOUND = -30002,	/* no such record */
	JG_EFULL    = -30003,	/* queue full: caller should shed load (503) */
	JG_ESTORAGE = -30004,	/* LMDB map or disk full (503 storage_full) */
	JG_ECORRUPT = -30005,	/* a record failed to decode */
	JG_ECLOSED  = -30006,	/* the module is shutting down */
	JG_ECONFLICT = -30007,	/* state does not allow the operation (409) */
	JG_ELOCKED  = -30008,	/* data dir owned by another process */
	JG_ESQLITE  = -30009,	/* SQLite failure (details logged by caller) */
	JG_ELMDB    = -30010,	/* unexpected LMDB failure */
	JG_ETOODEEP = -30011,	/* JSON nested deeper than JSON_MAX_DEPTH */
	JG_ETRUNCATED = -30012,	/* the log's data file ends before its last page */
	JG_EDAMAGED = -30013,	/* LMDB found a bad page (MDB_CORRUPTED, ...);
				 * keep it the last: log_mdb_rc passes the range */
};

const char *jg_strerror(int rc);	/* static string, never NULL */

enum { JG_DEBUG = 0, JG_INFO = 1, JG_WARN = 2, JG_ERROR = 3 };
extern int jg_log_level;		/* lines below this level are dropped */

/* Log msg with attributes: jg_log(JG_INFO, "started", "listen", addr, NULL).
 * A key that starts with '#' names a number: jg_log(..., "#seq", "42", NULL)
 * writes "seq":42 (and "seq":"42x", quoted, if the text is not a JSON
 * number), so that jq can compare it. */
void jg_log(int level, const char *msg, ...) __attribute__((sentinel));

/* Wall clock in milliseconds since the epoch; monotonic clock in ns. */
int64_t jg_now_ms(void);
int64_t jg_mono_ns(void);

/* RFC 3339 UTC with milliseconds ("2026-02-11T22:03:14.120Z") into out,
 * which must hold JG_TIME_LEN+1 bytes.  Returns JG_TIME_LEN. */
#define JG_TIME_LEN 24
int jg_fmt_time(int64_t ms, char *out);

/* Parse jg_fmt_time's form back to ms; 0 or JG_EINVAL. */
int jg_parse_time(const char *s, size_t n, int64_t *ms);

/* The directories a call created on the way to a data dir: len[k] bytes
 * of its path name the k-th, outermost first; leaf: the data dir itself
 * was created by it; lock: so was its lock file.  n is -1 when there were
 * too many to note. */
#define JG_MADE_MAX 64
typedef struct JgMade {
	int    n, leaf, lock;
	size_t len[JG_MADE_MAX];
} JgMade;

/* Take the exclusive lock DIR/lock (creating DIR), held until exit: 0,
 * JG_ELOCKED if another process holds it, or errno. *fd gets the fd.
 * made (may be NULL) gets the directories created for it; on a failure
 * they are removed again (made->n is then 0). */
int jg_datadir_lock(const char *dir, int *fd, JgMade *made);
/* rmdir what made names, innermost first, stopping at one that is not
 * empty: for a start that failed once its own files are gone. */
void jg_made_undo(const char *dir, const JgMade *made);
/* 1 if some process holds DIR/lock now, else 0. */
int jg_datadir_busy(const char *dir);

/* Value of one hex digit, or -1. */
int jg_hexval(char c);

/* Strict unsigned decimal parse of s[0..n); 0 or JG_EINVAL (also on overflow). */
int jg_parse_u64(const char *s, size_t n, uint64_t *out);

#endif

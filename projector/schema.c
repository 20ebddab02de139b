/*
 * schema.c -- the read model's tables, their migrations, and the SQL that
 * folds one log event into the jobs table.
 *
 * Schema v1 (PRAGMA user_version = 1):
 *
 *   jobs   one row per job; id = seq of its job.enqueued event, so
 *          "newest first" is ORDER BY id DESC.  status is the name
 *          ('queued', 'running', ...) so operators can group by it with
 *          the sqlite3 shell.  payload and result hold JSON text exactly as
 *          logged; error and idempotency_key hold the decoded string (not
 *          JSON); times are RFC 3339 UTC text with milliseconds.
 *   meta   key/value; 'applied_seq' = seq of the last event folded in.
 *          It is written in the same transaction as the rows that event
 *          changed, which is what makes the projection exactly-once.
 *
 * Indexes: jobs_job(job, id) and jobs_status(status, id) serve the list
 * filters in id order.  No more: each index costs every status change.
 *
 * To change the schema: add a migration step to `migrations` (step i
 * takes version i to i+1), bump PDB_VERSION, and update
 * docs/read-model.md.  Never edit a released step.  A projection can
 * always be rebuilt from the log instead (scripts/replay).
 *
 * The fold (one UPDATE per event type) mirrors job_fold() in job.c and
 * the rules in docs/architecture.md; tests/unit/test_projector.c checks
 * both paths render every job identically.  Jobs enqueued in the snapshot
 * being applied skip the UPDATEs: job_fold() itself folds them and
 * pdb_flush() writes one row each (see held_find).
 */
#include "proj_int.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/jg.h"
#include "../log/event.h"
#include "job.h"

int pdb_hold_max = PDB_HOLD_MAX;

#define SCHEMA_V1_TABLES \
	"CREATE TABLE jobs(" \
	" id INTEGER PRIMARY KEY," \
	" job TEXT NOT NULL," \
	" status TEXT NOT NULL," \
	" attempts INTEGER NOT NULL," \
	" max_attempts INTEGER NOT NULL," \
	" payload TEXT NOT NULL," \
	" result TEXT," \
	" result_truncated INTEGER NOT NULL," \
	" error TEXT," \
	" exit_code INTEGER," \
	" signal INTEGER," \
	" created_at TEXT NOT NULL," \
	" started_at TEXT," \
	" finished_at TEXT," \
	" seq INTEGER NOT NULL," \
	" idempotency_key TEXT);" \
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value);" \
	"INSERT INTO meta VALUES('applied_seq', 0);"

#define SCHEMA_V1_INDEXES \
	"CREATE INDEX jobs_job ON jobs(job, id);" \
	"CREATE INDEX jobs_status ON jobs(status, id);"

/* migrations[i] takes user_version i to i + 1. */
static const char *const migrations[PDB_VERSION] = {
	SCHEMA_V1_TABLES SCHEMA_V1_INDEXES,
};

/* Every statement binds ?1 = id, ?2 = status, ?3 = seq: every event sets
 * the status it leaves the job in and the job's last seq. */
static const char *const stmt_sql[PS_N] = {
	[PS_ENQUEUED] = "INSERT OR REPLACE INTO jobs(id, status, seq, job,"
		" attempts, max_attempts, payload, result, result_truncated,"
		" error, exit_code, signal, created_at, started_at, finished_at,"
		" idempotency_key) VALUES(?1, ?2, ?3, ?4, 0, ?5, ?6, NULL, 0,"
		" NULL, NULL, NULL, ?7, NULL, NULL, ?8)",
	[PS_STARTED] = "UPDATE jobs SET status = ?2, seq = ?3, attempts = ?4,"
		" started_at = ?5, result = NULL, result_truncated = 0,"
		" error = NULL, exit_code = NULL, signal = NULL,"
		" finished_at = NULL WHERE id = ?1",
	[PS_SUCCEEDED] = "UPDATE jobs SET status = ?2, seq = ?3,"
		" exit_code = ?4, result = ?5, result_truncated = ?6,"
		" finished_at = ?7 WHERE id = ?1",
	/* finished_at only when final: ?7 is NULL when a retry follows. */
	[PS_FAILED] = "UPDATE jobs SET status = ?2, seq = ?3, exit_code = ?4,"
		" signal = ?5, error = ?6, finished_at = coalesce(?7, finished_at)"
		" WHERE id = ?1",
	[PS_CANCELED] = "UPDATE jobs SET status = ?2, seq = ?3,"
		" finished_at = ?4 WHERE id = ?1",
	[PS_RETRIED] = "UPDATE jobs SET status = ?2, seq = ?3,"
		" finished_at = NULL, max_attempts = coalesce(?4, max_attempts)"
		" WHERE id = ?1",
	/* job.started and, at the next seq, its job.succeeded (builtin echo
	 * writes them as a pair): the two UPDATEs above in one. */
	[PS_STARTED_SUCCEEDED] = "UPDATE jobs SET status = ?2, seq = ?3,"
		" attempts = ?4, started_at = ?5, exit_code = ?6, result = ?7,"
		" result_truncated = ?8, finished_at = ?9, error = NULL,"
		" signal = NULL WHERE id = ?1",
	/* A job enqueued in this snapshot, folded in memory (pdb_flush). */
	[PS_ROW] = "INSERT OR REPLACE INTO jobs(id, status, seq, job, attempts,"
		" max_attempts, payload, result, result_truncated, error, exit_code,"
		" signal, created_at, started_at, finished_at, idempotency_key)"
		" VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
		" ?15, ?16)",
	[PS_APPLIED] = "UPDATE meta SET value = ?1 WHERE key = 'applied_seq'",
	/* IMMEDIATE: take the write lock up front so a competing writer (an
	 * operator's sqlite3 shell) shows up as a busy BEGIN, never as a
	 * failure halfway through a batch. */
	[PS_BEGIN] = "BEGIN IMMEDIATE",
	[PS_COMMIT] = "COMMIT",
	[PS_ROLLBACK] = "ROLLBACK",
};

int pdb_err(sqlite3 *db, int rc, const char *what)
{
	char code[16];

	snprintf(code, sizeof code, "%d", rc);
	jg_log(JG_ERROR, "sqlite failed", "op", what, "#code", code,
	       "error", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc), NULL);
	return JG_ESQLITE;
}

int pdb_exec(sqlite3 *db, const char *sql)
{
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : pdb_err(db, rc, sql);
}

/* One integer from a single-row query (a PRAGMA or a meta lookup). */
static int pdb_int(sqlite3 *db, const char *sql, int64_t *out)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

	if (rc != SQLITE_OK)
		goto fail;
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW)
		goto fail;
	*out = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return 0;
fail:
	rc = pdb_err(db, rc, sql);
	sqlite3_finalize(st);
	return rc;
}

int pdb_read_applied(sqlite3 *db, uint64_t *out)
{
	int64_t v = 0;
	int rc = pdb_int(db, "SELECT value FROM meta WHERE key = 'applied_seq'", &v);

	if (rc == 0 && v < 0)
		rc = JG_ECORRUPT;
	*out = rc == 0 ? (uint64_t)v : 0;
	return rc;
}

/* Bring the schema from user_version to PDB_VERSION in one transaction.
 * The version is read inside the txn: two processes opening one file at
 * once (a server and a replay --check) cannot both migrate. */
static int pdb_migrate(sqlite3 *db)
{
	int64_t v = 0, n = 0;
	char sql[64];
	int rc;

	if ((rc = pdb_exec(db, "BEGIN IMMEDIATE")) != 0)
		return rc;
	if ((rc = pdb_int(db, "PRAGMA user_version", &v)) != 0)
		goto out;
	if (v > PDB_VERSION || v < 0) {
		snprintf(sql, sizeof sql, "%lld", (long long)v);
		jg_log(JG_ERROR, "read model schema is newer than this jobgate;"
		       " rebuild it with scripts/replay", "#user_version", sql, NULL);
		rc = JG_ECORRUPT;
		goto out;
	}
	/* Version 0 is a fresh file, or someone else's database: never
	 * migrate into one that already holds tables. */
	if (v == 0 && (rc = pdb_int(db, "SELECT count(*) FROM sqlite_master", &n)) == 0 && n > 0) {
		jg_log(JG_ERROR, "jobs.db is not a jobgate read model (it holds tables and no "
		       "schema version): move it away, the server then builds a new one", NULL);
		rc = JG_ECORRUPT;
		goto out;
	}
	if (rc != 0)
		goto out;
	for (; v < PDB_VERSION && rc == 0; v++)
		rc = pdb_exec(db, migrations[v]);
	if (rc != 0)
		goto out;
	snprintf(sql, sizeof sql, "PRAGMA user_version = %d", PDB_VERSION);
	rc = pdb_exec(db, sql);
out:
	if (rc == 0)
		return pdb_exec(db, "COMMIT");
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

/*
 * Durability.  A live projection runs WAL with synchronous=NORMAL: a
 * commit is not fsynced, only checkpoints are.  A power cut can therefore
 * lose the last few batches -- but never tear one, and applied_seq rolls
 * back together with the rows it describes (same txn).  The projector then
 * re-applies those events from the log, which is the durable truth.  So
 * NORMAL costs nothing in correctness and saves an fsync per batch.
 *
 * WAL size.  wal_autocheckpoint runs PASSIVE checkpoints after commits:
 * they copy what no reader still needs and never wait for readers, so an
 * operator's open sqlite3 shell cannot stall the projector.  Every 128
 * pages (512 KiB), not SQLite's 1000: a checkpoint writes and fsyncs what
 * the WAL gathered, and the log's next fsync on the same disk waits for
 * that burst.  With 1000 pages the echo trigger->succeeded p99 at 6,000
 * triggers/s was 29-39 ms; with 128, 20.5-22.5 (3 paired runs each; 64
 * and 32 pages gave no more; docs/performance.md).
 * journal_size_limit truncates the -wal file back after it was reset,
 * so one burst does not leave a huge file behind.
 */
static const char live_pragmas[] =
	"PRAGMA synchronous = NORMAL;"
	"PRAGMA wal_autocheckpoint = 128;"
	"PRAGMA journal_size_limit = 67108864;"
	"PRAGMA cache_size = -16384;";

/* A fresh file built in one pass: if the process dies the file is simply
 * discarded (it is never the live projection until renamed into place). */
static const char bulk_pragmas[] =
	"PRAGMA journal_mode = OFF;"
	"PRAGMA synchronous = OFF;"
	"PRAGMA locking_mode = EXCLUSIVE;"
	"PRAGMA cache_size = -131072;"
	"PRAGMA temp_store = MEMORY;";

static int pdb_set_wal(sqlite3 *db)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st, NULL);

	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *m = (const char *)sqlite3_column_text(st, 0);
		rc = m && strcmp(m, "wal") == 0 ? SQLITE_OK : SQLITE_CANTOPEN;
	}
	if (rc != SQLITE_OK)
		rc = pdb_err(db, rc, "journal_mode=WAL");
	sqlite3_finalize(st);
	return rc;
}

static int pdb_prepare(ProjDb *d)
{
	int i, rc;

	for (i = 0; i < PS_N; i++) {
		rc = sqlite3_prepare_v3(d->db, stmt_sql[i], -1,
					SQLITE_PREPARE_PERSISTENT, &d->st[i], NULL);
		if (rc != SQLITE_OK)
			return pdb_err(d->db, rc, stmt_sql[i]);
	}
	return 0;
}

/* SQLite's busy handler: only an outside writer (an operator's shell) can
 * make us wait.  Like sqlite3_busy_timeout(5000), and it notes the wait,
 * so /healthz tells a projector stuck behind a lock from one busy with a
 * long batch.  It runs every <= 20 ms while waiting: busy_last that recent
 * means "waiting now". */
#define PDB_BUSY_MS 5000

static int pdb_busy(void *arg, int count)
{
	ProjDb *d = arg;
	int64_t now = jg_mono_ns();

	if (count == 0)
		__atomic_store_n(&d->busy_since, now, __ATOMIC_RELAXED);
	/* release: a reader that sees this busy_last sees its busy_since */
	__atomic_store_n(&d->busy_last, now, __ATOMIC_RELEASE);
	if (now - __atomic_load_n(&d->busy_since, __ATOMIC_RELAXED) >= PDB_BUSY_MS * 1000000LL)
		return 0;	/* SQLITE_BUSY: the batch fails and is retried */
	usleep(count < 10 ? 1000 : count < 40 ? 5000 : 20000);
	return 1;
}

int64_t pdb_busy_ms(ProjDb *d)
{
	int64_t last = __atomic_load_n(&d->busy_last, __ATOMIC_ACQUIRE);
	int64_t since = __atomic_load_n(&d->busy_since, __ATOMIC_RELAXED), now = jg_mono_ns();

	if (!since || now - last > 100 * 1000000LL)
		return 0;
	return (now - since) / 1000000;
}

int pdb_open(ProjDb *d, const char *path, int mode)
{
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
	int rc;

	memset(d, 0, sizeof *d);
	d->mode = mode;
	d->held = calloc(PDB_HOLD_MAX, sizeof *d->held);
	d->slot = calloc(2 * PDB_HOLD_MAX, sizeof *d->slot);
	if (!d->held || !d->slot) {
		pdb_close(d);
		return ENOMEM;
	}
	rc = sqlite3_open_v2(path, &d->db, flags, NULL);
	if (rc != SQLITE_OK) {
		rc = pdb_err(d->db, rc, "open");
		goto out;
	}
	sqlite3_extended_result_codes(d->db, 1);
	sqlite3_busy_handler(d->db, pdb_busy, d);
	if (mode == PDB_BULK) {
		if ((rc = pdb_exec(d->db, bulk_pragmas)) != 0 ||
		    (rc = pdb_exec(d->db, SCHEMA_V1_TABLES)) != 0)
			goto out;
	} else {
		if ((rc = pdb_set_wal(d->db)) != 0 ||
		    (rc = pdb_exec(d->db, live_pragmas)) != 0 ||
		    (rc = pdb_migrate(d->db)) != 0)
			goto out;
	}
	if ((rc = pdb_read_applied(d->db, &d->applied)) != 0 ||
	    (rc = pdb_prepare(d)) != 0)
		goto out;
	d->committed = d->applied;
out:
	if (rc != 0 && d->db && mode == PDB_LIVE &&
	    ((sqlite3_errcode(d->db) & 0xff) == SQLITE_NOTADB ||
	     (sqlite3_errcode(d->db) & 0xff) == SQLITE_CORRUPT))
		jg_log(JG_ERROR, "the read model is damaged or not a SQLite database; it is only "
		       "a view of the log: move it aside (with its -wal and -shm files) and "
		       "start again, which rebuilds it", "path", path, NULL);
	if (rc != 0)
		pdb_close(d);
	return rc;
}

void pdb_close(ProjDb *d)
{
	int i;

	if (d->in_txn)
		pdb_rollback(d);
	for (i = 0; i < PS_N; i++)
		sqlite3_finalize(d->st[i]);
	if (d->db)
		sqlite3_close(d->db);
	buf_free(&d->tmp);
	buf_free(&d->tmp2);
	free(d->held);
	free(d->slot);
	memset(d, 0, sizeof *d);
}

/* Step a bound statement that returns no rows, then reset it. */
static int pdb_step(ProjDb *d, int which)
{
	sqlite3_stmt *st = d->st[which];
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return pdb_err(d->db, rc, stmt_sql[which]);
	return 0;
}

int pdb_begin(ProjDb *d)
{
	int rc;

	assert(!d->in_txn);
	if ((rc = pdb_step(d, PS_BEGIN)) != 0)
		return rc;
	d->in_txn = 1;
	return 0;
}

static int pdb_flush_started(ProjDb *d);

int pdb_commit(ProjDb *d)
{
	sqlite3_stmt *st = d->st[PS_APPLIED];
	int rc;

	assert(d->in_txn);
	assert(d->nheld == 0);		/* pdb_flush before the snapshot ended */
	if (d->nheld) {
		pdb_rollback(d);
		return JG_EINVAL;
	}
	sqlite3_bind_int64(st, 1, (sqlite3_int64)d->applied);
	if ((rc = pdb_flush_started(d)) != 0 ||
	    (rc = pdb_step(d, PS_APPLIED)) != 0 ||
	    (rc = pdb_step(d, PS_COMMIT)) != 0) {
		pdb_rollback(d);
		return rc;
	}
	d->in_txn = 0;
	d->committed = d->applied;
	return 0;
}

void pdb_rollback(ProjDb *d)
{
	/* A failed COMMIT may already have rolled back: ignore "no txn". */
	sqlite3_step(d->st[PS_ROLLBACK]);
	sqlite3_reset(d->st[PS_ROLLBACK]);
	d->in_txn = 0;
	d->pend.on = 0;
	if (d->nheld) {
		d->nheld = 0;
		memset(d->slot, 0, 2 * PDB_HOLD_MAX * sizeof *d->slot);
	}
	d->applied = d->committed;
}

/* Append the UTF-8 encoding of code point c. */
static void utf8_put(Buf *b, uint32_t c)
{
	char u[4];
	size_t n;

	if (c < 0x80) {
		u[0] = (char)c, n = 1;
	} else if (c < 0x800) {
		u[0] = (char)(0xc0 | c >> 6), u[1] = (char)(0x80 | (c & 63)), n = 2;
	} else if (c < 0x10000) {
		u[0] = (char)(0xe0 | c >> 12), u[1] = (char)(0x80 | (c >> 6 & 63));
		u[2] = (char)(0x80 | (c & 63)), n = 3;
	} else {
		u[0] = (char)(0xf0 | c >> 18), u[1] = (char)(0x80 | (c >> 12 & 63));
		u[2] = (char)(0x80 | (c >> 6 & 63)), u[3] = (char)(0x80 | (c & 63));
		n = 4;
	}
	buf_add(b, u, n);
}

static int hex4(const char *p, uint32_t *out)
{
	uint32_t v = 0;
	int i;

	for (i = 0; i < 4; i++) {
		char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
		else return JG_ECORRUPT;
	}
	*out = v;
	return 0;
}

/*
 * Decode the JSON string literal s[0..n) (quotes included) into b.  The
 * columns hold the decoded text so operators can read them; query.c
 * re-encodes with buf_json_str(), which gives back the logged bytes
 * because the log's builders wrote them with buf_json_str() too.
 */
static int json_unquote(const char *s, size_t n, Buf *b)
{
	size_t i;
	uint32_t c, lo;

	if (n < 2 || s[0] != '"' || s[n - 1] != '"')
		return JG_ECORRUPT;
	for (i = 1; i < n - 1; i++) {
		if (s[i] != '\\') {
			buf_add(b, s + i, 1);
			continue;
		}
		if (++i >= n - 1)
			return JG_ECORRUPT;
		switch (s[i]) {
		case '"': case '\\': case '/': buf_add(b, s + i, 1); break;
		case 'b': buf_add(b, "\b", 1); break;
		case 'f': buf_add(b, "\f", 1); break;
		case 'n': buf_add(b, "\n", 1); break;
		case 'r': buf_add(b, "\r", 1); break;
		case 't': buf_add(b, "\t", 1); break;
		case 'u':
			if (i + 4 >= n - 1 || hex4(s + i + 1, &c) != 0)
				return JG_ECORRUPT;
			i += 4;
			if (c >= 0xd800 && c < 0xdc00 && i + 6 < n - 1 &&
			    s[i + 1] == '\\' && s[i + 2] == 'u' &&
			    hex4(s + i + 3, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
				c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
				i += 6;
			} else if (c >= 0xd800 && c < 0xe000) {
				c = 0xfffd;	/* lone surrogate */
			}
			utf8_put(b, c);
			break;
		default:
			return JG_ECORRUPT;
		}
	}
	return b->oom ? ENOMEM : 0;
}

/* The decoded text of a JSON string span into *p and *n (NULL when absent or
 * null).  The text is the span's own bytes, or lives in tmp when it had
 * escapes, so tmp holds at most one string at a time. */
static int jstr_text(Buf *tmp, Span v, const char **p, size_t *n)
{
	int rc;

	*p = NULL, *n = 0;
	if (v.n == 0 || (v.n == 4 && memcmp(v.p, "null", 4) == 0))
		return 0;
	if (v.n < 2 || v.p[0] != '"' || v.p[v.n - 1] != '"')
		return JG_ECORRUPT;
	if (!memchr(v.p, '\\', v.n)) {
		*p = v.p + 1, *n = v.n - 2;
		return 0;
	}
	buf_reset(tmp);
	if ((rc = json_unquote(v.p, v.n, tmp)) != 0)
		return rc;
	*p = tmp->len ? tmp->p : "", *n = tmp->len;
	return 0;
}

/* Bind a JSON string span as decoded text, or NULL when absent/null. */
static int bind_jstr_in(Buf *tmp, sqlite3_stmt *st, int col, Span v)
{
	const char *p;
	size_t n;
	int rc = jstr_text(tmp, v, &p, &n);

	if (rc == 0 && !p)
		sqlite3_bind_null(st, col);
	else if (rc == 0)
		sqlite3_bind_text(st, col, p, (int)n, SQLITE_STATIC);
	return rc;
}

static int bind_jstr(ProjDb *d, sqlite3_stmt *st, int col, Span v)
{
	return bind_jstr_in(&d->tmp, st, col, v);
}

/* Raw JSON span as text, NULL when absent. */
static void bind_span(sqlite3_stmt *st, int col, Span v)
{
	if (v.n == 0)
		sqlite3_bind_null(st, col);
	else
		sqlite3_bind_text(st, col, v.p, (int)v.n, SQLITE_STATIC);
}

/* A result: a JSON null is SQL NULL (same rendering, and `WHERE result
 * IS NULL` means what an operator expects), as is an absent one. */
static void bind_result(sqlite3_stmt *st, int col, Span v)
{
	if (v.n == 4 && memcmp(v.p, "null", 4) == 0)
		sqlite3_bind_null(st, col);
	else
		bind_span(st, col, v);
}

/* An integer, or NULL when the event has none. */
static void bind_opt(sqlite3_stmt *st, int col, int has, int64_t v)
{
	if (has)
		sqlite3_bind_int64(st, col, v);
	else
		sqlite3_bind_null(st, col);
}

/* Times are bound SQLITE_TRANSIENT: the text lives on our stack. */
static void bind_time(sqlite3_stmt *st, int col, int64_t ms)
{
	char t[JG_TIME_LEN + 1];

	if (ms == 0) {
		sqlite3_bind_null(st, col);
		return;
	}
	jg_fmt_time(ms, t);
	sqlite3_bind_text(st, col, t, JG_TIME_LEN, SQLITE_TRANSIENT);
}

static int pdb_bind_event(ProjDb *d, const EventView *v, int *which)
{
	sqlite3_stmt *st;
	const char *status = log_status_name(v->status);
	int rc = 0;

	switch (v->type) {
	case JG_EV_ENQUEUED: *which = PS_ENQUEUED; break;
	case JG_EV_STARTED: *which = PS_STARTED; break;
	case JG_EV_SUCCEEDED: *which = PS_SUCCEEDED; break;
	case JG_EV_FAILED: *which = PS_FAILED; break;
	case JG_EV_CANCELED: *which = PS_CANCELED; break;
	case JG_EV_RETRIED: *which = PS_RETRIED; break;
	default: return JG_ECORRUPT;
	}
	if (status[0] == '?')
		return JG_ECORRUPT;
	st = d->st[*which];
	sqlite3_bind_int64(st, 1, (sqlite3_int64)v->job_id);
	sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)v->seq);
	switch (v->type) {
	case JG_EV_ENQUEUED:
		sqlite3_bind_text(st, 4, v->job.p, (int)v->job.n, SQLITE_STATIC);
		/* job_fold(): an enqueue without a positive limit gets 1. */
		sqlite3_bind_int(st, 5, v->max_attempts > 0 ? v->max_attempts : 1);
		if (v->payload.n == 0)
			sqlite3_bind_text(st, 6, "null", 4, SQLITE_STATIC);
		else
			bind_span(st, 6, v->payload);
		bind_time(st, 7, v->at_ms);
		rc = bind_jstr(d, st, 8, v->idem);
		break;
	case JG_EV_STARTED:
		sqlite3_bind_int64(st, 4, v->attempt);
		bind_time(st, 5, v->at_ms);
		break;
	case JG_EV_SUCCEEDED:
		bind_opt(st, 4, v->has_exit_code, v->exit_code);
		bind_result(st, 5, v->result);
		sqlite3_bind_int(st, 6, v->result_truncated != 0);
		bind_time(st, 7, v->at_ms);
		break;
	case JG_EV_FAILED:
		bind_opt(st, 4, v->has_exit_code, v->exit_code);
		bind_opt(st, 5, v->signal != 0, v->signal);
		rc = bind_jstr(d, st, 6, v->error);
		bind_time(st, 7, v->status == JG_ST_FAILED ? v->at_ms : 0);
		break;
	case JG_EV_CANCELED:
		bind_time(st, 4, v->at_ms);
		break;
	case JG_EV_RETRIED:
		bind_opt(st, 4, v->max_attempts > 0, v->max_attempts);
		break;
	}
	return rc;
}

/*
 * job.started and job.canceled change only what the record header holds
 * (status, attempt, time), so they skip the JSON parse, which is most of
 * the cost of an event.  The view is what event_decode() would give for
 * those members.
 */
static int pdb_decode(const LogEvent *ev, EventView *v)
{
	if (ev->type != JG_EV_STARTED && ev->type != JG_EV_CANCELED)
		return event_decode(ev, v);
	event_view_header(ev, v);
	return 0;
}

/*
 * A job.started is held back one event: when the next event is the same
 * attempt's job.succeeded (an echo's pair, adjacent seqs), both become one
 * UPDATE (PS_STARTED_SUCCEEDED), which saves a statement and a rewrite of
 * the row.  Anything else writes it first.  pdb_commit writes it too, so
 * a txn never ends with it held.
 */
static int pdb_flush_started(ProjDb *d)
{
	sqlite3_stmt *st = d->st[PS_STARTED];

	if (!d->pend.on)
		return 0;
	d->pend.on = 0;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)d->pend.id);
	sqlite3_bind_text(st, 2, log_status_name(JG_ST_RUNNING), -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)d->pend.seq);
	sqlite3_bind_int64(st, 4, d->pend.attempt);
	bind_time(st, 5, d->pend.at_ms);
	return pdb_step(d, PS_STARTED);
}

static int pdb_apply_pair(ProjDb *d, const EventView *v)
{
	sqlite3_stmt *st = d->st[PS_STARTED_SUCCEEDED];

	d->pend.on = 0;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)v->job_id);
	sqlite3_bind_text(st, 2, log_status_name(v->status), -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)v->seq);
	sqlite3_bind_int64(st, 4, d->pend.attempt);
	bind_time(st, 5, d->pend.at_ms);
	bind_opt(st, 6, v->has_exit_code, v->exit_code);
	bind_result(st, 7, v->result);
	sqlite3_bind_int(st, 8, v->result_truncated != 0);
	bind_time(st, 9, v->at_ms);
	return pdb_step(d, PS_STARTED_SUCCEEDED);
}

/*
 * A job enqueued in the current snapshot is not written at once: its
 * events are folded in memory (job_fold, the same rules as the SQL above)
 * and pdb_flush writes the result as one row.  Under load a snapshot
 * usually holds a job's enqueue and its echo pair, which then cost one
 * INSERT instead of an INSERT and an UPDATE (a row rewrite and a move in
 * the status index).  Rows of different jobs are independent, so writing
 * one later than events of others changes nothing, and the txn only
 * commits after the flush.  Only held jobs are looked up: seqs are keys,
 * linear probing in a table twice the cap.
 */
static JobState *held_find(ProjDb *d, uint64_t id)
{
	uint32_t mask = 2 * PDB_HOLD_MAX - 1, i;

	for (i = (uint32_t)id & mask; d->slot[i]; i = (i + 1) & mask)
		if (d->held[d->slot[i] - 1].id == id)
			return &d->held[d->slot[i] - 1];
	return NULL;
}

static JobState *held_add(ProjDb *d, uint64_t id)
{
	uint32_t mask = 2 * PDB_HOLD_MAX - 1, i;

	for (i = (uint32_t)id & mask; d->slot[i]; i = (i + 1) & mask) {}
	d->slot[i] = (uint16_t)(++d->nheld);
	return &d->held[d->nheld - 1];
}

static int pdb_write_row(ProjDb *d, const JobState *js)
{
	sqlite3_stmt *st = d->st[PS_ROW];
	int rc;

	sqlite3_bind_int64(st, 1, (sqlite3_int64)js->id);
	sqlite3_bind_text(st, 2, log_status_name(js->status), -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)js->seq);
	sqlite3_bind_text(st, 4, js->job.p, (int)js->job.n, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, js->attempts);
	sqlite3_bind_int64(st, 6, js->max_attempts);
	if (js->payload.n == 0)
		sqlite3_bind_text(st, 7, "null", 4, SQLITE_STATIC);
	else
		bind_span(st, 7, js->payload);
	bind_result(st, 8, js->result);
	sqlite3_bind_int(st, 9, js->result_truncated != 0);
	bind_opt(st, 11, js->has_exit_code, js->exit_code);
	bind_opt(st, 12, js->signal != 0, js->signal);
	bind_time(st, 13, js->created_at);
	bind_time(st, 14, js->started_at);
	bind_time(st, 15, js->finished_at);
	if ((rc = bind_jstr_in(&d->tmp, st, 10, js->error)) != 0 ||
	    (rc = bind_jstr_in(&d->tmp2, st, 16, js->idem)) != 0) {
		sqlite3_reset(st);
		return rc;
	}
	return pdb_step(d, PS_ROW);
}

int pdb_flush(ProjDb *d)
{
	int i, rc = 0;

	for (i = 0; i < d->nheld && rc == 0; i++)
		rc = pdb_write_row(d, &d->held[i]);
	if (d->nheld) {
		d->nheld = 0;
		memset(d->slot, 0, 2 * PDB_HOLD_MAX * sizeof *d->slot);
	}
	return rc;
}

/* The checks pdb_bind_event makes, for an event folded in memory. */
static int event_known(const EventView *v)
{
	return v->type >= JG_EV_ENQUEUED && v->type <= JG_EV_RETRIED &&
	       log_status_name(v->status)[0] != '?';
}

int pdb_apply(ProjDb *d, const LogEvent *ev)
{
	EventView v;
	JobState *js = NULL;
	int which = 0, rc;

	assert(d->in_txn);
	if (ev->seq != d->applied + 1)
		return JG_ECORRUPT;	/* the log has a gap: never skip */
	if ((rc = pdb_decode(ev, &v)) != 0)
		return rc;
	if (v.type == JG_EV_ENQUEUED && pdb_hold_max > 0) {
		if (d->nheld >= pdb_hold_max || d->nheld >= PDB_HOLD_MAX)
			if ((rc = pdb_flush(d)) != 0)
				return rc;
		if (!event_known(&v))
			return JG_ECORRUPT;
		/* A repeated id (a damaged header) resets its state, as
		 * INSERT OR REPLACE resets its row. */
		if (!(js = held_find(d, v.job_id)))
			js = held_add(d, v.job_id);
	} else if (d->nheld) {
		js = held_find(d, v.job_id);
	}
	if (js) {
		if (!event_known(&v))
			return JG_ECORRUPT;
		/* What pdb_write_row would refuse at flush time, refused
		 * now, so the failure names this event (proj_catch_up then
		 * applies the ones before it). */
		const char *tp;
		size_t tn;
		if ((rc = jstr_text(&d->tmp, v.type == JG_EV_FAILED ? v.error :
				    v.type == JG_EV_ENQUEUED ? v.idem : (Span){0}, &tp, &tn)) != 0)
			return rc;
		job_fold(js, &v);
		d->applied = ev->seq;
		return 0;
	}
	if (d->pend.on && v.type == JG_EV_SUCCEEDED && v.job_id == d->pend.id &&
	    v.attempt == d->pend.attempt && v.status == JG_ST_SUCCEEDED) {
		if ((rc = pdb_apply_pair(d, &v)) != 0)
			return rc;
		d->applied = ev->seq;
		return 0;
	}
	if ((rc = pdb_flush_started(d)) != 0)
		return rc;
	if (v.type == JG_EV_STARTED && v.status == JG_ST_RUNNING) {
		d->pend.on = 1;
		d->pend.id = v.job_id;
		d->pend.seq = v.seq;
		d->pend.attempt = v.attempt;
		d->pend.at_ms = v.at_ms;
		d->applied = ev->seq;
		return 0;
	}
	if ((rc = pdb_bind_event(d, &v, &which)) != 0) {
		sqlite3_reset(d->st[which]);
		return rc;
	}
	/* An event for a job without a row (not possible in a well-formed
	 * log) changes nothing, as job_fold() on an empty state would not
	 * produce a row either. */
	if ((rc = pdb_step(d, which)) != 0)
		return rc;
	d->applied = ev->seq;
	return 0;
}

int pdb_bulk_finish(ProjDb *d)
{
	char sql[64];
	int rc;

	assert(d->mode == PDB_BULK && !d->in_txn);
	snprintf(sql, sizeof sql, "PRAGMA user_version = %d", PDB_VERSION);
	if ((rc = pdb_exec(d->db, SCHEMA_V1_INDEXES)) != 0 ||
	    (rc = pdb_exec(d->db, sql)) != 0 ||
	    (rc = pdb_exec(d->db, "PRAGMA locking_mode = NORMAL;"
			   "PRAGMA synchronous = FULL")) != 0)
		return rc;
	return pdb_set_wal(d->db);
}

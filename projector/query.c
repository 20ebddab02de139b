/*
 * query.c -- read-only queries on the read model (schema: schema.c and
 * docs/read-model.md), for the api thread.
 *
 * A row is turned back into a JobState and rendered by job_json(), the
 * same function that renders a job folded from the log, so the two paths
 * cannot drift apart in format.  The error and idempotency_key columns
 * hold decoded text; they are re-encoded with buf_json_str(), which is
 * how the log's builders encoded them in the first place.
 *
 * Each statement runs in autocommit: a list is one statement, so one
 * snapshot.  WAL readers neither block the projector nor wait for it.
 *
 * Cursors are opaque to clients: 16 lowercase hex digits of the last id
 * returned.  Ids never change and lists are in id order, so a cursor stays
 * valid forever and pages never repeat or skip a job that existed when
 * the first page was read (jobs enqueued later are newer and appear only
 * on a fresh first page).
 */
#include "query.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "../common/jg.h"
#include "../log/log.h"
#include "job.h"
#include "proj_int.h"

#define COLS "SELECT id, job, status, attempts, max_attempts, payload," \
	" result, result_truncated, error, exit_code, signal, created_at," \
	" started_at, finished_at, seq, idempotency_key FROM jobs "
enum {
	C_ID, C_JOB, C_STATUS, C_ATTEMPTS, C_MAX, C_PAYLOAD, C_RESULT, C_TRUNC,
	C_ERROR, C_EXIT, C_SIGNAL, C_CREATED, C_STARTED, C_FINISHED, C_SEQ, C_IDEM
};

/* ?1 = id bound (exclusive), ?2 = limit, ?3 = job, ?4 = status name. */
enum { Q_ONE, Q_ALL, Q_JOB, Q_STATUS, Q_BOTH, Q_N };
static const char *const q_sql[Q_N] = {
	[Q_ONE]    = COLS "WHERE id = ?1",
	[Q_ALL]    = COLS "WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
	[Q_JOB]    = COLS "WHERE job = ?3 AND id < ?1 ORDER BY id DESC LIMIT ?2",
	[Q_STATUS] = COLS "WHERE status = ?4 AND id < ?1 ORDER BY id DESC LIMIT ?2",
	[Q_BOTH]   = COLS "WHERE job = ?3 AND status = ?4 AND id < ?1"
		     " ORDER BY id DESC LIMIT ?2",
};

struct Query {
	sqlite3      *db;
	sqlite3_stmt *st[Q_N];
	Buf           err, idem;	/* re-encoded JSON strings of one row */
};

int query_open(Query **out, const char *db_path)
{
	Query *q = calloc(1, sizeof *q);
	int rc, i;

	*out = NULL;
	if (!q)
		return ENOMEM;
	rc = sqlite3_open_v2(db_path, &q->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		rc = pdb_err(q->db, rc, "open read-only");
		goto out;
	}
	/* A reader waits only while another connection recovers the WAL. */
	sqlite3_busy_timeout(q->db, 2000);
	for (i = 0; i < Q_N; i++) {
		rc = sqlite3_prepare_v3(q->db, q_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
					&q->st[i], NULL);
		if (rc != SQLITE_OK) {
			rc = pdb_err(q->db, rc, q_sql[i]);
			goto out;
		}
	}
	*out = q;
	return 0;
out:
	query_close(q);
	return rc;
}

void query_close(Query *q)
{
	int i;

	if (!q)
		return;
	for (i = 0; i < Q_N; i++)
		sqlite3_finalize(q->st[i]);
	sqlite3_close(q->db);
	buf_free(&q->err);
	buf_free(&q->idem);
	free(q);
}

static Span col_span(sqlite3_stmt *st, int i)
{
	Span s = {NULL, 0};

	if (sqlite3_column_type(st, i) != SQLITE_NULL) {
		s.p = (const char *)sqlite3_column_text(st, i);
		s.n = (size_t)sqlite3_column_bytes(st, i);
		if (!s.p)
			s.n = 0;
	}
	return s;
}

/* Decoded text column as a JSON string literal in b; n == 0 when NULL. */
static Span col_jstr(sqlite3_stmt *st, int i, Buf *b)
{
	Span s = col_span(st, i), r = {NULL, 0};

	if (!s.p)
		return r;
	buf_reset(b);
	buf_json_str(b, s.p, s.n);
	if (b->oom)
		return r;
	r.p = b->p, r.n = b->len;
	return r;
}

static int col_time(sqlite3_stmt *st, int i, int64_t *ms)
{
	Span s = col_span(st, i);

	*ms = 0;
	return s.p ? jg_parse_time(s.p, s.n, ms) : 0;
}

/* Fill js from the current row of st; spans valid until st moves. */
static int row_job(Query *q, sqlite3_stmt *st, JobState *js)
{
	Span status = col_span(st, C_STATUS);
	int rc;

	memset(js, 0, sizeof *js);
	js->id = (uint64_t)sqlite3_column_int64(st, C_ID);
	js->seq = (uint64_t)sqlite3_column_int64(st, C_SEQ);
	js->job = col_span(st, C_JOB);
	js->status = status.p ? log_status_parse(status.p, status.n) : 0;
	js->attempts = (uint32_t)sqlite3_column_int64(st, C_ATTEMPTS);
	js->max_attempts = (uint32_t)sqlite3_column_int64(st, C_MAX);
	js->payload = col_span(st, C_PAYLOAD);
	js->result = col_span(st, C_RESULT);
	js->result_truncated = sqlite3_column_int(st, C_TRUNC) != 0;
	js->error = col_jstr(st, C_ERROR, &q->err);
	js->has_exit_code = sqlite3_column_type(st, C_EXIT) != SQLITE_NULL;
	js->exit_code = sqlite3_column_int64(st, C_EXIT);
	js->signal = sqlite3_column_int(st, C_SIGNAL);
	js->idem = col_jstr(st, C_IDEM, &q->idem);
	if (js->status == 0 || !js->job.p)
		return JG_ECORRUPT;
	if (q->err.oom || q->idem.oom)
		return ENOMEM;
	if ((rc = col_time(st, C_CREATED, &js->created_at)) != 0 ||
	    (rc = col_time(st, C_STARTED, &js->started_at)) != 0 ||
	    (rc = col_time(st, C_FINISHED, &js->finished_at)) != 0)
		return JG_ECORRUPT;
	return 0;
}

int query_job(Query *q, uint64_t id, Buf *out, uint64_t *seq)
{
	sqlite3_stmt *st = q->st[Q_ONE];
	JobState js;
	int rc;

	if (id > INT64_MAX)
		return JG_ENOTFOUND;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		rc = JG_ENOTFOUND;
	} else if (rc != SQLITE_ROW) {
		rc = pdb_err(q->db, rc, "query_job");
	} else if ((rc = row_job(q, st, &js)) == 0) {
		job_json(&js, out);
		if (seq)
			*seq = js.seq;
		rc = out->oom ? ENOMEM : 0;
	}
	sqlite3_reset(st);
	return rc;
}

/* Parse a cursor from query_list's next_cursor: 16 hex digits, id > 0. */
static int cursor_parse(const char *c, int64_t *id)
{
	uint64_t v = 0;
	int i;

	if (strlen(c) != 16)
		return JG_EINVAL;
	for (i = 0; i < 16; i++) {
		char ch = c[i];
		v <<= 4;
		if (ch >= '0' && ch <= '9') v |= (uint64_t)(ch - '0');
		else if (ch >= 'a' && ch <= 'f') v |= (uint64_t)(ch - 'a' + 10);
		else return JG_EINVAL;
	}
	if (v == 0 || v > INT64_MAX)
		return JG_EINVAL;
	*id = (int64_t)v;
	return 0;
}

int query_list(Query *q, const char *job, int status, int limit, size_t max_bytes,
	       const char *cursor, Buf *out)
{
	sqlite3_stmt *st;
	const char *sname = NULL;
	int64_t before = INT64_MAX, last = 0;
	int which, n = 0, rc;
	size_t start = out->len;
	JobState js;

	if (limit < 1 || limit > 1000)
		return JG_EINVAL;
	if (cursor && (rc = cursor_parse(cursor, &before)) != 0)
		return rc;
	if (status) {
		sname = log_status_name(status);
		if (sname[0] == '?')
			return JG_EINVAL;
	}
	which = job ? (status ? Q_BOTH : Q_JOB) : (status ? Q_STATUS : Q_ALL);
	st = q->st[which];
	sqlite3_bind_int64(st, 1, before);
	/* One row more than asked tells whether another page exists. */
	sqlite3_bind_int(st, 2, limit + 1);
	if (job)
		sqlite3_bind_text(st, 3, job, -1, SQLITE_STATIC);
	if (sname)
		sqlite3_bind_text(st, 4, sname, -1, SQLITE_STATIC);
	buf_puts(out, "{\"jobs\":[");
	/* A page stops at limit jobs, or once it holds max_bytes: 1,000 jobs
	 * with 64 MiB results each would otherwise be one 64 GiB answer built
	 * in memory.  Stopping with a row in hand means a next page. */
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < limit &&
	       (n == 0 || out->len - start < max_bytes)) {
		if ((rc = row_job(q, st, &js)) != 0)
			goto out;
		if (n++)
			buf_puts(out, ",");
		job_json(&js, out);
		last = (int64_t)js.id;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		rc = pdb_err(q->db, rc, "query_list");
		goto out;
	}
	buf_puts(out, "],\"next_cursor\":");
	if (rc == SQLITE_ROW)	/* the extra row: there is a next page */
		buf_printf(out, "\"%016llx\"", (unsigned long long)last);
	else
		buf_puts(out, "null");
	buf_puts(out, "}");
	rc = out->oom ? ENOMEM : 0;
out:
	sqlite3_reset(st);
	if (rc != 0 && !out->oom && out->len > start) {
		out->len = start;	/* no half-written list */
		out->p[start] = '\0';
	}
	return rc;
}

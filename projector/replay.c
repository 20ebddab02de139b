/*
 * replay.c -- rebuild a projection from the log, and compare two.
 *
 * A rebuild writes a fresh file in one pass: no journal, no syncs, the
 * indexes created after the rows (one sorted build instead of a b-tree
 * insert per row), then the file is switched to WAL and fsynced.  If
 * anything fails the half-built file is removed: it never becomes a
 * projection.  The events go through the same SQL as the live projector
 * (schema.c), so a rebuild and the live rows agree by construction and
 * two rebuilds of one log are identical.
 *
 * The log is read in short LMDB read txns (REPLAY_BATCH events each) so a
 * rebuild beside a running server does not pin old pages of the log.
 */
#include "projector.h"
#include "proj_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../common/jg.h"

#define REPLAY_BATCH 16384

/* Create path exclusively: a rebuild never overwrites anything. */
static int create_excl(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}

static int fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return errno;
	if (fsync(fd) != 0)
		rc = errno;
	close(fd);
	return rc;
}

#define REPLAY_HEAD UINT64_MAX

/* Fold events 1..upto (REPLAY_HEAD: the head when we start) into a new
 * file; JG_ECONFLICT if the log ends before upto. */
static int replay_into(Log *log, const char *path, uint64_t upto, uint64_t *events)
{
	ProjDb d;
	LogReader *rd = NULL;
	LogEvent ev;
	int rc, first = 1;

	memset(&d, 0, sizeof d);
	*events = 0;
	if ((rc = create_excl(path)) != 0)
		return rc;
	if ((rc = pdb_open(&d, path, PDB_BULK)) != 0 ||
	    (rc = log_reader_open(log, &rd)) != 0 ||
	    (rc = pdb_begin(&d)) != 0)
		goto out;
	for (;;) {
		int n = 0;

		if ((rc = log_reader_begin(rd)) != 0)
			goto out;
		if (first) {
			uint64_t head = log_reader_head(rd);
			if (upto == REPLAY_HEAD)
				upto = head;
			else if (head < upto) {
				log_reader_end(rd);
				rc = JG_ECONFLICT;	/* projection ahead of the log */
				goto out;
			}
			first = 0;
		}
		rc = d.applied < upto ? log_reader_seek(rd, d.applied + 1, &ev) : JG_ENOTFOUND;
		while (rc == 0 && (rc = pdb_apply(&d, &ev)) == 0 &&
		       ++n < REPLAY_BATCH && ev.seq < upto)
			rc = log_reader_next(rd, &ev);
		if (rc == 0 || rc == JG_ENOTFOUND) {
			int frc = pdb_flush(&d);	/* while the snapshot lives */
			if (frc != 0)
				rc = frc;
		}
		log_reader_end(rd);
		if (rc != 0 && rc != JG_ENOTFOUND)
			goto out;
		if (d.applied >= upto)
			break;
		if (n == 0) {		/* a gap before upto */
			rc = JG_ECORRUPT;
			goto out;
		}
	}
	if ((rc = pdb_commit(&d)) != 0 || (rc = pdb_bulk_finish(&d)) != 0)
		goto out;
	*events = d.applied;
out:
	log_reader_close(rd);
	pdb_close(&d);
	if (rc == 0)
		rc = fsync_path(path);
	if (rc != 0)
		unlink(path);
	return rc;
}

int proj_replay(Log *log, const char *out_path, uint64_t *events)
{
	return replay_into(log, out_path, REPLAY_HEAD, events);
}

void proj_remove(const char *db_path)
{
	static const char *const side[] = { "", "-wal", "-shm" };
	char path[4300];

	for (size_t i = 0; i < sizeof side / sizeof side[0]; i++) {
		snprintf(path, sizeof path, "%s%s", db_path, side[i]);
		unlink(path);
	}
}

/* 1 if the directory holding path may be written (SQLite needs that for a
 * WAL file's -shm). */
int proj_dir_writable(const char *path)
{
	char dir[4200];
	const char *slash = strrchr(path, '/');
	size_t n = slash ? (size_t)(slash - path) : 0;

	if (!slash)
		return access(".", W_OK) == 0;
	if (n == 0)
		n = 1;	/* "/jobs.db" */
	if (n >= sizeof dir)
		return 0;
	memcpy(dir, path, n);
	dir[n] = '\0';
	return access(dir, W_OK) == 0;
}

/* A file on a read-only mount (a mounted backup) cannot get its -shm, so
 * it is opened immutable: no locks, no -shm, and no -wal either, which is
 * why proj_check's caller refuses such a file whose -wal holds anything. */
static int open_immutable(const char *path, sqlite3 **db)
{
	char uri[8600], *u = uri;
	const char *p;

	u += snprintf(u, 8, "file:");
	for (p = path; *p && u < uri + sizeof uri - 16; p++) {
		if (*p == '?' || *p == '#' || *p == '%')
			u += snprintf(u, 4, "%%%02x", (unsigned char)*p);
		else
			*u++ = *p;
	}
	if (*p)
		return SQLITE_CANTOPEN;
	snprintf(u, 16, "?immutable=1");
	return sqlite3_open_v2(uri, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI |
			       SQLITE_OPEN_NOMUTEX, NULL);
}

/* A read-only connection inside a read txn (one snapshot for all reads). */
static int open_snapshot(const char *path, sqlite3 **out)
{
	sqlite3 *db = NULL;
	int rc;

	*out = NULL;
	if (access(path, F_OK) != 0)
		return errno;
	if (!proj_dir_writable(path)) {
		rc = open_immutable(path, &db);
		goto opened;
	}
	/* Read-write if allowed, though we only read: the last connection to
	 * close a WAL file deletes its -wal and -shm only if it may write,
	 * and a read-only one would leave them behind on files nobody else
	 * has open (a rebuilt --out file, the temporary file of a check). */
	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		sqlite3_close(db);
		db = NULL;
		rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
	}
opened:
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "PRAGMA query_only = 1", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		rc = pdb_err(db, rc, "open");
		sqlite3_close(db);
		return rc;
	}
	sqlite3_busy_timeout(db, 5000);
	if ((rc = pdb_exec(db, "BEGIN")) != 0) {
		sqlite3_close(db);
		return rc;
	}
	*out = db;
	return 0;
}

static void close_snapshot(sqlite3 *db)
{
	if (db) {
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		sqlite3_close(db);
	}
}

/* 1 if column i of the current rows of a and b holds the same value. */
static int same_value(sqlite3_stmt *a, sqlite3_stmt *b, int i)
{
	int t = sqlite3_column_type(a, i), n;

	if (t != sqlite3_column_type(b, i))
		return 0;
	switch (t) {
	case SQLITE_NULL:
		return 1;
	case SQLITE_INTEGER:
		return sqlite3_column_int64(a, i) == sqlite3_column_int64(b, i);
	case SQLITE_FLOAT:
		return sqlite3_column_double(a, i) == sqlite3_column_double(b, i);
	default:
		n = sqlite3_column_bytes(a, i);
		if (n != sqlite3_column_bytes(b, i))
			return 0;
		return n == 0 || memcmp(sqlite3_column_blob(a, i),
					sqlite3_column_blob(b, i), (size_t)n) == 0;
	}
}

static void show_value(sqlite3_stmt *st, int i, char *out, size_t cap)
{
	const unsigned char *s;

	switch (sqlite3_column_type(st, i)) {
	case SQLITE_NULL:
		snprintf(out, cap, "NULL");
		break;
	case SQLITE_INTEGER:
		snprintf(out, cap, "%lld", (long long)sqlite3_column_int64(st, i));
		break;
	default:
		s = sqlite3_column_text(st, i);
		snprintf(out, cap, "'%.60s'%s", s ? (const char *)s : "",
			 sqlite3_column_bytes(st, i) > 60 ? "..." : "");
	}
}

#define ROWS_SQL "SELECT * FROM jobs ORDER BY id"

/* Walk both jobs tables in id order; describe the first difference,
 * naming the sides a_name and b_name. */
static int compare_rows(sqlite3 *a, sqlite3 *b, const char *a_name, const char *b_name,
			char *msg, size_t cap)
{
	sqlite3_stmt *sa = NULL, *sb = NULL;
	int ra, rb, i, rc = 0;
	char va[96], vb[96];

	if ((ra = sqlite3_prepare_v2(a, ROWS_SQL, -1, &sa, NULL)) != SQLITE_OK)
		return pdb_err(a, ra, ROWS_SQL);
	if ((rb = sqlite3_prepare_v2(b, ROWS_SQL, -1, &sb, NULL)) != SQLITE_OK) {
		rc = pdb_err(b, rb, ROWS_SQL);
		goto out;
	}
	if (sqlite3_column_count(sa) != sqlite3_column_count(sb)) {
		snprintf(msg, cap, "jobs tables have %d and %d columns",
			 sqlite3_column_count(sa), sqlite3_column_count(sb));
		rc = JG_ECONFLICT;
		goto out;
	}
	for (;;) {
		ra = sqlite3_step(sa);
		rb = sqlite3_step(sb);
		if (ra != SQLITE_ROW && ra != SQLITE_DONE) {
			rc = pdb_err(a, ra, ROWS_SQL);
			break;
		}
		if (rb != SQLITE_ROW && rb != SQLITE_DONE) {
			rc = pdb_err(b, rb, ROWS_SQL);
			break;
		}
		if (ra == SQLITE_DONE && rb == SQLITE_DONE)
			break;
		if (ra == SQLITE_DONE || rb == SQLITE_DONE ||
		    sqlite3_column_int64(sa, 0) != sqlite3_column_int64(sb, 0)) {
			sqlite3_stmt *extra = ra == SQLITE_DONE ? sb : rb == SQLITE_DONE ? sa :
				sqlite3_column_int64(sa, 0) < sqlite3_column_int64(sb, 0) ? sa : sb;
			snprintf(msg, cap, "job %lld is only in %s",
				 (long long)sqlite3_column_int64(extra, 0),
				 extra == sa ? a_name : b_name);
			rc = JG_ECONFLICT;
			break;
		}
		for (i = 1; i < sqlite3_column_count(sa); i++)
			if (!same_value(sa, sb, i))
				break;
		if (i < sqlite3_column_count(sa)) {
			show_value(sa, i, va, sizeof va);
			show_value(sb, i, vb, sizeof vb);
			snprintf(msg, cap, "job %lld: %s is %s in %s vs %s in %s",
				 (long long)sqlite3_column_int64(sa, 0),
				 sqlite3_column_name(sa, i), va, a_name, vb, b_name);
			rc = JG_ECONFLICT;
			break;
		}
	}
out:
	sqlite3_finalize(sa);
	sqlite3_finalize(sb);
	return rc;
}

static int compare_dbs(sqlite3 *a, sqlite3 *b, const char *a_name, const char *b_name,
		       char *msg, size_t cap)
{
	uint64_t sa, sb;
	int rc;

	if ((rc = pdb_read_applied(a, &sa)) != 0 || (rc = pdb_read_applied(b, &sb)) != 0)
		return rc;
	if (sa != sb) {
		snprintf(msg, cap, "applied_seq is %" PRIu64 " in %s vs %" PRIu64 " in %s",
			 sa, a_name, sb, b_name);
		return JG_ECONFLICT;
	}
	return compare_rows(a, b, a_name, b_name, msg, cap);
}

int proj_compare(const char *a, const char *b, char *msg, size_t cap)
{
	sqlite3 *da = NULL, *db = NULL;
	int rc;

	if (cap)
		msg[0] = '\0';
	if ((rc = open_snapshot(a, &da)) == 0 && (rc = open_snapshot(b, &db)) == 0)
		rc = compare_dbs(da, db, "the first", "the second", msg, cap);
	close_snapshot(da);
	close_snapshot(db);
	return rc;
}

/* 1 if db has the tables of a read model (asked without logging: a file
 * that is not a database at all fails here too). */
static int is_projection(sqlite3 *db)
{
	sqlite3_stmt *st = NULL;
	int ok = 0;

	if (sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
			       " AND name IN ('jobs', 'meta')", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		ok = sqlite3_column_int(st, 0) == 2;
	sqlite3_finalize(st);
	return ok;
}

int proj_check(Log *log, const char *db_path, const char *tmp_path,
	       uint64_t *events, char *msg, size_t cap)
{
	sqlite3 *live = NULL, *fresh = NULL;
	uint64_t applied = 0;
	int rc;

	*events = 0;
	if (cap)
		msg[0] = '\0';
	/* Hold one snapshot of the live file for the whole check, so a
	 * running projector that commits meanwhile cannot skew it. */
	if ((rc = open_snapshot(db_path, &live)) != 0)
		goto out;
	if (!is_projection(live)) {
		snprintf(msg, cap, "it is not a jobgate read model (no jobs and meta tables)");
		rc = JG_ECORRUPT;
		goto out;
	}
	if ((rc = pdb_read_applied(live, &applied)) != 0)
		goto out;
	rc = replay_into(log, tmp_path, applied, events);
	if (rc == JG_ECONFLICT) {
		snprintf(msg, cap, "the projection has applied seq %" PRIu64
			 ", beyond the log head", applied);
		goto out;
	}
	if (rc != 0 || (rc = open_snapshot(tmp_path, &fresh)) != 0)
		goto out;
	rc = compare_dbs(fresh, live, "the log's replay", "the projection", msg, cap);
out:
	close_snapshot(fresh);
	close_snapshot(live);
	return rc;
}

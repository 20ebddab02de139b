/*
 * cmd_replay.c -- `jobgate replay`: rebuild the SQLite read model from the
 * event log (SPEC §2).
 *
 * Three modes:
 *   (default)     replace DIR/jobs.db.  Takes the data dir lock, so it
 *                 refuses while a server runs and no server can start
 *                 while it works.  The new file is built beside the old
 *                 one and renamed over it: a crash leaves the old one.
 *   --out FILE    build into FILE (must not exist).  Safe beside a server:
 *                 the log is read in short LMDB read txns.
 *   --check       rebuild, up to the applied seq of the projection being
 *                 checked, into a temporary file and compare the two;
 *                 exit 1 with the first difference.  The projection is
 *                 DIR/jobs.db, or FILE with --out.  Safe beside a server:
 *                 the live file is read in one snapshot.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/jg.h"
#include "../log/log.h"
#include "../projector/projector.h"
#include "cli.h"

static const char usage[] =
	"usage: jobgate replay [--data-dir DIR] [--out FILE] [--check]\n"
	"\n"
	"Rebuild the SQLite read model (DIR/jobs.db) from the event log.\n"
	"\n"
	"  --data-dir DIR  the server's data directory (default ./data)\n"
	"  --out FILE      write the rebuilt projection to FILE (which must not\n"
	"                  exist) instead of replacing DIR/jobs.db; allowed\n"
	"                  while a server runs\n"
	"  --check         rebuild into a temporary file and compare it with the\n"
	"                  projection (DIR/jobs.db, or FILE with --out); exit 1\n"
	"                  with the first difference; allowed while a server runs\n"
	"\n"
	"Without --out or --check, DIR/jobs.db is replaced: the server must be\n"
	"stopped.  scripts/replay wraps this with a backup and verification.\n";

typedef struct ReplayArgs {
	const char *dir, *out;
	int check;
} ReplayArgs;

static int parse_args(int argc, char **argv, ReplayArgs *a)
{
	int rc;

	a->dir = "./data";
	a->out = NULL;
	a->check = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--data-dir")) {
			if ((rc = cli_value(argc, argv, &i, "replay", &a->dir)) != 0)
				return rc;
		} else if (!strcmp(argv[i], "--out")) {
			if ((rc = cli_value(argc, argv, &i, "replay", &a->out)) != 0)
				return rc;
		} else if (!strcmp(argv[i], "--check")) {
			a->check = 1;
		} else {
			return cli_bad("replay", "unknown argument '%s'", argv[i]);
		}
	}
	return 0;
}

static int err1(const char *what, const char *path, int rc)
{
	fprintf(stderr, "jobgate replay: %s%s%s: %s\n", what, path ? " " : "",
		path ? path : "", jg_strerror(rc));
	return 1;
}

static double secs_since(int64_t t0)
{
	return (double)(jg_mono_ns() - t0) / 1e9;
}

static void report(const char *path, uint64_t n, int64_t t0)
{
	double s = secs_since(t0);

	printf("replayed %" PRIu64 " events into %s in %.3f s (%.0f events/s)\n",
	       n, path, s, s > 0 ? (double)n / s : 0.0);
}

/* Remove path's -wal and -shm: sidecars of the file being replaced must
 * never be applied to the new one.  First let SQLite fold a healthy WAL
 * into its file (checkpoint on close), so a crash before the rename still
 * leaves a consistent old projection; a broken file loses its WAL, which
 * is what is being rebuilt anyway. */
static int retire_sidecars(const char *path)
{
	char side[4300];
	sqlite3 *db = NULL;
	int rc = 0;

	snprintf(side, sizeof side, "%s-wal", path);
	if (access(side, F_OK) == 0 &&
	    sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK)
		sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
	sqlite3_close(db);
	if (unlink(side) != 0 && errno != ENOENT)
		rc = errno;
	snprintf(side, sizeof side, "%s-shm", path);
	if (unlink(side) != 0 && errno != ENOENT && rc == 0)
		rc = errno;
	return rc;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return errno;
	if (fsync(fd) != 0)
		rc = errno;
	close(fd);
	return rc;
}

static int do_replace(Log *l, const char *dir)
{
	char db[4200], tmp[4300];
	uint64_t n = 0;
	int64_t t0 = jg_mono_ns();
	int rc;

	snprintf(db, sizeof db, "%s/jobs.db", dir);
	snprintf(tmp, sizeof tmp, "%s.replay-%ld", db, (long)getpid());
	if ((rc = proj_replay(l, tmp, &n)) != 0)
		return err1("rebuild failed", NULL, rc);
	if ((rc = retire_sidecars(db)) != 0) {
		unlink(tmp);
		return err1("cannot remove the old WAL of", db, rc);
	}
	if (rename(tmp, db) != 0) {
		rc = errno;
		unlink(tmp);
		return err1("cannot rename the new projection to", db, rc);
	}
	if ((rc = fsync_dir(dir)) != 0)
		return err1("cannot sync", dir, rc);
	report(db, n, t0);
	return 0;
}

static int do_out(Log *l, const char *out)
{
	uint64_t n = 0;
	int64_t t0 = jg_mono_ns();
	int rc = proj_replay(l, out, &n);

	if (rc == EEXIST) {
		fprintf(stderr, "jobgate replay: %s already exists; choose a new file\n", out);
		return 1;
	}
	if (rc != 0)
		return err1("rebuild failed into", out, rc);
	report(out, n, t0);
	return 0;
}

static int do_check(Log *l, const char *dir, const char *target)
{
	char db[4200], tmp[4300], tmpd[4200] = "", msg[512];
	uint64_t n = 0;
	int64_t t0 = jg_mono_ns();
	int rc;

	if (!target) {
		snprintf(db, sizeof db, "%s/jobs.db", dir);
		target = db;
	}
	if (access(target, F_OK) != 0) {
		fprintf(stderr, "jobgate replay: no projection to check at %s\n", target);
		return 1;
	}
	if (!proj_dir_writable(target)) {
		/* A mounted backup: nothing can be made beside it, and a -wal
		 * that holds transactions cannot be read without its -shm. */
		struct stat st;
		const char *tmpdir = getenv("TMPDIR");

		snprintf(tmp, sizeof tmp, "%s-wal", target);
		if (stat(tmp, &st) == 0 && st.st_size > 0) {
			fprintf(stderr, "jobgate replay: %s is in a read-only directory and its -wal "
				"holds transactions SQLite cannot read there; copy the data dir "
				"somewhere writable to check it\n", target);
			return 1;
		}
		/* A private directory: a name in a shared /tmp that another
		 * user can guess can also be taken first. */
		snprintf(tmpd, sizeof tmpd, "%s/jobgate-check-XXXXXX",
			 tmpdir && *tmpdir ? tmpdir : "/tmp");
		if (!mkdtemp(tmpd)) {
			fprintf(stderr, "jobgate replay: cannot make a scratch directory %s: %s\n",
				tmpd, strerror(errno));
			return 1;
		}
		snprintf(tmp, sizeof tmp, "%s/check.db", tmpd);
	} else {
		snprintf(tmp, sizeof tmp, "%s.check-%ld", target, (long)getpid());
	}
	rc = proj_check(l, target, tmp, &n, msg, sizeof msg);
	unlink(tmp);
	if (tmpd[0])
		rmdir(tmpd);
	if (rc == JG_ECONFLICT) {
		printf("check failed: %s differs from the log: %s\n", target, msg);
		return 1;
	}
	if (rc == JG_ECORRUPT && msg[0]) {
		fprintf(stderr, "jobgate replay: check failed for %s: %s\n", target, msg);
		return 1;
	}
	if (rc != 0)
		return err1("check failed for", target, rc);
	printf("check ok: %s equals the log replayed to seq %" PRIu64
	       " (%.3f s)\n", target, n, secs_since(t0));
	return 0;
}

int cmd_replay(int argc, char **argv)
{
	ReplayArgs a;
	Log *l = NULL;
	int rc, code, lockfd = -1;

	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(usage, stdout);
			return 0;
		}
	if ((rc = parse_args(argc, argv, &a)) != 0)
		return rc;
	if (!a.out && !a.check) {
		char path[4200];
		struct stat st;

		/* Locking creates the dir and its lock file: not for nothing. */
		snprintf(path, sizeof path, "%s/log/data.mdb", a.dir);
		if (stat(path, &st) != 0) {
			fprintf(stderr, "jobgate replay: no event log in %s (expected %s)\n",
				a.dir, path);
			return 1;
		}
		/* Held until exit: no server may start on a half-swapped dir. */
		rc = jg_datadir_lock(a.dir, &lockfd, NULL);
		if (rc == JG_ELOCKED) {
			fprintf(stderr, "jobgate replay: %s is in use by a running server;"
				" stop it first, or use --out FILE or --check\n", a.dir);
			return 1;
		}
		if (rc != 0)
			return err1("cannot lock", a.dir, rc);
	}
	if ((code = cli_open_log("replay", a.dir, &l)) != 0)
		goto out;
	if (a.check)
		code = do_check(l, a.dir, a.out);
	else if (a.out)
		code = do_out(l, a.out);
	else
		code = do_replace(l, a.dir);
out:
	log_close(l);
	if (lockfd >= 0)
		close(lockfd);
	return code;
}

/*
 * log.c -- the ordered event log on LMDB, with one writer thread and group
 * commit.
 *
 * Layout.  DATA/log is an LMDB environment with three named databases,
 * all written only by the writer thread, all in the same txn per batch:
 *
 *   events  MDB_INTEGERKEY  u64 seq -> record (below).  Seqs start at 1 and
 *           are contiguous; puts use MDB_APPEND, so a seq can never be
 *           rewritten.
 *   byjob   MDB_INTEGERKEY|MDB_DUPSORT|MDB_DUPFIXED|MDB_INTEGERDUP
 *           u64 job_id -> u64 seq, one dup per event of the job.
 *   idem    actor "\0" job "\0" key -> u64 job_id (idempotency keys).
 *
 * Record, version 1 (little-endian, as the host; LMDB files are not
 * portable across endianness either):
 *
 *    0  u8   version (1)
 *    1  u8   type     JG_EV_*
 *    2  u8   status   JG_ST_* after the event
 *    3  u8   name_len length of the job name that follows the header
 *    4  u32  attempt
 *    8  u64  job_id   (== seq for job.enqueued)
 *   16  i64  at_ms    wall clock when the writer encoded it
 *   24  u32  pay_off  offset in json of the ",\"payload\":V" member
 *   28  u32  pay_len  its length; 0 when the event has no payload
 *   32  name[name_len]
 *   ..  json          the event object without its seq: {"type":...}
 *
 * The fixed header lets consumers (streams, runner, waiters) filter by job,
 * status and type without parsing JSON; the JSON is what clients receive,
 * rendered as "{\"seq\":N," + json[1..].  To change the format, bump the
 * version byte, keep decoding every older version in log_decode() (in
 * reader.c, with the readers), and
 * say what changed here.
 *
 * Group commit.  Appenders push LogEntry structs on q_log (mutex + condvar)
 * and return.  The writer takes the whole queue, writes it in one txn,
 * commits (LMDB fsyncs data, then the meta page), and only then calls each
 * entry's done() and the watchers.  While it is committing, new entries
 * pile up and form the next batch, so the fsync cost is shared by
 * everything that arrived during the previous one.
 *
 * Failure.  If a txn fails (map full, ENOSPC, EIO) it is aborted whole:
 * every entry of the batch is answered with an error and nothing of it is
 * visible; earlier batches are untouched.  The next batch starts again from
 * the committed head.
 */
#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "../common/jg.h"
#include "event.h"
#include "log.h"
#include "log_int.h"

#define PREALLOC_STEP   (8u << 20)	/* zero-fill the data file this far ahead */
#define PREALLOC_CHUNK  (256u << 10)	/* at most this much per writer turn */
#define PREALLOC_SPARE  (64u << 20)	/* leave the filesystem at least this free */

static int commit_default(void *txn) { return mdb_txn_commit(txn); }
int (*log_commit_fn)(void *mdb_txn) = commit_default;



static const char *type_names[] = { "?", "job.enqueued", "job.started",
	"job.succeeded", "job.failed", "job.canceled", "job.retried" };
static const char *status_names[] = { "?", "queued", "running", "succeeded",
	"failed", "canceled" };

const char *log_type_name(int t)
{
	return t >= 1 && t <= JG_EV_RETRIED ? type_names[t] : "?";
}

const char *log_status_name(int s)
{
	return s >= 1 && s <= JG_ST_CANCELED ? status_names[s] : "?";
}

int log_status_parse(const char *s, size_t n)
{
	for (int i = 1; i <= JG_ST_CANCELED; i++)
		if (strlen(status_names[i]) == n && memcmp(status_names[i], s, n) == 0)
			return i;
	return 0;
}

int log_status_final(int st)
{
	return st == JG_ST_SUCCEEDED || st == JG_ST_FAILED || st == JG_ST_CANCELED;
}

/* Set once a server's (writable) log is open.  From then on LMDB reporting
 * a damaged page ends the process like failing one of its page assertions
 * (log_mdb_assert): which of the two a damaged page causes depends on which
 * check meets it first, and a server that went on after the report (the
 * runner's recovery, say) ran half blind.  The CLI tools open read-only and
 * report the damage themselves. */
static atomic_int log_damage_fatal;

/* Map an LMDB code to ours: map/disk exhaustion is storage_full. */
int log_mdb_rc(int rc)
{
	switch (rc) {
	case 0:             return 0;
	case MDB_NOTFOUND:  return JG_ENOTFOUND;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID:
	case MDB_INCOMPATIBLE:	/* our databases' flags never change: damage */
	case MDB_CURSOR_FULL:	/* a tree deeper than LMDB allows: damage */
		if (atomic_load(&log_damage_fatal)) {
			jg_log(JG_ERROR, "the event log is damaged: restore it from a backup",
			       "lmdb", mdb_strerror(rc), NULL);
			_exit(1);
		}
		return JG_EDAMAGED;
	case MDB_PANIC:
		/* A failed meta page write (EIO) leaves LMDB refusing every txn,
		 * reads too, until the environment is opened again: a server
		 * that went on would answer 500 to every trigger and 404 for
		 * jobs it acknowledged.  Nothing acknowledged is at stake (the
		 * failed commit was not), and a restart reopens it. */
		if (atomic_load(&log_damage_fatal)) {
			jg_log(JG_ERROR, "the event log failed and stays unusable until a restart: exiting",
			       "lmdb", mdb_strerror(rc), NULL);
			_exit(1);
		}
		return JG_ELMDB;
	case MDB_MAP_FULL:
	case ENOSPC:
	case EDQUOT:        return JG_ESTORAGE;
	default:	/* errnos and our own JG_* codes pass through */
		if (rc > 0 || (rc <= JG_EINVAL && rc >= JG_EDAMAGED))
			return rc;
		/* Any other LMDB code is unexpected: JG_ELMDB says only "LMDB
		 * failure", so name the code once here for whoever reads the log. */
		jg_log(JG_WARN, "unexpected LMDB error", "lmdb", mdb_strerror(rc), NULL);
		return JG_ELMDB;
	}
}

/* The last key of dbi in txn into *seq (0 when empty). */
int log_last_seq(MDB_txn *txn, MDB_dbi dbi, uint64_t *seq)
{
	MDB_cursor *c;
	MDB_val k, v;
	int rc;

	*seq = 0;
	if ((rc = mdb_cursor_open(txn, dbi, &c)) != 0)
		return log_mdb_rc(rc);
	rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	mdb_cursor_close(c);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return log_mdb_rc(rc);
	if (k.mv_size != 8)
		return JG_ECORRUPT;
	memcpy(seq, k.mv_data, 8);
	return 0;
}

/* A data file cut short (a partial copy, a disk that filled during one)
 * ends before the last page its meta page names; LMDB maps the file and
 * would die of SIGBUS on the first read past its end.  An existing file
 * shorter than its two meta pages (empty, say) LMDB would silently
 * initialise as a new, empty log.  Refuse both.  before: ahead of
 * mdb_env_open (file size only); else after it (against the meta). */
static int check_size(Log *l, const char *dir, int before)
{
	char path[4300];
	MDB_envinfo info;
	MDB_stat st;
	struct stat fs;
	long pg = sysconf(_SC_PAGESIZE);

	snprintf(path, sizeof path, "%s/data.mdb", dir);
	if (stat(path, &fs) != 0)
		return 0;	/* a new log, or LMDB reports what it finds */
	if (before)
		return (uint64_t)fs.st_size < 2 * (uint64_t)(pg > 0 ? pg : 4096) ? JG_ETRUNCATED : 0;
	if (mdb_env_info(l->env, &info) != 0 || mdb_env_stat(l->env, &st) != 0)
		return 0;
	if ((uint64_t)fs.st_size < ((uint64_t)info.me_last_pgno + 1) * st.ms_psize)
		return JG_ETRUNCATED;
	return 0;
}

/* LMDB checks its pages with assert(); a damaged page (zeroed, say) fails
 * one and LMDB aborts.  It cannot go on, but it can say why: one clear
 * line and exit 1, not SIGABRT and a core.  Any thread. */
static void log_mdb_assert(MDB_env *env, const char *msg)
{
	(void)env;
	jg_log(JG_ERROR, "the event log is damaged: restore it from a backup", "lmdb", msg, NULL);
	_exit(1);
}

/* Open the three databases (creating them unless readonly) and read the head. */
static int open_dbs(Log *l)
{
	MDB_txn *txn;
	unsigned cf = l->readonly ? 0 : MDB_CREATE;
	int rc = mdb_txn_begin(l->env, NULL, l->readonly ? MDB_RDONLY : 0, &txn);

	if (rc != 0)
		return log_mdb_rc(rc);
	if ((rc = mdb_dbi_open(txn, "events", cf | MDB_INTEGERKEY, &l->events)) != 0)
		goto out;
	if ((rc = mdb_dbi_open(txn, "byjob", cf | MDB_INTEGERKEY | MDB_DUPSORT |
			       MDB_DUPFIXED | MDB_INTEGERDUP, &l->byjob)) != 0)
		goto out;
	if ((rc = mdb_dbi_open(txn, "idem", cf, &l->idem)) != 0)
		goto out;
	if ((rc = log_last_seq(txn, l->events, &l->head)) != 0)
		goto out;
	l->next = l->head + 1;
	/* Commit even a read-only txn: aborting it would close the dbi
	 * handles it opened. */
	return log_mdb_rc(mdb_txn_commit(txn));
out:
	mdb_txn_abort(txn);
	return log_mdb_rc(rc);
}

static void map_used(Log *l);
static void warn_if_full(Log *l);

int log_open(Log **out, const char *dir, const LogOptions *o)
{
	char path[4200];
	Log *l;
	int rc;

	*out = NULL;
	snprintf(path, sizeof path, "%s/log", dir);
	if (!o->readonly && mkdir(path, 0700) != 0 && errno != EEXIST)
		return errno;
	if (!(l = calloc(1, sizeof *l)))
		return ENOMEM;
	l->readonly = o->readonly;
	l->queue_max = o->queue_max > 0 ? o->queue_max : 65536;
	pthread_mutex_init(&l->mu, NULL);
	pthread_mutex_init(&l->wmu, NULL);
	pthread_cond_init(&l->cv, NULL);
	if ((rc = mdb_env_create(&l->env)) != 0)
		goto out;
	mdb_env_set_assert(l->env, log_mdb_assert);	/* EINVAL if built without asserts */
	mdb_env_set_maxdbs(l->env, 4);
	mdb_env_set_maxreaders(l->env, 1024);
	/* A read-only open (the CLI) keeps the map size the server recorded,
	 * so `log stat` shows the server's limit, not a default of its own. */
	if (!l->readonly)
		mdb_env_set_mapsize(l->env,
				    (size_t)(o->map_size_mb > 0 ? o->map_size_mb : 8192) << 20);
	/* MDB_NOTLS: read txns are tied to LogReader handles, not threads, so
	 * one thread may hold several (the api thread serves many streams). */
	if ((rc = check_size(l, path, 1)) != 0)
		goto out;
	rc = mdb_env_open(l->env, path, MDB_NOTLS | (l->readonly ? MDB_RDONLY : 0), 0600);
	if (rc != 0)
		goto out;
	if ((rc = check_size(l, path, 0)) != 0 || (rc = open_dbs(l)) != 0)
		goto out;
	if (!l->readonly) {
		atomic_store(&log_damage_fatal, 1);
		map_used(l);
		warn_if_full(l);
	}
	*out = l;
	return 0;
out:
	log_close(l);
	return log_mdb_rc(rc);
}

int log_watch(Log *l, LogWatchFn fn, void *ctx)
{
	int rc = 0;

	pthread_mutex_lock(&l->wmu);
	if (l->nwatch == MAX_WATCH) {
		rc = JG_EINVAL;
	} else {
		l->watch[l->nwatch].fn = fn;
		l->watch[l->nwatch].ctx = ctx;
		l->nwatch++;
	}
	pthread_mutex_unlock(&l->wmu);
	return rc;
}

void log_unwatch(Log *l, LogWatchFn fn, void *ctx)
{
	pthread_mutex_lock(&l->wmu);
	for (int i = 0; i < l->nwatch; i++)
		if (l->watch[i].fn == fn && l->watch[i].ctx == ctx) {
			l->watch[i] = l->watch[--l->nwatch];
			break;
		}
	pthread_mutex_unlock(&l->wmu);
}

uint64_t log_head(Log *l)
{
	return __atomic_load_n(&l->head, __ATOMIC_ACQUIRE);
}

int64_t log_full_since(Log *l, int64_t window_ms)
{
	int64_t last = __atomic_load_n(&l->full_last_ns, __ATOMIC_ACQUIRE);

	if (!last || jg_mono_ns() - last > window_ms * 1000000)
		return 0;
	return __atomic_load_n(&l->full_first_ms, __ATOMIC_RELAXED);
}

/* Writer thread: note whether an enqueue was refused for space.  The first
 * refusal since the last enqueue that was written is the "since"; a
 * replay of an idempotency key writes nothing, so it says nothing about
 * room either way. */
static void note_space(Log *l, const LogEntry *e)
{
	if (e->type != JG_EV_ENQUEUED)
		return;
	if (e->rc == JG_ESTORAGE) {
		if (!__atomic_load_n(&l->full_last_ns, __ATOMIC_RELAXED))
			__atomic_store_n(&l->full_first_ms, jg_now_ms(), __ATOMIC_RELAXED);
		__atomic_store_n(&l->full_last_ns, jg_mono_ns(), __ATOMIC_RELEASE);
	} else if (e->rc == 0 && !e->replayed) {
		__atomic_store_n(&l->full_last_ns, 0, __ATOMIC_RELEASE);
	}
}

static void entry_reset(LogEntry *e)
{
	e->next = NULL;
	e->rc = 0;
	e->seq = 0;
	e->replayed = 0;
	e->joined = 0;
}

/* {l->mu} */
static void queue_push(Log *l, LogEntry *e)
{
	if (l->qtail)
		l->qtail->next = e;
	else
		l->qhead = e;
	l->qtail = e;
	if (e->type == JG_EV_ENQUEUED)
		l->qlen++;
}

int log_submit(Log *l, LogEntry *e)
{
	int rc = 0;

	entry_reset(e);
	pthread_mutex_lock(&l->mu);
	if (l->closing || l->readonly) {
		rc = JG_ECLOSED;
	} else if (e->type == JG_EV_ENQUEUED && l->qlen >= l->queue_max) {
		/* Only new work is shed: status events of jobs already
		 * accepted must never be refused, or a job could stick. */
		rc = JG_EFULL;
	} else {
		queue_push(l, e);
		pthread_cond_signal(&l->cv);
	}
	pthread_mutex_unlock(&l->mu);
	return rc;
}

/* Both under one lock: the writer takes the queue whole, so a pair is never
 * split between batches; write_all keeps it in one txn when it splits one. */
int log_submit_pair(Log *l, LogEntry *a, LogEntry *b)
{
	int rc = 0;

	entry_reset(a);
	entry_reset(b);
	b->joined = 1;
	pthread_mutex_lock(&l->mu);
	if (l->closing || l->readonly) {
		rc = JG_ECLOSED;
	} else {
		queue_push(l, a);
		queue_push(l, b);
		pthread_cond_signal(&l->cv);
	}
	pthread_mutex_unlock(&l->mu);
	return rc;
}

/* Writer thread: encode e as record v1 (seq already assigned) into l->rec. */
static void encode(Log *l, LogEntry *e, int64_t at)
{
	Buf *b = &l->rec;
	char hdr[REC_HDR];
	size_t nlen = strnlen(e->job, 64), json_at, pay_base;
	uint32_t pay_off = 0, pay_len = e->pay_len;

	buf_reset(b);
	memset(hdr, 0, sizeof hdr);
	buf_add(b, hdr, sizeof hdr);
	buf_add(b, e->job, nlen);
	json_at = b->len;
	buf_puts(b, "{\"type\":\"");
	buf_puts(b, log_type_name(e->type));
	buf_puts(b, "\",\"at\":");
	buf_json_time(b, at);
	buf_puts(b, ",\"job_id\":");
	buf_u64(b, e->job_id);
	buf_puts(b, ",\"job\":");
	buf_json_str(b, e->job, nlen);
	buf_puts(b, ",\"status\":\"");
	buf_puts(b, log_status_name(e->status));
	buf_puts(b, "\"");
	if (e->type != JG_EV_ENQUEUED) {
		buf_puts(b, ",\"attempt\":");
		buf_u64(b, e->attempt);
	}
	pay_base = b->len - json_at;
	buf_add(b, e->extra.p, e->extra.len);
	buf_puts(b, "}");
	if (b->oom)
		return;
	if (pay_len)
		pay_off = (uint32_t)(pay_base + e->pay_off);
	b->p[0] = REC_VERSION;
	b->p[1] = (char)e->type;
	b->p[2] = (char)e->status;
	b->p[3] = (char)nlen;
	memcpy(b->p + 4, &e->attempt, 4);
	memcpy(b->p + 8, &e->job_id, 8);
	memcpy(b->p + 16, &at, 8);
	memcpy(b->p + 24, &pay_off, 4);
	memcpy(b->p + 28, &pay_len, 4);
}

/* Writer thread: put one entry.  Sets e->seq/job_id/replayed. */
static int put_entry(Log *l, MDB_txn *txn, LogEntry *e, int64_t at)
{
	MDB_val k, v;
	uint64_t seq;
	int rc;

	e->replayed = 0;	/* a retry of a failed batch puts it again */
	if (e->type == JG_EV_ENQUEUED && e->idem) {
		k.mv_data = e->idem;
		k.mv_size = e->idem_len;
		rc = mdb_get(txn, l->idem, &k, &v);
		if (rc == 0 && v.mv_size == 8) {
			memcpy(&e->job_id, v.mv_data, 8);
			e->seq = e->job_id;
			e->replayed = 1;
			return 0;
		}
		if (rc != MDB_NOTFOUND)
			return rc;
	}
	seq = l->next;
	if (e->type == JG_EV_ENQUEUED)
		e->job_id = seq;
	encode(l, e, at);
	if (l->rec.oom)
		return ENOMEM;
	/* New work stops short of a full map: the last sixteenth is kept for
	 * the status events of jobs already accepted, so they can finish.
	 * Counted: the map as of the last commit, plus this txn's records. */
	if (e->type == JG_EV_ENQUEUED && l->map_bytes &&
	    l->used + l->txn_bytes + l->rec.len * 2 > l->map_bytes - l->map_bytes / 16)
		return MDB_MAP_FULL;
	k.mv_data = &seq;
	k.mv_size = 8;
	v.mv_data = l->rec.p;
	v.mv_size = l->rec.len;
	if ((rc = mdb_put(txn, l->events, &k, &v, MDB_APPEND)) != 0)
		return rc;
	k.mv_data = &e->job_id;
	v.mv_data = &seq;
	v.mv_size = 8;
	if ((rc = mdb_put(txn, l->byjob, &k, &v, 0)) != 0)
		return rc;
	if (e->type == JG_EV_ENQUEUED && e->idem) {
		k.mv_data = e->idem;
		k.mv_size = e->idem_len;
		v.mv_data = &e->job_id;
		if ((rc = mdb_put(txn, l->idem, &k, &v, MDB_NOOVERWRITE)) != 0)
			return rc;
	}
	e->seq = seq;
	l->next = seq + 1;
	l->txn_bytes += l->rec.len * 2;
	return 0;
}

static int hist_bucket(uint64_t v, const uint64_t *bounds, int n)
{
	int i = 0;
	while (i < n && v > bounds[i])
		i++;
	return i;
}

static void count_batch(Log *l, uint64_t n, uint64_t events, int64_t ns)
{
	static const uint64_t nb[7] = { 1, 4, 16, 64, 256, 1024, 4096 };
	static const uint64_t tb[7] = { 250000, 500000, 1000000, 2500000,
		5000000, 10000000, 25000000 };
	uint64_t m;

	__atomic_add_fetch(&l->st.commits, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&l->st.events, events, __ATOMIC_RELAXED);
	__atomic_add_fetch(&l->st.fsync_ns_total, (uint64_t)ns, __ATOMIC_RELAXED);
	__atomic_add_fetch(&l->st.batch_hist[hist_bucket(n, nb, 7)], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&l->st.fsync_hist[hist_bucket((uint64_t)ns, tb, 7)], 1, __ATOMIC_RELAXED);
	m = __atomic_load_n(&l->st.batch_max, __ATOMIC_RELAXED);
	if (n > m)
		__atomic_store_n(&l->st.batch_max, n, __ATOMIC_RELAXED);
}

/* Writer thread (and log_open, before it exists): how much of the map
 * the last commit left in use. */
static void map_used(Log *l)
{
	MDB_envinfo ei;
	MDB_stat ms;

	mdb_env_info(l->env, &ei);
	mdb_env_stat(l->env, &ms);
	l->used = (uint64_t)(ei.me_last_pgno + 1) * ms.ms_psize;
	l->map_bytes = ei.me_mapsize;
}

/* Writer thread: did a commit fail because the filesystem is full?  LMDB
 * reports ENOSPC only when nothing of a write got through; a write cut
 * short by the disk filling up comes back as EIO.  Read as full: less room
 * left than the txn wrote plus a margin (root may use the reserve). */
static int disk_full(Log *l)
{
	struct statvfs sv;
	uint64_t room;
	int fd;

	if (mdb_env_get_fd(l->env, &fd) != 0 || fstatvfs(fd, &sv) != 0)
		return 0;
	room = (uint64_t)(geteuid() == 0 ? sv.f_bfree : sv.f_bavail) * sv.f_frsize;
	return room < l->txn_bytes + (1u << 20);
}

/* Writer thread: write one batch of n entries in one txn.  0 or an error
 * that applies to every entry (nothing of the batch was written). */
static int write_batch(Log *l, LogEntry *batch, uint64_t n)
{
	MDB_txn *txn;
	int64_t at = jg_now_ms(), t0;
	uint64_t first = l->next;
	int rc;

	if ((rc = mdb_txn_begin(l->env, NULL, 0, &txn)) != 0)
		return log_mdb_rc(rc);
	l->txn_bytes = 0;
	for (LogEntry *e = batch; e; e = e->next)
		if ((rc = put_entry(l, txn, e, at)) != 0)
			goto fail;
	t0 = jg_mono_ns();
	rc = log_commit_fn(txn);	/* frees txn whatever it returns */
	if (rc != 0) {
		l->next = first;
		if (rc == EIO && disk_full(l)) {
			/* At most once per 10 s: a real device error on a
			 * nearly full disk must still be seen as one. */
			int64_t now = jg_mono_ns();
			if (!l->eio_said_ns || now - l->eio_said_ns >= 10 * 1000000000LL) {
				jg_log(JG_WARN, "log commit failed with EIO on a nearly full "
				       "filesystem: answered as storage full", NULL);
				l->eio_said_ns = now;
			}
			rc = ENOSPC;
		}
		return log_mdb_rc(rc);
	}
	count_batch(l, n, l->next - first, jg_mono_ns() - t0);
	return 0;
fail:
	mdb_txn_abort(txn);
	l->next = first;
	return log_mdb_rc(rc);
}

/* A full disk (the usual cause) frees up again: try a second later, and say
 * so only once per episode. */
static void prealloc_failed(Log *l, int err)
{
	if (!l->prealloc_retry_ns)
		jg_log(JG_WARN, "cannot preallocate the log file; trying again every second",
		       "error", strerror(err), NULL);
	l->prealloc_retry_ns = jg_mono_ns() + 1000000000LL;
}

/*
 * Writer thread, between txns: keep data.mdb allocated ahead of LMDB's last
 * page.  A commit that grows the file changes its size and extents, so its
 * fdatasync must also write the inode and extent tree: a commit into
 * already-written zeros is a pure data write (here 0.17 against 0.27 ms
 * per 4 KiB write + fdatasync).  Only this thread writes the file, and
 * only past the last page, which no reader looks at.
 *
 * At start the whole step is written and synced.  Later, at most one
 * chunk per turn and no sync of its own: the next commit's fdatasync
 * carries it.  Writing and syncing the 4 MiB half-step at once stalled the
 * writer ~18 ms about once a second at 5,000 echo jobs/s, which every
 * trigger of that moment waited out (the echo p99).
 */
static void prealloc(Log *l, int at_start)
{
	static const char zero[64 << 10];
	struct statvfs sv;
	struct stat sb;
	uint64_t used, end, off;
	int fd;

	map_used(l);
	used = l->used;
	if ((l->prealloc_retry_ns && jg_mono_ns() < l->prealloc_retry_ns) ||
	    mdb_env_get_fd(l->env, &fd) != 0)
		return;
	if (l->file_end == 0 && fstat(fd, &sb) == 0)
		l->file_end = (uint64_t)sb.st_size;
	if (l->file_end >= used + PREALLOC_STEP / 2)
		return;
	end = used + PREALLOC_STEP;
	if (end > l->map_bytes)
		end = l->map_bytes;
	off = l->file_end > used ? l->file_end : used;
	if (!at_start && end > off + PREALLOC_CHUNK)
		end = off + PREALLOC_CHUNK;
	/* Space taken ahead is space the read model, the logs and everyone
	 * else on the disk no longer have: on a nearly full filesystem take
	 * none, and let LMDB grow the file as it writes (helper 48: an 8 MiB
	 * step on a small disk left SQLite no room for the first event). */
	if (end > off && fstatvfs(fd, &sv) == 0 &&
	    (uint64_t)sv.f_bavail * sv.f_frsize < (end - off) + PREALLOC_SPARE)
		return;
	for (; off < end; off += sizeof zero) {
		size_t n = end - off < sizeof zero ? end - off : sizeof zero;
		ssize_t w = pwrite(fd, zero, n, (off_t)off);
		if (w != (ssize_t)n) {
			prealloc_failed(l, w < 0 ? errno : ENOSPC);
			return;
		}
	}
	if (at_start && fdatasync(fd) != 0) {
		prealloc_failed(l, errno);
		return;
	}
	if (l->prealloc_retry_ns)
		jg_log(JG_INFO, "preallocating the log file again", NULL);
	l->prealloc_retry_ns = 0;
	l->file_end = end;
}

int64_t log_reader_check_ns = 1000000000LL;

/*
 * Writer thread: free the reader slots of processes that died holding a
 * snapshot.  `log dump`, `log verify` and `replay` read the server's log
 * from their own process; one killed mid-read (kill -9, the OOM killer)
 * leaves its slot in lock.mdb, and LMDB then reuses no page freed after
 * that snapshot: the file grew ~15x until a restart, and could fill the
 * map (helper 48).  mdb_reader_check finds slots whose process is gone
 * (its lock on lock.mdb died with it).  Looked at most once a second, and
 * only after commits, since only commits free pages.
 */
static void reader_check(Log *l)
{
	int64_t now = jg_mono_ns();
	int dead = 0;
	char n[16];

	if (now < l->rcheck_ns)
		return;
	l->rcheck_ns = now + log_reader_check_ns;
	if (mdb_reader_check(l->env, &dead) != 0 || dead == 0)
		return;
	snprintf(n, sizeof n, "%d", dead);
	jg_log(JG_WARN, "freed the log snapshots of readers that died (a log dump, log verify or replay killed while reading)",
	       "#readers", n, NULL);
}

/* Writer thread: log a failed commit.  A full disk fails every commit
 * until someone acts, and a line per trigger would flood the log (maybe
 * onto that disk): after one line, the next of its kind comes 10 s later
 * at the earliest and counts ("suppressed") the lines not written.  The
 * batch warning and the error of the entry that then fails alone are
 * limited apart, so the warning never hides that error. */
static void commit_failed(Log *l, int level, const char *msg, int rc)
{
	int64_t now = jg_mono_ns();
	int k = level == JG_ERROR;	/* the batch warning must not hide an entry's error */
	char n[24];

	if (l->fail_said_ns[k] && now - l->fail_said_ns[k] < 10 * 1000000000LL) {
		l->fail_quiet[k]++;
		return;
	}
	snprintf(n, sizeof n, "%llu", (unsigned long long)l->fail_quiet[k]);
	jg_log(level, msg, "error", jg_strerror(rc),
	       l->fail_quiet[k] ? "#suppressed" : NULL, n, NULL);
	l->fail_said_ns[k] = now;
	l->fail_quiet[k] = 0;
}

/* Writer thread: write the batch; if that fails and it holds several
 * groups, write each group (an entry and the ones joined to it) in its own
 * txn, so one bad entry (a payload larger than the space left, an
 * allocation failure) fails alone instead of failing its neighbours.  Sets
 * every e->rc; returns 1 if anything was committed. */
static int write_all(Log *l, LogEntry *batch, uint64_t n)
{
	LogEntry *e, *last, *rest;
	uint64_t k;
	int rc = write_batch(l, batch, n), any = 0;

	for (k = 1, last = batch; last->next && last->next->joined; last = last->next)
		k++;
	if (rc == 0 || k == n) {
		for (e = batch; e; e = e->next)
			e->rc = rc;
		if (rc != 0)
			commit_failed(l, JG_ERROR, "log commit failed", rc);
		return rc == 0;
	}
	commit_failed(l, JG_WARN, "log batch failed; writing its entries one by one", rc);
	for (e = batch; e; e = rest) {
		for (k = 1, last = e; last->next && last->next->joined; last = last->next)
			k++;
		rest = last->next;
		last->next = NULL;	/* write_batch walks the chain */
		rc = write_batch(l, e, k);
		last->next = rest;
		any |= rc == 0;
		if (rc == 0)
			map_used(l);	/* the reserve check counts what this committed */
		if (rc != 0)
			commit_failed(l, JG_ERROR, "log commit failed", rc);
		for (; e != rest; e = e->next)
			e->rc = rc;
	}
	return any;
}

/* log_open, before the writer exists: a map made smaller than the log
 * already is (LMDB opens it at the size in use), or one that filled
 * before the restart, is said at once, before the server says it
 * listens, not only with the first refused trigger. */
static void warn_if_full(Log *l)
{
	char used[24], map[24];

	if (!l->map_bytes || l->used <= l->map_bytes - l->map_bytes / 8)
		return;
	snprintf(used, sizeof used, "%llu", (unsigned long long)(l->used >> 10));
	snprintf(map, sizeof map, "%llu", (unsigned long long)(l->map_bytes >> 10));
	jg_log(JG_WARN, "the log is (nearly) full: new jobs get 503 storage_full once 15/16 of "
	       "the map is used; raise limits.map_size_mb", "#used_kib", used, "#map_kib", map, NULL);
}

/* Writer thread ("jg-log"): drain q_log, commit a batch, acknowledge. */
static void *writer_main(void *arg)
{
	Log *l = arg;
	LogEntry *batch, *e, *next;
	uint64_t n;
	int any;

	pthread_setname_np(pthread_self(), "jg-log");
	prealloc(l, 1);
	for (;;) {
		pthread_mutex_lock(&l->mu);
		while (!l->qhead && !l->closing)
			pthread_cond_wait(&l->cv, &l->mu);
		batch = l->qhead;
		l->qhead = l->qtail = NULL;
		l->qlen = 0;
		pthread_mutex_unlock(&l->mu);
		if (!batch)
			break;		/* closing and drained */
		n = 0;
		for (e = batch; e; e = e->next)
			n++;
		if ((any = write_all(l, batch, n)) != 0)
			__atomic_store_n(&l->head, l->next - 1, __ATOMIC_RELEASE);
		/* done() may free or reuse e: read next first.  An answer's
		 * space note is made before the answer (/healthz agrees). */
		for (e = batch; e; e = next) {
			next = e->next;
			note_space(l, e);
			e->done(e, e->ctx);
		}
		if (any) {
			pthread_mutex_lock(&l->wmu);
			for (int i = 0; i < l->nwatch; i++)
				l->watch[i].fn(l->watch[i].ctx, l->next - 1);
			pthread_mutex_unlock(&l->wmu);
		}
		prealloc(l, 0);		/* after the acks, one chunk: off their path */
		if (any)
			reader_check(l);
	}
	return NULL;
}

int log_start(Log *l)
{
	int rc;

	if (l->readonly || l->started)
		return JG_EINVAL;
	if ((rc = pthread_create(&l->writer, NULL, writer_main, l)) != 0)
		return rc;
	l->started = 1;
	return 0;
}

void log_remove(const char *dir)
{
	static const char *const made[] = { "data.mdb", "lock.mdb" };
	char path[4200];

	for (size_t i = 0; i < sizeof made / sizeof made[0]; i++) {
		snprintf(path, sizeof path, "%s/log/%s", dir, made[i]);
		unlink(path);
	}
	snprintf(path, sizeof path, "%s/log", dir);
	rmdir(path);
}

void log_close(Log *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->mu);
	l->closing = 1;
	pthread_cond_signal(&l->cv);
	pthread_mutex_unlock(&l->mu);
	if (l->started)
		pthread_join(l->writer, NULL);
	/* Entries submitted without a writer (never started) are refused. */
	for (LogEntry *e = l->qhead, *next; e; e = next) {
		next = e->next;
		e->rc = JG_ECLOSED;
		e->done(e, e->ctx);
	}
	if (l->env)
		mdb_env_close(l->env);
	buf_free(&l->rec);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->wmu);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

void log_stats(Log *l, LogStats *out)
{
	uint64_t *src = (uint64_t *)&l->st, *dst = (uint64_t *)out;

	for (size_t i = 0; i < sizeof *out / 8; i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
	pthread_mutex_lock(&l->mu);
	out->queue_len = (uint64_t)l->qlen;
	pthread_mutex_unlock(&l->mu);
}

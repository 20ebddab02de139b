/* test_log.c -- the LMDB log: append, group commit, readers, indexes,
 * idempotency, failure seam, verify. */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>

#include "t.h"
#include "../../common/jg.h"
#include "../../common/json.h"
#include "../../log/event.h"
#include "../../log/log.h"
#include "../../log/log_int.h"

typedef struct Waiter {
	pthread_mutex_t mu;
	pthread_cond_t  cv;
	int             left;
} Waiter;

static void done_cb(LogEntry *e, void *ctx)
{
	Waiter *w = ctx;
	(void)e;
	pthread_mutex_lock(&w->mu);
	w->left--;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static void waiter_init(Waiter *w, int n)
{
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->left = n;
}

static void waiter_wait(Waiter *w)
{
	pthread_mutex_lock(&w->mu);
	while (w->left > 0)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
}

static Log *open_log(void)
{
	LogOptions o = { 0, 0, 64 };
	Log *l;
	CHECK_RC(log_open(&l, t_dir(), &o));
	CHECK_RC(log_start(l));
	return l;
}

/* Append n enqueues (optionally with one idempotency key) and wait. */
static void append_n(Log *l, LogEntry *es, int n, const char *key)
{
	Waiter w;
	waiter_init(&w, n);
	for (int i = 0; i < n; i++) {
		memset(&es[i], 0, sizeof es[i]);
		CHECK_RC(event_enqueued(&es[i], "echo", "{ \"i\" :\n 1 }", 12, key,
					key ? strlen(key) : 0, "ci", 3));
		es[i].done = done_cb;
		es[i].ctx = &w;
		CHECK_RC(log_submit(l, &es[i]));
	}
	waiter_wait(&w);
}

/* A damaged page that LMDB reports (MDB_CORRUPTED) instead of failing an
 * assertion: a read-only open (the CLI) gets JG_EDAMAGED to report; once a
 * writable log (a server's) is open, the process ends with exit 1 as on
 * the assertion path, and does not run on half blind. */
TEST(reported_page_damage_is_fatal_once_a_server_log_is_open)
{
	LogOptions ro = { 1, 0, 64 }, rw = { 0, 0, 64 };
	Log *l;
	pid_t pid;
	int st;

	CHECK(log_mdb_rc(MDB_CORRUPTED) == JG_EDAMAGED);
	fflush(NULL);
	if ((pid = fork()) == 0) {		/* create it, in a process of its own */
		if (log_open(&l, t_dir(), &rw) != 0)
			_exit(3);
		log_close(l);
		_exit(0);
	}
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	if ((pid = fork()) == 0) {		/* the CLI: read-only */
		if (log_open(&l, t_dir(), &ro) != 0)
			_exit(3);
		_exit(log_mdb_rc(MDB_CORRUPTED) == JG_EDAMAGED &&
		      log_mdb_rc(MDB_PAGE_NOTFOUND) == JG_EDAMAGED ? 0 : 4);
	}
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	if ((pid = fork()) == 0) {		/* a server: writable */
		if (log_open(&l, t_dir(), &rw) != 0)
			_exit(3);
		log_mdb_rc(MDB_CORRUPTED);
		_exit(0);			/* not reached */
	}
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
}

TEST(append_assigns_contiguous_seqs_and_job_ids)
{
	Log *l = open_log();
	LogEntry es[100];
	append_n(l, es, 100, NULL);
	for (int i = 0; i < 100; i++) {
		CHECK(es[i].rc == 0);
		CHECK(es[i].seq == (uint64_t)i + 1);
		CHECK(es[i].job_id == es[i].seq);
		event_entry_free(&es[i]);
	}
	CHECK(log_head(l) == 100);
	log_close(l);
}

/* The data file is allocated ahead of LMDB's pages (see prealloc()). */
TEST(data_file_is_preallocated_ahead)
{
	Log *l = open_log();
	LogEntry es[10];
	LogInfo info;
	struct stat sb;
	char path[512];

	append_n(l, es, 10, NULL);
	CHECK_RC(log_info(l, &info));
	log_close(l);		/* joins the writer: it preallocates after acking */
	snprintf(path, sizeof path, "%s/log/data.mdb", t_dir());
	CHECK(stat(path, &sb) == 0);
	CHECK((uint64_t)sb.st_size >= info.bytes + (4u << 20));
	CHECK(sb.st_blocks * 512 >= (4 << 20));	/* written, not a hole */
	for (int i = 0; i < 10; i++)
		event_entry_free(&es[i]);
}

TEST(render_with_and_without_payload)
{
	Log *l = open_log();
	LogEntry e;
	LogReader *r;
	LogEvent ev;
	Buf b = {0};
	append_n(l, &e, 1, NULL);
	CHECK_RC(log_reader_open(l, &r));
	CHECK_RC(log_reader_get(r, 1, &ev));
	log_event_json(&ev, &b, 1);
	CHECK(json_valid(b.p, b.len) == 0);
	CHECK(strstr(b.p, "{\"seq\":1,\"type\":\"job.enqueued\",\"at\":\"") == b.p);
	CHECK(strstr(b.p, ",\"payload\":{\"i\":1},") != NULL);	/* compacted */
	buf_reset(&b);
	log_event_json(&ev, &b, 0);
	CHECK(json_valid(b.p, b.len) == 0);
	CHECK(strstr(b.p, "payload") == NULL);
	CHECK(strstr(b.p, "\"idempotency_key\":null,\"actor\":\"ci\"") != NULL);
	buf_free(&b);
	log_reader_close(r);
	event_entry_free(&e);
	log_close(l);
}

struct thr { Log *l; int n; int ok; };

static void *appender(void *arg)
{
	struct thr *t = arg;
	LogEntry *es = calloc((size_t)t->n, sizeof *es);
	append_n(t->l, es, t->n, NULL);
	t->ok = 1;
	for (int i = 0; i < t->n; i++) {
		if (es[i].rc != 0)
			t->ok = 0;
		event_entry_free(&es[i]);
	}
	free(es);
	return NULL;
}

TEST(group_commit_batches_concurrent_appenders)
{
	Log *l = open_log();
	pthread_t th[8];
	struct thr t[8];
	LogStats st;
	for (int i = 0; i < 8; i++) {
		t[i] = (struct thr){ l, 500, 0 };
		pthread_create(&th[i], NULL, appender, &t[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		CHECK(t[i].ok);
	}
	CHECK(log_head(l) == 4000);
	log_stats(l, &st);
	CHECK(st.events == 4000);
	CHECK(st.commits < 4000);	/* batches formed */
	CHECK(st.batch_max > 1);
	char msg[200];
	uint64_t upto;
	CHECK_RC(log_verify(l, &upto, msg, sizeof msg));
	CHECK(upto == 4000);
	log_close(l);
}

/* verify reads in batches, each in its own snapshot: a gap or the end
 * at a batch's edge is still seen. */
TEST(verify_in_batches_finds_a_gap_at_an_edge)
{
	Log *l = open_log();
	LogEntry es[10];
	MDB_txn *txn;
	uint64_t upto, seq = 7;
	MDB_val k = { 8, &seq };
	char msg[200];

	append_n(l, es, 10, NULL);
	log_verify_batch = 3;
	CHECK_RC(log_verify(l, &upto, msg, sizeof msg));
	CHECK(upto == 10);
	CHECK_RC(mdb_txn_begin(l->env, NULL, 0, &txn));	/* a hole at 7 */
	CHECK_RC(mdb_del(txn, l->events, &k, NULL));
	CHECK_RC(mdb_txn_commit(txn));
	CHECK(log_verify(l, &upto, msg, sizeof msg) == JG_ECORRUPT);
	CHECK(strstr(msg, "seq 8 follows 6: gap") != NULL);
	log_verify_batch = 65536;
	log_close(l);
	for (int i = 0; i < 10; i++)
		event_entry_free(&es[i]);
}

TEST(idempotency_key_yields_one_job_even_in_one_batch)
{
	Log *l = open_log();
	LogEntry es[20];
	append_n(l, es, 20, "k1");
	int appended = 0;
	for (int i = 0; i < 20; i++) {
		CHECK(es[i].rc == 0);
		CHECK(es[i].job_id == 1);
		appended += !es[i].replayed;
		event_entry_free(&es[i]);
	}
	CHECK(appended == 1);
	CHECK(log_head(l) == 1);
	log_close(l);
}

TEST(reader_seek_next_and_job_index)
{
	Log *l = open_log();
	LogEntry es[3], st;
	LogReader *r;
	LogEvent ev;
	Waiter w;
	append_n(l, es, 3, NULL);
	waiter_init(&w, 1);
	memset(&st, 0, sizeof st);
	CHECK_RC(event_started(&st, "echo", 2, 1));
	st.done = done_cb;
	st.ctx = &w;
	CHECK_RC(log_submit(l, &st));
	waiter_wait(&w);
	CHECK(st.seq == 4);
	CHECK_RC(log_reader_open(l, &r));
	CHECK_RC(log_reader_begin(r));
	CHECK(log_reader_head(r) == 4);
	CHECK_RC(log_reader_seek(r, 3, &ev));
	CHECK(ev.seq == 3);
	CHECK_RC(log_reader_next(r, &ev));
	CHECK(ev.seq == 4 && ev.type == JG_EV_STARTED && ev.job_id == 2);
	CHECK(ev.status == JG_ST_RUNNING && ev.attempt == 1);
	CHECK(log_reader_next(r, &ev) == JG_ENOTFOUND);
	CHECK(log_reader_job_last(r, 2) == 4);
	CHECK(log_reader_job_last(r, 3) == 3);
	CHECK(log_reader_job_last(r, 99) == 0);
	CHECK_RC(log_reader_job_seek(r, 2, 0, &ev));
	CHECK(ev.seq == 2);
	CHECK_RC(log_reader_job_next(r, &ev));
	CHECK(ev.seq == 4);
	CHECK(log_reader_job_next(r, &ev) == JG_ENOTFOUND);
	CHECK_RC(log_reader_job_seek(r, 2, 3, &ev));
	CHECK(ev.seq == 4);
	log_reader_end(r);
	log_reader_close(r);
	for (int i = 0; i < 3; i++)
		event_entry_free(&es[i]);
	event_entry_free(&st);
	log_close(l);
}

static int fail_commit(void *txn)
{
	mdb_txn_abort(txn);
	return MDB_MAP_FULL;
}

TEST(failed_commit_loses_batch_only_and_seqs_stay_contiguous)
{
	Log *l = open_log();
	LogEntry es[6];
	int (*real)(void *) = log_commit_fn;
	char msg[200];
	uint64_t upto;

	append_n(l, es, 2, NULL);
	log_commit_fn = fail_commit;
	append_n(l, es + 2, 2, NULL);
	CHECK(es[2].rc == JG_ESTORAGE && es[3].rc == JG_ESTORAGE);
	CHECK(log_head(l) == 2);
	log_commit_fn = real;
	append_n(l, es + 4, 2, NULL);
	CHECK(es[4].rc == 0 && es[4].seq == 3 && es[5].seq == 4);
	CHECK(log_head(l) == 4);
	CHECK_RC(log_verify(l, &upto, msg, sizeof msg));
	CHECK(upto == 4);
	log_close(l);
	for (int i = 0; i < 6; i++)
		event_entry_free(&es[i]);
}

/* One entry too big for the map must fail alone, not its batch.  Its
 * error is logged: the batch's warning just before must not use up the
 * rate limit. */
TEST(bad_entry_fails_alone_in_its_batch)
{
	LogOptions o = { 0, 0, 1 };	/* 1 MiB map */
	size_t big = 2u << 20;
	char *payload = malloc(big), path[4200], text[8192];
	LogEntry es[3];
	Waiter w;
	Log *l;
	int fd, saved;
	ssize_t n;

	memset(payload, 'a', big);
	payload[0] = payload[big - 1] = '"';
	snprintf(path, sizeof path, "%s/stderr", t_dir());
	fflush(stderr);
	saved = dup(2);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	dup2(fd, 2);
	CHECK_RC(log_open(&l, t_dir(), &o));
	waiter_init(&w, 3);
	memset(es, 0, sizeof es);
	CHECK_RC(event_enqueued(&es[0], "echo", "1", 1, NULL, 0, "ci", 1));
	CHECK_RC(event_enqueued(&es[1], "echo", payload, big, NULL, 0, "ci", 1));
	CHECK_RC(event_enqueued(&es[2], "echo", "3", 1, NULL, 0, "ci", 1));
	for (int i = 0; i < 3; i++) {
		es[i].done = done_cb;
		es[i].ctx = &w;
		CHECK_RC(log_submit(l, &es[i]));	/* queued before the writer runs: one batch */
	}
	CHECK_RC(log_start(l));
	waiter_wait(&w);
	CHECK(es[0].rc == 0 && es[0].seq == 1);
	CHECK(es[1].rc == JG_ESTORAGE);
	CHECK(es[2].rc == 0 && es[2].seq == 2);
	CHECK(log_head(l) == 2);
	log_close(l);
	dup2(saved, 2);
	close(saved);
	n = pread(fd, text, sizeof text - 1, 0);
	close(fd);
	CHECK(n > 0);
	text[n] = 0;
	fputs(text, stderr);
	CHECK(strstr(text, "\"log batch failed; writing its entries one by one\"") != NULL);
	CHECK(strstr(text, "\"log commit failed\"") != NULL);
	for (int i = 0; i < 3; i++)
		event_entry_free(&es[i]);
	free(payload);
}

/* A pair (log_submit_pair) commits in one txn, and when its batch fails
 * and is rewritten entry by entry, it still fails or commits as one. */
TEST(pair_commits_together_or_not_at_all)
{
	LogOptions o = { 0, 0, 1 };	/* 1 MiB map */
	size_t big = 2u << 20;
	char *result = malloc(big);
	LogEntry es[7];
	Waiter w;
	Log *l;

	memset(result, 'a', big);
	result[0] = result[big - 1] = '"';
	CHECK_RC(log_open(&l, t_dir(), &o));
	waiter_init(&w, 7);
	memset(es, 0, sizeof es);
	CHECK_RC(event_enqueued(&es[0], "echo", "1", 1, NULL, 0, "ci", 1));
	CHECK_RC(event_started(&es[1], "echo", 1, 1));
	CHECK_RC(event_succeeded(&es[2], "echo", 1, 1, 0, result, big, 0, 0));
	CHECK_RC(event_enqueued(&es[3], "echo", "3", 1, NULL, 0, "ci", 1));
	CHECK_RC(event_started(&es[4], "echo", 1, 1));
	CHECK_RC(event_succeeded(&es[5], "echo", 1, 1, 0, "1", 1, 0, 0));
	CHECK_RC(event_enqueued(&es[6], "echo", "6", 1, NULL, 0, "ci", 1));
	for (int i = 0; i < 7; i++) {
		es[i].done = done_cb;
		es[i].ctx = &w;
	}
	/* All queued before the writer runs: one batch, which fails (too
	 * big), so each group is then written in its own txn. */
	CHECK_RC(log_submit(l, &es[0]));
	CHECK_RC(log_submit_pair(l, &es[1], &es[2]));
	CHECK_RC(log_submit(l, &es[3]));
	CHECK_RC(log_submit_pair(l, &es[4], &es[5]));
	CHECK_RC(log_submit(l, &es[6]));
	CHECK_RC(log_start(l));
	waiter_wait(&w);
	CHECK(es[0].rc == 0 && es[0].seq == 1);
	CHECK(es[1].rc == JG_ESTORAGE && es[2].rc == JG_ESTORAGE);	/* started not alone */
	CHECK(es[3].rc == 0 && es[3].seq == 2);
	CHECK(es[4].rc == 0 && es[4].seq == 3 && es[5].rc == 0 && es[5].seq == 4);
	CHECK(es[6].rc == 0 && es[6].seq == 5);
	CHECK(log_head(l) == 5);
	log_close(l);
	for (int i = 0; i < 7; i++)
		event_entry_free(&es[i]);
	free(result);
}

/* Near a full map, new work is refused while status events still fit. */
TEST(status_events_have_room_when_enqueues_are_refused)
{
	LogOptions o = { 0, 0, 1 };	/* 1 MiB map */
	size_t n = 20000;
	char *payload = malloc(n);
	LogEntry e, st;
	Waiter w;
	Log *l;
	int i, refused = 0;

	memset(payload, 'b', n);
	payload[0] = payload[n - 1] = '"';
	CHECK_RC(log_open(&l, t_dir(), &o));
	CHECK_RC(log_start(l));
	memset(&e, 0, sizeof e);
	for (i = 0; i < 200 && !refused; i++) {
		waiter_init(&w, 1);
		CHECK_RC(event_enqueued(&e, "echo", payload, n, NULL, 0, "ci", 1));
		e.done = done_cb;
		e.ctx = &w;
		CHECK_RC(log_submit(l, &e));
		waiter_wait(&w);
		refused = e.rc == JG_ESTORAGE;
		CHECK(refused || e.rc == 0);
	}
	CHECK(refused);
	waiter_init(&w, 1);
	memset(&st, 0, sizeof st);
	CHECK_RC(event_started(&st, "echo", 1, 1));
	st.done = done_cb;
	st.ctx = &w;
	CHECK_RC(log_submit(l, &st));
	waiter_wait(&w);
	CHECK(st.rc == 0);
	log_close(l);
	event_entry_free(&e);
	event_entry_free(&st);
	free(payload);
}

/* The same when the enqueues come as one burst: the reserve counts what a
 * txn already holds, and what the one-by-one fallback has committed. */
TEST(status_events_have_room_after_a_burst_of_enqueues)
{
	LogOptions o = { 0, 0, 1 };	/* 1 MiB map */
	enum { N = 80 };
	size_t n = 20000;
	char *payload = malloc(n);
	LogEntry *es = calloc(N, sizeof *es), st;
	Waiter w;
	Log *l;
	int i, ok = 0, refused = 0;

	memset(payload, 'b', n);
	payload[0] = payload[n - 1] = '"';
	CHECK_RC(log_open(&l, t_dir(), &o));
	CHECK_RC(log_start(l));
	waiter_init(&w, N);
	for (i = 0; i < N; i++) {
		CHECK_RC(event_enqueued(&es[i], "echo", payload, n, NULL, 0, "ci", 1));
		es[i].done = done_cb;
		es[i].ctx = &w;
	}
	for (i = 0; i < N; i++)
		CHECK_RC(log_submit(l, &es[i]));
	waiter_wait(&w);
	for (i = 0; i < N; i++) {
		ok += es[i].rc == 0;
		refused += es[i].rc == JG_ESTORAGE;
	}
	CHECK(ok > 0 && refused > 0 && ok + refused == N);
	/* Status events with results: 4 x 8 KB, well inside the reserve. */
	payload[8000 - 1] = '"';
	for (i = 0; i < 4; i++) {
		waiter_init(&w, 1);
		memset(&st, 0, sizeof st);
		CHECK_RC(event_succeeded(&st, "echo", es[i].job_id, 1, 0, payload, 8000, 0, 1));
		st.done = done_cb;
		st.ctx = &w;
		CHECK_RC(log_submit(l, &st));
		waiter_wait(&w);
		CHECK(st.rc == 0);
		event_entry_free(&st);
	}
	log_close(l);
	for (i = 0; i < N; i++)
		event_entry_free(&es[i]);
	free(es);
	free(payload);
}

/* A record whose header says it has a payload starting at offset 0 (before
 * the JSON's "{") is damaged: decoding it must say so, not underflow. */
TEST(decode_refuses_payload_at_offset_zero)
{
	Log *l = open_log();
	LogEntry es[1];
	LogReader *r;
	LogEvent ev;
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k, v;
	uint64_t seq = 1;
	uint32_t zero = 0;
	char rec[4096], path[4200];

	snprintf(path, sizeof path, "%s/log", t_dir());
	append_n(l, es, 1, NULL);
	event_entry_free(&es[0]);
	log_close(l);
	CHECK_RC(mdb_env_create(&env));
	CHECK_RC(mdb_env_set_maxdbs(env, 8));
	CHECK_RC(mdb_env_open(env, path, 0, 0600));
	CHECK_RC(mdb_txn_begin(env, NULL, 0, &txn));
	CHECK_RC(mdb_dbi_open(txn, "events", MDB_INTEGERKEY, &dbi));
	k.mv_data = &seq;
	k.mv_size = 8;
	CHECK_RC(mdb_get(txn, dbi, &k, &v));
	CHECK(v.mv_size <= sizeof rec);
	memcpy(rec, v.mv_data, v.mv_size);
	memcpy(rec + 24, &zero, 4);		/* pay_off; pay_len stays > 0 */
	v.mv_data = rec;
	CHECK_RC(mdb_put(txn, dbi, &k, &v, 0));
	CHECK_RC(mdb_txn_commit(txn));
	mdb_env_close(env);

	LogOptions o = { 0, 0, 64 };
	CHECK_RC(log_open(&l, t_dir(), &o));
	CHECK_RC(log_reader_open(l, &r));
	CHECK_RC(log_reader_begin(r));
	CHECK(log_reader_get(r, 1, &ev) == JG_ECORRUPT);
	log_reader_end(r);
	log_reader_close(r);
	log_close(l);
}

/* A damaged record's JSON may end in a key without its value, which jsmn
 * (lenient) still tokenizes: decoding read the token past the last one
 * (fuzz_event).  Also a token tree that does not hold together. */
TEST(event_decode_refuses_a_key_without_value)
{
	static const char *const bad[] = {
		"{\"type\":\"job.started\",\"status\"}",
		"{\"type\":\"job.started\",\"attempt\":1,\"x\"}",
	};
	LogEvent ev;
	EventView v;

	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		memset(&ev, 0, sizeof ev);
		ev.seq = 2;
		ev.job_id = 1;
		ev.type = JG_EV_STARTED;
		ev.status = JG_ST_RUNNING;
		ev.json = bad[k];
		ev.json_len = strlen(bad[k]);
		CHECK(event_decode(&ev, &v) == JG_ECORRUPT);
	}
}

TEST(event_decode_reads_members)
{
	Log *l = open_log();
	LogEntry es[1], f;
	LogReader *r;
	LogEvent ev;
	EventView v;
	Waiter w;
	append_n(l, es, 1, "key\"1");
	waiter_init(&w, 1);
	memset(&f, 0, sizeof f);
	CHECK_RC(event_failed(&f, "echo", 1, 1, 3, 0, "boom\nline", 1700000000123, 42));
	f.done = done_cb;
	f.ctx = &w;
	CHECK_RC(log_submit(l, &f));
	waiter_wait(&w);
	CHECK_RC(log_reader_open(l, &r));
	CHECK_RC(log_reader_get(r, 1, &ev));
	CHECK_RC(event_decode(&ev, &v));
	CHECK(v.payload.n == 7 && memcmp(v.payload.p, "{\"i\":1}", 7) == 0);
	CHECK(v.idem.n == 8 && memcmp(v.idem.p, "\"key\\\"1\"", 8) == 0);
	CHECK(v.max_attempts == 3);
	CHECK_RC(log_reader_get(r, 2, &ev));
	CHECK_RC(event_decode(&ev, &v));
	CHECK(v.type == JG_EV_FAILED && v.status == JG_ST_QUEUED);
	CHECK(v.has_exit_code && v.exit_code == 3);
	CHECK(v.retry_at_ms == 1700000000123);
	CHECK(v.duration_ms == 42);
	CHECK(v.error.n == 12 && memcmp(v.error.p, "\"boom\\nline\"", 12) == 0);
	log_reader_close(r);
	event_entry_free(&es[0]);
	event_entry_free(&f);
	log_close(l);
}

static int count_reader(const char *line, void *ctx)
{
	int pid = 0;

	if (sscanf(line, "%d", &pid) == 1 && pid == *(int *)ctx)
		*(int *)ctx = -1;	/* seen */
	return 0;
}

/* A CLI reader (another process) killed while it held a snapshot leaves
 * its slot in lock.mdb, which kept every page freed since from reuse; the
 * writer frees such slots after its commits (helper 48). */
TEST(writer_frees_the_snapshot_of_a_reader_that_died)
{
	Log *l = open_log();
	LogEntry es[10], more[10];
	pid_t pid;
	int st, seen;

	log_reader_check_ns = 0;		/* look after every commit */
	append_n(l, es, 10, NULL);
	fflush(NULL);
	if ((pid = fork()) == 0) {		/* `log dump`, killed mid-read */
		LogOptions ro = { 1, 0, 64 };
		LogReader *r;
		Log *cli;

		if (log_open(&cli, t_dir(), &ro) != 0 || log_reader_open(cli, &r) != 0 ||
		    log_reader_begin(r) != 0)
			_exit(3);
		_exit(0);			/* no close: the slot stays */
	}
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	seen = pid;
	mdb_reader_list(l->env, count_reader, &seen);
	CHECK(seen == -1);			/* the dead reader's slot is there */
	append_n(l, more, 10, NULL);		/* a commit: the writer looks after the acks */
	for (int i = 0; i < 200; i++) {		/* (not by reopening: a lone opener resets the table) */
		seen = pid;
		mdb_reader_list(l->env, count_reader, &seen);
		if (seen == pid)
			break;
		usleep(10000);
	}
	CHECK(seen == pid);			/* gone */
	log_close(l);
	log_reader_check_ns = 1000000000LL;	/* the writer is joined: no race */
	for (int i = 0; i < 10; i++) {
		event_entry_free(&es[i]);
		event_entry_free(&more[i]);
	}
}

/* LMDB forbids opening one env twice in a process, so the writer is
 * closed first; beside a live server the reader is another process. */
TEST(readonly_open_reads_committed_log)
{
	Log *l = open_log(), *ro;
	LogEntry es[3];
	LogOptions o = { 1, 0, 64 };
	LogInfo info;
	append_n(l, es, 3, NULL);
	log_close(l);
	CHECK_RC(log_open(&ro, t_dir(), &o));
	CHECK_RC(log_info(ro, &info));
	CHECK(info.head == 3 && info.count == 3 && info.first == 1);
	CHECK(log_start(ro) == JG_EINVAL);
	log_close(ro);
	for (int i = 0; i < 3; i++)
		event_entry_free(&es[i]);
}

int main(void)
{
	RUN(append_assigns_contiguous_seqs_and_job_ids);
	RUN(data_file_is_preallocated_ahead);
	RUN(render_with_and_without_payload);
	RUN(group_commit_batches_concurrent_appenders);
	RUN(verify_in_batches_finds_a_gap_at_an_edge);
	RUN(idempotency_key_yields_one_job_even_in_one_batch);
	RUN(reader_seek_next_and_job_index);
	RUN(failed_commit_loses_batch_only_and_seqs_stay_contiguous);
	RUN(bad_entry_fails_alone_in_its_batch);
	RUN(pair_commits_together_or_not_at_all);
	RUN(status_events_have_room_when_enqueues_are_refused);
	RUN(status_events_have_room_after_a_burst_of_enqueues);
	RUN(decode_refuses_payload_at_offset_zero);
	RUN(reported_page_damage_is_fatal_once_a_server_log_is_open);
	RUN(writer_frees_the_snapshot_of_a_reader_that_died);
	RUN(event_decode_reads_members);
	RUN(event_decode_refuses_a_key_without_value);
	RUN(readonly_open_reads_committed_log);
	return t_done();
}

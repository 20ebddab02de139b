/*
 * test_runner.c -- the runner without HTTP: process spawning and capture
 * (spawn.c), backoff, the job map, and whole jobs through a real Log
 * (enqueue with log_submit, wait for the runner's events in the log).
 */
#include <errno.h>
#include <lmdb.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "../../common/jg.h"
#include "../../common/json.h"
#include "../../log/event.h"
#include "../../log/log_int.h"	/* to damage a record under a live log */
#include "../../runner/runner.h"
#include "../../runner/runner_int.h"
#include "t.h"

/* ---- processes */

/* Run argv to completion (bounded: 20 s) with stdin in[0..n). */
static int run_proc(RunnerProc *p, char *const argv[], const char *in, size_t n, size_t cap)
{
	RunnerSpawn s = { .path = argv[0], .argv = argv, .job_id = 42, .job = "tjob",
			  .attempt = 3, .in = in, .in_len = n, .out_cap = cap };
	struct pollfd pf[RUNNER_PROC_FDS];
	int64_t end = jg_mono_ns() + 20LL * 1000000000;
	int rc = runner_proc_spawn(p, &s);

	if (rc != 0)
		return rc;
	while (jg_mono_ns() < end) {
		int k = runner_proc_fds(p, pf);
		CHECK(poll(pf, (nfds_t)k, 1000) >= 0);
		if (runner_proc_step(p, pf, k))
			return 0;
	}
	return ETIMEDOUT;
}

TEST(proc_env_is_exactly_four_vars)
{
	char *argv[] = { "/usr/bin/env", NULL };
	RunnerProc p;

	CHECK_RC(run_proc(&p, argv, "", 0, 4096));
	buf_add(&p.out, "", 1);
	CHECK(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 0);
	CHECK(strstr(p.out.p, "PATH=" RUNNER_PATH "\n"));
	CHECK(strstr(p.out.p, "JOBGATE_JOB_ID=42\n"));
	CHECK(strstr(p.out.p, "JOBGATE_JOB=tjob\n"));
	CHECK(strstr(p.out.p, "JOBGATE_ATTEMPT=3\n"));
	int lines = 0;
	for (const char *c = p.out.p; *c; c++)
		lines += *c == '\n';
	CHECK(lines == 4);
	runner_proc_release(&p);
}

/* On a kernel without close_range the child closes fds in a loop: up to
 * the highest fd the parent has open, not a fixed 4096 (serve raises the
 * fd limit, so sockets sit above it).  An fd left open without CLOEXEC,
 * past 4096 when the hard limit allows, must not reach the job. */
TEST(child_closes_high_fds_without_close_range)
{
	char *argv[] = { "/bin/ls", "/proc/self/fd", NULL };
	RunnerProc p;
	struct rlimit rl, old;
	int hi = 1000, fd;

	CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
	rl = old;
	if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 6000) {
		rl.rlim_cur = 6001;
		if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
			hi = 6000;
	}
	fd = open("/dev/null", O_RDONLY);	/* no O_CLOEXEC, on purpose */
	CHECK(fd >= 0 && dup2(fd, hi) == hi);
	close(fd);
	runner_close_range_off = 1;
	CHECK_RC(run_proc(&p, argv, "", 0, 4096));
	runner_close_range_off = 0;
	CHECK(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 0);
	buf_add(&p.out, "", 1);
	CHECK(strcmp(p.out.p, "0\n1\n2\n3\n") == 0);	/* 3: ls's own dir */
	runner_proc_release(&p);
	close(hi);
	setrlimit(RLIMIT_NOFILE, &old);
}

TEST(proc_stdin_roundtrip_large)
{
	size_t n = 3 * 1024 * 1024, i;
	char *in = malloc(n);
	char *argv[] = { "/bin/cat", NULL };
	RunnerProc p;

	CHECK(in);
	for (i = 0; i < n; i++)
		in[i] = (char)('a' + i % 26);
	CHECK_RC(run_proc(&p, argv, in, n, n));
	CHECK(p.out.len == n && !p.out_truncated);
	CHECK(memcmp(p.out.p, in, n) == 0);
	runner_proc_release(&p);
	free(in);
}

TEST(proc_stdout_capped_and_flagged)
{
	char *argv[] = { "/bin/sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x", NULL };
	RunnerProc p;
	Buf b = {0};

	CHECK_RC(run_proc(&p, argv, "", 0, 1000));
	CHECK(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 0);
	CHECK(p.out.len == 1000 && p.out_truncated);
	runner_result_json(p.out.p, p.out.len, p.out_truncated, &b);
	CHECK(b.len == 1002 && b.p[0] == '"');
	runner_proc_release(&p);
	buf_free(&b);
}

TEST(proc_stderr_tail_keeps_last_lines)
{
	char *argv[] = { "/bin/sh", "-c",
		"i=0; while [ $i -lt 3000 ]; do echo line$i >&2; i=$((i+1)); done; exit 3", NULL };
	RunnerProc p;
	Buf b = {0};

	CHECK_RC(run_proc(&p, argv, "", 0, 100));
	CHECK(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 3);
	runner_error_text(&p, &b);
	buf_add(&b, "", 1);
	CHECK(b.len - 1 <= RUNNER_ERR_TAIL);
	CHECK(strncmp(b.p, "line", 4) == 0);		/* starts on a whole line */
	CHECK(strlen(b.p) >= 8 && strcmp(b.p + strlen(b.p) - 8, "line2999") == 0);
	runner_proc_release(&p);
	buf_free(&b);
}

/* A tail whose first byte begins a line keeps that line (it was dropped
 * as if cut mid-line: helper 54), written at once and in two writes. */
TEST(stderr_tail_at_a_line_start_keeps_that_line)
{
	char *argv[][4] = {
		{ "/bin/sh", "-c", "printf 'P\\nfirst-kept-line\\n%04074d\\nlast\\n' 0 >&2; exit 1", NULL },
		{ "/bin/sh", "-c", "printf 'P\\nfirst-kept-line\\n' >&2; sleep 0.1; "
				  "printf '%04074d\\nlast\\n' 0 >&2; exit 1", NULL },
		{ "/bin/sh", "-c", "printf 'Q\\nfirst-kept-line\\n%04075d\\nlast\\n' 0 >&2; exit 1", NULL },
	};

	for (int i = 0; i < 3; i++) {
		RunnerProc p;
		Buf b = {0};

		CHECK_RC(run_proc(&p, argv[i], "", 0, 100));
		runner_error_text(&p, &b);
		buf_add(&b, "", 1);
		if (i < 2)	/* "first-kept-line\n" + 4074 + "\n" + "last\n" = 4096 */
			CHECK(strncmp(b.p, "first-kept-line\n0000", 20) == 0 && strlen(b.p) == 4095);
		else		/* one byte more: "first-kept-line" is cut, so it is dropped */
			CHECK(strncmp(b.p, "0000", 4) == 0 && strlen(b.p) == 4080);
		runner_proc_release(&p);
		buf_free(&b);
	}
}

/* A NUL in stderr does not end the error text. */
TEST(stderr_nul_does_not_cut_the_error)
{
	RunnerProc p;
	Buf b = {0};

	memset(&p, 0, sizeof p);
	memcpy(p.err, "err\0tail", 8);
	p.err_len = 8;
	p.status = 3 << 8;
	runner_error_text(&p, &b);
	buf_add(&b, "", 1);
	CHECK(strcmp(b.p, "err\xEF\xBF\xBDtail") == 0);
	buf_free(&b);
}

/* A tail cut inside one long line starts on a whole UTF-8 character. */
TEST(stderr_tail_cut_starts_on_a_character)
{
	RunnerProc p;
	Buf b = {0};
	size_t n = 0;

	memset(&p, 0, sizeof p);
	p.err[n++] = 'x';
	while (n + 2 < sizeof p.err - 1) {	/* "é" is C3 A9 */
		p.err[n++] = (char)0xC3;
		p.err[n++] = (char)0xA9;
	}
	p.err[n++] = 'y';
	p.err_len = n;
	p.status = 3 << 8;		/* exited 3 */
	for (int odd = 0; odd < 2; odd++) {	/* the cut lands on either byte */
		p.err_len = n - (size_t)odd;
		b.len = 0;
		runner_error_text(&p, &b);
		CHECK(b.len > 0 && b.len <= RUNNER_ERR_TAIL);
		CHECK(((unsigned char)b.p[0] & 0xC0) != 0x80);
	}
	buf_free(&b);
}

TEST(proc_exec_failure_reports_errno)
{
	char *argv[] = { "/nonexistent/prog", NULL };
	RunnerProc p;

	CHECK(run_proc(&p, argv, "", 0, 10) == ENOENT);
	CHECK(p.spawn_hint == NULL);		/* not there: nothing to add */
}

/* ENOENT from execve for a program that is there: the spawner says what
 * is likely missing, from the file it exec'd. */
TEST(proc_enoent_hint_names_what_is_missing)
{
	char dir[] = "/tmp/jg-hint-XXXXXX", bang[64];
	char *argv[] = { bang, NULL };
	RunnerProc p;
	FILE *f;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(bang, sizeof bang, "%s/bang", dir);
	CHECK((f = fopen(bang, "w")) != NULL);
	fputs("#!/nonexistent/interp\necho hi\n", f);
	fclose(f);
	CHECK(chmod(bang, 0755) == 0);
	CHECK(run_proc(&p, argv, "", 0, 10) == ENOENT);
	CHECK(p.spawn_hint && strstr(p.spawn_hint, "#! line"));
	if (geteuid() != 0) {		/* root opens an exec-only file anyway */
		CHECK(chmod(bang, 0111) == 0);
		CHECK(run_proc(&p, argv, "", 0, 10) == ENOENT);
		CHECK(p.spawn_hint && strstr(p.spawn_hint, "something it needs"));
	}
	unlink(bang);
	rmdir(dir);
}

/* A leader reaped by someone else (e.g. swept with another job's group it
 * joined) finishes with its status unknown, instead of spinning on a pidfd
 * that stays readable. */
TEST(proc_leader_reaped_elsewhere_finishes)
{
	char *argv[] = { "/bin/true", NULL };
	RunnerSpawn s = { .path = argv[0], .argv = argv, .job_id = 1, .job = "g",
			  .attempt = 1, .in = "", .in_len = 0, .out_cap = 10 };
	struct pollfd pf[RUNNER_PROC_FDS];
	RunnerProc p;
	int i, done = 0, st;

	CHECK_RC(runner_proc_spawn(&p, &s));
	CHECK(waitpid(p.pid, &st, 0) == p.pid);
	for (i = 0; i < 50 && !done; i++) {
		int k = runner_proc_fds(&p, pf);
		CHECK(poll(pf, (nfds_t)k, 100) >= 0);
		done = runner_proc_step(&p, pf, k);
	}
	CHECK(done && p.reaped);
	CHECK(!WIFEXITED(p.status) && !WIFSIGNALED(p.status));
	runner_proc_release(&p);
}

/* A leader that exited on its own keeps its outcome: a stop asked after
 * that (a cancel, a timeout, a shutdown racing the exit) changes nothing,
 * while a live one is signaled and remembers why (reviewer, session 8: a
 * success was recorded as canceled). */
TEST(stop_after_the_leader_exited_keeps_its_outcome)
{
	char *argv[] = { "/bin/sh", "-c", "read x; exit 0", NULL };
	RunnerSpawn s = { .path = argv[0], .argv = argv, .job_id = 1, .job = "g",
			  .attempt = 1, .in = "go\n", .in_len = 3, .out_cap = 10 };
	char *slow[] = { "/bin/sleep", "100", NULL };
	RunnerSpawn s2 = { .path = slow[0], .argv = slow, .job_id = 2, .job = "g",
			   .attempt = 1, .in = "", .in_len = 0, .out_cap = 10 };
	struct pollfd pf[RUNNER_PROC_FDS];
	RProc rp, live;
	int i, done = 0;

	memset(&rp, 0, sizeof rp);
	memset(&live, 0, sizeof live);
	CHECK_RC(runner_proc_spawn(&rp.p, &s));
	CHECK_RC(runner_proc_spawn(&live.p, &s2));
	/* Feed stdin without reaping, until the leader is a zombie. */
	for (i = 0; i < 500 && !runner_proc_exited(&rp.p); i++) {
		int k = runner_proc_fds(&rp.p, pf);
		CHECK(poll(pf, (nfds_t)k, 10) >= 0);
		for (int m = 0; m < k; m++)
			if (pf[m].fd == rp.p.pidfd)
				pf[m].revents = 0;	/* not yet seen */
		CHECK(!runner_proc_step(&rp.p, pf, k));
	}
	CHECK(runner_proc_exited(&rp.p) && !rp.p.reaped);
	CHECK(runner_attempt_stop(&rp, WHY_CANCEL, 1000000000) == 0);
	CHECK(rp.why == WHY_NONE && rp.kill_ns == 0);
	for (i = 0; i < 100 && !done; i++) {
		int k = runner_proc_fds(&rp.p, pf);
		CHECK(poll(pf, (nfds_t)k, 100) >= 0);
		done = runner_proc_step(&rp.p, pf, k);
	}
	CHECK(done && WIFEXITED(rp.p.status) && WEXITSTATUS(rp.p.status) == 0);
	runner_proc_release(&rp.p);

	CHECK(!runner_proc_exited(&live.p));
	CHECK(runner_attempt_stop(&live, WHY_CANCEL, 1000000000) == 1);
	CHECK(live.why == WHY_CANCEL && live.kill_ns != 0);
	for (i = 0, done = 0; i < 100 && !done; i++) {
		int k = runner_proc_fds(&live.p, pf);
		CHECK(poll(pf, (nfds_t)k, 100) >= 0);
		done = runner_proc_step(&live.p, pf, k);
	}
	CHECK(done && WIFSIGNALED(live.p.status) && WTERMSIG(live.p.status) == SIGTERM);
	runner_proc_release(&live.p);
}

TEST(proc_signal_kills_whole_group)
{
	char *argv[] = { "/bin/sh", "-c", "sleep 100 & sleep 100; wait", NULL };
	RunnerSpawn s = { .path = argv[0], .argv = argv, .job_id = 1, .job = "g",
			  .attempt = 1, .in = "", .in_len = 0, .out_cap = 10 };
	struct pollfd pf[RUNNER_PROC_FDS];
	RunnerProc p;
	int i, done = 0;

	CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
	CHECK_RC(runner_proc_spawn(&p, &s));
	CHECK(getpgid(p.pid) == p.pid);
	pid_t pg = p.pid;
	usleep(200 * 1000);
	runner_proc_signal(&p, SIGTERM);
	for (i = 0; i < 100 && !done; i++) {
		int k = runner_proc_fds(&p, pf);
		CHECK(poll(pf, (nfds_t)k, 100) >= 0);
		done = runner_proc_step(&p, pf, k);
	}
	CHECK(done && WIFSIGNALED(p.status) && WTERMSIG(p.status) == SIGTERM);
	/* The background sleep is our orphan to reap (we are its subreaper). */
	for (i = 0; i < 200 && !runner_proc_reap_group(pg); i++)
		usleep(10 * 1000);
	CHECK(kill(-pg, 0) < 0 && errno == ESRCH);
	runner_proc_release(&p);
}

/* The orphan sweep of a group must leave a process that leads a group of
 * that number alone: the old leader was reaped before the sweep, so such
 * a process is a new job that reused the number (with spawner threads the
 * runner may not know its pid yet) and its exit belongs to its own pidfd.
 * Here an unreaped zombie leader stands in for that new job. */
TEST(reap_group_leaves_the_leader)
{
	siginfo_t si;
	pid_t leader;
	int i, st;

	CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
	if ((leader = fork()) == 0) {
		setpgid(0, 0);
		_exit(3);
	}
	CHECK(leader > 0);
	for (i = 0; i < 500; i++) {	/* the leader is a zombie */
		memset(&si, 0, sizeof si);
		CHECK(waitid(P_PID, (id_t)leader, &si, WEXITED | WNOHANG | WNOWAIT) == 0);
		if (si.si_pid == leader)
			break;
		usleep(10 * 1000);
	}
	CHECK(si.si_pid == leader && getpgid(leader) == leader);
	for (i = 0; i < 20; i++)
		CHECK(runner_proc_reap_group(leader) == 1);	/* "the old group is gone" */
	/* ... and the zombie was not taken from its owner. */
	CHECK(waitpid(leader, &st, 0) == leader && WIFEXITED(st) && WEXITSTATUS(st) == 3);
}

TEST(result_json_or_string)
{
	Buf b = {0};

	runner_result_json("{\"a\": [1, 2]}\n", 14, 0, &b);
	CHECK(b.len == 13 && memcmp(b.p, "{\"a\": [1, 2]}", 13) == 0);
	buf_reset(&b);
	runner_result_json("hello\n", 6, 0, &b);
	CHECK(b.len == 9 && memcmp(b.p, "\"hello\\n\"", 9) == 0);
	buf_reset(&b);
	runner_result_json("", 0, 0, &b);
	CHECK(b.len == 2 && memcmp(b.p, "\"\"", 2) == 0);
	buf_reset(&b);
	runner_result_json("[1,2]", 5, 1, &b);	/* cut: never stored as JSON */
	CHECK(b.len == 7 && b.p[0] == '"');
	buf_free(&b);
}

/* A cut inside a UTF-8 character drops the partial character, it does not
 * become U+FFFD. */
TEST(result_cut_at_utf8_boundary)
{
	static const struct { const char *in; const char *want; } c[] = {
		{ "aaaaaaaaa\xc3", "\"aaaaaaaaa\"" },		/* é cut after 1 of 2 */
		{ "ab\xe2\x82", "\"ab\"" },			/* € cut after 2 of 3 */
		{ "ab\xe2", "\"ab\"" },			/* € cut after 1 of 3 */
		{ "a\xf0\x9f\x98", "\"a\"" },		/* 😀 cut after 3 of 4 */
		{ "a\xc3\xa9", "\"a\xc3\xa9\"" },		/* whole é kept */
		{ "a\xf0\x9f\x98\x80", "\"a\xf0\x9f\x98\x80\"" },	/* whole 😀 kept */
		{ "a\xff", "\"a\xef\xbf\xbd\"" },		/* invalid, not a cut: U+FFFD */
	};
	Buf b = {0};

	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
		buf_reset(&b);
		runner_result_json(c[i].in, strlen(c[i].in), 1, &b);
		buf_add(&b, "", 1);
		if (strcmp(b.p, c[i].want) != 0)
			fprintf(stderr, "case %zu: got %s want %s\n", i, b.p, c[i].want);
		CHECK(strcmp(b.p, c[i].want) == 0);
	}
	buf_free(&b);

	/* The black-box case: max_result_bytes 10, stdout aaaaaaaaaéé. */
	char *argv[] = { "/usr/bin/printf", "aaaaaaaaa\xc3\xa9\xc3\xa9", NULL };
	RunnerProc p;
	Buf r = {0};
	CHECK_RC(run_proc(&p, argv, "", 0, 10));
	CHECK(p.out.len == 10 && p.out_truncated);
	runner_result_json(p.out.p, p.out.len, p.out_truncated, &r);
	buf_add(&r, "", 1);
	CHECK(strcmp(r.p, "\"aaaaaaaaa\"") == 0);
	runner_proc_release(&p);
	buf_free(&r);
}

TEST(backoff_exponential_capped_jittered)
{
	uint64_t rng = 12345;
	int i;

	for (i = 0; i < 200; i++) {
		int64_t a = runner_backoff_ms(2, 1, &rng), c = runner_backoff_ms(2, 3, &rng);
		int64_t big = runner_backoff_ms(10, 40, &rng);
		CHECK(a >= 1800 && a <= 2200);
		CHECK(c >= 7200 && c <= 8800);
		CHECK(big >= 3240000 && big <= 3960000);
		/* A first delay over the 1 h cap is kept, and so stays. */
		int64_t long1 = runner_backoff_ms(7200, 1, &rng), long3 = runner_backoff_ms(7200, 3, &rng);
		CHECK(long1 >= 6480000 && long1 <= 7920000);
		CHECK(long3 >= 6480000 && long3 <= 7920000);
	}
	CHECK(runner_backoff_ms(0, 5, &rng) == 0);
	/* Jitter varies. */
	int64_t first = runner_backoff_ms(100, 1, &rng), differs = 0;
	for (i = 0; i < 20; i++)
		differs |= runner_backoff_ms(100, 1, &rng) != first;
	CHECK(differs);
}

typedef struct Item { uint64_t id; int v; } Item;

TEST(map_put_get_del)
{
	RunnerMap m = {0};
	enum { N = 20000 };
	Item *it = calloc(N, sizeof *it);
	int i;

	CHECK(it);
	for (i = 0; i < N; i++) {
		it[i].id = (uint64_t)i * 3 + 1;
		it[i].v = i;
		CHECK_RC(runner_map_put(&m, &it[i]));
	}
	for (i = 0; i < N; i += 2)
		runner_map_del(&m, it[i].id);
	CHECK(m.n == N / 2);
	for (i = 0; i < N; i++) {
		Item *x = runner_map_get(&m, it[i].id);
		CHECK(i % 2 ? x == &it[i] : x == NULL);
	}
	CHECK(runner_map_get(&m, 2) == NULL);
	runner_map_free(&m);
	free(it);
}

/* ---- whole jobs through a Log */

typedef struct Env {
	Config *cfg;
	Log    *log;
	Runner *run;
} Env;

static void env_open(Env *e, const char *cfg_json, int start_runner)
{
	char err[256] = "";
	LogOptions o = { .queue_max = 1024, .map_size_mb = 64 };

	if (config_parse(cfg_json, strlen(cfg_json), &e->cfg, err, sizeof err) != 0) {
		fprintf(stderr, "config: %s\n", err);
		CHECK(0);
	}
	CHECK_RC(log_open(&e->log, t_dir(), &o));
	CHECK_RC(runner_open(&e->run, e->cfg, e->log));
	CHECK_RC(log_start(e->log));
	if (start_runner)
		CHECK_RC(runner_start(e->run));
}

static void env_close(Env *e, int grace_s)
{
	runner_close(e->run, grace_s);
	log_close(e->log);
	config_free(e->cfg);
}

typedef struct Wait {
	pthread_mutex_t mu;
	pthread_cond_t  cv;
	int             done;
} Wait;

static void entry_done(LogEntry *le, void *ctx)
{
	Wait *w = ctx;

	(void)le;
	pthread_mutex_lock(&w->mu);
	w->done = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static void wait_flag(Wait *w)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	pthread_mutex_lock(&w->mu);
	while (!w->done)
		if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) != 0)
			break;
	CHECK(w->done);
	pthread_mutex_unlock(&w->mu);
}

/* Append an event built by the caller and wait until it is durable. */
static uint64_t append(Log *l, LogEntry *e)
{
	Wait w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };

	e->done = entry_done;
	e->ctx = &w;
	CHECK_RC(log_submit(l, e));
	wait_flag(&w);
	CHECK_RC(e->rc);
	uint64_t seq = e->seq;
	event_entry_free(e);
	return seq;
}

static uint64_t enqueue(Log *l, const char *job, const char *payload, int max_attempts)
{
	LogEntry e;

	memset(&e, 0, sizeof e);
	CHECK_RC(event_enqueued(&e, job, payload, strlen(payload), NULL, 0, "t", max_attempts));
	return append(l, &e);
}

/* Wait (bounded) until job id's last event has status st; returns its seq. */
static uint64_t wait_status(Log *l, uint64_t id, int st, int secs)
{
	LogReader *rd;
	LogEvent ev;
	int64_t end = jg_mono_ns() + (int64_t)secs * 1000000000;
	uint64_t seq = 0;

	CHECK_RC(log_reader_open(l, &rd));
	while (jg_mono_ns() < end) {
		CHECK_RC(log_reader_begin(rd));
		uint64_t last = log_reader_job_last(rd, id);
		if (last && log_reader_get(rd, last, &ev) == 0 && ev.status == st) {
			seq = last;
			log_reader_end(rd);
			break;
		}
		log_reader_end(rd);
		usleep(10 * 1000);
	}
	log_reader_close(rd);
	if (!seq)
		fprintf(stderr, "job %llu never reached %s\n", (unsigned long long)id,
			log_status_name(st));
	CHECK(seq);
	return seq;
}

/* Decode the job's events into v[0..max); returns the count. */
static int job_events_from(Log *l, uint64_t id, uint64_t from, EventView *v, Buf *keep, int max)
{
	LogReader *rd;
	LogEvent ev;
	int n = 0, rc;

	CHECK_RC(log_reader_open(l, &rd));
	CHECK_RC(log_reader_begin(rd));
	for (rc = log_reader_job_seek(rd, id, from, &ev); rc == 0 && n < max;
	     rc = log_reader_job_next(rd, &ev)) {
		CHECK_RC(event_decode(&ev, &v[n]));
		/* Keep error/result text past the snapshot. */
		Span *sp = v[n].type == JG_EV_SUCCEEDED ? &v[n].result : &v[n].error;
		size_t at = keep[n].len;
		buf_add(&keep[n], sp->p ? sp->p : "", sp->n);
		buf_add(&keep[n], "", 1);
		sp->p = keep[n].p + at;
		n++;
	}
	log_reader_end(rd);
	log_reader_close(rd);
	return n;
}

static int job_events(Log *l, uint64_t id, EventView *v, Buf *keep, int max)
{
	return job_events_from(l, id, 0, v, keep, max);
}

/* The n buffers job_events() filled. */
static void keep_free(Buf *keep, int n)
{
	for (int i = 0; i < n; i++)
		buf_free(&keep[i]);
}

#define CFG_HEAD "{\"jobs\":{\"echo\":{\"builtin\":\"echo\"},"

TEST(runs_cat_and_echo)
{
	Env e;
	EventView v[8];
	Buf keep[8] = {{0}};

	env_open(&e, CFG_HEAD "\"cat\":{\"command\":[\"/bin/cat\"]}}}", 1);
	uint64_t a = enqueue(e.log, "cat", "{\"x\":\"$(touch /tmp/nope)\"}", 3);
	uint64_t b = enqueue(e.log, "echo", "[1,2,3]", 3);
	wait_status(e.log, a, JG_ST_SUCCEEDED, 10);
	wait_status(e.log, b, JG_ST_SUCCEEDED, 10);
	int n = job_events(e.log, a, v, keep, 8);
	CHECK(n == 3 && v[1].type == JG_EV_STARTED && v[1].attempt == 1);
	CHECK(v[2].exit_code == 0 && strcmp(v[2].result.p, "{\"x\":\"$(touch /tmp/nope)\"}") == 0);
	for (int i = 0; i < 8; i++)
		buf_reset(&keep[i]);
	n = job_events(e.log, b, v, keep, 8);
	CHECK(n == 3 && strcmp(v[2].result.p, "[1,2,3]") == 0);
	CHECK(v[2].seq == v[1].seq + 1);	/* an echo's started + succeeded: one pair */
	env_close(&e, 5);
	keep_free(keep, 8);
}

TEST(failure_retries_with_backoff_then_fails)
{
	Env e;
	EventView v[16];
	Buf keep[16] = {{0}};

	env_open(&e, CFG_HEAD "\"bad\":{\"command\":[\"/bin/sh\",\"-c\",\"echo oops $JOBGATE_ATTEMPT >&2; exit 3\"],"
		 "\"max_attempts\":3,\"backoff_s\":1}}}", 1);
	uint64_t id = enqueue(e.log, "bad", "null", 3);
	wait_status(e.log, id, JG_ST_FAILED, 15);
	int n = job_events(e.log, id, v, keep, 16);
	/* enqueued, (started, failed) x 3 */
	CHECK(n == 7);
	CHECK(v[2].type == JG_EV_FAILED && v[2].status == JG_ST_QUEUED && v[2].retry_at_ms > 0);
	CHECK(v[4].status == JG_ST_QUEUED && v[4].retry_at_ms > 0);
	CHECK(v[6].status == JG_ST_FAILED && v[6].retry_at_ms == 0 && v[6].exit_code == 3);
	CHECK(strcmp(v[6].error.p, "\"oops 3\"") == 0);
	/* attempt 2 starts >= 0.9 s after failure 1, attempt 3 >= 1.8 s after failure 2 */
	CHECK(v[3].at_ms - v[2].at_ms >= 850 && v[3].at_ms - v[2].at_ms < 3000);
	CHECK(v[5].at_ms - v[4].at_ms >= 1750 && v[5].at_ms - v[4].at_ms < 4000);
	env_close(&e, 5);
	keep_free(keep, 16);
}

TEST(timeout_kills_and_fails)
{
	Env e;
	EventView v[8];
	Buf keep[8] = {{0}};

	env_open(&e, CFG_HEAD "\"slow\":{\"command\":[\"sleep\",\"30\"],\"timeout_s\":1,"
		 "\"max_attempts\":1}}}", 1);
	int64_t t0 = jg_mono_ns();
	uint64_t id = enqueue(e.log, "slow", "null", 1);
	wait_status(e.log, id, JG_ST_FAILED, 10);
	CHECK(jg_mono_ns() - t0 < 5LL * 1000000000);
	int n = job_events(e.log, id, v, keep, 8);
	CHECK(n == 3 && strcmp(v[2].error.p, "\"timeout\"") == 0 && v[2].signal == SIGTERM);
	env_close(&e, 5);
	keep_free(keep, 8);
}

typedef struct ReqWait { Wait w; } ReqWait;

static void req_done(RunnerReq *q, void *ctx)
{
	(void)q;
	entry_done(NULL, ctx);
}

static int request(Runner *r, int op, uint64_t id)
{
	Wait w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };
	RunnerReq q;

	memset(&q, 0, sizeof q);
	q.op = op;
	q.job_id = id;
	strcpy(q.actor, "ops");
	q.done = req_done;
	q.ctx = &w;
	CHECK_RC(runner_submit(r, &q));
	wait_flag(&w);
	return q.rc;
}

typedef struct Burst {
	pthread_mutex_t mu;
	pthread_cond_t  cv;
	int             left;
} Burst;

static void burst_done(LogEntry *le, void *ctx)
{
	Burst *b = ctx;

	CHECK_RC(le->rc);
	pthread_mutex_lock(&b->mu);
	if (--b->left == 0)
		pthread_cond_signal(&b->cv);
	pthread_mutex_unlock(&b->mu);
}

/* A cancel for a queued job that the runner's tail has not reached yet (a
 * burst several tail batches long just committed) cancels it; "not held"
 * is not "finished". */
TEST(cancel_of_a_job_beyond_the_tail)
{
	enum { N = 20000 };	/* several of the tail's 4,096-event batches */
	Env e;
	Burst b = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, N };
	LogEntry *le = calloc(N, sizeof *le);
	LogOptions o = { .queue_max = N, .map_size_mb = 256 };
	char err[256] = "";
	const char *cfg = CFG_HEAD "\"t\":{\"command\":[\"/bin/true\"],\"concurrency\":1}},"
			  "\"limits\":{\"max_running\":1}}";

	CHECK(le != NULL);
	CHECK(config_parse(cfg, strlen(cfg), &e.cfg, err, sizeof err) == 0);
	CHECK_RC(log_open(&e.log, t_dir(), &o));
	CHECK_RC(runner_open(&e.run, e.cfg, e.log));
	CHECK_RC(log_start(e.log));
	CHECK_RC(runner_start(e.run));
	for (int i = 0; i < N; i++) {
		CHECK_RC(event_enqueued(&le[i], "t", "null", 4, NULL, 0, "t", 1));
		le[i].done = burst_done;
		le[i].ctx = &b;
	}
	for (int i = 0; i < N; i++)
		CHECK_RC(log_submit(e.log, &le[i]));
	pthread_mutex_lock(&b.mu);
	while (b.left > 0)
		pthread_cond_wait(&b.cv, &b.mu);
	pthread_mutex_unlock(&b.mu);
	uint64_t last = le[N - 1].seq;
	CHECK(request(e.run, RUNNER_CANCEL, last) == 0);
	CHECK(wait_status(e.log, last, JG_ST_CANCELED, 10) != 0);
	env_close(&e, 1);
	for (int i = 0; i < N; i++)
		event_entry_free(&le[i]);
	free(le);
}

TEST(cancel_running_then_conflict_then_retry)
{
	Env e;
	EventView v[16];
	Buf keep[16] = {{0}};

	env_open(&e, CFG_HEAD "\"long\":{\"command\":[\"/bin/sh\",\"-c\",\"sleep 100 & sleep 100; wait\"],"
		 "\"max_attempts\":1}}}", 1);
	uint64_t id = enqueue(e.log, "long", "null", 1);
	wait_status(e.log, id, JG_ST_RUNNING, 10);
	usleep(100 * 1000);
	CHECK(request(e.run, RUNNER_CANCEL, id) == 0);
	wait_status(e.log, id, JG_ST_CANCELED, 1);
	CHECK(request(e.run, RUNNER_CANCEL, id) == JG_ECONFLICT);
	CHECK(request(e.run, RUNNER_CANCEL, 999999) == JG_ENOTFOUND);
	CHECK(request(e.run, RUNNER_RETRY, id) == 0);
	wait_status(e.log, id, JG_ST_RUNNING, 10);
	CHECK(request(e.run, RUNNER_RETRY, id) == JG_ECONFLICT);
	int n = job_events(e.log, id, v, keep, 16);
	CHECK(n == 5 && v[3].type == JG_EV_RETRIED && v[3].attempt == 2 && v[4].attempt == 2);
	env_close(&e, 0);	/* interrupts attempt 2: failed, no attempts left */
	keep_free(keep, 16);
}

/* A spawn that is slow and then fails, as an exec of a vanished file on
 * a loaded machine would. */
static atomic_int slow_spawn_go;
static int slow_failing_spawn(RunnerProc *p, const RunnerSpawn *s)
{
	(void)p, (void)s;
	while (!atomic_load(&slow_spawn_go))
		usleep(1000);
	return ENOENT;
}

/* A thread that sets *flag to value 300 ms from now (joined by the test). */
typedef struct Later {
	atomic_int *flag;
	int         value;
} Later;

static void *set_later(void *arg)
{
	Later *l = arg;

	usleep(300 * 1000);
	atomic_store(l->flag, l->value);
	return NULL;
}

/* Job x (spec: its JSON members) is being spawned by fn, which waits for
 * *go: cancel it then (*go is set 300 ms later), check the answer, wait
 * for status final and return the job's events in v (keep holds their
 * text); the runner is closed and spawns go the normal way again. */
static int cancel_while_spawning(int (*fn)(RunnerProc *, const RunnerSpawn *), atomic_int *go,
				 const char *spec, int want_rc, int final, EventView *v, Buf *keep)
{
	char cfg[512];
	pthread_t th;
	Later later = { go, 1 };
	Env e;
	int n;

	runner_spawn_fn = fn;
	snprintf(cfg, sizeof cfg, CFG_HEAD "\"x\":{%s}}}", spec);
	env_open(&e, cfg, 1);
	uint64_t id = enqueue(e.log, "x", "null", 1);
	wait_status(e.log, id, JG_ST_RUNNING, 10);	/* started is durable: spawning */
	CHECK(pthread_create(&th, NULL, set_later, &later) == 0);
	CHECK(request(e.run, RUNNER_CANCEL, id) == want_rc);
	pthread_join(th, NULL);
	wait_status(e.log, id, final, 5);
	n = job_events(e.log, id, v, keep, 16);
	env_close(&e, 0);
	runner_spawn_fn = runner_proc_spawn;
	atomic_store(go, 0);
	return n;
}

/* A cancel that arrives while a spawner is starting the process, whose
 * spawn then fails: the job is canceled and the request answered (it
 * used to wait forever while the job was retried as a spawn failure). */
TEST(cancel_during_a_failing_spawn)
{
	EventView v[16];
	Buf keep[16] = {{0}};
	int n = cancel_while_spawning(slow_failing_spawn, &slow_spawn_go,
				      "\"command\":[\"/bin/true\"],\"max_attempts\":3", 0,
				      JG_ST_CANCELED, v, keep);

	CHECK(n == 3 && v[1].type == JG_EV_STARTED && v[2].type == JG_EV_CANCELED);
	keep_free(keep, 16);
}

/* A cancel that arrives while the spawner starts a process that then runs
 * to its end before the runner hears of it: the job's real outcome stands
 * and the cancel is 409 (reviewer, session 8: it was recorded canceled,
 * its result dropped, although it had run). */
static atomic_int spawn_go;

static int spawn_late_report(RunnerProc *p, const RunnerSpawn *s)
{
	int rc;

	while (!atomic_load(&spawn_go))
		usleep(1000);
	rc = runner_proc_spawn(p, s);
	usleep(300 * 1000);	/* the process is done before the runner knows */
	return rc;
}

TEST(cancel_during_the_spawn_of_a_job_that_finishes)
{
	EventView v[16];
	Buf keep[16] = {{0}};
	int n = cancel_while_spawning(spawn_late_report, &spawn_go,
				      "\"command\":[\"/bin/echo\",\"done\"],\"max_attempts\":1",
				      JG_ECONFLICT, JG_ST_SUCCEEDED, v, keep);

	CHECK(n == 3 && v[2].type == JG_EV_SUCCEEDED && strcmp(v[2].result.p, "\"done\\n\"") == 0);
	keep_free(keep, 16);
}

TEST(cancel_queued_at_once)
{
	Env e;

	/* concurrency 1: the second job stays queued behind the first. */
	env_open(&e, CFG_HEAD "\"one\":{\"command\":[\"sleep\",\"100\"],\"concurrency\":1}}}", 1);
	uint64_t a = enqueue(e.log, "one", "null", 3);
	uint64_t b = enqueue(e.log, "one", "null", 3);
	wait_status(e.log, a, JG_ST_RUNNING, 10);
	usleep(200 * 1000);
	wait_status(e.log, b, JG_ST_QUEUED, 1);
	CHECK(request(e.run, RUNNER_CANCEL, b) == 0);
	wait_status(e.log, b, JG_ST_CANCELED, 1);
	CHECK(request(e.run, RUNNER_CANCEL, a) == 0);
	wait_status(e.log, a, JG_ST_CANCELED, 10);
	env_close(&e, 0);
}

/* A previous process: a "cat" job enqueued and started, then it died.
 * The runner is not started. */
static uint64_t died_running(Env *e)
{
	LogEntry le;

	env_open(e, CFG_HEAD "\"cat\":{\"command\":[\"/bin/cat\"],\"backoff_s\":1}}}", 0);
	uint64_t id = enqueue(e->log, "cat", "\"hi\"", 3);
	memset(&le, 0, sizeof le);
	CHECK_RC(event_started(&le, "cat", id, 1));
	append(e->log, &le);
	return id;
}

TEST(recovery_interrupted_then_rerun)
{
	Env e;
	EventView v[16];
	Buf keep[16] = {{0}};

	uint64_t id = died_running(&e);
	uint64_t gone = enqueue(e.log, "gone", "1", 3);	/* job no longer configured */
	usleep(300 * 1000);	/* the "process" ran this long before it died */
	int64_t t0 = jg_now_ms();
	CHECK_RC(runner_start(e.run));
	wait_status(e.log, id, JG_ST_SUCCEEDED, 10);
	wait_status(e.log, gone, JG_ST_FAILED, 5);
	int n = job_events(e.log, id, v, keep, 16);
	CHECK(n == 5);
	CHECK(v[2].type == JG_EV_FAILED && strcmp(v[2].error.p, "\"interrupted\"") == 0);
	CHECK(v[2].retry_at_ms > 0 && v[3].attempt == 2 && strcmp(v[4].result.p, "\"hi\"") == 0);
	/* duration: from job.started's at until the recovery, not 0 */
	CHECK(v[2].duration_ms >= 300 && v[2].duration_ms <= jg_now_ms() - v[1].at_ms);
	CHECK(v[2].duration_ms >= t0 - v[1].at_ms);
	for (int i = 0; i < 16; i++)
		buf_reset(&keep[i]);
	n = job_events(e.log, gone, v, keep, 16);
	CHECK(n == 2 && strcmp(v[1].error.p, "\"unknown job\"") == 0);
	env_close(&e, 5);
	keep_free(keep, 16);
}

/* After a restart, a job.retried's max_attempts is the cap, not its
 * attempt number: canceled before it ran (cap 3), retried, started, then
 * the gateway died -> interrupted attempt 1 of 3 is retried automatically. */
/* A "cat" job (3 attempts) canceled while queued, then retried: its last
 * event is the job.retried that names attempt 1. */
static uint64_t enqueue_canceled_retried(Log *l)
{
	LogEntry le;
	uint64_t id = enqueue(l, "cat", "\"hi\"", 3);

	memset(&le, 0, sizeof le);
	CHECK_RC(event_canceled(&le, "cat", id, 0, "ops"));
	append(l, &le);
	memset(&le, 0, sizeof le);
	CHECK_RC(event_retried(&le, "cat", id, 1, "ops", 3));
	append(l, &le);
	return id;
}

TEST(recovery_keeps_retried_max_attempts)
{
	Env e;
	LogEntry le;
	EventView v[16];
	Buf keep[16] = {{0}};

	env_open(&e, CFG_HEAD "\"cat\":{\"command\":[\"/bin/cat\"],\"backoff_s\":1,"
		 "\"max_attempts\":3}}}", 0);
	uint64_t id = enqueue_canceled_retried(e.log);
	memset(&le, 0, sizeof le);
	CHECK_RC(event_started(&le, "cat", id, 1));
	append(e.log, &le);
	CHECK_RC(runner_start(e.run));
	wait_status(e.log, id, JG_ST_SUCCEEDED, 10);
	int n = job_events(e.log, id, v, keep, 16);
	CHECK(n == 7);
	CHECK(v[2].type == JG_EV_RETRIED && v[2].max_attempts == 3);
	CHECK(v[4].type == JG_EV_FAILED && strcmp(v[4].error.p, "\"interrupted\"") == 0);
	CHECK(v[4].status == JG_ST_QUEUED && v[4].retry_at_ms > 0);
	CHECK(v[5].type == JG_EV_STARTED && v[5].attempt == 2);
	env_close(&e, 5);
	keep_free(keep, 16);
}

/* A job whose last event is job.retried (it names the attempt to run
 * next) resumes with that attempt, not the one after it. */
TEST(recovery_after_retried_runs_the_named_attempt)
{
	Env e;
	EventView v[8];
	Buf keep[8] = {{0}};

	env_open(&e, CFG_HEAD "\"cat\":{\"command\":[\"/bin/cat\"],\"max_attempts\":3}}}", 0);
	uint64_t id = enqueue_canceled_retried(e.log);
	CHECK_RC(runner_start(e.run));
	wait_status(e.log, id, JG_ST_SUCCEEDED, 10);
	int n = job_events(e.log, id, v, keep, 8);
	CHECK(n == 5);
	CHECK(v[3].type == JG_EV_STARTED && v[3].attempt == 1);
	CHECK(v[4].type == JG_EV_SUCCEEDED && v[4].attempt == 1);
	env_close(&e, 5);
	keep_free(keep, 8);
}

TEST(close_interrupts_and_records)
{
	Env e;
	EventView v[8];
	Buf keep[8] = {{0}};

	env_open(&e, CFG_HEAD "\"long\":{\"command\":[\"sleep\",\"100\"],\"max_attempts\":2}}}", 1);
	uint64_t id = enqueue(e.log, "long", "null", 2);
	wait_status(e.log, id, JG_ST_RUNNING, 10);
	int64_t t0 = jg_mono_ns();
	runner_close(e.run, 1);
	CHECK(jg_mono_ns() - t0 < 4LL * 1000000000);
	/* Durable before runner_close returned. */
	int n = job_events(e.log, id, v, keep, 8);
	CHECK(n == 3 && strcmp(v[2].error.p, "\"interrupted\"") == 0);
	CHECK(v[2].status == JG_ST_QUEUED && v[2].retry_at_ms > 0);
	log_close(e.log);
	config_free(e.cfg);
	keep_free(keep, 8);
}

/* Fault seam: commits fail (MDB_MAP_FULL, as a full map does) while
 * fail_commits is set. */
static atomic_int fail_commits, failed_commits;
static int (*real_commit)(void *txn);

static int flaky_commit(void *txn)
{
	if (atomic_load(&fail_commits)) {
		atomic_fetch_add(&failed_commits, 1);
		mdb_txn_abort(txn);
		return MDB_MAP_FULL;
	}
	return real_commit(txn);
}

static int last_status(Log *l, uint64_t id)
{
	LogReader *rd;
	LogEvent ev;
	int st = 0;

	CHECK_RC(log_reader_open(l, &rd));
	CHECK_RC(log_reader_begin(rd));
	uint64_t last = log_reader_job_last(rd, id);
	if (last && log_reader_get(rd, last, &ev) == 0)
		st = ev.status;
	log_reader_end(rd);
	log_reader_close(rd);
	return st;
}

/* The log refuses the runner's events for a while (map full): nothing is
 * dropped, nothing runs unrecorded, answers follow the log, and once
 * commits succeed again every event is in the log exactly once, in order. */
TEST(refused_events_are_retried_until_durable)
{
	Env e;
	EventView v[8];
	Buf keep[8] = {{0}};
	char go[300], mark[300], cfg[1200];
	Buf m = {0};

	snprintf(go, sizeof go, "%s/go", t_dir());
	snprintf(mark, sizeof mark, "%s/b-ran", t_dir());
	/* A waits for the go file, B (queued behind A: concurrency 1) leaves a
	 * mark when its process runs. */
	snprintf(cfg, sizeof cfg, CFG_HEAD "\"w\":{\"command\":[\"/bin/sh\",\"-c\","
		 "\"read p; if [ \\\"$p\\\" = 1 ]; then "
		 "while [ ! -e %s ]; do sleep 0.02; done; echo a; else touch %s; echo b; fi\"],"
		 "\"concurrency\":1,\"max_attempts\":1}}}", go, mark);
	real_commit = log_commit_fn;
	log_commit_fn = flaky_commit;
	env_open(&e, cfg, 1);
	uint64_t a = enqueue(e.log, "w", "1", 1);
	uint64_t b = enqueue(e.log, "w", "2", 1);
	uint64_t c = enqueue(e.log, "echo", "7", 1);
	wait_status(e.log, a, JG_ST_RUNNING, 10);
	wait_status(e.log, c, JG_ST_SUCCEEDED, 10);

	atomic_store(&fail_commits, 1);
	FILE *f = fopen(go, "w");
	CHECK(f);
	fclose(f);
	/* A's process ends; its job.succeeded is refused, retried, refused... */
	int64_t end = jg_mono_ns() + 10LL * 1000000000;
	while (atomic_load(&failed_commits) < 4 && jg_mono_ns() < end)
		usleep(10 * 1000);
	CHECK(atomic_load(&failed_commits) >= 4);	/* 100+200+400 ms of backoff */
	/* The log still says running, and so does every answer: a cancel is
	 * neither "already finished" nor left hanging. */
	CHECK(last_status(e.log, a) == JG_ST_RUNNING);
	CHECK(request(e.run, RUNNER_CANCEL, a) == JG_ESTORAGE);
	CHECK(request(e.run, RUNNER_RETRY, a) == JG_ESTORAGE);
	/* B took A's slot, but its job.started is refused: its process must
	 * not run while the log does not show it started. */
	usleep(300 * 1000);
	CHECK(last_status(e.log, b) == JG_ST_QUEUED);
	CHECK(access(mark, F_OK) != 0);

	atomic_store(&fail_commits, 0);
	wait_status(e.log, a, JG_ST_SUCCEEDED, 15);
	wait_status(e.log, b, JG_ST_SUCCEEDED, 15);
	CHECK(access(mark, F_OK) == 0);
	/* Decided on durable state now: A is final. */
	CHECK(request(e.run, RUNNER_CANCEL, a) == JG_ECONFLICT);
	CHECK(request(e.run, RUNNER_RETRY, b) == JG_ECONFLICT);
	uint64_t ids[2] = { a, b };
	for (int k = 0; k < 2; k++) {
		for (int i = 0; i < 8; i++)
			buf_reset(&keep[i]);
		int n = job_events(e.log, ids[k], v, keep, 8);
		CHECK(n == 3);
		CHECK(v[0].type == JG_EV_ENQUEUED);
		CHECK(v[1].type == JG_EV_STARTED && v[1].attempt == 1);
		CHECK(v[2].type == JG_EV_SUCCEEDED && v[2].attempt == 1);
		CHECK(strcmp(v[2].result.p, k ? "\"b\\n\"" : "\"a\\n\"") == 0);
	}
	runner_metrics(e.run, &m);
	buf_add(&m, "", 1);
	CHECK(strstr(m.p, "jobgate_jobs_running 0\n"));
	buf_free(&m);
	env_close(&e, 5);
	keep_free(keep, 8);
}

/* An echo's job.started refused: its job.succeeded (made at once) must not
 * overtake it in the log. */
TEST(refused_started_not_overtaken)
{
	Env e;
	EventView v[8];
	Buf keep[8] = {{0}};

	real_commit = log_commit_fn;
	log_commit_fn = flaky_commit;
	env_open(&e, CFG_HEAD "\"x\":{\"command\":[\"/bin/true\"]}}}", 0);
	uint64_t id = enqueue(e.log, "echo", "\"hi\"", 1);
	atomic_store(&fail_commits, 1);
	CHECK_RC(runner_start(e.run));	/* recovery runs the echo now */
	int64_t end = jg_mono_ns() + 10LL * 1000000000;
	while (atomic_load(&failed_commits) < 2 && jg_mono_ns() < end)
		usleep(5 * 1000);
	CHECK(atomic_load(&failed_commits) >= 2);
	CHECK(last_status(e.log, id) == JG_ST_QUEUED);
	atomic_store(&fail_commits, 0);
	wait_status(e.log, id, JG_ST_SUCCEEDED, 10);
	int n = job_events(e.log, id, v, keep, 8);
	CHECK(n == 3 && v[1].type == JG_EV_STARTED && v[2].type == JG_EV_SUCCEEDED);
	CHECK(v[2].seq == v[1].seq + 1);
	env_close(&e, 5);
	keep_free(keep, 8);
}

/* A job.started that becomes durable only once the server is stopping:
 * nothing was run, so the attempt is interrupted with another to follow,
 * even when it was the last one allowed (reviewer, session 8: a job with
 * max_attempts 1 ended failed without ever running). */
TEST(close_with_a_start_in_flight_keeps_the_last_attempt)
{
	Env e;
	EventView v[8];
	Buf keep[8] = {{0}};
	pthread_t th;

	real_commit = log_commit_fn;
	log_commit_fn = flaky_commit;
	env_open(&e, CFG_HEAD "\"one\":{\"command\":[\"/bin/true\"],\"max_attempts\":1}}}", 0);
	uint64_t id = enqueue(e.log, "one", "null", 1);
	atomic_store(&failed_commits, 0);
	atomic_store(&fail_commits, 1);
	CHECK_RC(runner_start(e.run));	/* recovery dispatches it: started refused */
	int64_t end = jg_mono_ns() + 10LL * 1000000000;
	while (atomic_load(&failed_commits) < 1 && jg_mono_ns() < end)
		usleep(5 * 1000);
	CHECK(atomic_load(&failed_commits) >= 1);
	Later back = { &fail_commits, 0 };
	CHECK(pthread_create(&th, NULL, set_later, &back) == 0);
	runner_close(e.run, 1);		/* the retried started lands meanwhile */
	pthread_join(th, NULL);
	log_commit_fn = real_commit;
	int n = job_events(e.log, id, v, keep, 8);
	CHECK(n == 3 && v[1].type == JG_EV_STARTED && v[2].type == JG_EV_FAILED);
	CHECK(strcmp(v[2].error.p, "\"interrupted\"") == 0);
	CHECK(v[2].status == JG_ST_QUEUED && v[2].retry_at_ms > 0);
	log_close(e.log);
	config_free(e.cfg);
	keep_free(keep, 8);
}

/* Overwrite the record at seq with bytes that do not decode (the test's
 * own write txn: LMDB serializes it with the writer's). */
static void damage_record(Log *l, uint64_t seq)
{
	MDB_txn *txn;
	char bad[48];
	MDB_val k = { 8, &seq }, v = { sizeof bad, bad };

	memset(bad, 0xFF, sizeof bad);
	CHECK_RC(mdb_txn_begin(l->env, NULL, 0, &txn));
	CHECK_RC(mdb_put(txn, l->events, &k, &v, 0));
	CHECK_RC(mdb_txn_commit(txn));
}

/* A job whose payload can no longer be read fails for good with the
 * reason; it never runs on some other input. */
TEST(unreadable_payload_fails_the_attempt)
{
	Env e;
	LogReader *rd;
	LogEvent ev;
	EventView v;
	uint64_t a, b, c, last;
	char path[4200];
	struct stat sb;

	/* Job a holds the one run slot until the gate file exists, so b is
	 * dispatched only after its record was damaged. */
	char gate[4200], cfg[16384];
	snprintf(path, sizeof path, "%s/ran", t_dir());
	snprintf(gate, sizeof gate, "%s/gate", t_dir());
	snprintf(cfg, sizeof cfg, CFG_HEAD
		 "\"slow\":{\"command\":[\"/bin/sh\",\"-c\","
		 "\"while [ ! -e %s ]; do sleep 0.01; done; cat >> %s\"],"
		 "\"concurrency\":1,\"max_attempts\":3}}}", gate, path);
	env_open(&e, cfg, 1);
	a = enqueue(e.log, "slow", "1", 3);
	wait_status(e.log, a, JG_ST_RUNNING, 10);
	b = enqueue(e.log, "slow", "2", 3);
	c = enqueue(e.log, "echo", "3", 1);
	wait_status(e.log, c, JG_ST_SUCCEEDED, 10);	/* the runner has read b */
	damage_record(e.log, b);
	close(open(gate, O_WRONLY | O_CREAT, 0600));
	wait_status(e.log, a, JG_ST_SUCCEEDED, 10);
	last = wait_status(e.log, b, JG_ST_FAILED, 10);
	CHECK_RC(log_reader_open(e.log, &rd));
	CHECK_RC(log_reader_begin(rd));
	CHECK_RC(log_reader_get(rd, last, &ev));
	CHECK_RC(event_decode(&ev, &v));
	CHECK(v.type == JG_EV_FAILED && v.attempt == 1);
	CHECK(v.error.n > 20 && memcmp(v.error.p, "\"payload unreadable:", 20) == 0);
	CHECK(v.retry_at_ms == 0);		/* final: no retry on other input */
	log_reader_end(rd);
	log_reader_close(rd);
	CHECK(stat(path, &sb) == 0 && sb.st_size == 1);	/* only a's "1" ran */
	env_close(&e, 1);
}

/* A job whose job.enqueued is damaged and whose last event says it was
 * running when the previous process died: recovery skips the damaged
 * record, learns the job from its job.started, and ends it (interrupted,
 * then payload unreadable) instead of leaving it "running" for good. */
TEST(recovery_learns_a_job_whose_enqueued_is_damaged)
{
	Env e;
	EventView v[8];
	Buf keep[8] = {{0}};

	uint64_t id = died_running(&e);
	damage_record(e.log, id);
	CHECK_RC(runner_start(e.run));
	wait_status(e.log, id, JG_ST_FAILED, 10);
	int n = job_events_from(e.log, id, id + 1, v, keep, 8);	/* past the damaged one */
	/* started (the old process), interrupted, started, then the spawn
	 * reads the payload and cannot */
	CHECK(n == 4 && v[1].type == JG_EV_FAILED && v[3].type == JG_EV_FAILED);
	CHECK(strcmp(v[1].error.p, "\"interrupted\"") == 0 && v[1].retry_at_ms > 0);
	CHECK(strncmp(v[3].error.p, "\"payload unreadable:", 20) == 0 && v[3].status == JG_ST_FAILED);
	env_close(&e, 5);
	keep_free(keep, 8);
}

TEST(metrics_render)
{
	Env e;
	Buf b = {0};

	env_open(&e, CFG_HEAD "\"t\":{\"command\":[\"/bin/true\"]}}}", 1);
	uint64_t id = enqueue(e.log, "t", "null", 3);
	wait_status(e.log, id, JG_ST_SUCCEEDED, 10);
	runner_metrics(e.run, &b);
	buf_add(&b, "", 1);
	CHECK(strstr(b.p, "jobgate_jobs_running 0\n"));
	CHECK(strstr(b.p, "jobgate_runs_started_total{job=\"t\"} 1\n"));
	CHECK(strstr(b.p, "jobgate_job_duration_seconds_count{job=\"t\",status=\"succeeded\"} 1\n"));
	CHECK(strstr(b.p, "le=\"+Inf\"} 1\n"));
	buf_free(&b);
	env_close(&e, 5);
}

int main(void)
{
	RUN(proc_env_is_exactly_four_vars);
	RUN(child_closes_high_fds_without_close_range);
	RUN(proc_stdin_roundtrip_large);
	RUN(proc_stdout_capped_and_flagged);
	RUN(proc_stderr_tail_keeps_last_lines);
	RUN(stderr_tail_cut_starts_on_a_character);
	RUN(stderr_tail_at_a_line_start_keeps_that_line);
	RUN(stderr_nul_does_not_cut_the_error);
	RUN(proc_exec_failure_reports_errno);
	RUN(proc_enoent_hint_names_what_is_missing);
	RUN(proc_leader_reaped_elsewhere_finishes);
	RUN(stop_after_the_leader_exited_keeps_its_outcome);
	RUN(proc_signal_kills_whole_group);
	RUN(reap_group_leaves_the_leader);
	RUN(result_json_or_string);
	RUN(result_cut_at_utf8_boundary);
	RUN(backoff_exponential_capped_jittered);
	RUN(map_put_get_del);
	RUN(runs_cat_and_echo);
	RUN(failure_retries_with_backoff_then_fails);
	RUN(timeout_kills_and_fails);
	RUN(cancel_running_then_conflict_then_retry);
	RUN(cancel_during_a_failing_spawn);
	RUN(cancel_during_the_spawn_of_a_job_that_finishes);
	RUN(cancel_queued_at_once);
	RUN(recovery_interrupted_then_rerun);
	RUN(recovery_keeps_retried_max_attempts);
	RUN(recovery_after_retried_runs_the_named_attempt);
	RUN(cancel_of_a_job_beyond_the_tail);
	RUN(close_interrupts_and_records);
	RUN(unreadable_payload_fails_the_attempt);
	RUN(recovery_learns_a_job_whose_enqueued_is_damaged);
	RUN(metrics_render);
	RUN(refused_events_are_retried_until_durable);
	RUN(refused_started_not_overtaken);
	RUN(close_with_a_start_in_flight_keeps_the_last_attempt);
	return t_done();
}

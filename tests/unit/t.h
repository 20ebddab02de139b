/*
 * t.h -- a minimal unit test harness: each test runs in its own forked
 * process with its own temp dir (like beanstalkd's ct), so a crash or an
 * abort fails that test only.  Output: "PASS name" / "FAIL name" lines.
 *
 *   TEST(log_append_one) { CHECK(x == 1); }
 *   int main(void) { RUN(log_append_one); return t_done(); }
 */
#ifndef JG_T_H
#define JG_T_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#define TEST(name) static void name(void)
#define CHECK(c) do { if (!(c)) { \
	fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); \
	exit(1); } } while (0)
#define CHECK_RC(e) do { int rc_ = (e); if (rc_ != 0) { \
	fprintf(stderr, "%s:%d: %s returned %d\n", __FILE__, __LINE__, #e, rc_); \
	exit(1); } } while (0)
#define RUN(fn) t_run(#fn, fn)
#ifndef T_TIMEOUT_S
#define T_TIMEOUT_S 120
#endif

static int t_pass, t_fail;
static char t_tmp[256];

/* The current test's private temp dir (removed after the test). */
static inline const char *t_dir(void) { return t_tmp; }

static inline void t_run(const char *name, void (*fn)(void))
{
	snprintf(t_tmp, sizeof t_tmp, "/tmp/jgtest.XXXXXX");
	if (!mkdtemp(t_tmp)) { perror("mkdtemp"); exit(2); }
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		alarm(T_TIMEOUT_S);	/* a hung test fails instead of hanging make test */
		fn();
		fflush(NULL);
		_exit(0);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", t_tmp);
	if (system(cmd) != 0) { /* best effort */ }
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0) { t_pass++; printf("PASS %s\n", name); }
	else { t_fail++; printf("FAIL %s\n", name); }
	fflush(stdout);
}

static inline int t_done(void) { return t_fail ? 1 : 0; }

#endif

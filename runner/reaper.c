/*
 * reaper.c -- job process groups must not outlive the gateway, even when
 * it is killed with SIGKILL.
 *
 * PR_SET_PDEATHSIG (spawn.c) kills a job's direct child when the gateway
 * dies, but not what that child started (`sh -c 'work & work; wait'`):
 * those are reparented and would run on.  So at start-up, before any
 * thread exists, the gateway forks a small helper, the reaper.  The runner
 * tells it over a pipe about every group it starts ("+pgid") and every
 * group it is about to reap ("-pgid", sent while the leader is still an
 * unreaped zombie, so the pgid cannot have been reused).  The pipe's write
 * end lives only in the gateway (CLOEXEC, and job children close every fd
 * >= 3), so when the gateway dies for any reason the reaper reads EOF,
 * SIGKILLs each group it still knows, and exits.  It ignores the terminal's
 * signals, so a Ctrl-C reaches the gateway's graceful stop first.
 *
 * Messages are 8 bytes (under PIPE_BUF: atomic).  The "+" comes from the
 * job's child itself, between setpgid and exec, so a group is announced
 * before anything in it can fork (announcing after vfork returned left a
 * window in which a dying gateway's newest job escaped).  The "-" comes
 * from the runner thread.  The write end is non-blocking: a stopped
 * reaper never blocks the runner (its notes wait in a buffer), and if it
 * is gone (killed), writes fail with EPIPE, which is logged once and the
 * gateway runs on without it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "../common/jg.h"
#include "runner_int.h"

typedef struct ReaperMsg { int32_t op, pgid; } ReaperMsg;

#define PEND_MAX 65536

static int reaper_fd = -1;		/* write end (O_NONBLOCK); set before threads exist */
static pid_t reaper_pid;		/* to reap it if it dies before us; 0 once reaped
					 * {pend_mu to change after start; atomic} */
/* The runner thread and the spawners (spawnq.c) both send notes. */
static pthread_mutex_t pend_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int reaper_broken;	/* EPIPE seen {pend_mu to set} */
static ReaperMsg pend[PEND_MAX];	/* {pend_mu} notes the pipe had no room for */
static size_t pend_off;			/* {pend_mu} */
static atomic_size_t pend_n;		/* {pend_mu to change} */
/* Set while notes wait because the pipe was full, cleared once they are
 * all out; read by job children.  Not pend_n: that is also non-zero for
 * the moment a note that goes straight out is being written, and a child
 * that saw it then would leave its "+" to the parent, to be sent after its
 * exec: a window in which a gateway's death let the group escape. */
static atomic_int pend_stuck;		/* {pend_mu to change} */
static int pend_full_said, pend_wait_said;	/* {pend_mu} */

/* The reaper process: collect live groups until EOF, then kill them. */
static void reaper_main(int fd)
{
	pid_t *set = NULL;
	size_t n = 0, cap = 0, killed = 0;
	ReaperMsg m;
	ssize_t got;

	for (;;) {
		got = read(fd, &m, sizeof m);
		if (got < 0 && errno == EINTR)
			continue;
		if (got != (ssize_t)sizeof m)
			break;		/* EOF (or a torn read: the writer died) */
		if (m.op == '+') {
			size_t i;
			for (i = 0; i < n && set[i] != m.pgid; i++) {}
			if (i < n)
				continue;	/* said twice (fork builds): once is enough */
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 64;
				pid_t *ns = realloc(set, nc * sizeof *ns);
				if (!ns)
					continue;	/* then this group is not covered */
				set = ns;
				cap = nc;
			}
			set[n++] = m.pgid;
		} else {
			for (size_t i = 0; i < n; i++)
				if (set[i] == m.pgid) {
					set[i] = set[--n];
					break;
				}
		}
	}
	for (size_t i = 0; i < n; i++)
		if (kill(-set[i], SIGKILL) == 0)
			killed++;
	if (killed) {
		char num[24];
		snprintf(num, sizeof num, "%zu", killed);
		jg_log(JG_WARN, "gateway gone: killed the job process groups it left",
		       "#groups", num, NULL);
	}
	_exit(0);	/* no atexit handlers, no leak check of the parent's heap */
}

int runner_reaper_start(void)
{
	int p[2];
	pid_t pid;
	sigset_t all;

	if (reaper_fd >= 0)
		return 0;
	if (pipe2(p, O_CLOEXEC) < 0)
		return errno;
	if ((pid = fork()) < 0) {
		int rc = errno;
		close(p[0]);
		close(p[1]);
		return rc;
	}
	if (pid == 0) {
		/* Keep only stdio and the read end (as fd 3); above all not the
		 * write end, or it would never see EOF. */
		close(p[1]);
		if (p[0] != 3 && dup2(p[0], 3) < 0)
			_exit(1);
		if (syscall(SYS_close_range, 4u, ~0u, 0u) < 0) {	/* Linux < 5.9 */
			long max = sysconf(_SC_OPEN_MAX);
			for (long fd = 4; fd < (max > 0 ? max : 1024); fd++)
				close((int)fd);
		}
		prctl(PR_SET_NAME, "jobgate-reaper");
		signal(SIGINT, SIG_IGN);
		signal(SIGTERM, SIG_IGN);
		signal(SIGHUP, SIG_IGN);
		signal(SIGQUIT, SIG_IGN);
		signal(SIGPIPE, SIG_IGN);
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		if (chdir("/") < 0) { /* keeps the old cwd: harmless */ }
		reaper_main(3);
	}
	close(p[0]);
	reaper_pid = pid;
	reaper_fd = p[1];
	if (fcntl(reaper_fd, F_SETFL, O_NONBLOCK) < 0) { /* then writes may block: still correct */ }
	return 0;
}

/* The job's child, between vfork and exec, all signals blocked: one
 * non-blocking write, unless notes are stuck waiting (pend_stuck), which
 * must go first (a "-" for an old group with our pid, queued before that group
 * was reaped, so before our pid could exist).  1: the
 * parent queues it.  If the reaper is gone, the write raises SIGPIPE,
 * which stays pending while blocked and would kill the child the moment
 * it unblocks signals before exec: discard it. */
int runner_reaper_child_note(pid_t pgid)
{
	ReaperMsg m = { '+', (int32_t)pgid };
	struct sigaction ign;

	if (reaper_fd < 0 || reaper_broken)
		return 0;
	if (pend_stuck)
		return 1;
	if (write(reaper_fd, &m, sizeof m) == (ssize_t)sizeof m)
		return 0;
	if (errno == EPIPE) {
		/* Setting SIG_IGN discards a pending signal (POSIX); the
		 * child sets every disposition back to SIG_DFL before exec. */
		memset(&ign, 0, sizeof ign);
		ign.sa_handler = SIG_IGN;
		sigaction(SIGPIPE, &ign, NULL);
		return 0;	/* the parent's next note finds it gone */
	}
	return 1;		/* EAGAIN: the reaper is not reading */
}

/* {pend_mu}: the reaper is gone: reap it (no zombie for our lifetime),
 * forget its pid (the runner's sweep must not take a later process of that
 * number for it) and say so. */
static void reaper_gone(const char *why)
{
	pid_t pid = __atomic_load_n(&reaper_pid, __ATOMIC_RELAXED);

	reaper_broken = 1;
	if (pid <= 0)
		return;			/* reaped and said already */
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
	__atomic_store_n(&reaper_pid, 0, __ATOMIC_RELAXED);
	jg_log(JG_WARN, "runner: the reaper process is gone; job process groups "
	       "are no longer killed if the gateway dies", "error", why, NULL);
}

/* {pend_mu}: write the pending notes; 0 when all are out. */
static int reaper_flush(void)
{
	ssize_t w;

	while (pend_n > 0) {
		w = write(reaper_fd, &pend[pend_off], sizeof pend[0]);
		if (w == (ssize_t)sizeof pend[0]) {
			pend_off++;
			pend_n--;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			pend_stuck = 1;
			return 1;
		}
		/* EPIPE: its read end is closed, so it has exited or is
		 * exiting. */
		reaper_gone(w < 0 ? strerror(errno) : "short write");
		return 1;
	}
	pend_off = 0;
	pend_stuck = 0;
	return 0;
}

/* Runner thread (the sweep): z is an exited child.  If it is the reaper,
 * it is reaped now, not at the next note (which waits for a job to end):
 * its zombie would stop the sweep until then.  1 if it was. */
int runner_reaper_exited(pid_t z)
{
	int was = 0;

	if (z != __atomic_load_n(&reaper_pid, __ATOMIC_RELAXED))
		return 0;
	pthread_mutex_lock(&pend_mu);
	if (z == __atomic_load_n(&reaper_pid, __ATOMIC_RELAXED)) {
		reaper_gone("it exited");
		was = 1;
	}
	pthread_mutex_unlock(&pend_mu);
	return was;
}

/* Runner thread, each loop turn and at exit: notes still waiting (the
 * reaper was not reading) go out as soon as the pipe has room, so a "-"
 * is not held while its pgid could be reused.  1 while some wait. */
int runner_reaper_retry(void)
{
	int rc;

	if (reaper_fd < 0 || reaper_broken || pend_n == 0)
		return 0;
	pthread_mutex_lock(&pend_mu);
	rc = reaper_broken ? 0 : reaper_flush();
	pthread_mutex_unlock(&pend_mu);
	return rc;
}

/* Runner or spawner thread: tell the reaper that group pgid is about to
 * be reaped (!add), or started (add; spawn.c has the child do that itself).  The
 * pipe is non-blocking: a note that does not fit (the reaper is stopped)
 * waits in pend[] and goes out with the next one, so the runner never
 * blocks on the reaper. */
void runner_reaper_note(int add, pid_t pgid)
{
	ReaperMsg m = { add ? '+' : '-', (int32_t)pgid };

	if (reaper_fd < 0 || reaper_broken)
		return;
	pthread_mutex_lock(&pend_mu);
	if (reaper_broken)
		goto out;
	if (pend_off + pend_n == PEND_MAX) {
		memmove(pend, pend + pend_off, pend_n * sizeof pend[0]);
		pend_off = 0;
	}
	if (pend_n == PEND_MAX) {
		if (!pend_full_said++)
			jg_log(JG_WARN, "runner: the reaper process is not reading; "
			       "dropping its notes", NULL);
		goto out;
	}
	pend[pend_off + pend_n] = m;
	pend_n++;
	if (reaper_flush() && !reaper_broken && !pend_wait_said++)	/* gone: said above */
		jg_log(JG_WARN, "runner: the reaper process is not reading; job groups "
		       "started now are covered once it reads again", NULL);
out:
	pthread_mutex_unlock(&pend_mu);
}

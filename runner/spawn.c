/*
 * spawn.c -- one attempt's process: spawn, feed stdin, capture stdout and
 * the stderr tail, learn of the exit, kill the group.
 *
 * Why vfork+exec and not posix_spawn.  A job's processes must never
 * outlive the gateway, even after kill -9.  The child therefore sets
 * PR_SET_PDEATHSIG(SIGKILL) before exec, which posix_spawn has no
 * attribute for.  The child also calls setpgid(0,0) so that timeouts and
 * cancels can signal the whole group (a shell and what it started).
 * PDEATHSIG fires when the *thread* that forked exits, so only threads
 * that outlive every job spawn: the spawners of spawnq.c.  vfork (CLONE_VM)
 * copies no page tables, which matters at thousands of spawns a second.
 *
 * Between vfork and exec the child shares the parent's memory and runs
 * while other threads of the gateway may hold locks (malloc's included),
 * so it makes only async-signal-safe calls (raw syscalls, no malloc, no
 * stdio) and touches only its stack and what the parent prepared: envp,
 * fds, the parent pid.  All signals are blocked in the parent thread
 * around vfork so that no handler can run in the child on shared memory;
 * the child resets every disposition to SIG_DFL and unblocks everything
 * before exec (the gateway ignores SIGPIPE; a job should not).  Every fd
 * of ours is O_CLOEXEC (pipe2), and the child closes every fd >= 3 anyway
 * with close_range, since other modules' fds (LMDB, SQLite, sockets) may
 * lack the flag.  exec's errno comes back through a variable the child
 * writes in shared memory; the parent resumes only after exec or _exit.
 *
 * Under AddressSanitizer and ThreadSanitizer vfork is replaced by fork
 * (ASan's vfork support varies by version; TSan makes vfork a fork itself);
 * then the errno travels through a CLOEXEC pipe.
 *
 * Exits are learnt through a pidfd (pidfd_open) that polls readable when
 * the leader exits; the runner's poll loop never blocks in waitpid.  When
 * the leader has exited (a zombie, so its pid and thus the pgid cannot be
 * reused), the rest of the group is SIGKILLed, then the leader is reaped
 * and the pipes drained of what is already buffered.  Jobs that want a
 * daemon must not be run by jobgate.
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "../common/jg.h"
#include "../common/json.h"
#include "runner.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RUNNER_USE_FORK 1	/* TSan turns vfork into fork: shared memory is not shared */
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define RUNNER_USE_FORK 1
#endif
#endif

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

/* Child side, between vfork and exec: async-signal-safe calls only.  Puts
 * fd src at dst without CLOEXEC (dup2 clears it; when src == dst it must
 * be cleared by hand). */
static int child_dup(int src, int dst)
{
	if (src == dst)
		return fcntl(dst, F_SETFD, 0);
	return dup2(src, dst) < 0 ? -1 : 0;
}

int runner_close_range_off;

static struct rlimit child_nofile;	/* set before threads; rlim_cur 0: unset */

void runner_set_child_nofile(unsigned long long soft)
{
	struct rlimit rl;

	if (soft && getrlimit(RLIMIT_NOFILE, &rl) == 0 && soft < rl.rlim_cur) {
		child_nofile.rlim_cur = (rlim_t)soft;
		child_nofile.rlim_max = rl.rlim_max;
	}
}

/* Parent side, before the vfork: where the child's fallback close loop
 * (kernels before 5.9, without close_range) may stop.  Not the fd limit:
 * serve raises it to the hard limit, which can be 2^30 (a billion close()
 * calls per spawn).  One past the highest fd open now, plus room for a few
 * another thread opens meanwhile; 0 when close_range works. */
static int child_fd_end(void)
{
	static int have_cr = -1;	/* atomic; any thread may fill it in */
	struct dirent *de;
	int v = __atomic_load_n(&have_cr, __ATOMIC_RELAXED), max = -1;
	long om;
	DIR *d;

	if (v < 0) {
		v = syscall(SYS_close_range, ~0U, ~0U, 0U) == 0;
		__atomic_store_n(&have_cr, v, __ATOMIC_RELAXED);
	}
	if (v && !runner_close_range_off)
		return 0;
	if ((d = opendir("/proc/self/fd"))) {
		while ((de = readdir(d)))
			if (de->d_name[0] >= '0' && de->d_name[0] <= '9' && atoi(de->d_name) > max)
				max = atoi(de->d_name);
		closedir(d);
		if (max >= 0)
			return max + 1 + 256;
	}
	om = sysconf(_SC_OPEN_MAX);
	return om < 4096 ? 4096 : om > (1 << 20) ? 1 << 20 : (int)om;
}

/* Child side: close every fd >= lo except keep (-1: none); end bounds
 * the loop of kernels without close_range (child_fd_end). */
static void close_from(int lo, int keep, int end)
{
	int fd;

	if (runner_close_range_off) {
		/* tests: the loop below, as before Linux 5.9 */
	} else if (keep < lo) {
		if (syscall(SYS_close_range, (unsigned)lo, ~0U, 0U) == 0)
			return;
	} else if ((keep == lo || syscall(SYS_close_range, (unsigned)lo, (unsigned)keep - 1, 0U) == 0) &&
		   syscall(SYS_close_range, (unsigned)keep + 1, ~0U, 0U) == 0) {
		return;
	}
	for (fd = lo; fd < end; fd++)	/* kernels before 5.9 */
		if (fd != keep)
			close(fd);
}

/* Child side.  Never returns: execs or _exits(127) with the errno in *err. */
static void child_exec(const RunnerSpawn *s, char *const envp[], const int fds[3],
		       pid_t parent, volatile int *err, volatile int *note_later, int errfd,
		       int fd_end)
{
	struct sigaction sa;
	sigset_t none;
	int e, sig;

	if (setpgid(0, 0) < 0 || prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		goto fail;
	/* The parent may have died before PDEATHSIG was armed. */
	if (getppid() != parent) {
		errno = ESRCH;
		goto fail;
	}
	/* Tell the reaper about our group before anything in it can fork:
	 * the gateway may die from here on (reaper.c). */
	*note_later = runner_reaper_child_note(getpid());	/* (lost under fork) */
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_DFL;
	for (sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sigaction(sig, &sa, NULL);	/* EINVAL for glibc-reserved ones: fine */
	/* fds[] may sit on 0..2 themselves: move them above 2 first. */
	if (child_dup(fds[0], 0) < 0 || child_dup(fds[1], 1) < 0 ||
	    child_dup(fds[2], 2) < 0)
		goto fail;
	close_from(3, errfd, fd_end);
	if (child_nofile.rlim_cur)
		setrlimit(RLIMIT_NOFILE, &child_nofile);	/* per process, not shared by vfork */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execve(s->path, s->argv, envp);
fail:
	e = errno;
	*err = e;
	if (errfd >= 0 && write(errfd, &e, sizeof e) < 0) { /* parent sees EOF */ }
	_exit(127);
}

/* Move the three child-side fds above 2 so that dup2 onto 0..2 in the
 * child cannot clobber one of them (only when the gateway's 0..2 were
 * closed, which a daemon manager may do). */
static int lift_fd(int *fd)
{
	int nfd;

	if (*fd > 2)
		return 0;
	if ((nfd = fcntl(*fd, F_DUPFD_CLOEXEC, 3)) < 0)
		return errno;
	close(*fd);
	*fd = nfd;
	return 0;
}

/* Our end of a fresh pipe has no status flags but its access mode, which
 * F_SETFL ignores: one syscall, no F_GETFL. */
static int set_nonblock(int fd)
{
	return fcntl(fd, F_SETFL, O_NONBLOCK) < 0 ? errno : 0;
}

/* Write what the pipe takes now; keep a copy of the rest.  EPIPE (the
 * child does not read stdin) is not an error: the rest is dropped.  The
 * threads that call this block SIGPIPE, so EPIPE is all they get. */
static void write_stdin(RunnerProc *p, const char *src, size_t n)
{
	while (n > 0) {
		ssize_t w = write(p->fd_in, src, n);
		if (w > 0) {
			src += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			break;
		n = 0;		/* EPIPE or worse: the child gets no more */
	}
	if (n == 0) {
		close_fd(&p->fd_in);
		return;
	}
	if (!p->in_buf) {
		if (!(p->in_buf = malloc(n))) {
			close_fd(&p->fd_in);	/* the child sees a short stdin */
			return;
		}
		memcpy(p->in_buf, src, n);
		p->in_len = n;
		p->in_off = 0;
	} else {
		p->in_off = p->in_len - n;
	}
}

/* A spawner thread, after an exec of path failed with ENOENT: execve
 * says that also when the program is there but what starts it is not:
 * the interpreter on a script's #! line, or a binary's ELF loader (a musl
 * or 32-bit build).  Read here, on the path that was exec'd, off the
 * runner thread (a hung filesystem holds one spawner, not every job).
 * A static string (appended to the error), or NULL for a program that
 * is not there. */
static const char *enoent_hint(const char *path)
{
	static const char exists[] = " (the program exists: something it needs to start is missing)";
	struct stat st;
	char h[4];
	ssize_t n = -1;
	int fd;

	if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)) < 0)
		return access(path, F_OK) == 0 ? exists : NULL;	/* exec-only, say */
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
		n = read(fd, h, sizeof h);
	close(fd);
	if (n >= 2 && h[0] == '#' && h[1] == '!')
		return " (the program exists: is the interpreter on its #! line missing?)";
	if (n == 4 && memcmp(h, "\x7f" "ELF", 4) == 0)
		return " (the program exists: is its ELF loader missing?)";
	return exists;
}

/* A spawner thread (or the runner's, without spawners).  See runner.h. */
int runner_proc_spawn(RunnerProc *p, const RunnerSpawn *s)
{
	char env_path[] = "PATH=" RUNNER_PATH;
	char env_id[48], env_job[16 + JG_NAME_MAX + 1], env_att[40];
	char *envp[] = { env_path, env_id, env_job, env_att, NULL };
	int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 };
	int errp[2] = { -1, -1 };
	int fds[3], rc = 0, e = 0;
	volatile int child_err = 0, note_later = 0, fd_end;
	sigset_t all, old;
	pid_t pid, parent = getpid();

	memset(p, 0, sizeof *p);
	p->pid = -1;
	p->pidfd = p->fd_in = p->fd_out = p->fd_err = -1;
	p->out_cap = s->out_cap;
	/* A bare name not found in RUNNER_PATH: execve would look for it in
	 * the gateway's working directory, which PATH lookup never does. */
	if (!strchr(s->path, '/'))
		return ENOENT;
	snprintf(env_id, sizeof env_id, "JOBGATE_JOB_ID=%llu", (unsigned long long)s->job_id);
	snprintf(env_job, sizeof env_job, "JOBGATE_JOB=%s", s->job);
	snprintf(env_att, sizeof env_att, "JOBGATE_ATTEMPT=%u", s->attempt);

	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 ||
	    pipe2(err, O_CLOEXEC) < 0) {
		rc = errno;
		goto out;
	}
	if ((rc = lift_fd(&in[0])) || (rc = lift_fd(&out[1])) || (rc = lift_fd(&err[1])))
		goto out;
	fds[0] = in[0], fds[1] = out[1], fds[2] = err[1];
#ifdef RUNNER_USE_FORK
	if (pipe2(errp, O_CLOEXEC) < 0) {
		rc = errno;
		goto out;
	}
#endif
	fd_end = child_fd_end();
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
#ifdef RUNNER_USE_FORK
	pid = fork();
#else
	pid = vfork();
#endif
	if (pid == 0)
		child_exec(s, envp, fds, parent, &child_err, &note_later, errp[1], fd_end);
	e = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (pid < 0) {
		rc = e;
		goto out;
	}
#ifdef RUNNER_USE_FORK
	close_fd(&errp[1]);
	{
		int ce = 0;
		ssize_t n;
		do
			n = read(errp[0], &ce, sizeof ce);
		while (n < 0 && errno == EINTR);
		if (n == (ssize_t)sizeof ce)
			child_err = ce;
	}
#endif
	if (child_err) {
		rc = child_err;
		runner_reaper_note(0, pid);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
		if (rc == ENOENT)
			p->spawn_hint = enoent_hint(s->path);
		goto out;
	}
	p->pid = pid;
#ifdef RUNNER_USE_FORK
	note_later = 1;		/* the child's flag is its own copy: say it again */
#endif
	if (note_later)		/* the child did not tell the reaper itself */
		runner_reaper_note(1, pid);
	if ((p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0)) < 0) {
		rc = errno;
		kill(-pid, SIGKILL);
		runner_reaper_note(0, pid);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
		p->pid = -1;
		goto out;
	}
	p->fd_in = in[1], in[1] = -1;
	p->fd_out = out[0], out[0] = -1;
	p->fd_err = err[0], err[0] = -1;
	if ((rc = set_nonblock(p->fd_in)) || (rc = set_nonblock(p->fd_out)) ||
	    (rc = set_nonblock(p->fd_err))) {
		runner_proc_release(p);
		goto out;
	}
	write_stdin(p, s->in, s->in_len);
out:
	close_fd(&in[0]), close_fd(&in[1]);
	close_fd(&out[0]), close_fd(&out[1]);
	close_fd(&err[0]), close_fd(&err[1]);
	close_fd(&errp[0]), close_fd(&errp[1]);
	return rc;
}

/* Runner thread.  The pidfd comes first: runner_proc_step relies on it. */
int runner_proc_fds(const RunnerProc *p, struct pollfd *pf)
{
	int n = 0;

	if (p->pidfd >= 0)
		pf[n++] = (struct pollfd){ .fd = p->pidfd, .events = POLLIN };
	if (p->fd_in >= 0)
		pf[n++] = (struct pollfd){ .fd = p->fd_in, .events = POLLOUT };
	if (p->fd_out >= 0)
		pf[n++] = (struct pollfd){ .fd = p->fd_out, .events = POLLIN };
	if (p->fd_err >= 0)
		pf[n++] = (struct pollfd){ .fd = p->fd_err, .events = POLLIN };
	return n;
}

static int is_ws(char c)
{
	return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static void keep_out(RunnerProc *p, const char *b, size_t n)
{
	size_t room = p->out_cap > p->out.len ? p->out_cap - p->out.len : 0;

	if (n > room) {
		/* Whitespace past the cap (print's newline after a JSON result
		 * of exactly the cap) cuts nothing off a JSON result; whether it
		 * is one is decided at the end (runner_attempt_end). */
		for (size_t k = room; k < n && !p->out_truncated; k++)
			if (!is_ws(b[k]))
				p->out_truncated = 1;
		if (!p->out_truncated && room < n)
			p->out_ws_cut = 1;
		n = room;
	}
	if (n > 0)
		buf_add(&p->out, b, n);
}

/* Keeps the tail and the byte before it, which tells whether the tail
 * begins a line (runner_error_text). */
static void keep_err(RunnerProc *p, const char *b, size_t n)
{
	const size_t keep = RUNNER_ERR_TAIL + 1;

	if (n >= keep) {
		if (n > keep || p->err_len > 0)
			p->err_cut = 1;
		b += n - keep;
		n = keep;
		p->err_len = 0;
	}
	if (p->err_len + n > sizeof p->err) {
		size_t drop = p->err_len + n - keep;
		memmove(p->err, p->err + drop, p->err_len - drop);
		p->err_len -= drop;
		p->err_cut = 1;
	}
	memcpy(p->err + p->err_len, b, n);
	p->err_len += n;
}

/* Read what fd has now (bounded, for fairness between processes); closes
 * it at EOF or error.  all: read until EAGAIN (the leader is gone). */
static void drain(RunnerProc *p, int *fd, int is_out, int all)
{
	char b[16384];
	int i;

	for (i = 0; *fd >= 0 && (all || i < 8); i++) {
		ssize_t n = read(*fd, b, sizeof b);
		if (n > 0) {
			if (is_out)
				keep_out(p, b, (size_t)n);
			else
				keep_err(p, b, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		close_fd(fd);	/* EOF or error */
	}
}

/* Runner thread.  See runner.h. */
int runner_proc_step(RunnerProc *p, const struct pollfd *pf, int n)
{
	int i, exited = 0;

	for (i = 0; i < n; i++) {
		if (!pf[i].revents)
			continue;
		if (pf[i].fd == p->pidfd)
			exited = 1;
		else if (pf[i].fd == p->fd_in)
			write_stdin(p, p->in_buf + p->in_off, p->in_len - p->in_off);
		else if (pf[i].fd == p->fd_out)
			drain(p, &p->fd_out, 1, 0);
		else if (pf[i].fd == p->fd_err)
			drain(p, &p->fd_err, 0, 0);
	}
	if (!exited)
		return 0;
	/* The leader is a zombie: its pid still names the group. */
	kill(-p->pid, SIGKILL);
	runner_reaper_note(0, p->pid);
	pid_t w = waitpid(p->pid, &p->status, WNOHANG);
	if (w != p->pid) {
		if (w == 0 || errno != ECHILD)
			return 0;	/* spurious: not reaped yet */
		/* Reaped by someone else (a leader that moved into another
		 * job's group was swept with it): finished, status unknown
		 * (neither an exit nor a signal: the error says "failed"). */
		p->status = W_STOPCODE(0);
	}
	p->reaped = 1;
	close_fd(&p->pidfd);
	close_fd(&p->fd_in);
	drain(p, &p->fd_out, 1, 1);
	drain(p, &p->fd_err, 0, 1);
	close_fd(&p->fd_out);
	close_fd(&p->fd_err);
	return 1;
}

/* Runner thread.  Only before the reap: afterwards the pgid could name
 * someone else's group. */
void runner_proc_signal(RunnerProc *p, int sig)
{
	if (p->pid > 0 && !p->reaped)
		kill(-p->pid, sig);
}

/* Runner thread.  See runner.h.  A process stopped by SIGSTOP or a
 * terminal signal keeps a SIGTERM pending until it is continued: without
 * SIGCONT it waited out the whole grace period for its SIGKILL. */
void runner_proc_terminate(RunnerProc *p)
{
	runner_proc_signal(p, SIGTERM);
	runner_proc_signal(p, SIGCONT);
}

/* Runner thread.  See runner.h.  A pidfd polls readable once its process
 * exited; without one, waitid can look without reaping. */
int runner_proc_exited(const RunnerProc *p)
{
	struct pollfd pf;
	siginfo_t si;

	if (p->reaped || p->pid <= 0)
		return p->reaped;
	if (p->pidfd >= 0) {
		pf.fd = p->pidfd;
		pf.events = POLLIN;
		pf.revents = 0;
		return poll(&pf, 1, 0) == 1;
	}
	memset(&si, 0, sizeof si);
	return waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid != 0;
}

/* Runner thread (needs PR_SET_CHILD_SUBREAPER to see orphans).  See
 * runner.h.  Never reaps a process whose pid is pgid: the old leader was
 * reaped before we were called, and a pid cannot be reused while a group
 * of that number has members, so such a process leads a new job's group
 * (a spawner may have started it; its exit belongs to its own pidfd), and
 * the old group is gone. */
static int reap_members(pid_t pgid)
{
	siginfo_t si;

	for (;;) {
		memset(&si, 0, sizeof si);
		if (waitid(P_PGID, (id_t)pgid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 ||
		    si.si_pid == 0)
			return 0;
		if (si.si_pid == pgid)
			return 1;
		while (waitpid(si.si_pid, NULL, 0) < 0 && errno == EINTR) {}
	}
}

int runner_proc_reap_group(pid_t pgid)
{
	if (reap_members(pgid))
		return 1;
	return kill(-pgid, 0) < 0 && errno == ESRCH;
}

/* Runner thread.  See runner.h.  A zombie member with pid == pgid is the
 * leader (a job's leader leads its own group): reap_members stops there. */
void runner_proc_reap_members(pid_t pgid)
{
	(void)reap_members(pgid);
}

/* Runner thread.  See runner.h.  One walk of our children, without
 * reaping (the kernel lists the oldest first). */
pid_t runner_child_exited(void)
{
	siginfo_t si;

	memset(&si, 0, sizeof si);
	if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
		return 0;
	return si.si_pid;
}

/* Runner thread.  See runner.h. */
void runner_proc_release(RunnerProc *p)
{
	if (p->pid > 0 && !p->reaped) {
		kill(-p->pid, SIGKILL);
		runner_reaper_note(0, p->pid);
		while (waitpid(p->pid, &p->status, 0) < 0 && errno == EINTR) {}
		p->reaped = 1;
	}
	close_fd(&p->pidfd);
	close_fd(&p->fd_in);
	close_fd(&p->fd_out);
	close_fd(&p->fd_err);
	free(p->in_buf);
	p->in_buf = NULL;
	buf_free(&p->out);
}

/* Any thread.  See runner.h. */
void runner_resolve(const char *argv0, char *out, size_t cap)
{
	const char *dir = RUNNER_PATH, *colon;
	char cand[4096];

	if (!strchr(argv0, '/')) {
		for (; *dir; dir = *colon ? colon + 1 : colon) {
			colon = strchr(dir, ':');
			if (!colon)
				colon = dir + strlen(dir);
			snprintf(cand, sizeof cand, "%.*s/%s", (int)(colon - dir), dir, argv0);
			if (access(cand, X_OK) == 0) {
				snprintf(out, cap, "%s", cand);
				return;
			}
		}
	}
	snprintf(out, cap, "%s", argv0);
}

/* Length of p[0..n) without a trailing UTF-8 sequence that the cut at n
 * left incomplete (a lead byte missing some of its continuation bytes).
 * Only the last 3 bytes can belong to such a sequence; anything else that
 * is invalid is left for buf_json_str to replace. */
static size_t utf8_cut(const unsigned char *p, size_t n)
{
	size_t i, k;

	for (k = 1; k <= 3 && k <= n; k++) {
		unsigned char c = p[n - k];
		size_t need;

		if ((c & 0xC0) == 0x80)
			continue;		/* continuation: look further back */
		need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 :
		       (c & 0xF8) == 0xF0 ? 4 : 1;
		if (need > k) {
			for (i = n - k + 1; i < n && (p[i] & 0xC0) == 0x80; i++) {}
			if (i == n)
				return n - k;	/* a proper prefix of a sequence */
		}
		return n;
	}
	return n;
}

/* Any thread.  See runner.h. */
int runner_result_json(const char *p, size_t n, int truncated, Buf *out)
{
	size_t a = 0, b = n;

	/* A cut may split a character: drop its first bytes rather than
	 * store them as U+FFFD. */
	if (truncated)
		n = b = utf8_cut((const unsigned char *)p, n);

	while (a < b && is_ws(p[a]))
		a++;
	while (b > a && is_ws(p[b - 1]))
		b--;
	if (!truncated && b > a && json_valid(p + a, b - a) == 0) {
		buf_add(out, p + a, b - a);
		return 1;
	}
	buf_json_str(out, p, n);
	return 0;
}

/* Any thread.  See runner.h. */
void runner_error_text(const RunnerProc *p, Buf *out)
{
	const char *s = p->err, *e = p->err + p->err_len, *nl;
	int cut = p->err_cut;

	if (p->err_len > RUNNER_ERR_TAIL) {
		s = e - RUNNER_ERR_TAIL;
		cut = s[-1] != '\n';	/* else it begins a whole line */
	}
	while (e > s && is_ws(e[-1]))
		e--;
	/* A cut tail starts mid-line: start at the next whole line if any. */
	if (cut && (nl = memchr(s, '\n', (size_t)(e - s))) != NULL)
		s = nl + 1;
	else if (cut)		/* no line to start at: at least a whole character */
		while (s < e && ((unsigned char)*s & 0xC0) == 0x80)
			s++;
	while (s < e && is_ws(*s))
		s++;
	if (s < e) {
		/* The text travels as a C string: a NUL byte would end it there,
		 * so it shows as U+FFFD, as an invalid byte does in JSON. */
		for (const char *z; (z = memchr(s, 0, (size_t)(e - s))) != NULL; s = z + 1) {
			buf_add(out, s, (size_t)(z - s));
			buf_puts(out, "\xEF\xBF\xBD");
		}
		buf_add(out, s, (size_t)(e - s));
		return;
	}
	if (WIFEXITED(p->status))
		buf_printf(out, "exit status %d", WEXITSTATUS(p->status));
	else if (WIFSIGNALED(p->status))
		buf_printf(out, "killed by signal %d", WTERMSIG(p->status));
	else
		buf_puts(out, "failed");
}

/* Any thread.  See runner.h. */
int64_t runner_backoff_ms(int backoff_s, uint32_t attempt, uint64_t *rng)
{
	int64_t ms = (int64_t)(backoff_s > 0 ? backoff_s : 0) * 1000;
	/* The cap bounds the doubling, never the configured first delay. */
	int64_t cap = ms > (int64_t)RUNNER_BACKOFF_CAP_S * 1000 ? ms
						: (int64_t)RUNNER_BACKOFF_CAP_S * 1000;
	uint64_t x = *rng ? *rng : 0x9e3779b97f4a7c15ull;
	uint32_t i;

	for (i = 1; i < attempt && ms < cap; i++)
		ms *= 2;
	if (ms > cap)
		ms = cap;
	x ^= x << 13, x ^= x >> 7, x ^= x << 17;
	*rng = x;
	/* jitter in [-10%, +10%] in steps of 0.01% */
	return ms + ms * ((int64_t)(x % 2001) - 1000) / 10000;
}

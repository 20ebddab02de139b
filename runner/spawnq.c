/*
 * spawnq.c -- the spawn queue: RUNNER_SPAWNERS long-lived threads
 * ("jg-spawn") start attempts' processes for the runner thread.
 *
 * Why not on the runner thread.  vfork suspends the calling thread until
 * the child has left the shared address space in execve.  On a loaded
 * 2-core machine the new child first waits for a CPU: the runner thread
 * measured 420-730 us blocked per spawn, so one thread capped spawns near
 * 1,450/s while exits, pipes and events waited behind it.  A spawner
 * blocks instead, and the runner goes on; with two, a child that waits
 * for a CPU no longer stalls the next spawn.
 *
 * Handoff.  The runner thread fills an RProc's spawn request with its own
 * copies of the executable path and the payload (a spawner must not read
 * the runner's log snapshot or r->specs, which the runner rewrites) and
 * pushes it on the spawn queue {sq_mu}.  A spawner takes it, calls
 * runner_proc_spawn, which fills rp->p and rp->sp_rc, and pushes it on the
 * runner's spawned list {r->mu}, then wakes the runner.  In between the
 * runner touches only rp->why and rp->stop_grace_ns (a cancel or stop that
 * must wait for the pid), never rp->p.
 *
 * Lifetime.  PR_SET_PDEATHSIG fires when the thread that forked the child
 * exits, not the process, so spawners live until runner_close, after the
 * runner thread has reaped its last process.  If no spawner can be
 * started, the runner spawns inline as before.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "runner_int.h"

int (*runner_spawn_fn)(RunnerProc *p, const RunnerSpawn *s) = runner_proc_spawn;

/* Append rp to a FIFO of RProcs linked by snext (the caller holds its lock). */
static void rproc_append(RProc **head, RProc **tail, RProc *rp)
{
	rp->snext = NULL;
	if (*tail)
		(*tail)->snext = rp;
	else
		*head = rp;
	*tail = rp;
}

static void *spawner_main(void *arg)
{
	Runner *r = arg;
	sigset_t all;
	RProc *rp;

	pthread_setname_np(pthread_self(), "jg-spawn");
	/* No handler may run here, and a write to a child's closed stdin
	 * must give EPIPE, not kill us. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	for (;;) {
		pthread_mutex_lock(&r->sq_mu);
		while (!r->sq_head && !r->sq_stop)
			pthread_cond_wait(&r->sq_cv, &r->sq_mu);
		if (!(rp = r->sq_head)) {
			pthread_mutex_unlock(&r->sq_mu);
			break;
		}
		if (!(r->sq_head = rp->snext))
			r->sq_tail = NULL;
		pthread_mutex_unlock(&r->sq_mu);

		rp->sp_rc = runner_spawn_fn(&rp->p, &rp->sp);

		pthread_mutex_lock(&r->mu);
		rproc_append(&r->spawned_head, &r->spawned_tail, rp);
		pthread_mutex_unlock(&r->mu);
		runner_wake(r);
	}
	return NULL;
}

/* Caller's thread (runner_start). */
void runner_spawners_start(Runner *r)
{
	int rc;

	while (r->nspawners < RUNNER_SPAWNERS) {
		if ((rc = pthread_create(&r->spawners[r->nspawners], NULL, spawner_main, r)) != 0) {
			jg_log(JG_WARN, "runner: cannot start a spawner thread", "error",
			       strerror(rc), NULL);
			break;
		}
		r->nspawners++;
	}
}

/* Caller's thread (runner_close), once the runner thread has ended: no
 * request is queued or in a spawner's hands any more. */
void runner_spawners_stop(Runner *r)
{
	int i;

	pthread_mutex_lock(&r->sq_mu);
	r->sq_stop = 1;
	pthread_cond_broadcast(&r->sq_cv);
	pthread_mutex_unlock(&r->sq_mu);
	for (i = 0; i < r->nspawners; i++)
		pthread_join(r->spawners[i], NULL);
	r->nspawners = 0;
}

/* Runner thread: hand rp (request filled) to a spawner; without any,
 * spawn here.  Either way rp comes back through runner_attempt_spawned. */
void runner_spawn_push(Runner *r, RProc *rp)
{
	rp->spawning = 1;
	r->nspawning++;
	if (r->nspawners == 0) {
		rp->sp_rc = runner_spawn_fn(&rp->p, &rp->sp);
		runner_attempt_spawned(r, rp);
		return;
	}
	pthread_mutex_lock(&r->sq_mu);
	rproc_append(&r->sq_head, &r->sq_tail, rp);
	pthread_cond_signal(&r->sq_cv);
	pthread_mutex_unlock(&r->sq_mu);
}

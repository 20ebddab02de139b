/*
 * loop.c -- the api thread's event loop: libev (epoll) under lws.
 *
 * Why.  lws 4.1's own loop calls poll() over every connection on every
 * wake-up; with 64 keep-alive clients that scan was a third of the api
 * thread's CPU.  libev's epoll backend costs per ready socket.  The loop
 * is ours (a "foreign" loop to lws), so lws installs no SIGINT watcher:
 * signals stay with the signal thread (cli/cmd_serve.c).
 *
 * A timer gap in lws 4.1's libev glue.  lws keeps its timers (its own
 * timeouts, our lws_sul_schedule callbacks) in a sorted list and arms one
 * libev timer for the earliest -- but only when that timer is not already
 * running, so a timer added *earlier* than the armed one waits for the
 * later one (a 1 s /wait timeout behind a 10 s connection timeout).  lws
 * services due timers whenever it handles any fd, so we give it one:
 * api_sul_schedule() also records the deadline in a min-heap and keeps our
 * own libev timer ("kick") armed for the earliest; its callback is
 * lws_cancel_service() (a write to lws's wake pipe), then it re-arms for
 * the next deadline.  lws's internal timeouts (idle connections, slow
 * bodies) are in whole seconds; a 1 s "tick" does the same for them.
 *
 * A second gap: lws runs its due timers (all of them: its own timeouts
 * and our lws_sul_schedule callbacks) from a libev idle watcher, and libev
 * runs idle watchers only in turns with no other event pending.  A
 * pipelined request parked behind an answer (a /wait after a GET on one
 * connection) leaves that connection's socket polled for writing, which
 * is ready every turn: the idle watcher never ran, and every timer of the
 * process waited for that /wait's job to end -- its own timeout, every
 * other client's /wait timeout, stream wake-ups (helper 46).  So a check
 * watcher (run every turn, whatever else is pending) also runs lws's due
 * timers, through its exported __lws_sul_service_ripe(): the lists start
 * at the owner a probe lws_sul_schedule() is put on right after the
 * context is made (index 0 of the LWS_COUNT_PT_SUL_OWNERS lists,
 * lws-timeout-timer.h).
 *
 * Also here: a one-shot "readable" watcher on a socket lws itself is not
 * reading (an SSE stream: lws 4.1 leaves its input alone while the
 * response is open, so a client's close would go unnoticed).
 */
#include <errno.h>
#include <ev.h>
#include <stdlib.h>
#include <string.h>

#include "api_int.h"

struct ApiLoop {
	struct ev_loop *ev;
	ev_timer        kick;		/* the earliest of our lws timers */
	ev_timer        tick;		/* 1 s, for lws's own timeouts */
	ev_check        check;		/* every turn: lws's due timers */
	lws_dll2_owner_t *sul_own;	/* lws's first timer list (see above) */
	Api            *a;
	double         *due;		/* min-heap of our timers' deadlines */
	size_t          ndue, capdue;
	unsigned        empty_turns;	/* turns in a row that called no callback */
};

struct ApiFdWatch {
	ev_io   io;
	Api    *a;
	void  (*cb)(void *ctx);
	void   *ctx;
};

/* Everything here runs on the api thread, except api_loop_open() (main
 * thread, before the api thread starts) and api_loop_close() (main thread,
 * after it returned). */

/* The deadline heap holds times only: a timer cancelled with
 * lws_sul_cancel() stays in it and costs one spurious wake-up. */
static void due_push(ApiLoop *l, double t)
{
	size_t i;

	if (l->ndue == l->capdue) {
		size_t nc = l->capdue ? l->capdue * 2 : 64;
		double *nd = realloc(l->due, nc * sizeof *nd);
		if (!nd)
			return;		/* the 1 s tick still catches it */
		l->due = nd;
		l->capdue = nc;
	}
	for (i = l->ndue++; i > 0 && l->due[(i - 1) / 2] > t; i = (i - 1) / 2)
		l->due[i] = l->due[(i - 1) / 2];
	l->due[i] = t;
}

static void due_pop(ApiLoop *l)
{
	double t = l->due[--l->ndue];
	size_t i = 0, c;

	if (!l->ndue)
		return;
	while ((c = 2 * i + 1) < l->ndue) {
		if (c + 1 < l->ndue && l->due[c + 1] < l->due[c])
			c++;
		if (l->due[c] >= t)
			break;
		l->due[i] = l->due[c];
		i = c;
	}
	l->due[i] = t;
}

/* Arm kick for the earliest deadline still ahead (none: stopped). */
static void kick_rearm(ApiLoop *l)
{
	double now = ev_now(l->ev);

	while (l->ndue && l->due[0] <= now)
		due_pop(l);
	ev_timer_stop(l->ev, &l->kick);
	if (!l->ndue)
		return;
	ev_timer_set(&l->kick, l->due[0] - now, 0);
	ev_timer_start(l->ev, &l->kick);
}

static void api_loop_poke(struct ev_loop *ev, ev_timer *w, int revents)
{
	ApiLoop *l = w->data;

	(void)ev, (void)revents;
	if (l->a->ctx)
		lws_cancel_service(l->a->ctx);
	if (w == &l->kick)
		kick_rearm(l);
}

static void api_loop_noop(lws_sorted_usec_list_t *sul)
{
	(void)sul;
}

/* Right after the context is made: learn where lws keeps its timers
 * (lws_sul_schedule puts one on the first of its lists), so the check
 * below serves lws's own timeouts from the start. */
void api_loop_learn_timers(Api *a)
{
	lws_sorted_usec_list_t probe;

	memset(&probe, 0, sizeof probe);
	lws_sul_schedule(a->ctx, 0, &probe, api_loop_noop, LWS_US_PER_SEC);
	a->evl->sul_own = probe.list.owner;
	lws_sul_cancel(&probe);
}

static void api_loop_check(struct ev_loop *ev, ev_check *w, int revents)
{
	ApiLoop *l = w->data;

	(void)ev, (void)revents;
	if (l->sul_own && l->a->ctx)
		__lws_sul_service_ripe(l->sul_own, LWS_COUNT_PT_SUL_OWNERS, lws_now_usecs());
}

int api_loop_open(Api *a)
{
	ApiLoop *l = calloc(1, sizeof *l);

	if (!l || !(l->ev = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV | EVFLAG_NOSIGMASK))) {
		free(l);
		return ENOMEM;
	}
	l->a = a;
	ev_timer_init(&l->kick, api_loop_poke, 0, 0);
	ev_timer_init(&l->tick, api_loop_poke, 1.0, 1.0);
	ev_check_init(&l->check, api_loop_check);
	l->kick.data = l->tick.data = l->check.data = l;
	ev_timer_start(l->ev, &l->tick);
	ev_check_start(l->ev, &l->check);
	a->evl = l;
	return 0;
}

/* For lws_context_creation_info.foreign_loops. */
void *api_loop_ev(Api *a)
{
	return a->evl->ev;
}

/* Api thread: one turn of the loop; block until something happens, or
 * not at all.
 *
 * Empty turns.  lws 4.1 asks for an immediate turn (an idle watcher in its
 * libev glue) while a connection has buffered rx it cannot use yet -- e.g.
 * pipelined requests behind an answer stuck in a socket whose client does
 * not read -- and such a turn calls none of our callbacks.  Left alone,
 * that is a busy loop for as long as the client holds on.  After
 * API_EMPTY_TURNS turns in a row without a callback, each further empty
 * turn waits API_EMPTY_SLEEP_S first: the loop then costs a few
 * thousand cheap turns a second instead of a core, and the first callback
 * (any request, any timer poke) ends the slow-down. */
#define API_EMPTY_TURNS  64
#define API_EMPTY_SLEEP_S 0.001

void api_loop_once(Api *a, int nowait)
{
	uint64_t before = a->ncb;

	ev_run(a->evl->ev, nowait ? EVRUN_NOWAIT : EVRUN_ONCE);
	if (nowait)
		return;
	if (a->ncb != before) {
		a->evl->empty_turns = 0;
		return;
	}
	if (++a->evl->empty_turns >= API_EMPTY_TURNS)
		ev_sleep(API_EMPTY_SLEEP_S);
}

/* After lws_context_destroy(). */
void api_loop_close(Api *a)
{
	if (!a->evl)
		return;
	ev_timer_stop(a->evl->ev, &a->evl->kick);
	ev_timer_stop(a->evl->ev, &a->evl->tick);
	ev_check_stop(a->evl->ev, &a->evl->check);
	ev_loop_destroy(a->evl->ev);
	free(a->evl->due);
	free(a->evl);
	a->evl = NULL;
}

/* Api thread: lws_sul_schedule, and make sure the loop wakes for it. */
void api_sul_schedule(struct lws_context *ctx, lws_sorted_usec_list_t *sul,
		      sul_cb_t cb, lws_usec_t us)
{
	Api *a = lws_context_user(ctx);
	ApiLoop *l = a->evl;
	double at;

	lws_sul_schedule(ctx, 0, sul, cb, us);
	ev_now_update(l->ev);
	at = ev_now(l->ev) + (double)us / 1e6;
	due_push(l, at);
	if (l->ndue && (l->due[0] == at || !ev_is_active(&l->kick)))
		kick_rearm(l);
}

/* Api thread (all below). */
static void api_fd_readable(struct ev_loop *ev, ev_io *w, int revents)
{
	ApiFdWatch *fw = (ApiFdWatch *)w;

	(void)revents;
	ev_io_stop(ev, w);	/* one shot */
	fw->cb(fw->ctx);
}

ApiFdWatch *api_loop_watch_read(Api *a, int fd, void (*cb)(void *ctx), void *ctx)
{
	ApiFdWatch *fw = calloc(1, sizeof *fw);

	if (!fw)
		return NULL;
	fw->a = a;
	fw->cb = cb;
	fw->ctx = ctx;
	ev_io_init(&fw->io, api_fd_readable, fd, EV_READ);
	ev_io_start(a->evl->ev, &fw->io);
	return fw;
}

void api_loop_rearm(ApiFdWatch *fw)
{
	if (fw && fw->a->evl)
		ev_io_start(fw->a->evl->ev, &fw->io);
}

void api_loop_unwatch(ApiFdWatch *fw)
{
	if (!fw)
		return;
	if (fw->a->evl)		/* else the loop is gone already */
		ev_io_stop(fw->a->evl->ev, &fw->io);
	free(fw);
}

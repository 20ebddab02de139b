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
 * api_sul_schedule() also arms our own libev timer ("kick") for the new
 * deadline, whose callback is lws_cancel_service() (a write to lws's wake
 * pipe).  lws's internal timeouts (idle connections, slow bodies) are in
 * whole seconds; a 1 s "tick" does the same for them.
 */
#include <errno.h>
#include <ev.h>
#include <stdlib.h>

#include "api_int.h"

struct ApiLoop {
	struct ev_loop *ev;
	ev_timer        kick;		/* our earliest lws timer */
	ev_timer        tick;		/* 1 s, for lws's own timeouts */
	Api            *a;
};

static void api_loop_poke(struct ev_loop *ev, ev_timer *w, int revents)
{
	ApiLoop *l = w->data;

	(void)ev, (void)revents;
	if (l->a->ctx)
		lws_cancel_service(l->a->ctx);
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
	l->kick.data = l->tick.data = l;
	ev_timer_start(l->ev, &l->tick);
	a->evl = l;
	return 0;
}

/* For lws_context_creation_info.foreign_loops. */
void *api_loop_ev(Api *a)
{
	return a->evl->ev;
}

/* Api thread: one turn of the loop; block until something happens, or
 * not at all. */
void api_loop_once(Api *a, int nowait)
{
	ev_run(a->evl->ev, nowait ? EVRUN_NOWAIT : EVRUN_ONCE);
}

/* After lws_context_destroy(). */
void api_loop_close(Api *a)
{
	if (!a->evl)
		return;
	ev_timer_stop(a->evl->ev, &a->evl->kick);
	ev_timer_stop(a->evl->ev, &a->evl->tick);
	ev_loop_destroy(a->evl->ev);
	free(a->evl);
	a->evl = NULL;
}

/* Api thread: lws_sul_schedule, and make sure the loop wakes for it. */
void api_sul_schedule(struct lws_context *ctx, lws_sorted_usec_list_t *sul,
		      sul_cb_t cb, lws_usec_t us)
{
	Api *a = lws_context_user(ctx);
	ApiLoop *l = a->evl;
	ev_tstamp at;

	lws_sul_schedule(ctx, 0, sul, cb, us);
	ev_now_update(l->ev);
	at = ev_now(l->ev) + (ev_tstamp)us / 1e6;
	if (ev_is_active(&l->kick) &&
	    ev_now(l->ev) + ev_timer_remaining(l->ev, &l->kick) <= at)
		return;
	ev_timer_stop(l->ev, &l->kick);
	ev_timer_set(&l->kick, (ev_tstamp)us / 1e6, 0);
	ev_timer_start(l->ev, &l->kick);
}

/*
 * server.c -- the api's life (open, run, stop, close), the one protocol
 * callback, the request pool and the queues that connect the api thread to
 * the log writer and the runner.  listen.c creates the lws context (after
 * probing the listen address) and routes lws's log lines into jg_log.
 *
 * Threads.  Everything here runs on the api thread (the lws service loop
 * in api_run) except api_cq_push(), api_log_watch() and api_stop(), which
 * other threads call.  They only touch the completion queue (cq_mu), the
 * atomic head and the stop flag, then lws_cancel_service(): the one lws
 * call another thread may make, and only under cq_mu while `closed` is
 * clear (api_close sets it under cq_mu before destroying the context).
 * The api thread drains in LWS_CALLBACK_EVENT_WAIT_CANCELLED.
 *
 * Shutdown.  api_close() unregisters the log watcher (log_unwatch returns
 * once it cannot run), destroys the context (sessions close: requests
 * with the log or the runner become orphans), then collects those orphans
 * itself as their done() pushes them (cq_cv), for up to API_DRAIN_S.
 * Only if one is still owed after that is the Api leaked instead of
 * freed, so a late done() never touches freed memory.  The projector
 * watcher (read-your-writes waits) is removed the same way, before the
 * context goes (proj_unwatch returns once it cannot run).
 *
 * A request's life.  LWS_CALLBACK_HTTP takes an ApiReq from the pool
 * (routes.c matches, authenticates and sets limits), the body arrives in
 * HTTP_BODY (bounded: Content-Length checked up front, chunked bodies
 * decoded and counted as they come), and at its end the route's run()
 * either answers at once or hands the request to another thread: its
 * embedded LogEntry to log_submit() or RunnerReq to runner_submit().  That
 * thread's done() pushes the request on the completion queue; the drain
 * builds the answer (one LMDB snapshot for the whole batch) into r->out
 * and asks for writable; HTTP_WRITEABLE writes it and ends the
 * transaction, and the request goes back to the pool.
 *
 * Closed connections.  A connection may close while its request belongs to
 * the log or the runner; we cannot take it back, so the request is marked
 * orphan (wsi = NULL) and freed when its completion arrives.  A parked
 * /wait request is ours, so it is unhooked and freed at once.
 *
 * Head moves.  The log watcher stores the new head and wakes us; the
 * drain hands it to the streams and scans the new events' binary headers
 * (job_id, status: no JSON) for the final event of any parked /wait job.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "api_int.h"
#include "../common/jg.h"
#include "../log/event.h"

#define API_DRAIN_S 5		/* api_run: wait this long for owed answers */

/* ---- pool ---- */

/* Api thread.  A request from the pool, or NULL at API_REQ_MAX. */
ApiReq *api_req_get(Api *a)
{
	ApiReq *r = a->free;

	if (r) {
		a->free = r->next;
	} else {
		if (a->nreq >= API_REQ_MAX || !(r = calloc(1, sizeof *r)))
			return NULL;
		a->nreq++;
	}
	r->a = a;
	r->next = r->qnext = NULL;
	r->state = RQ_BODY;
	r->hup = 0;
	r->kind = API_KIND_OTHER;
	r->orphan = r->close_after = r->discard = r->hmac = r->has_idem = r->unauth = 0;
	r->route = NULL;
	r->tok = NULL;
	r->job = NULL;
	r->job_idx = -1;
	r->mode = API_MODE_POLL;
	r->wait_ms = 0;
	r->id = 0;
	r->err_status = 0;
	r->chunked = r->expect = r->head_only = 0;
	r->clen = -1;
	r->budget = 0;
	memset(&r->ck, 0, sizeof r->ck);
	buf_reset(&r->body);
	buf_reset(&r->out);
	r->sent = 0;
	r->idem_len = 0;
	return r;
}

/* A trigger without a token whose body cannot be checked (no budget
 * left): drain it and answer the one 401, whatever was pending, so the
 * answer says nothing about the job. */
void api_unauth_refuse(Api *a, ApiReq *r)
{
	r->err_status = 0;
	api_pend_error(r, 401, "unauthorized", API_UNAUTH_TRIGGER);
	r->hmac = 0;
	api_budget_put(a, r);
}

int api_budget_take(Api *a, ApiReq *r, size_t n)
{
	if (a->body_bytes + n > API_BODY_BUDGET ||
	    (r->unauth && a->unauth_bytes + n > API_UNAUTH_BUDGET))
		return -1;
	a->body_bytes += n;
	if (r->unauth)
		a->unauth_bytes += n;
	r->budget += n;
	return 0;
}

void api_budget_put(Api *a, ApiReq *r)
{
	a->body_bytes -= r->budget;
	if (r->unauth)
		a->unauth_bytes -= r->budget;
	r->budget = 0;
}

/* Api thread.  Back to the pool; memory of big bodies is given back so
 * the pool's footprint stays near API_REQ_MAX small requests. */
void api_req_put(Api *a, ApiReq *r)
{
	if (r->state == RQ_READY || r->state == RQ_SENDING)
		a->writing--;
	api_list_unhook(a, r);		/* a parked list leaves proj_wait */
	api_park_unwatch(r);
	lws_sul_cancel(&r->sul);	/* a /wait timer must not outlive it */
	api_body_untrack(a, r);
	api_budget_put(a, r);
	if (r->body.cap > 65536)
		buf_free(&r->body);
	if (r->out.cap > 65536)
		buf_free(&r->out);
	if (r->le.extra.cap > 65536)
		buf_free(&r->le.extra);
	free(r->le.idem);
	r->le.idem = NULL;
	r->wsi = NULL;
	r->state = 0;
	r->next = a->free;
	a->free = r;
}

static void api_req_destroy(ApiReq *r)
{
	buf_free(&r->body);
	buf_free(&r->out);
	event_entry_free(&r->le);
	free(r);
}

/* ---- completion queue and head (other threads) ---- */

/* Any thread: wake the api loop, unless api_close() has begun.  closed is
 * set under cq_mu before the lws context is destroyed, so no thread can
 * reach a->ctx once destruction starts. */
static void api_wake_locked(Api *a)
{
	if (!atomic_load(&a->closed) && a->ctx)
		lws_cancel_service(a->ctx);
}

/* Log writer or runner thread: hand a finished request back.  Only the
 * push onto an empty queue wakes the loop, which takes the whole queue.
 * After api_close() began, api_close() itself collects it (cq_cv). */
void api_cq_push(Api *a, ApiReq *r)
{
	r->qnext = NULL;
	pthread_mutex_lock(&a->cq_mu);
	if (a->cq_tail)
		a->cq_tail->qnext = r;
	else
		a->cq_head = r;
	if (a->cq_head == r)
		api_wake_locked(a);
	a->cq_tail = r;
	if (atomic_load(&a->closed))
		pthread_cond_signal(&a->cq_cv);
	pthread_mutex_unlock(&a->cq_mu);
}

/* Projector thread, after each batch: wake the loop only when a GET /jobs
 * waits for the projector.  api_close() unregisters it (proj_unwatch)
 * before a is freed. */
static void api_proj_watch(void *ctx, uint64_t applied)
{
	Api *a = ctx;

	(void)applied;
	if (atomic_load(&a->nproj_wait) > 0) {
		pthread_mutex_lock(&a->cq_mu);
		api_wake_locked(a);
		pthread_mutex_unlock(&a->cq_mu);
	}
}

/* Log writer thread, after each commit.  api_close() unregisters it
 * (log_unwatch) before a is freed. */
static void api_log_watch(void *ctx, uint64_t head)
{
	Api *a = ctx;

	atomic_store(&a->head, head);
	pthread_mutex_lock(&a->cq_mu);
	api_wake_locked(a);
	pthread_mutex_unlock(&a->cq_mu);
}

uint64_t api_head(Api *a)
{
	return atomic_load(&a->head);
}

/* ---- /wait parking ---- */

/* A parked request's client may leave: lws 4.1 does not read a connection
 * while its request is being handled, so nothing would tell us until the
 * answer is written (a /wait holds up to max_wait_s).  A readable socket
 * that peeks EOF is killed; its close releases the request.  Readable with
 * data (a pipelined request) is left for lws to read after the answer. */
static void api_park_hup(void *ctx)
{
	ApiReq *r = ctx;
	char c;
	ssize_t n;

	if (!r->wsi)
		return;
	n = recv(lws_get_socket_fd(r->wsi), &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		/* Hang up from the writable callback (returning -1 there is
		 * how a callback closes; lws 4.1's async kill waits for its
		 * own timer, which our foreign loop may not run for long). */
		r->hup = 1;
		api_conn_resume(r->wsi);
		lws_callback_on_writable(r->wsi);
	} else if (n < 0)
		api_loop_rearm(r->hupw);	/* woken for nothing */
}

void api_park_watch(Api *a, ApiReq *r)
{
	if (r->wsi && !r->hupw)
		r->hupw = api_loop_watch_read(a, (int)lws_get_socket_fd(r->wsi), api_park_hup, r);
}

void api_park_unwatch(ApiReq *r)
{
	api_loop_unwatch(r->hupw);
	r->hupw = NULL;
}

static ApiReq **api_wait_slot(Api *a, uint64_t id)
{
	return &a->wait[id % API_WAIT_BUCKETS];
}

static void api_wait_unhook(Api *a, ApiReq *r)
{
	ApiReq **pp;

	for (pp = api_wait_slot(a, r->id); *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			a->nwait--;
			break;
		}
	r->next = NULL;
	lws_sul_cancel(&r->sul);
	api_park_unwatch(r);
}

static void api_wait_timer(lws_sorted_usec_list_t *sul)
{
	ApiReq *r = lws_container_of(sul, ApiReq, sul);

	api_wait_unhook(r->a, r);
	api_wait_done(r->a, r);
	log_reader_end(r->a->rd);
}

/* Park r until its job's final event or r->wait_ms. */
void api_wait_park(Api *a, ApiReq *r)
{
	ApiReq **slot = api_wait_slot(a, r->id);

	r->state = RQ_WAIT;
	r->next = *slot;
	*slot = r;
	a->nwait++;
	api_sul_schedule(a->ctx, &r->sul, api_wait_timer,
			 (lws_usec_t)r->wait_ms * LWS_US_PER_MS);
	api_park_watch(a, r);
}

/* Answer every parked request of a job whose final event was seen. */
static void api_wait_final(Api *a, uint64_t id)
{
	ApiReq **pp = api_wait_slot(a, id), *r, *hit = NULL;

	while ((r = *pp)) {
		if (r->id == id) {
			*pp = r->next;
			a->nwait--;
			lws_sul_cancel(&r->sul);
			api_park_unwatch(r);	/* off the wait list: as api_wait_unhook */
			r->next = hit;
			hit = r;
		} else {
			pp = &r->next;
		}
	}
	while ((r = hit)) {
		hit = r->next;
		r->next = NULL;
		api_wait_done(a, r);
	}
}

/* Scan events (from, to] of the open snapshot for final statuses.  Ids
 * are collected in batches and answered between them, because answering
 * folds jobs on the same reader. */
static void api_wait_scan(Api *a, uint64_t from, uint64_t to)
{
	uint64_t ids[64], next = from + 1;
	LogEvent ev;
	int n, rc;

	do {
		n = 0;
		for (rc = log_reader_seek(a->rd, next, &ev);
		     rc == 0 && ev.seq <= to && n < 64; rc = log_reader_next(a->rd, &ev)) {
			next = ev.seq + 1;
			if (log_status_final(ev.status))
				ids[n++] = ev.job_id;
		}
		for (int i = 0; i < n; i++)
			api_wait_final(a, ids[i]);
	} while (n == 64);
}

/* Api thread, shutdown: answer every parked request now. */
static void api_wait_flush(Api *a)
{
	for (int b = 0; b < API_WAIT_BUCKETS; b++)
		while (a->wait[b]) {
			ApiReq *r = a->wait[b];
			api_wait_unhook(a, r);
			api_wait_done(a, r);
		}
	log_reader_end(a->rd);
}

/* ---- drain ---- */

/* Api thread, LWS_CALLBACK_EVENT_WAIT_CANCELLED: answer what the log and
 * the runner finished, then follow the head.  One snapshot serves all. */
static void api_drain(Api *a)
{
	ApiReq *list, *r;
	uint64_t head = api_head(a), snap;
	int began = 0;

	api_body_expire(a);
	if (a->proj_wait.count)
		api_list_wake(a);
	pthread_mutex_lock(&a->cq_mu);
	list = a->cq_head;
	a->cq_head = a->cq_tail = NULL;
	pthread_mutex_unlock(&a->cq_mu);
	if (!list && head <= a->head_seen)
		return;
	if (log_reader_begin(a->rd) == 0)
		began = 1;
	while ((r = list)) {
		list = r->qnext;
		a->inflight--;
		if (r->orphan) {
			if (r->kind == API_KIND_TRIGGER)
				a->enq[r->job_idx * API_NOUTCOMES +
				       (r->le.rc ? API_OUT_FAILED : r->le.replayed ?
					API_OUT_REPLAYED : API_OUT_ACCEPTED)]++;
			api_req_put(a, r);
		} else if (r->kind == API_KIND_TRIGGER) {
			api_trigger_done(a, r);
		} else {
			api_runner_done(a, r);
		}
	}
	snap = began ? log_reader_head(a->rd) : a->head_seen;
	if (snap > a->head_seen) {
		if (a->nwait)
			api_wait_scan(a, a->head_seen, snap);
		a->head_seen = snap;
	}
	log_reader_end(a->rd);
	if (head < snap)
		head = snap;
	if (head > a->head_streams) {
		a->head_streams = head;
		streams_on_head(a->streams, head);
	}
}

/* ---- the protocol callback ---- */

static ApiSession *api_sess(void *user)
{
	return user;
}

/* The connection or transaction of sess ended: let go of its request.
 * One with the log or the runner is orphaned (freed when its completion
 * arrives), a parked one is unhooked from its timer, the rest go back to
 * the pool. */
void api_sess_drop(Api *a, ApiSession *sess)
{
	ApiReq *r = sess->req;

	if (!r)
		return;
	sess->req = NULL;
	r->wsi = NULL;
	switch (r->state) {
	case RQ_LOG:
	case RQ_RUNNER:
		r->orphan = 1;	/* freed when its completion arrives */
		break;
	case RQ_WAIT:
		api_wait_unhook(a, r);
		api_req_put(a, r);
		break;
	case RQ_PROJ:	/* api_req_put unhooks it */
	default:
		api_req_put(a, r);
	}
}

/* Api thread.  One request body fragment. */
static int api_body(Api *a, ApiReq *r, const char *in, size_t len)
{
	size_t max = (size_t)a->cfg->max_payload_bytes, used;
	int rc;

	if (r->state != RQ_BODY)
		return 0;	/* answered already (e.g. 413): ignore the rest */
	if (!r->chunked) {
		if (r->discard)
			return 0;
		if (r->body.len + len > max)	/* Content-Length lied */
			goto too_big;
		buf_add(&r->body, in, len);
		return r->body.oom ? -1 : 0;
	}
	/* Chunked: decode; in discard mode into a scratch that is reset. */
	rc = route_chunk_feed(&r->ck, in, len, &r->body, max, &used);
	if (r->discard && r->body.len)
		buf_reset(&r->body);
	if (rc == E2BIG)
		goto too_big;
	if (rc == ROUTE_CHUNK_DONE)
		return api_route_body_done(a, r);
	if (rc != ROUTE_CHUNK_MORE) {
		r->close_after = 1;
		r->discard = 0;
		return api_reply_error(a, r, 400, "bad_request", "malformed chunked body");
	}
	if (!r->discard && r->body.len > r->budget) {
		/* Account what a chunked body holds; refuse past the budget. */
		if (api_budget_take(a, r, r->body.len - r->budget) == 0)
			return 0;
		if (r->unauth) {	/* as in routes.c: drained, then 401 */
			api_unauth_refuse(a, r);
			buf_reset(&r->body);
			return 0;
		}
		r->close_after = 1;
		return api_reply_error(a, r, 503, "overloaded", "too many request bodies in flight");
	}
	return 0;
too_big:
	r->close_after = 1;
	r->discard = 0;
	return api_reply_error(a, r, 413, "payload_too_large", "body exceeds max_payload_bytes");
}

static int api_callback(struct lws *wsi, enum lws_callback_reasons reason,
			void *user, void *in, size_t len)
{
	Api *a = lws_context_user(lws_get_context(wsi));
	ApiSession *sess = api_sess(user);
	ApiReq *r;

	if (a)
		a->ncb++;
	switch (reason) {
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
		if (a)
			api_drain(a);
		return 0;
	case LWS_CALLBACK_HTTP:
		return api_route_begin(a, wsi, sess, in, len);
	case LWS_CALLBACK_HTTP_BODY:
		r = sess ? sess->req : NULL;
		return r ? api_body(a, r, in, len) : 0;
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
		r = sess ? sess->req : NULL;
		/* Again for a request that is past its body: lws offers it
		 * pipelined bytes (pipeline.c); they wait for the answer. */
		if (!r || r->state != RQ_BODY || r->chunked)
			return 0;
		return api_route_body_done(a, r);
	case LWS_CALLBACK_HTTP_WRITEABLE:
		if (sess && sess->kind == SESS_SSE)
			return streams_sse_writeable(a->streams, wsi, sess);
		r = sess ? sess->req : NULL;
		if (!r)
			return 0;
		if (r->state == RQ_CLOSING || r->hup)
			return -1;
		return r->state == RQ_READY || r->state == RQ_SENDING ? api_flush(a, r) : 0;
	case LWS_CALLBACK_CLOSED_HTTP:
		if (sess && sess->kind == SESS_SSE) {
			streams_sse_closed(a->streams, sess);
			sess->kind = SESS_HTTP;
			return 0;
		}
		if (sess)
			api_sess_drop(a, sess);
		return 0;
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
		if (sess && sess->kind == SESS_HTTP)
			api_sess_drop(a, sess);
		return 0;
	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
		return api_route_upgrade(a, wsi, in);
	case LWS_CALLBACK_ESTABLISHED:
		sess->kind = SESS_WS;
		return streams_ws_open(a->streams, wsi, sess);
	case LWS_CALLBACK_SERVER_WRITEABLE:
		return sess && sess->kind == SESS_WS ?
			streams_ws_writeable(a->streams, wsi, sess) : 0;
	case LWS_CALLBACK_CLOSED:
		if (sess && sess->kind == SESS_WS)
			streams_ws_closed(a->streams, sess);
		return 0;
	case LWS_CALLBACK_RAW_RX:
		/* Not HTTP (FALLBACK_TO_APPLY_LISTEN_ACCEPT_CONFIG moved the
		 * connection to the raw role): one JSON 400, then hang up. */
		if (sess && sess->kind != SESS_RAW) {
			sess->kind = SESS_RAW;
			if (api_raw_refuse(a, wsi, in, len) < 0)
				return -1;
			lws_callback_on_writable(wsi);
		}
		return 0;
	case LWS_CALLBACK_RAW_WRITEABLE:
		return -1;	/* the answer is flushed */
	default:
		break;
	}
	return 0;
}

/* tx_packet_size: lws 4.1 hands the kernel at most this much of one
 * lws_write per writable turn (0 means rx_buffer_size, here 4 KiB) and
 * copies the rest into its own list.  A 64 KiB stream batch or a big
 * GET /jobs answer then took 16+ sends and as many trips through the loop;
 * with 1,000 subscribers the api thread spent its time on 4 KiB sends.
 * 256 KiB is above a normal stream batch (64 KiB plus one event), so such a
 * batch goes out in one send(2) when the socket has room; anything longer
 * (a batch ending in a huge result, a big answer) takes one send per
 * 256 KiB, and lws keeps whatever the kernel does not take. */
const struct lws_protocols api_protocols[] = {
	{ "jobgate", api_callback, sizeof(ApiSession), 4096, 0, NULL, 256 * 1024 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 }
};

/* ---- public ---- */

Api *api_from_wsi(struct lws *wsi)
{
	return lws_context_user(lws_get_context(wsi));
}

Streams *api_streams(Api *a)
{
	return a->streams;
}

int api_port(Api *a)
{
	return a->port;
}

/* Lower-case "name:" as lws stores custom header names. */
/* lws 4.1 parses the headers it knows into its own table, where
 * lws_hdr_custom_copy() does not look: the index of key ("name:") there,
 * or -1 for a header it keeps as custom. */
static int api_hdr_token(const char *key)
{
	for (int t = 0; t < WSI_TOKEN_COUNT; t++) {
		const unsigned char *ts = lws_token_to_string((enum lws_token_indexes)t);
		if (ts && strcmp((const char *)ts, key) == 0)
			return t;
	}
	return -1;
}

static char *api_hdr_key(const char *name)
{
	size_t n = strlen(name);
	char *k = malloc(n + 2);

	if (!k)
		return NULL;
	for (size_t i = 0; i < n; i++)
		k[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
	k[n] = ':';
	k[n + 1] = 0;
	return k;
}

/* A test seam: the number in environment variable `name` if it is in
 * lo..hi, else dflt (a bad value is said once: "NAME ignored"). */
int64_t api_env_num(const char *name, int64_t lo, int64_t hi, int64_t dflt)
{
	const char *env = getenv(name);
	uint64_t v;
	char range[48], msg[96];

	if (!env)
		return dflt;
	if (jg_parse_u64(env, strlen(env), &v) == 0 && v >= (uint64_t)lo && v <= (uint64_t)hi)
		return (int64_t)v;
	snprintf(range, sizeof range, "%lld..%lld", (long long)lo, (long long)hi);
	snprintf(msg, sizeof msg, "%s ignored", name);
	jg_log(JG_WARN, msg, "value", env, "expected", range, NULL);
	return dflt;
}

int api_open(Api **out, const Config *cfg, Log *log, Projector *proj,
	     Runner *run, const char *db_path)
{
	Api *a;
	int rc;

	*out = NULL;
	if (!(a = calloc(1, sizeof *a)))
		return ENOMEM;
	a->cfg = cfg;
	a->log = log;
	a->proj = proj;
	a->run = run;
	pthread_mutex_init(&a->cq_mu, NULL);
	pthread_cond_init(&a->cq_cv, NULL);
	atomic_init(&a->closed, 0);
	atomic_init(&a->stop, 0);
	atomic_init(&a->head, log_head(log));
	a->head_seen = a->head_streams = log_head(log);
	a->send_stall_s = (int)api_env_num("JOBGATE_SEND_STALL_S", 1, API_SEND_STALL_S,
					   API_SEND_STALL_S);
	a->full_window_ms = api_env_num("JOBGATE_FULL_WINDOW_MS", 100, API_FULL_WINDOW_MS,
					API_FULL_WINDOW_MS);
	rc = ENOMEM;
	if (!(a->enq = calloc((size_t)cfg->njobs * API_NOUTCOMES + 1, sizeof *a->enq)) ||
	    !(a->hmac_hdr = calloc((size_t)cfg->njobs + 1, sizeof *a->hmac_hdr)) ||
	    !(a->hmac_tok = calloc((size_t)cfg->njobs + 1, sizeof *a->hmac_tok)))
		goto fail;
	for (int i = 0; i < cfg->njobs; i++) {
		if (cfg->jobs[i].hmac_secret &&
		    !(a->hmac_hdr[i] = api_hdr_key(cfg->jobs[i].hmac_header ?
				cfg->jobs[i].hmac_header : "X-Hub-Signature-256")))
			goto fail;
		a->hmac_tok[i] = a->hmac_hdr[i] ? api_hdr_token(a->hmac_hdr[i]) : -1;
	}
	if ((rc = log_reader_open(log, &a->rd)) != 0 ||
	    (rc = query_open(&a->q, db_path)) != 0 ||
	    (rc = streams_open(&a->streams, cfg, log)) != 0 ||
	    (rc = log_watch(log, api_log_watch, a)) != 0)
		goto fail;
	a->watching = 1;
	if ((rc = proj_watch(proj, api_proj_watch, a)) != 0)
		goto fail;
	a->proj_watching = 1;
	lws_set_log_level(LLL_ERR | LLL_WARN, api_lws_log);
	if ((rc = api_listen(a)) != 0)
		goto fail_logged;	/* api_listen_fail() said why */
	*out = a;
	return 0;
fail:
	jg_log(JG_ERROR, "cannot start the api", "error", jg_strerror(rc), NULL);
fail_logged:
	api_close(a);
	return rc;
}

/* Api thread: serve until api_stop(), then answer what is owed (parked
 * waits at once, commits in flight as they land) for up to API_DRAIN_S.
 * The loop wakes at least once a second (loop.c), so the drain bound is
 * checked even when nothing happens. */
int api_run(Api *a)
{
	int64_t until;

	while (!atomic_load(&a->stop))
		api_loop_once(a, 0);
	streams_shutdown(a->streams);
	api_wait_flush(a);
	api_list_flush(a);
	until = jg_mono_ns() + (int64_t)API_DRAIN_S * 1000000000;
	while ((a->inflight > 0 || a->nwait > 0 || a->proj_wait.count || a->writing > 0) &&
	       jg_mono_ns() < until)
		api_loop_once(a, 0);
	/* A few more turns so answers queued by the drain get written. */
	for (int i = 0; i < 3; i++)
		api_loop_once(a, 1);
	return 0;
}

/* Any thread (the signal thread; not a signal handler: it takes cq_mu):
 * ask api_run to return. */
void api_stop(Api *a)
{
	if (!a)
		return;
	atomic_store(&a->stop, 1);
	pthread_mutex_lock(&a->cq_mu);
	api_wake_locked(a);
	pthread_mutex_unlock(&a->cq_mu);
}

/*
 * Wait (at most API_DRAIN_S) for requests still owned by the log or the
 * runner: their done() pushes them on cq, and we free them here.  One
 * that does not come back in time keeps a alive: it is leaked, with a
 * log line, rather than freed under a thread that will still call
 * done() on it.  Returns the number still owed.
 */
static int api_close_collect(Api *a)
{
	struct timespec ts;
	ApiReq *list, *r;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += API_DRAIN_S;
	pthread_mutex_lock(&a->cq_mu);
	while (a->inflight > 0) {
		while (!a->cq_head &&
		       pthread_cond_timedwait(&a->cq_cv, &a->cq_mu, &ts) == 0)
			;
		if (!(list = a->cq_head))
			break;	/* timed out */
		a->cq_head = a->cq_tail = NULL;
		while ((r = list)) {
			list = r->qnext;
			a->inflight--;
			api_req_put(a, r);	/* its connection is gone */
		}
	}
	pthread_mutex_unlock(&a->cq_mu);
	return a->inflight;
}

/* Main thread, after api_run() returned (or on a failed api_open). */
void api_close(Api *a)
{
	ApiReq *r;

	if (!a)
		return;
	/* No other thread may touch ctx once destruction begins. */
	pthread_mutex_lock(&a->cq_mu);
	atomic_store(&a->closed, 1);
	pthread_mutex_unlock(&a->cq_mu);
	if (a->watching)
		log_unwatch(a->log, api_log_watch, a);	/* returns once it cannot run */
	a->watching = 0;
	if (a->proj_watching)
		proj_unwatch(a->proj, api_proj_watch, a);	/* the same */
	a->proj_watching = 0;
	if (a->ctx)
		lws_context_destroy(a->ctx);	/* closes sessions: orphans requests */
	a->ctx = NULL;
	api_loop_close(a);
	streams_close(a->streams);
	query_close(a->q);
	log_reader_close(a->rd);
	if (api_close_collect(a) > 0) {
		jg_log(JG_WARN, "answers still owed at close: the api is leaked", NULL);
		return;
	}
	while ((r = a->free)) {
		a->free = r->next;
		api_req_destroy(r);
	}
	for (int i = 0; a->hmac_hdr && i < a->cfg->njobs; i++)
		free(a->hmac_hdr[i]);
	free(a->hmac_hdr);
	free(a->hmac_tok);
	free(a->enq);
	buf_free(&a->scratch);
	buf_free(&a->job);
	pthread_cond_destroy(&a->cq_cv);
	pthread_mutex_destroy(&a->cq_mu);
	free(a);
}

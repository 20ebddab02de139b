/*
 * api_int.h -- private to api/: the contract between the HTTP side
 * (server.c and friends: lws context, routing, auth, triggers, queries,
 * metrics) and the stream side (stream.c: WebSocket /ws and SSE /events).
 *
 * All of it runs on the api thread.  There is one lws protocol ("jobgate",
 * index 0, also the default for WebSocket upgrades) whose callback lives in
 * server.c; it dispatches stream reasons to the streams_* functions below.
 * Per-session data is an ApiSession.
 */
#ifndef JG_API_INT_H
#define JG_API_INT_H

#include <libwebsockets.h>
#include "api.h"

typedef struct Streams Streams;
typedef struct ApiLoop ApiLoop;		/* loop.c */
typedef struct StreamSub StreamSub;	/* defined in stream.c */

enum { SESS_HTTP = 0, SESS_SSE = 1, SESS_WS = 2, SESS_RAW = 3 };	/* RAW: not HTTP */

typedef struct ApiSession {
	int        kind;	/* SESS_* */
	StreamSub *sub;		/* SSE/WS: owned by stream.c, freed in *_closed */
	void      *req;		/* HTTP: owned by server.c */
} ApiSession;

/* ---- provided by loop.c (the api thread's libev loop) ---- */
int   api_loop_open(Api *a);
void *api_loop_ev(Api *a);
void  api_loop_learn_timers(Api *a);		/* once, right after lws_create_context */
void  api_loop_once(Api *a, int nowait);
void  api_loop_close(Api *a);
/* lws_sul_schedule() that is sure to fire on time (see loop.c). */
void  api_sul_schedule(struct lws_context *ctx, lws_sorted_usec_list_t *sul,
		       sul_cb_t cb, lws_usec_t us);
/* Call cb(ctx) once, the first time fd polls readable (EOF included).
 * Free with api_loop_unwatch(), also after it fired; NULL: no memory. */
typedef struct ApiFdWatch ApiFdWatch;
ApiFdWatch *api_loop_watch_read(Api *a, int fd, void (*cb)(void *ctx), void *ctx);
void  api_loop_rearm(ApiFdWatch *fw);		/* once more, after it fired */
void  api_loop_unwatch(ApiFdWatch *fw);

/* ---- provided by server.c ---- */
Api     *api_from_wsi(struct lws *wsi);
/* A test seam: environment variable name's number if in lo..hi, else dflt. */
int64_t  api_env_num(const char *name, int64_t lo, int64_t hi, int64_t dflt);
Streams *api_streams(Api *a);
/* Authenticated token for this request (Authorization: Bearer, or the
 * access_token query arg when allow_query is set), NULL if none matches. */
const JgToken *api_auth(Api *a, struct lws *wsi, int allow_query);
/* Send a complete JSON error response {"error":code,"message":msg} with
 * status.  Returns the value the lws callback must return. */
int api_error(struct lws *wsi, int status, const char *code, const char *msg);
/* The one answer a trigger without a valid token gets, signed job or not. */
#define API_UNAUTH_TRIGGER "missing or invalid bearer token or signature"
int api_no_content(struct lws *wsi);
/* URL query arg name into out[cap]; 0, JG_ENOTFOUND, or JG_EINVAL. */
int api_query_arg(struct lws *wsi, const char *name, char *out, size_t cap);
/* 1 if a query parameter is not one of allowed (space-separated names)
 * or occurs twice (which one would win is a guess), with a message naming
 * it in msg[cap]; else 0. */
int api_query_check(struct lws *wsi, const char *allowed, char *msg, size_t cap);

/* ---- provided by stream.c ---- */
int  streams_open(Streams **out, const Config *cfg, Log *log);
void streams_close(Streams *s);		/* NULL is a no-op */
/* The log head moved (called on the api thread after a commit). */
void streams_on_head(Streams *s, uint64_t head);
void streams_metrics(Streams *s, Buf *out);
/* Shutting down: end every stream at its next writable (WebSocket close
 * 1001 "going away"; SSE: end of body), so clients know to reconnect. */
void streams_shutdown(Streams *s);
/* GET /events after auth: validate args (job_id, job, from_seq,
 * Last-Event-ID), send headers, register.  Returns the callback's value. */
int  streams_sse_open(Streams *s, struct lws *wsi, ApiSession *sess);
int  streams_sse_writeable(Streams *s, struct lws *wsi, ApiSession *sess);
void streams_sse_closed(Streams *s, ApiSession *sess);
/* WebSocket established on /ws (auth was checked at
 * LWS_CALLBACK_HTTP_CONFIRM_UPGRADE by server.c). */
int  streams_ws_open(Streams *s, struct lws *wsi, ApiSession *sess);
/* Optional, for LWS_CALLBACK_HTTP_CONFIRM_UPGRADE on /ws after auth: check
 * the stream args (job_id, job, from_seq).  0 if fine, else the HTTP status
 * to refuse the upgrade with (400 bad_request, 404 not_found, 503
 * overloaded), with a one-line message in msg[cap].  streams_ws_open checks
 * again and closes with 1008 + reason, so skipping this is safe. */
int  streams_check_args(struct lws *wsi, char *msg, size_t cap);
int  streams_ws_writeable(Streams *s, struct lws *wsi, ApiSession *sess);
void streams_ws_closed(Streams *s, ApiSession *sess);

/* ====================================================================
 * HTTP side internals (added by the api owner): shared by server.c,
 * listen.c, http.c, routes.c, trigger.c, jobs.c and metrics.c; stream.c
 * does not use them.  Everything below runs on the api thread unless a
 * comment says otherwise.
 * ==================================================================== */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include "route.h"
#include "../projector/query.h"

#define API_REQ_MAX       8192		/* requests in flight: more is 503 */
#define API_BODY_BUDGET   (256u << 20)	/* body bytes buffered at once */
#define API_UNAUTH_BUDGET (API_BODY_BUDGET / 4)	/* of which for callers without a token */
#define API_BODY_TIMEOUT_S 10		/* client must send the body within */
#define API_SEND_STALL_S  60		/* a client that reads nothing of an answer this long is dropped */
#define API_SEND_CHUNK    (64u << 10)	/* an answer goes out this much per writable turn */
#define API_FULL_WINDOW_MS 30000	/* /healthz: a space refusal this recent is degraded */
#define API_IDEM_MAX      255
#define API_HDR_MAX       16384		/* request line + known headers: more is 431 */
#define API_HDR_STORE     32768		/* lws's header store per connection (see routes.c) */
#define API_WAIT_BUCKETS  256
#define API_NOUTCOMES     5		/* see api_outcome_name() */

enum { API_OUT_ACCEPTED, API_OUT_REPLAYED, API_OUT_OVERLOADED,
       API_OUT_STORAGE_FULL, API_OUT_FAILED };

/* Request states: who owns the ApiReq now. */
enum {
	RQ_BODY = 1,	/* api: headers seen, reading the body */
	RQ_LOG,		/* log: le is queued at the writer */
	RQ_RUNNER,	/* runner: rr is queued at the runner */
	RQ_WAIT,	/* api: parked until the job's final event or timeout */
	RQ_PROJ,	/* api: GET /jobs parked until the projector catches up */
	RQ_READY,	/* api: response in out, waiting for writable */
	RQ_SENDING,	/* api: part of out sent (sent bytes), the rest as the client reads */
	RQ_CLOSING	/* api: response sent, hang up when flushed */
};
enum { API_KIND_OTHER, API_KIND_TRIGGER, API_KIND_RUNNER };
enum { API_MODE_POLL, API_MODE_WAIT };

typedef struct ApiReq ApiReq;
typedef struct ApiRoute ApiRoute;

struct ApiReq {
	LogEntry    le;		/* trigger: owned by the log while RQ_LOG */
	RunnerReq   rr;		/* cancel/retry: owned by the runner while RQ_RUNNER */
	Api        *a;
	struct lws *wsi;	/* NULL once the connection closed */
	int         state, kind, orphan;
	int         close_after;	/* reply "connection: close", then hang up */
	size_t      sent;		/* bytes of out (past LWS_PRE) written so far */
	int         discard;	/* an error is pending: drop body bytes */
	const ApiRoute *route;
	const JgToken  *tok;	/* NULL: no bearer (hmac or public route) */
	const JgJob    *job;
	int         job_idx, mode, hmac;
	int         unauth;	/* a trigger without a valid token: see routes.c */
	int64_t     wait_ms;	/* /wait: how long to hold the answer */
	uint64_t    id;
	int         err_status;	/* pending error, sent once the body is in */
	const char *err_code, *err_msg;
	char        err_buf[96];	/* err_msg when it is composed */
	int         chunked;
	int         head_only;	/* HEAD: headers of the GET answer, no body */
	int         expect;	/* Expect: 100-continue, body not sent yet */
	int64_t     clen;	/* Content-Length, -1 if none */
	size_t      budget;	/* bytes of a->body_bytes this request holds */
	RouteChunk  ck;
	Buf         body;	/* request body (pooled memory) */
	Buf         out;	/* response, LWS_PRE bytes of headroom first */
	char        idem[API_IDEM_MAX + 1];
	size_t      idem_len;
	int         has_idem;
	lws_sorted_usec_list_t sul;	/* /wait or RQ_PROJ deadline */
	struct ApiListArgs *la;		/* RQ_PROJ: the parsed GET /jobs query */
	ApiFdWatch *hupw;		/* RQ_WAIT/RQ_PROJ: notices the client leaving */
	int         hup;		/* it left: close at the next writable */
	uint64_t    proj_target;	/* RQ_PROJ: answer once applied >= this */
	lws_dll2_t  proj_link;		/* RQ_PROJ: a->proj_wait, oldest first */
	int64_t     body_due_ns;	/* body deadline (mono) while in a->body_fifo */
	lws_dll2_t  body_link;		/* a->body_fifo, oldest first */
	ApiReq     *qnext;	/* {a->cq_mu} completion queue */
	ApiReq     *next;	/* free list or waiter chain (api thread) */
};

/* ---- provided by routes.c (body deadlines) ---- */
void api_body_untrack(Api *a, ApiReq *r);	/* no-op if not tracked */
void api_body_expire(Api *a);			/* answer bodies past due: 408 */

/* ---- provided by server.c (body budget) ---- */
void api_unauth_refuse(Api *a, ApiReq *r);	/* the uniform 401, later */
/* Reserve n more bytes for r (0), or -1 when that would pass
 * API_BODY_BUDGET, or API_UNAUTH_BUDGET for a request without a token (a
 * signed job's caller, unknown until the signature is checked, must not
 * starve the callers who have one); give all of r's back. */
int  api_budget_take(Api *a, ApiReq *r, size_t n);
void api_budget_put(Api *a, ApiReq *r);

/* One row of the route table (routes.c), like Redis's command table. */
enum { API_M_GET = 1, API_M_POST = 2, API_M_HEAD = 4 };
/* STREAM: a bearer header or access_token (browsers: EventSource and
 * WebSocket cannot set headers). */
enum { API_AUTH_NONE, API_AUTH_BEARER, API_AUTH_TRIGGER, API_AUTH_STREAM };
struct ApiRoute {
	const char *pattern;	/* "/jobs/{id}/events" */
	unsigned    methods;	/* API_M_* */
	const char *allow;	/* Allow header for 405 */
	int         auth;	/* API_AUTH_* */
	const char *args;	/* query parameters it takes, space-separated */
	/* After auth, at header time, with the captures: parse them into r
	 * and refuse early with api_pend_error() (never replies itself; the
	 * error goes out once the body is drained).  NULL: nothing to do. */
	void      (*head)(Api *a, ApiReq *r, const RouteSeg *caps);
	/* The whole request is in: respond (returning the callback value) or
	 * hand off (return 0). */
	int       (*run)(Api *a, ApiReq *r);
};

struct Api {
	const Config *cfg;
	Log          *log;
	Projector    *proj;
	Runner       *run;
	Streams      *streams;
	Query        *q;		/* read model (api thread only) */
	LogReader    *rd;		/* log snapshots (api thread only) */
	struct lws_context *ctx;
	struct lws_vhost   *vh;
	ApiLoop            *evl;	/* the event loop under lws (loop.c) */
	uint64_t            ncb;	/* api_callback calls: loop.c tells busy from idle turns */
	int           port;
	int           send_stall_s;	/* API_SEND_STALL_S; tests shorten it */
	int64_t       full_window_ms;	/* API_FULL_WINDOW_MS; tests shorten it */
	atomic_int    stop;		/* set by api_stop() on another thread */
	atomic_int    closed;		/* set under cq_mu: api_close() began, ctx is off limits */

	pthread_mutex_t cq_mu;		/* completion queue, filled by other threads */
	pthread_cond_t  cq_cv;		/* {cq_mu} a push after closed (api_close waits) */
	ApiReq       *cq_head, *cq_tail;	/* {cq_mu} */
	int           watching;		/* api_log_watch is registered with the log */
	int           proj_watching;	/* api_proj_watch is registered with the projector */
	lws_dll2_owner_t proj_wait;	/* RQ_PROJ requests, oldest first (api thread) */
	atomic_int    nproj_wait;	/* its count, for the projector's watcher */
	atomic_uint_least64_t head;	/* log head, stored by the log watcher */
	uint64_t      head_seen;	/* last head scanned for /wait (api thread) */
	uint64_t      head_streams;	/* last head given to the streams */

	ApiReq       *free;		/* request pool */
	lws_dll2_owner_t body_fifo;	/* requests whose body is being read */
	int           nreq, inflight;	/* allocated; owned by log/runner */
	int           writing;		/* RQ_READY or RQ_SENDING: an answer not all handed to lws */
	size_t        body_bytes;	/* buffered request bodies, <= API_BODY_BUDGET */
	size_t        unauth_bytes;	/* of them, signed-job requests without a token */
	ApiReq       *wait[API_WAIT_BUCKETS];	/* parked /wait requests by job id */
	int           nwait;
	char        **hmac_hdr;		/* per job: "lower-case-name:" or NULL */
	int          *hmac_tok;		/* per job: lws's index for a header it knows, or -1 */
	Buf           scratch, job;	/* response and job object scratch */
	char          err[256];	/* a damaged record's description (api thread) */

	uint64_t     *enq;		/* [job * API_NOUTCOMES + outcome] */
	uint64_t      http[600];	/* responses by status code */
};

/* server.c */
ApiReq *api_req_get(Api *a);
void    api_req_put(Api *a, ApiReq *r);
void    api_cq_push(Api *a, ApiReq *r);		/* any thread */
void    api_wait_park(Api *a, ApiReq *r);
void    api_sess_drop(Api *a, ApiSession *sess);	/* orphans or frees sess->req */
uint64_t api_head(Api *a);
/* The one protocol ("jobgate") and its callback, for listen.c's vhost. */
extern const struct lws_protocols api_protocols[];

/* listen.c: start-up of the lws side */
/* Main thread, in api_open: probe cfg's listen address, then create
 * a->ctx with one vhost and set a->vh and a->port.  0 or an errno value;
 * a failure is logged here, once. */
int  api_listen(Api *a);
/* Any thread lws logs from: the emit hook for lws_set_log_level(). */
void api_lws_log(int level, const char *line);

/* http.c: responses.  hdrs is extra header lines, each ending "\r\n".
 * api_reply() answers from inside r->wsi's own callback and returns the
 * callback's value; api_defer() answers later (from the drain or a timer):
 * the response waits in r->out for HTTP_WRITEABLE. */
int  api_reply(Api *a, ApiReq *r, int status, const char *hdrs,
	       const char *body, size_t bn);
void api_defer(Api *a, ApiReq *r, int status, const char *hdrs,
	       const char *body, size_t bn);
int  api_flush(Api *a, ApiReq *r);		/* HTTP_WRITEABLE for RQ_READY, RQ_SENDING */
/* The JSON error body for code/msg into b. */
void api_error_body(Buf *b, const char *code, const char *msg);
/* Error response (headers by status: WWW-Authenticate, Retry-After). */
int  api_reply_error(Api *a, ApiReq *r, int status, const char *code, const char *msg);
void api_defer_error(Api *a, ApiReq *r, int status, const char *code, const char *msg);
/* Write a JSON error on wsi without ending the transaction (upgrade
 * refusals, requests without an ApiReq).  lws_write's result. */
int  api_write_error(Api *a, struct lws *wsi, int status, const char *code,
		     const char *msg, int close);
/* "allow: <the route's methods>\r\n" into tmp (a 405's header). */
const char *api_allow_hdr(const ApiRoute *rt, char *tmp, size_t cap);
int  api_write_error_hdrs(Api *a, struct lws *wsi, int status, const char *hdrs,
			  const char *code, const char *msg, int close);
/* A connection lws 4.1 did not take as HTTP (the raw role): its answer. */
int  api_raw_refuse(Api *a, struct lws *wsi, const char *in, size_t n);
/* Remember an error to send once the body has been read (keeps the
 * connection usable); returns 0. */
int  api_pend_error(ApiReq *r, int status, const char *code, const char *msg);
int  api_hmac_ok(Api *a, ApiReq *r);		/* 1 if the signature matches */
const char *api_outcome_name(int o);

/* pipeline.c: HTTP/1.1 pipelining on lws 4.1 (see the essay there). */
void api_conn_init(void);			/* before the lws context */
int64_t api_conn_rx(struct lws *wsi);
void api_conn_mark(struct lws *wsi);		/* before transaction_completed */
int  api_conn_pipelined(struct lws *wsi);
int  api_conn_may_have_body(struct lws *wsi);
void api_conn_pause(struct lws *wsi);		/* request handed off */
void api_conn_resume(struct lws *wsi);		/* the answer is ready */

/* routes.c */
int  api_route_begin(Api *a, struct lws *wsi, ApiSession *sess, const char *path, size_t n);
int  api_route_upgrade(Api *a, struct lws *wsi, const char *proto);
/* The body is complete (or there is none): pending error or run(). */
int  api_route_body_done(Api *a, ApiReq *r);

/* trigger.c */
void api_trigger_head(Api *a, ApiReq *r, const RouteSeg *caps);
int  api_trigger_run(Api *a, ApiReq *r);
void api_trigger_done(Api *a, ApiReq *r);	/* drain: the log answered */
void api_wait_done(Api *a, ApiReq *r);		/* final event or deadline */
/* Fold job id from the current snapshot of a->rd into a->job.  0,
 * JG_ENOTFOUND, or a log error.  *status gets the job's status. */
int  api_job_fold(Api *a, uint64_t id, int *status);

/* jobs.c */
void api_jobs_id_head(Api *a, ApiReq *r, const RouteSeg *caps);
int  api_jobs_get(Api *a, ApiReq *r);
int  api_jobs_list(Api *a, ApiReq *r);
void api_park_watch(Api *a, ApiReq *r);	/* parked: hang up if the client leaves */
void api_park_unwatch(ApiReq *r);
void api_list_wake(Api *a);		/* drain: answer lists the projector caught up for */
void api_list_flush(Api *a);		/* shutdown: answer every parked list now */
void api_list_unhook(Api *a, ApiReq *r);	/* no-op unless RQ_PROJ */
int  api_jobs_events(Api *a, ApiReq *r);
int  api_jobs_cancel(Api *a, ApiReq *r);
int  api_jobs_retry(Api *a, ApiReq *r);
void api_runner_done(Api *a, ApiReq *r);	/* drain: the runner answered */

/* metrics.c */
int  api_healthz(Api *a, ApiReq *r);
int  api_metrics(Api *a, ApiReq *r);

#endif

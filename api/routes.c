/*
 * routes.c -- the route table and the header phase of every request.
 *
 * Like Redis's command table, each row names a path pattern, the methods
 * it takes, how it authenticates, and its handlers: head() runs at header
 * time (captures parsed, early refusals), run() once the body is in.
 *
 * Order of checks, each answered with the first failure: path shape (400
 * too long, 404 not_found), method (405 + Allow), body framing (400),
 * auth (401), head() (404 unknown_job, 403, 400 ...), size (413), then
 * run() with the body (400 invalid_json, 401 bad signature ...).
 *
 * Errors found before the body has been read are remembered and sent once
 * it has been drained without buffering (api_pend_error), so the keep-alive
 * connection stays in step.  A body we will not read at all (a
 * Content-Length over the limit, broken framing) is answered at once with
 * "connection: close" and the connection is dropped after the write.
 */
#include <string.h>
#include <strings.h>

#include "api_int.h"
#include "../common/jg.h"

static int api_sse_run(Api *a, ApiReq *r);
static int api_ws_plain(Api *a, ApiReq *r);

#define STREAM_ARGS "job_id job from_seq access_token"

static const ApiRoute api_routes[] = {
	{ "/trigger/{job}",        API_M_POST, "POST", API_AUTH_TRIGGER, "timeout", api_trigger_head, api_trigger_run },
	{ "/trigger/{job}/{mode}", API_M_POST, "POST", API_AUTH_TRIGGER, "timeout", api_trigger_head, api_trigger_run },
	{ "/jobs",                 API_M_GET | API_M_HEAD, "GET, HEAD",  API_AUTH_BEARER, "job status limit cursor", NULL, api_jobs_list },
	{ "/jobs/{id}",            API_M_GET | API_M_HEAD, "GET, HEAD",  API_AUTH_BEARER, "", api_jobs_id_head, api_jobs_get },
	{ "/jobs/{id}/events",     API_M_GET | API_M_HEAD, "GET, HEAD",  API_AUTH_BEARER, "", api_jobs_id_head, api_jobs_events },
	{ "/jobs/{id}/cancel",     API_M_POST, "POST", API_AUTH_BEARER, "",      api_jobs_id_head, api_jobs_cancel },
	{ "/jobs/{id}/retry",      API_M_POST, "POST", API_AUTH_BEARER, "",      api_jobs_id_head, api_jobs_retry },
	{ "/events",               API_M_GET,  "GET",  API_AUTH_STREAM, STREAM_ARGS, NULL,       api_sse_run },
	{ "/ws",                   API_M_GET,  "GET",  API_AUTH_STREAM, STREAM_ARGS, NULL,       api_ws_plain },
	{ "/healthz",              API_M_GET | API_M_HEAD, "GET, HEAD",  API_AUTH_NONE,   "", NULL,             api_healthz },
	{ "/metrics",              API_M_GET | API_M_HEAD, "GET, HEAD",  API_AUTH_BEARER, "", NULL,             api_metrics },
};
#define API_NROUTES (int)(sizeof api_routes / sizeof api_routes[0])

/*
 * lws 4.1 hands a connection whose request line it does not parse to the
 * raw role (FALLBACK_TO_APPLY_LISTEN_ACCEPT_CONFIG), with its first bytes.
 * TRACE and CONNECT are HTTP methods lws does not know: like any method a
 * path does not take, 405 with that path's Allow (404 for no route).
 * Anything else is not HTTP to us: 400.  Then hang up either way.
 */
int api_raw_refuse(Api *a, struct lws *wsi, const char *in, size_t n)
{
	static const char *const methods[] = { "TRACE ", "CONNECT " };
	const char *t = NULL;
	char hdr[64];
	RoutePath rp;
	size_t tn = 0, k;

	for (k = 0; k < sizeof methods / sizeof methods[0] && !t; k++)
		if (n > strlen(methods[k]) && memcmp(in, methods[k], strlen(methods[k])) == 0)
			t = in + strlen(methods[k]);
	if (!t)
		return api_write_error(a, wsi, 400, "bad_request",
				       "malformed HTTP request line or unsupported method", 1);
	while (t + tn < in + n && t[tn] != ' ' && t[tn] != '?' && t[tn] != '\r')
		tn++;
	if (route_split(t, tn, &rp) == 0)
		for (int i = 0; i < API_NROUTES; i++)
			if (route_match(api_routes[i].pattern, &rp, NULL, 0))
				return api_write_error_hdrs(a, wsi, 405,
							    api_allow_hdr(&api_routes[i], hdr, sizeof hdr),
							    "method_not_allowed",
							    "method not allowed on this path", 1);
	return api_write_error(a, wsi, 404, "not_found", "no such route", 1);
}

static unsigned api_method(struct lws *wsi)
{
	if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI))
		return API_M_POST;
	if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI))
		return API_M_GET;
	if (lws_hdr_total_length(wsi, WSI_TOKEN_HEAD_URI))
		return API_M_HEAD;	/* GET's answer without its body */
	return 0;	/* PUT, DELETE, PATCH, OPTIONS: never allowed */
}

/*
 * Bytes of the request line and of the headers lws knows by name (Host,
 * Cookie, Authorization, ...), as sent give or take separators.  lws 4.1
 * stores a request's headers in one buffer per connection
 * (API_HDR_STORE) and, when they do not fit, closes the connection
 * without calling us; it offers no way to list the names of headers it
 * does not know, so those count only towards that store.
 */
static size_t api_header_bytes(struct lws *wsi)
{
	size_t total = 0;
	const unsigned char *name;
	int t, n;

	for (t = 0; t < (int)WSI_TOKEN_COUNT; t++) {
		if ((n = lws_hdr_total_length(wsi, (enum lws_token_indexes)t)) <= 0)
			continue;
		name = lws_token_to_string((enum lws_token_indexes)t);
		total += (size_t)n + (name ? strlen((const char *)name) : 0) + 3;
	}
	return total;
}

/* Content-Length / Transfer-Encoding.  0, or an error status (400). */
static int api_framing(struct lws *wsi, ApiReq *r)
{
	char v[64];
	uint64_t cl;
	int n;

	if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
		n = lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP_TRANSFER_ENCODING);
		/* Both headers at once is how requests get smuggled: refuse. */
		if (n <= 0 || strcasecmp(v, "chunked") != 0 ||
		    lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0)
			return 400;
		r->chunked = 1;
		/* Whatever follows the last chunk in the same read is lost to
		 * lws, so a chunked request ends its connection. */
		r->close_after = 1;
		return 0;
	}
	if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0) {
		n = lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP_CONTENT_LENGTH);
		if (n <= 0 || jg_parse_u64(v, (size_t)n, &cl) != 0 || cl > INT64_MAX)
			return 400;
		r->clen = (int64_t)cl;
		return 0;
	}
	/* Neither header on a method that may have a body (POST): we take
	 * it as empty, but lws 4.1 still expects an implicit body and would
	 * eat the connection's next request as one.  End the connection
	 * after the answer instead. */
	if (api_conn_may_have_body(wsi))
		r->close_after = 1;
	return 0;
}

/*
 * Body deadlines.  Every request whose body is being read (or drained
 * after an early refusal) must have it in within API_BODY_TIMEOUT_S of its
 * headers (SPEC §7: slow clients get a 4xx).  One constant timeout means
 * deadlines come in the order requests were tracked: a FIFO, oldest at the
 * head, so the check (api_body_expire, on every api wake-up and at least
 * once a second by loop.c's tick) looks at the head only.  No per-request
 * timer: at 15k triggers/s that would be 150k live timers.  lws's own
 * timeout, which only counts silence, stays as a backstop 2 s later.
 */
static void api_body_track(Api *a, ApiReq *r)
{
	api_body_untrack(a, r);
	r->body_due_ns = jg_mono_ns() + (int64_t)API_BODY_TIMEOUT_S * 1000000000;
	lws_dll2_add_tail(&r->body_link, &a->body_fifo);
	lws_set_timeout(r->wsi, PENDING_TIMEOUT_HTTP_CONTENT, API_BODY_TIMEOUT_S + 2);
}

void api_body_untrack(Api *a, ApiReq *r)
{
	(void)a;
	lws_dll2_remove(&r->body_link);		/* no-op when not listed */
	r->body_due_ns = 0;
}

/* Api thread: answer what is past due (the pending refusal if there is
 * one, else 408) and close; bytes that still come are ignored (api_body:
 * the state moved on). */
void api_body_expire(Api *a)
{
	lws_dll2_t *d;
	int64_t now;
	ApiReq *r;

	if (!a->body_fifo.count)
		return;
	now = jg_mono_ns();
	while ((d = lws_dll2_get_head(&a->body_fifo)) &&
	       (r = lws_container_of(d, ApiReq, body_link))->body_due_ns <= now) {
		api_body_untrack(a, r);
		if (r->state != RQ_BODY || !r->wsi)
			continue;
		r->close_after = 1;
		r->discard = 1;
		if (r->unauth)		/* no token: alike for every job name */
			api_defer_error(a, r, 401, "unauthorized", API_UNAUTH_TRIGGER);
		else if (r->err_status)	/* refused at its headers: say why */
			api_defer_error(a, r, r->err_status, r->err_code, r->err_msg);
		else
			api_defer_error(a, r, 408, "request_timeout",
					"request body not received within 10 s of its headers");
	}
}

/* An error at header time: now if there is no body to drain, else after.
 * A client that sent "Expect: 100-continue" has not sent its body yet
 * and will not without a 100: answer at once and end the connection
 * (RFC 9110 §10.1.1), rather than wait for a body that may never come. */
static int api_head_fail(Api *a, ApiReq *r, int has_body, int status,
			 const char *code, const char *msg)
{
	if (has_body && !r->expect) {
		api_body_track(a, r);
		return api_pend_error(r, status, code, msg);
	}
	if (has_body)
		r->close_after = 1;
	return api_reply_error(a, r, status, code, msg);
}

/* 1 if an HTTP/1.1 request carries "Expect: 100-continue". */
static int api_expect_continue(struct lws *wsi)
{
	char v[32];
	int n = lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP_EXPECT);

	if (n != 12 || strncasecmp(v, "100-continue", 12) != 0)
		return 0;
	n = lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP);
	return n > 0 && strcmp(v, "HTTP/1.0") != 0;
}

/* The request will be read: tell a client waiting for it to send the
 * body (curl waits 1 s for this before sending anyway). */
static int api_send_continue(struct lws *wsi)
{
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
	unsigned char b[LWS_PRE + sizeof cont];

	memcpy(b + LWS_PRE, cont, sizeof cont - 1);
	return lws_write(wsi, b + LWS_PRE, sizeof cont - 1, LWS_WRITE_RAW) <
		(int)(sizeof cont - 1) ? -1 : 0;
}


/* Api thread, LWS_CALLBACK_HTTP: match, check, and start the body. */
int api_route_begin(Api *a, struct lws *wsi, ApiSession *sess, const char *path, size_t n)
{
	const ApiRoute *rt = NULL, *path_hit = NULL;
	unsigned m = api_method(wsi);
	RouteSeg caps[3];
	RoutePath rp;
	ApiReq *r;
	int rc, has_body, st;

	(void)n;
	sess->kind = SESS_HTTP;
	/* Pipelined behind an earlier request and with a body: lws 4.1
	 * cannot frame it (pipeline.c).  Close cleanly before it tries. */
	if (api_conn_may_have_body(wsi) && api_conn_pipelined(wsi))	/* cheap test first */
		return -1;
	/* A previous transaction's leftover: it may still be with the log or
	 * the runner, or parked with a timer, so let go of it the way a
	 * closed connection does (orphaned or unhooked), never straight to
	 * the pool. */
	api_sess_drop(a, sess);
	if (!(r = api_req_get(a))) {
		api_write_error(a, wsi, 503, "overloaded", "too many requests in flight", 1);
		return -1;
	}
	r->wsi = wsi;
	r->head_only = m == API_M_HEAD;
	sess->req = r;
	if (atomic_load(&a->stop)) {
		/* Stopping: nothing new is taken, even on a kept-alive
		 * connection; the client retries against the next server. */
		r->close_after = 1;
		return api_reply_error(a, r, 503, "overloaded", "shutting down");
	}
	if (api_header_bytes(wsi) > API_HDR_MAX) {
		/* Whatever body follows stays unread: answer and hang up. */
		r->close_after = 1;
		return api_reply_error(a, r, 431, "bad_request",
				       "request line and headers exceed 16 KiB");
	}
	if ((st = api_framing(wsi, r)) != 0) {
		r->close_after = 1;
		return api_reply_error(a, r, st, "bad_request", "bad Content-Length or Transfer-Encoding");
	}
	has_body = r->chunked || r->clen > 0;
	r->expect = has_body && api_expect_continue(wsi);
	if (r->clen > a->cfg->max_payload_bytes) {
		/* Refuse without reading: the rest of the body stays unread and
		 * the connection is dropped after the answer. */
		r->close_after = 1;
		has_body = 0;
	}
	rc = route_split(path, strlen(path), &rp);
	if (rc == ENAMETOOLONG)
		return api_head_fail(a, r, has_body, 400, "bad_request", "path too long");
	for (int i = 0; rc == 0 && i < API_NROUTES; i++) {
		if (!route_match(api_routes[i].pattern, &rp, caps, 3))
			continue;
		path_hit = &api_routes[i];
		if (api_routes[i].methods & m) {
			rt = path_hit;
			break;
		}
	}
	if (!rt) {
		r->route = path_hit;
		if (path_hit)
			return api_head_fail(a, r, has_body, 405, "method_not_allowed",
					     "method not allowed on this path");
		return api_head_fail(a, r, has_body, 404, "not_found", "no such route");
	}
	r->route = rt;
	if (rt->auth != API_AUTH_NONE)
		r->tok = api_auth(a, wsi, rt->auth == API_AUTH_STREAM);
	if ((rt->auth == API_AUTH_BEARER || rt->auth == API_AUTH_STREAM) && !r->tok)
		return api_head_fail(a, r, has_body, 401, "unauthorized", "missing or invalid bearer token");
	if (api_query_check(wsi, rt->args, r->err_buf, sizeof r->err_buf))
		return api_head_fail(a, r, has_body, 400, "bad_request", r->err_buf);
	if (rt->head)
		rt->head(a, r, caps);	/* may leave a pending error */
	if (r->hmac)
		r->discard = 0;	/* a refusal waits for the signature: keep the body */
	/* A trigger without a valid token is answered alike for every job
	 * name, signed or not, known or not: the size first, then the body is
	 * read (or drained) in full, even under Expect: 100-continue, and only
	 * a good signature gets past 401 (api_route_body_done). */
	if (r->unauth && r->clen > a->cfg->max_payload_bytes)
		return api_reply_error(a, r, 413, "payload_too_large", "body exceeds max_payload_bytes");
	if (r->err_status && (!has_body || r->expect) && !r->unauth) {
		if (has_body) {		/* the body was never sent: no drain */
			r->close_after = 1;
			r->discard = 0;
		}
		return api_route_body_done(a, r);
	}
	if (r->clen > a->cfg->max_payload_bytes)
		return api_reply_error(a, r, 413, "payload_too_large", "body exceeds max_payload_bytes");
	if (!has_body)
		return api_route_body_done(a, r);
	if (r->clen > 0 && !r->discard) {
		if (api_budget_take(a, r, (size_t)r->clen) == 0) {
			buf_reserve(&r->body, (size_t)r->clen);
		} else if (r->unauth) {
			/* No room to check a signature: drained and refused
			 * like any tokenless trigger, not a telltale 503. */
			api_unauth_refuse(a, r);
		} else {
			r->close_after = 1;
			return api_reply_error(a, r, 503, "overloaded", "too many request bodies in flight");
		}
	}
	if (r->expect && api_send_continue(wsi) != 0)
		return -1;
	api_body_track(a, r);
	return 0;
}

/* Api thread: the body is in (or there was none). */
int api_route_body_done(Api *a, ApiReq *r)
{
	/* From here the server owes the answer: no lws timeout may cut it
	 * (a parked /wait has its own deadline). */
	api_body_untrack(a, r);
	lws_set_timeout(r->wsi, NO_PENDING_TIMEOUT, 0);
	struct lws *wsi = r->wsi;
	int rc;

	if (r->hmac && !api_hmac_ok(a, r))
		return api_reply_error(a, r, 401, "unauthorized", API_UNAUTH_TRIGGER);
	if (r->err_status)
		return api_reply_error(a, r, r->err_status, r->err_code, r->err_msg);
	rc = r->route->run(a, r);
	/* Handed to the log or the runner, or waiting for the projector: no
	 * rx until it is answered, so lws neither spins on nor misparses
	 * pipelined bytes (pipeline.c). */
	if (rc == 0 && (r->state == RQ_LOG || r->state == RQ_RUNNER || r->state == RQ_PROJ) &&
	    r->wsi == wsi)
		api_conn_pause(wsi);
	return rc;
}

/* GET /events: the streams engineer's SSE; our request is done with. */
static int api_sse_run(Api *a, ApiReq *r)
{
	struct lws *wsi = r->wsi;
	ApiSession *sess = lws_wsi_user(wsi);

	sess->req = NULL;
	api_req_put(a, r);
	return streams_sse_open(a->streams, wsi, sess);
}

/* GET /ws without an upgrade. */
static int api_ws_plain(Api *a, ApiReq *r)
{
	return api_reply_error(a, r, 400, "bad_request", "GET /ws needs a WebSocket upgrade");
}

/* Api thread, LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: only /ws, only with a
 * token (header or access_token), only with sane stream args.  >0 after
 * writing a refusal, <0 to hang up, 0 to go on (lws's convention). */
int api_route_upgrade(Api *a, struct lws *wsi, const char *proto)
{
	char path[64], msg[120];
	int st;

	if (!proto || strcmp(proto, "websocket") != 0)
		return -1;
	if (atomic_load(&a->stop)) {	/* streams_shutdown() has run */
		api_write_error(a, wsi, 503, "overloaded", "shutting down", 1);
		goto refused;
	}
	if (lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI) <= 0 ||
	    strcmp(path, "/ws") != 0) {
		api_write_error(a, wsi, 404, "not_found", "WebSocket upgrades are only on /ws", 0);
		goto refused;
	}
	if (!api_auth(a, wsi, 1)) {
		api_write_error(a, wsi, 401, "unauthorized", "missing or invalid token", 0);
		goto refused;
	}
	if (api_query_check(wsi, STREAM_ARGS, msg, sizeof msg)) {
		api_write_error(a, wsi, 400, "bad_request", msg, 0);
		goto refused;
	}
	if ((st = streams_check_args(wsi, msg, sizeof msg)) != 0) {
		api_write_error(a, wsi, st, st == 400 ? "bad_request" :
				st == 404 ? "not_found" : "overloaded", msg, 0);
		goto refused;
	}
	return 0;
refused:	/* lws completes the transaction */
	api_conn_mark(wsi);
	return 1;
}

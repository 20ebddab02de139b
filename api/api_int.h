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
typedef struct StreamSub StreamSub;	/* defined in stream.c */

enum { SESS_HTTP = 0, SESS_SSE = 1, SESS_WS = 2 };

typedef struct ApiSession {
	int        kind;	/* SESS_* */
	StreamSub *sub;		/* SSE/WS: owned by stream.c, freed in *_closed */
	void      *req;		/* HTTP: owned by server.c */
} ApiSession;

/* ---- provided by server.c ---- */
Api     *api_from_wsi(struct lws *wsi);
Streams *api_streams(Api *a);
/* Authenticated token for this request (Authorization: Bearer, or the
 * access_token query arg when allow_query is set), NULL if none matches. */
const JgToken *api_auth(Api *a, struct lws *wsi, int allow_query);
/* Send a complete JSON error response {"error":code,"message":msg} with
 * status.  Returns the value the lws callback must return. */
int api_error(struct lws *wsi, int status, const char *code, const char *msg);
/* URL query arg name into out[cap]; 0, JG_ENOTFOUND, or JG_EINVAL. */
int api_query_arg(struct lws *wsi, const char *name, char *out, size_t cap);

/* ---- provided by stream.c ---- */
int  streams_open(Streams **out, const Config *cfg, Log *log);
void streams_close(Streams *s);		/* NULL is a no-op */
/* The log head moved (called on the api thread after a commit). */
void streams_on_head(Streams *s, uint64_t head);
void streams_metrics(Streams *s, Buf *out);
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

#endif

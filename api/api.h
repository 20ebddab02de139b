/*
 * api.h -- the HTTP API, WebSocket and SSE streams on libwebsockets.
 *
 * api_run() runs the lws service loop on the calling thread (the api
 * thread), which owns every socket, the read-only SQLite connection and
 * the subscribers.  Other threads reach it only through its queues
 * (commit completions, runner answers, head moves), each followed by
 * lws_cancel_service().
 */
#ifndef JG_API_H
#define JG_API_H

#include "../common/config.h"
#include "../log/log.h"
#include "../projector/projector.h"
#include "../runner/runner.h"

typedef struct Api Api;

/* Bind the listen socket (127.0.0.1:0 picks a free port).  Registers a log
 * watcher: call before log_start().  On failure the reason has been
 * logged (once, with the address for listen errors): callers need not. */
int  api_open(Api **out, const Config *cfg, Log *log, Projector *proj,
	      Runner *run, const char *db_path);
int  api_port(Api *a);			/* the bound port */
int  api_run(Api *a);			/* until api_stop(); 0 or error */
void api_stop(Api *a);			/* any thread (takes a mutex: not from a signal handler) */
/* Unregisters the log watcher, closes every connection, waits up to 5 s
 * for requests still with the log or the runner, frees.  NULL no-op. */
void api_close(Api *a);

#endif

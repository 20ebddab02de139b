/* bench/lwsref.c -- the bare-libwebsockets reference for make bench: an
 * lws 4.1 HTTP server on 127.0.0.1:PORT that reads any POST body and answers
 * 202 with a small JSON body, keep-alive.  No auth, no log, no disk: the
 * ceiling the trigger path is compared with.
 * usage: lwsref PORT */
#include <libwebsockets.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static volatile int stop;
static void on_sig(int s) { (void)s; stop = 1; }

static const char reply[] = "{\"id\":1,\"status\":\"queued\"}";

static int answer(struct lws *wsi, int code)
{
	unsigned char buf[LWS_PRE + 512], *start = buf + LWS_PRE, *p = start,
		*end = buf + sizeof buf - 1;
	if (lws_add_http_common_headers(wsi, (unsigned)code, "application/json",
					sizeof reply - 1, &p, end) ||
	    lws_finalize_write_http_header(wsi, start, &p, end))
		return 1;
	memcpy(p, reply, sizeof reply - 1);
	if (lws_write(wsi, p, sizeof reply - 1, LWS_WRITE_HTTP_FINAL) != (int)sizeof reply - 1)
		return 1;
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
	      size_t len)
{
	switch (reason) {
	case LWS_CALLBACK_HTTP:
		if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI))
			return 0;	/* wait for the body */
		return answer(wsi, 200);
	case LWS_CALLBACK_HTTP_BODY:
		return 0;
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
		return answer(wsi, 202);
	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protos[] = {
	{"http", cb, 0, 0, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0},
};

int main(int argc, char **argv)
{
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof info);
	info.port = argc > 1 ? atoi(argv[1]) : 7681;
	info.iface = "127.0.0.1";
	info.protocols = protos;
	info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
	info.keepalive_timeout = 60;
	lws_set_log_level(LLL_ERR, NULL);
	signal(SIGTERM, on_sig);
	signal(SIGINT, on_sig);
	struct lws_context *ctx = lws_create_context(&info);
	if (!ctx)
		return 1;
	fprintf(stderr, "{\"msg\":\"listening\",\"listen\":\"127.0.0.1:%d\"}\n", info.port);
	while (!stop && lws_service(ctx, 0) >= 0)
		;
	lws_context_destroy(ctx);
	return 0;
}

/*
 * http.c -- responses, JSON errors, auth (bearer and HMAC) and query
 * arguments for the HTTP side of api/.  All on the api thread.
 *
 * Responses are composed whole in one buffer (status line, headers and
 * body) and written with lws_write(LWS_WRITE_HTTP_HEADERS), so a typical
 * answer costs one send(2); one over 64 KiB goes out a chunk per writable
 * turn (api_flush).  Header text is fixed strings plus numbers; nothing is
 * formatted with printf on the hot path.  lws keeps whatever the kernel
 * did not take and finishes it before the next writable callback, and
 * lws_http_transaction_completed() waits for that too.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "api_int.h"
#include "../common/jg.h"

static const char *api_status_text(int st)
{
	switch (st) {
	case 200: return "200 OK";
	case 202: return "202 Accepted";
	case 400: return "400 Bad Request";
	case 401: return "401 Unauthorized";
	case 403: return "403 Forbidden";
	case 404: return "404 Not Found";
	case 405: return "405 Method Not Allowed";
	case 409: return "409 Conflict";
	case 408: return "408 Request Timeout";
	case 413: return "413 Payload Too Large";
	case 431: return "431 Request Header Fields Too Large";
	case 500: return "500 Internal Server Error";
	case 503: return "503 Service Unavailable";
	}
	return st < 500 ? "400 Bad Request" : "500 Internal Server Error";
}

/* Compose a whole response into b (LWS_PRE bytes of headroom first). */
static void api_compose(Buf *b, int status, const char *hdrs, const char *body,
			size_t bn, int close, int head_only)
{
	static const char zero[LWS_PRE];

	buf_reset(b);
	buf_reserve(b, LWS_PRE + 160 + (hdrs ? strlen(hdrs) : 0) + bn);
	buf_add(b, zero, LWS_PRE);
	buf_puts(b, "HTTP/1.1 ");
	buf_puts(b, api_status_text(status));
	/* A caller's own content-type (metrics) comes first in hdrs. */
	if (hdrs && strncmp(hdrs, "content-type:", 13) == 0)
		buf_puts(b, "\r\ncontent-length: ");
	else
		buf_puts(b, "\r\ncontent-type: application/json\r\ncontent-length: ");
	buf_u64(b, bn);
	buf_puts(b, "\r\n");
	if (hdrs)
		buf_puts(b, hdrs);
	if (close)
		buf_puts(b, "connection: close\r\n");
	buf_puts(b, "\r\n");
	if (!head_only)		/* HEAD: same headers, content-length included */
		buf_add(b, body, bn);
}

static void api_count(Api *a, int status)
{
	if (status >= 100 && status < 600)
		a->http[status]++;
}

/* The answer is written: end the transaction (the pipelining mark first,
 * pipeline.c).  The value the lws callback must return. */
static int api_end(struct lws *wsi)
{
	api_conn_mark(wsi);
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/*
 * Write r->out, API_SEND_CHUNK per writable turn; then end the
 * transaction, or hang up once flushed.  lws 4.1 copies what the socket
 * does not take into a buffer of its own and sends that before it offers
 * the next writable turn, with no timeout: a whole list page (up to 16
 * MiB) written at once sat there for as long as a client that never read
 * kept its connection (helper 47).  In chunks lws holds at most one, and
 * every chunk re-arms a stall timeout: a client that reads, however
 * slowly, keeps its answer; one that reads nothing for API_SEND_STALL_S
 * is dropped.  Once all is sent, the transaction's end sets the
 * keep-alive timeout in its place.  (The bytes before the chunk were sent
 * already, so lws may use them as its LWS_PRE room.)
 */
int api_flush(Api *a, ApiReq *r)
{
	struct lws *wsi = r->wsi;
	ApiSession *sess = lws_wsi_user(wsi);
	size_t total = r->out.len - LWS_PRE, n = total - r->sent;

	if (n > API_SEND_CHUNK)
		n = API_SEND_CHUNK;
	if (r->out.oom || lws_write(wsi, (unsigned char *)r->out.p + LWS_PRE + r->sent, n,
				    r->sent ? LWS_WRITE_HTTP : LWS_WRITE_HTTP_HEADERS) < (int)n)
		return -1;
	r->sent += n;
	if (r->sent < total || lws_partial_buffered(wsi))
		lws_set_timeout(wsi, PENDING_TIMEOUT_HTTP_CONTENT, a->send_stall_s);
	if (r->sent < total) {
		if (r->state != RQ_READY && r->state != RQ_SENDING)
			a->writing++;
		r->state = RQ_SENDING;
		lws_callback_on_writable(wsi);
		return 0;
	}
	if (r->close_after) {
		if (r->state == RQ_READY || r->state == RQ_SENDING)
			a->writing--;
		r->state = RQ_CLOSING;
		lws_callback_on_writable(wsi);
		return 0;
	}
	if (sess)
		sess->req = NULL;
	api_req_put(a, r);
	return api_end(wsi);
}

int api_reply(Api *a, ApiReq *r, int status, const char *hdrs,
	      const char *body, size_t bn)
{
	api_count(a, status);
	api_compose(&r->out, status, hdrs, body, bn, r->close_after, r->head_only);
	return api_flush(a, r);
}

void api_defer(Api *a, ApiReq *r, int status, const char *hdrs,
	       const char *body, size_t bn)
{
	api_count(a, status);
	api_compose(&r->out, status, hdrs, body, bn, r->close_after, r->head_only);
	if (r->state != RQ_READY && r->state != RQ_SENDING)
		a->writing++;
	r->state = RQ_READY;
	/* lws 4.1 delivers no POLLOUT to an h1 connection whose rx is
	 * flow-controlled: let rx go on now (pipeline.c). */
	api_conn_resume(r->wsi);
	lws_callback_on_writable(r->wsi);
}

void api_error_body(Buf *b, const char *code, const char *msg)
{
	buf_reset(b);
	buf_puts(b, "{\"error\":");
	buf_json_cstr(b, code);
	buf_puts(b, ",\"message\":");
	buf_json_cstr(b, msg);
	buf_puts(b, "}");
}

static const char *api_error_hdrs(int status)
{
	switch (status) {
	case 401: return "www-authenticate: Bearer\r\n";
	case 503: return "retry-after: 1\r\n";
	}
	return NULL;
}

const char *api_allow_hdr(const ApiRoute *rt, char *tmp, size_t cap)
{
	snprintf(tmp, cap, "allow: %s\r\n", rt->allow);
	return tmp;
}

/* 405 needs the route's Allow; every other status has fixed headers. */
static const char *api_req_error_hdrs(ApiReq *r, int status, char *tmp, size_t cap)
{
	if (status == 405 && r->route)
		return api_allow_hdr(r->route, tmp, cap);
	return api_error_hdrs(status);
}

int api_reply_error(Api *a, ApiReq *r, int status, const char *code, const char *msg)
{
	char tmp[64];

	api_error_body(&a->scratch, code, msg);
	return api_reply(a, r, status, api_req_error_hdrs(r, status, tmp, sizeof tmp),
			 a->scratch.p, a->scratch.len);
}

void api_defer_error(Api *a, ApiReq *r, int status, const char *code, const char *msg)
{
	char tmp[64];

	api_error_body(&a->scratch, code, msg);
	api_defer(a, r, status, api_req_error_hdrs(r, status, tmp, sizeof tmp),
		  a->scratch.p, a->scratch.len);
}

int api_pend_error(ApiReq *r, int status, const char *code, const char *msg)
{
	if (!r->err_status) {
		r->err_status = status;
		r->err_code = code;
		r->err_msg = msg;
	}
	r->discard = 1;
	return 0;
}

int api_write_error(Api *a, struct lws *wsi, int status, const char *code,
		    const char *msg, int close)
{
	return api_write_error_hdrs(a, wsi, status, api_error_hdrs(status), code, msg, close);
}

int api_write_error_hdrs(Api *a, struct lws *wsi, int status, const char *hdrs,
			 const char *code, const char *msg, int close)
{
	Buf *b = &a->job;	/* scratch holds the body */

	api_error_body(&a->scratch, code, msg);
	api_count(a, status);
	api_compose(b, status, hdrs, a->scratch.p, a->scratch.len, close, 0);
	if (b->oom)
		return -1;
	return lws_write(wsi, (unsigned char *)b->p + LWS_PRE, b->len - LWS_PRE,
			 LWS_WRITE_HTTP_HEADERS);
}

/* stream.c's way to refuse a request (GET /events) it was handed. */
int api_error(struct lws *wsi, int status, const char *code, const char *msg)
{
	Api *a = api_from_wsi(wsi);

	if (api_write_error(a, wsi, status, code, msg, 0) < 0)
		return -1;
	return api_end(wsi);
}

/* stream.c's answer to an SSE request with nothing to send, ever: 204,
 * which also tells an EventSource to stop reconnecting. */
int api_no_content(struct lws *wsi)
{
	static const char resp[] = "HTTP/1.1 204 No Content\r\ncache-control: no-cache\r\n\r\n";
	unsigned char b[LWS_PRE + sizeof resp];
	Api *a = api_from_wsi(wsi);

	memcpy(b + LWS_PRE, resp, sizeof resp - 1);
	api_count(a, 204);
	if (lws_write(wsi, b + LWS_PRE, sizeof resp - 1, LWS_WRITE_HTTP_HEADERS) < (int)sizeof resp - 1)
		return -1;
	return api_end(wsi);
}

/* Query fragment i ("name=value") into frag: its length, -1 when it does
 * not fit (skip it), -2 after the last one.  lws says -1 for both of the
 * latter; the fragment's length tells them apart. */
static int api_query_frag(struct lws *wsi, int i, char *frag, size_t cap)
{
	int n = lws_hdr_copy_fragment(wsi, frag, (int)cap, WSI_TOKEN_HTTP_URI_ARGS, i);

	if (n >= 0)
		return n;
	return lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i) <= 0 ? -2 : -1;
}

int api_query_arg(struct lws *wsi, const char *name, char *out, size_t cap)
{
	char frag[1024];
	const char *v;
	size_t vn;
	int i, n;

	for (i = 0; i < 64; i++) {
		if ((n = api_query_frag(wsi, i, frag, sizeof frag)) == -2)
			break;
		if (n < 0)
			continue;
		if (!route_arg(frag, (size_t)n, name, &v, &vn))
			continue;
		if (vn >= cap)
			return JG_EINVAL;
		memcpy(out, v, vn);
		out[vn] = 0;
		return 0;
	}
	return JG_ENOTFOUND;
}

/* Query parameter names longer than this are no parameter of ours. */
#define API_QNAME_MAX 64

/* Is name[0..n) a word of the space-separated list? */
static int api_qname_in(const char *list, const char *name, size_t n)
{
	const char *w = list, *e;

	for (; *w; w = *e ? e + 1 : e) {
		e = strchr(w, ' ');
		if (!e)
			e = w + strlen(w);
		if ((size_t)(e - w) == n && memcmp(w, name, n) == 0)
			return 1;
	}
	return 0;
}

/* "what: NAME" into msg when the name is plain (all of ours are); never
 * echo arbitrary bytes into the JSON message. */
static void api_qname_msg(char *msg, size_t cap, const char *what, const char *name, size_t n)
{
	size_t j;

	for (j = 0; j < n && j < API_QNAME_MAX; j++) {
		char c = name[j];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
			break;
	}
	if (j > 0 && j == n)
		snprintf(msg, cap, "%s: %.*s", what, (int)n, name);
	else if (n == 0)
		snprintf(msg, cap, "%s with an empty name", what);
	else if (j < n && j < API_QNAME_MAX)
		snprintf(msg, cap, "%s (its name is not shown: it holds characters other "
			 "than letters, digits, _ - .)", what);
	else
		snprintf(msg, cap, "%s", what);
}

int api_query_check(struct lws *wsi, const char *allowed, char *msg, size_t cap)
{
	char names[64][API_QNAME_MAX], frag[1024];
	size_t lens[64], k;
	int i, j, n, nn = 0;

	for (i = 0;; i++) {
		if ((n = api_query_frag(wsi, i, frag, sizeof frag)) == -2)
			break;
		if (i == 64) {		/* api_query_arg looks no further */
			snprintf(msg, cap, "too many query parameters");
			return 1;
		}
		if (n < 0) {
			snprintf(msg, cap, "query parameter too long");
			return 1;
		}
		/* "a=1&&b=2" has an empty piece; lws 4.1 stores the empty one
		 * after a trailing '?' or '&' as "/". */
		if (n == 0 || (n == 1 && frag[0] == '/'))
			continue;
		for (k = 0; k < (size_t)n && frag[k] != '='; k++) {}
		if (k >= API_QNAME_MAX || !api_qname_in(allowed, frag, k)) {
			api_qname_msg(msg, cap, "unknown query parameter", frag, k);
			return 1;
		}
		for (j = 0; j < nn; j++)
			if (lens[j] == k && memcmp(names[j], frag, k) == 0) {
				api_qname_msg(msg, cap, "duplicate query parameter", frag, k);
				return 1;
			}
		memcpy(names[nn], frag, k);
		lens[nn++] = k;
	}
	return 0;
}

/* "Bearer TOKEN" (scheme case-insensitive) into the token span. */
static int api_bearer(const char *h, size_t n, const char **tok, size_t *tn)
{
	if (n < 7 || strncasecmp(h, "bearer ", 7) != 0)
		return 0;
	h += 7;
	n -= 7;
	while (n && *h == ' ') {
		h++;
		n--;
	}
	while (n && (h[n - 1] == ' ' || h[n - 1] == '\t'))
		n--;
	*tok = h;
	*tn = n;
	return n > 0;
}

/* Whether a "Bearer" scheme follows a comma in h; with quotes, commas
 * inside quoted strings do not count, and *open says whether h ended
 * inside one. */
static int api_bearer_after(const char *h, size_t n, int quotes, int *open)
{
	int quoted = 0;

	for (size_t i = 0; i < n; i++) {
		size_t j = i + 1, k;

		if (quotes && quoted && h[i] == '\\') {
			i++;			/* an escaped byte inside quotes */
			continue;
		}
		if (quotes && h[i] == '"')
			quoted = !quoted;
		if (quoted || h[i] != ',')
			continue;
		while (j < n && (h[j] == ' ' || h[j] == '\t'))
			j++;
		if (n - j < 6 || strncasecmp(h + j, "bearer", 6) != 0)
			continue;
		/* The scheme (alone, or a space and its token), not a
		 * parameter: "bearer_x=..." or "bearer = ...". */
		for (k = j + 6; k < n && (h[k] == ' ' || h[k] == '\t'); k++)
			;
		if ((j + 6 == n || h[j + 6] == ' ' || h[j + 6] == '\t') && (k == n || h[k] != '='))
			return 1;
	}
	*open = quoted;
	return 0;
}

/* A "Bearer" scheme after a comma: a second Authorization header (lws
 * joins repeats as "first,  second").  Commas inside another scheme's
 * quoted parameters do not count; a quote left open (which could hide the
 * second header) has the header read again without quotes. */
static int api_has_bearer(const char *h, size_t n)
{
	int open = 0;

	return api_bearer_after(h, n, 1, &open) || (open && api_bearer_after(h, n, 0, &open));
}

/* Every credential the request carries must be good: a bearer header, and
 * on the stream routes an access_token; when both are there they must name
 * the same token (a stale one beside a good one is refused, not ignored).
 * An Authorization header of another scheme is not ours to judge: a
 * browser behind a Basic-auth proxy sends one with every EventSource and
 * WebSocket, whose access_token then counts alone (helper 46). */
const JgToken *api_auth(Api *a, struct lws *wsi, int allow_query)
{
	const JgToken *bt = NULL, *qt = NULL;
	char h[512];
	const char *tok;
	size_t tn;
	int n;

	/* Present but longer than any token (the copy fails): not absent. */
	if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION) > 0) {
		n = lws_hdr_copy(wsi, h, sizeof h, WSI_TOKEN_HTTP_AUTHORIZATION);
		if (n <= 0)
			return NULL;
		if (strncasecmp(h, "bearer", 6) == 0) {
			if (!api_bearer(h, (size_t)n, &tok, &tn) || !(bt = config_auth(a->cfg, tok, tn)))
				return NULL;
		} else if (api_has_bearer(h, (size_t)n)) {
			/* Several Authorization headers (lws joins them with
			 * commas), a Bearer among them: not ours to pick. */
			return NULL;
		}
	}
	/* Likewise an access_token too long to copy is a bad one. */
	if (allow_query && (n = api_query_arg(wsi, "access_token", h, sizeof h)) != JG_ENOTFOUND &&
	    (n != 0 || !h[0] || !(qt = config_auth(a->cfg, h, strlen(h)))))
		return NULL;
	if (bt && qt && qt != bt)
		return NULL;
	return bt ? bt : qt;
}

/* "sha256=<64 hex>" in the job's signature header over the raw body,
 * compared in constant time.  The header is still readable: the ah stays
 * bound to the wsi until the transaction completes. */
int api_hmac_ok(Api *a, ApiReq *r)
{
	const JgJob *j = r->job;
	const char *key = a->hmac_hdr[r->job_idx];
	unsigned char mac[EVP_MAX_MD_SIZE], got[32];
	unsigned int mn = 0;
	char h[160];
	int n;

	if (!key || !j->hmac_secret)
		return 0;
	n = a->hmac_tok[r->job_idx] >= 0 ?
	    lws_hdr_copy(r->wsi, h, sizeof h, (enum lws_token_indexes)a->hmac_tok[r->job_idx]) :
	    lws_hdr_custom_copy(r->wsi, h, sizeof h, key, (int)strlen(key));
	/* Whitespace around a field value is not part of it (RFC 9110 §5.5):
	 * lws drops the leading run, we drop the trailing one. */
	while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
		h[--n] = '\0';
	if (n != 7 + 64 || strncmp(h, "sha256=", 7) != 0)
		return 0;
	for (int i = 0; i < 32; i++) {
		int hi = jg_hexval(h[7 + 2 * i]), lo = jg_hexval(h[8 + 2 * i]);
		if (hi < 0 || lo < 0)
			return 0;
		got[i] = (unsigned char)(hi << 4 | lo);
	}
	if (!HMAC(EVP_sha256(), j->hmac_secret, (int)j->hmac_secret_len,
		  (const unsigned char *)(r->body.len ? r->body.p : ""), r->body.len,
		  mac, &mn) || mn != 32)
		return 0;
	return CRYPTO_memcmp(mac, got, 32) == 0;
}

const char *api_outcome_name(int o)
{
	static const char *const names[API_NOUTCOMES] = {
		"accepted", "replayed", "overloaded", "storage_full", "failed"
	};
	return o >= 0 && o < API_NOUTCOMES ? names[o] : "?";
}

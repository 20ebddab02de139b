/*
 * pipeline.c -- HTTP/1.1 pipelining on lws 4.1, made safe.
 *
 * The problem.  When a client writes several requests at once, lws reads
 * them in one recv(); whatever follows the current request is kept in the
 * connection's "buflist" and parsed once the transaction completes.  For
 * a request parsed from that buflist that has a body (any POST: lws
 * assumes a body of up to 100 MiB when there is no Content-Length), lws
 * 4.1's lws_http_action() feeds the buflist *from its start* -- this very
 * request's own request line -- to the body parser, and then loops
 * forever once the transaction is done (lws_read_h1 consumes nothing in
 * LRS_DEFERRING_ACTION), inside lws_service_do_ripe_rxflow: the api thread
 * spins and nothing else is served, SIGTERM included.  A request whose
 * answer is not given inside its own callbacks (trigger, cancel, retry,
 * /wait) has a second problem: while it is with the log or the runner,
 * lws keeps offering the buffered bytes to it and consumes none (a busy
 * loop for as long as the answer takes).
 *
 * What we do.
 *  - While a request is with another thread, its connection's rx is
 *    flow-controlled off (lws_rx_flow_control(wsi, 0)): lws neither reads
 *    nor offers buffered bytes, so nothing spins; later bytes stay in the
 *    kernel.  It is turned back on when the answer is ready (api_defer),
 *    because lws 4.1 also withholds POLLOUT from a flow-controlled h1
 *    connection; until the answer is written (normally the next poll)
 *    lws may offer the buffered bytes again, which costs a loop or two.
 *  - lws offers no way to see its buflist, so we tell a buffered request
 *    from a freshly read one by the socket: api_conn_rx() is the number
 *    of bytes the application (lws) has taken from the socket (TCP bytes
 *    received minus bytes still queued).  It is sampled when a transaction
 *    completes.  lws never reads the socket while it holds buffered rx
 *    for the connection, so a request whose headers end while that number
 *    has not moved by a request's worth came out of the buffer: it was
 *    pipelined.  (The peer's FIN moves it by one, and TCP_INFO may show
 *    that before the connection's state says so.)
 *  - A pipelined request without a body (GET, HEAD, a POST with
 *    Content-Length: 0) is served normally: lws handles those.  A
 *    pipelined request that has or may have a body is not parsed further:
 *    the connection is closed cleanly at LWS_CALLBACK_HTTP, before lws's
 *    faulty path runs.  The earlier answers were all sent; RFC 9112
 *    §9.3.2 has clients retry requests left unanswered by a close.
 *
 * Counting what lws took.  lws 4.1 reads its sockets with recv() and
 * nothing else, and this file defines recv(): the executable comes first
 * in the dynamic linker's lookup, so lws's calls land here, go on to
 * recvfrom() and add what they got to a per-fd count -- exact, and no
 * syscall of its own.  api_conn_init() turns the count on only when
 * dlsym() shows that lookup really finds this recv; otherwise, and for an
 * fd past the table, the count is read from the socket instead (TCP bytes
 * received minus bytes still queued, see api_conn_rx): three syscalls at
 * each end of a transaction, ~8 µs of the api thread per request here.
 */
#undef _FORTIFY_SOURCE		/* recv is defined below, not wrapped */
#include <dlfcn.h>
#include <errno.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "api_int.h"

#define API_RX_FDS_MAX (1u << 20)

static uint64_t *rx_taken;	/* [rx_cap]; set once, then lives as long as the process */
static size_t    rx_cap;

/* Every thread's recv() (only the api thread reads sockets). */
ssize_t recv(int fd, void *buf, size_t n, int flags)
{
	ssize_t r = recvfrom(fd, buf, n, flags, NULL, NULL);
	uint64_t *t = __atomic_load_n(&rx_taken, __ATOMIC_ACQUIRE);

	if (r > 0 && t && fd >= 0 && (size_t)fd < rx_cap && !(flags & MSG_PEEK))
		__atomic_add_fetch(&t[fd], (uint64_t)r, __ATOMIC_RELAXED);
	return r;
}

/* Before the api's context exists (its sockets are read from then on). */
void api_conn_init(void)
{
	struct rlimit rl;
	size_t cap = 65536;
	uint64_t *t;

	if (__atomic_load_n(&rx_taken, __ATOMIC_ACQUIRE) ||
	    dlsym(RTLD_DEFAULT, "recv") != (void *)recv)
		return;		/* counted already, or lws would not call us */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		cap = (size_t)rl.rlim_cur;
	if (cap > API_RX_FDS_MAX)
		cap = API_RX_FDS_MAX;
	if (!(t = calloc(cap, sizeof *t)))	/* pages are touched only for fds in use */
		return;
	rx_cap = cap;
	__atomic_store_n(&rx_taken, t, __ATOMIC_RELEASE);
}

static int tcp_received(int fd, uint64_t *out)
{
	struct tcp_info ti;
	socklen_t tl = sizeof ti;

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) != 0 ||
	    tl < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof ti.tcpi_bytes_received)
		return -1;
	*out = ti.tcpi_bytes_received;
	return 0;
}

/* Api thread.  Bytes lws has read from wsi's socket so far, or -1.  (A
 * FIN the peer sent counts one too: see api_conn_pipelined.)  The two
 * counts come from two calls, and bytes that arrive between them (a body
 * sent apart from its headers) would be queued but not yet received: a
 * fresh request would look buffered.  So the received count is read on
 * both sides of the queue's and the sample kept only if it held still; a
 * count that never does is -1, which reads as "buffered" (a clean close
 * the client may retry, never lws's faulty path). */
int64_t api_conn_rx(struct lws *wsi)
{
	int fd = (int)lws_get_socket_fd(wsi), inq, tries;
	uint64_t before, after, *t = __atomic_load_n(&rx_taken, __ATOMIC_ACQUIRE);

	if (fd < 0)
		return -1;
	if (t && (size_t)fd < rx_cap)
		return (int64_t)__atomic_load_n(&t[fd], __ATOMIC_RELAXED);
	for (tries = 0; tries < 8; tries++) {
		if (tcp_received(fd, &before) != 0 || ioctl(fd, SIOCINQ, &inq) != 0 ||
		    tcp_received(fd, &after) != 0)
			return -1;
		if (before == after)
			return (int64_t)before - inq;
	}
	return -1;
}

/*
 * Per-connection state.  lws frees and re-zeroes the per-session data
 * (ApiSession) at every transaction end (lws_bind_protocol), so what must
 * outlive a transaction is packed into the wsi's opaque user pointer,
 * which lws keeps for the connection's life and never dereferences:
 * bit 0 "marked", bit 1 "rx paused", bit 2 "mark unreadable", bits 3..
 * the rx mark -- the count's low bits only, compared modulo that width
 * (a 32-bit pointer wraps after 512 MiB through one fd number).
 */
#define API_CONN_MARKED 1u
#define API_CONN_PAUSED 2u
#define API_CONN_UNREAD 4u
#define API_CONN_SHIFT  3

static uintptr_t api_conn_get(struct lws *wsi)
{
	return (uintptr_t)lws_get_opaque_user_data(wsi);
}

static void api_conn_set(struct lws *wsi, uintptr_t v)
{
	lws_set_opaque_user_data(wsi, (void *)v);
}

/* Api thread: the transaction on wsi is about to complete. */
void api_conn_mark(struct lws *wsi)
{
	int64_t rx = api_conn_rx(wsi);
	uintptr_t v = api_conn_get(wsi) & API_CONN_PAUSED;

	/* An unreadable count makes the next request with a body read as
	 * buffered, so it gets the clean close: the safe side (taking a
	 * buffered one for fresh runs lws's faulty path). */
	api_conn_set(wsi, v | API_CONN_MARKED |
		      (rx < 0 ? API_CONN_UNREAD : (uintptr_t)rx << API_CONN_SHIFT));
}

/* Api thread, LWS_CALLBACK_HTTP: 1 if this request was parsed from bytes
 * lws buffered with an earlier one (see above). */
int api_conn_pipelined(struct lws *wsi)
{
	uintptr_t v = api_conn_get(wsi), moved;
	int64_t now;

	if (!(v & API_CONN_MARKED))
		return 0;	/* the connection's first request */
	if ((v & API_CONN_UNREAD) || (now = api_conn_rx(wsi)) < 0)
		return 1;
	/* Fresh bytes are a whole request line and headers at least (18
	 * bytes: "GET / HTTP/1.1\r\n\r\n"), so fewer than 16 new bytes is no
	 * new request: the count moved by the peer's FIN alone (the socket
	 * sample counts it as one), and the request came from the buffer. */
	moved = (((uintptr_t)now << API_CONN_SHIFT) - (v & ~(uintptr_t)7)) >> API_CONN_SHIFT;
	return moved < 16;
}

/* 1 if lws will run its body path for this request: a Transfer-Encoding,
 * a Content-Length other than 0, or no Content-Length on a method that
 * lws gives an implicit body (anything but GET and HEAD). */
int api_conn_may_have_body(struct lws *wsi)
{
	char v[32];
	int n;

	if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0)
		return 1;
	if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0) {
		n = lws_hdr_copy(wsi, v, sizeof v, WSI_TOKEN_HTTP_CONTENT_LENGTH);
		return !(n == 1 && v[0] == '0');
	}
	return !(lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0 ||
		 lws_hdr_total_length(wsi, WSI_TOKEN_HEAD_URI) > 0);
}

/* Api thread: a request on wsi was handed to another thread; stop rx
 * until its answer is ready. */
void api_conn_pause(struct lws *wsi)
{
	uintptr_t v = api_conn_get(wsi);

	if (!(v & API_CONN_PAUSED)) {
		api_conn_set(wsi, v | API_CONN_PAUSED);
		lws_rx_flow_control(wsi, 0);
	}
}

/* Api thread: the answer is ready; rx (and with it POLLOUT) may go on. */
void api_conn_resume(struct lws *wsi)
{
	uintptr_t v = api_conn_get(wsi);

	if (v & API_CONN_PAUSED) {
		api_conn_set(wsi, v & ~(uintptr_t)API_CONN_PAUSED);
		lws_rx_flow_control(wsi, 1);
	}
}

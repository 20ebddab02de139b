/*
 * listen.c -- bring up the lws side of the api: check that the configured
 * address can be bound, create the lws context and its one vhost
 * ("jobgate", serving api_protocols from server.c), and route lws's own
 * log lines into jg_log.
 *
 * Listening.  lws 4.1 reports a failed bind only in its log and, for an
 * address no interface has, starts without a listen socket, so
 * api_listen() first binds the address itself (api_listen_probe) to fail
 * with the real errno, then asks lws to fail the vhost rather than retry,
 * and finally checks that a listen port exists.  Every failure is logged
 * once here ("cannot listen on HOST:PORT: why"); api_open() does not log
 * it again.
 *
 * Threads.  api_listen() runs on the main thread inside api_open();
 * api_lws_log() runs on whichever thread lws logs from, and its rate table
 * is guarded by api_lws_mu.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api_int.h"
#include "../common/jg.h"

/* ---- lws logs into jg_log ---- */

/*
 * lws logs what clients do wrong (a header block that does not fit, too
 * many header fragments, a bad upgrade) at its ERR and WARN levels, so a
 * client could fill the ERROR stream at will.  Lines known to be caused by
 * the peer are logged at WARN; every lws line is rate-limited per message
 * (API_LWS_BURST per second; one request can produce eight identical
 * lines), and the next line that gets through says how many were dropped.
 * Anything not in the table keeps lws's level: it may be ours.
 */
#define API_LWS_BURST  3	/* lines per message per second */
#define API_LWS_SLOTS  16

static const char *const api_lws_client_faults[] = {
	"Ran out of header data space",
	"More hdr frags than we can deal with",
	"Unknown upgrade",
	"lws_parse",
	"Illegal",
	"forbidden",
	"bad header",
	"header too long",
	"ERROR writing to socket",
	"ERROR writing len",
};

static pthread_mutex_t api_lws_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
	char     key[48];	/* message prefix */
	int64_t  sec;		/* second of the current window */
	unsigned n, dropped;	/* lines in this second; dropped since last out */
} api_lws_rate[API_LWS_SLOTS];	/* {api_lws_mu} */

/* 1 if the line may go out; *dropped gets the lines of this message
 * dropped since the last one that did. */
static int api_lws_admit(const char *msg, unsigned *dropped)
{
	int64_t sec = jg_mono_ns() / 1000000000;
	unsigned h = 5381;
	size_t i, n = strnlen(msg, sizeof api_lws_rate[0].key - 1);
	int ok;

	for (i = 0; i < n; i++)
		h = h * 33 + (unsigned char)msg[i];
	pthread_mutex_lock(&api_lws_mu);
	i = h % API_LWS_SLOTS;
	if (strncmp(api_lws_rate[i].key, msg, n) != 0 || api_lws_rate[i].key[n]) {
		memcpy(api_lws_rate[i].key, msg, n);	/* a new message takes the slot */
		api_lws_rate[i].key[n] = 0;
		api_lws_rate[i].n = api_lws_rate[i].dropped = 0;
		api_lws_rate[i].sec = sec;
	}
	if (api_lws_rate[i].sec != sec) {
		api_lws_rate[i].sec = sec;
		api_lws_rate[i].n = 0;
	}
	ok = api_lws_rate[i].n++ < API_LWS_BURST;
	*dropped = api_lws_rate[i].dropped;
	if (ok)
		api_lws_rate[i].dropped = 0;
	else
		api_lws_rate[i].dropped++;
	pthread_mutex_unlock(&api_lws_mu);
	return ok;
}

static int api_lws_level(int lws_level, const char *msg)
{
	for (size_t i = 0; i < sizeof api_lws_client_faults / sizeof *api_lws_client_faults; i++)
		if (strstr(msg, api_lws_client_faults[i]))
			return JG_WARN;
	return lws_level & LLL_ERR ? JG_ERROR : JG_WARN;
}

/* Any thread lws logs from.  Strip lws's own "[time] E: " prefix and the
 * newline; the JSON line has its own time and level. */
void api_lws_log(int level, const char *line)
{
	char msg[512], dropped_s[16];
	const char *p = line, *q;
	unsigned dropped;
	size_t n;
	int lv;

	if (*p == '[' && (q = strchr(p, ']')))
		p = q + 1;
	while (*p == ' ')
		p++;
	if (p[0] && p[1] == ':' && p[2] == ' ')
		p += 3;
	n = strlen(p);
	while (n && (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == ' '))
		n--;
	if (n >= sizeof msg)
		n = sizeof msg - 1;
	memcpy(msg, p, n);
	msg[n] = 0;
	lv = api_lws_level(level, msg);
	if (lv < jg_log_level || !api_lws_admit(msg, &dropped))
		return;
	if (dropped) {
		snprintf(dropped_s, sizeof dropped_s, "%u", dropped);
		jg_log(lv, "libwebsockets", "detail", msg, "#suppressed", dropped_s, NULL);
	} else {
		jg_log(lv, "libwebsockets", "detail", msg, NULL);
	}
}

/* ---- listen ---- */

/*
 * Resolve the configured host (numeric IPv4/IPv6; "localhost" means
 * 127.0.0.1) into sa and try to bind host:port ourselves first, with the
 * options lws uses, so a bad address or a port in use fails with its real
 * errno.  lws 4.1 only logs "ERROR on binding" and, for an address no
 * interface has, goes on without a listen socket.  0 or an errno value;
 * *why gets a one-line reason.
 */
static int api_listen_probe(const char *host, int port, const char **why)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	socklen_t sl;
	int fd, one = 1, rc = 0;

	memset(&ss, 0, sizeof ss);
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		sl = sizeof *s4;
	} else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		sl = sizeof *s6;
	} else {
		*why = "only numeric IPv4/IPv6 addresses (or localhost) are accepted";
		return EINVAL;
	}
	if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
		*why = strerror(errno);
		return errno;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 1) != 0) {
		rc = errno;
		*why = strerror(rc);
	}
	close(fd);
	return rc;
}

/* Exit-worthy: log "cannot listen on HOST:PORT: why" once, with the fields. */
static int api_listen_fail(const char *addr, int rc, const char *why)
{
	char msg[400];

	snprintf(msg, sizeof msg, "cannot listen on %s: %s", addr, why);
	if (rc == EADDRINUSE)	/* the usual first-run snag: say what to do */
		jg_log(JG_ERROR, msg, "listen", addr, "error", why, "hint",
		       "another process holds this port: pick another with --listen "
		       "(make run: PORT=8081 make run)", NULL);
	else
		jg_log(JG_ERROR, msg, "listen", addr, "error", why, NULL);
	return rc;
}

int api_listen(Api *a)
{
	struct lws_context_creation_info info;
	const char *host = a->cfg->listen_host, *why = NULL;
	char addr[300];
	int v4, rc;

	if (strcmp(host, "localhost") == 0)
		host = "127.0.0.1";
	v4 = strchr(host, ':') == NULL;
	snprintf(addr, sizeof addr, v4 ? "%s:%d" : "[%s]:%d", a->cfg->listen_host,
		 a->cfg->listen_port);
	if ((rc = api_listen_probe(host, a->cfg->listen_port, &why)) != 0)
		return api_listen_fail(addr, rc, why);
	memset(&info, 0, sizeof info);
	info.port = a->cfg->listen_port;
	info.iface = host;
	info.protocols = api_protocols;
	info.user = a;
	info.vhost_name = "jobgate";
	/* lws 4.1 binds every interface unless IPv6 is off for the vhost.
	 * FAIL_UPON_UNABLE_TO_BIND: a bind that fails now (the port was
	 * taken since the probe) fails the vhost instead of being retried. */
	info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 |
		       LWS_SERVER_OPTION_FALLBACK_TO_APPLY_LISTEN_ACCEPT_CONFIG |
		       LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND |
		       (v4 ? LWS_SERVER_OPTION_DISABLE_IPV6 : 0);
	/* Room past API_HDR_MAX so that over-long headers reach us and get
	 * a 431; a store is only held while a request's headers are. */
	info.max_http_header_data = API_HDR_STORE;
	info.max_http_header_pool = 1024;
	/* lws's network timeouts (slow headers, silence in a body): past
	 * our own body deadline (API_BODY_TIMEOUT_S), so that fires first. */
	info.timeout_secs = API_BODY_TIMEOUT_S + 2;
	info.keepalive_timeout = 60;
	info.fd_limit_per_thread = 0;
	/* lws on our libev loop (loop.c says why). */
	if (!a->evl && api_loop_open(a) != 0)
		return api_listen_fail(addr, ENOMEM, "cannot create the event loop");
	void *loops[1] = { api_loop_ev(a) };
	info.foreign_loops = loops;
	info.options |= LWS_SERVER_OPTION_LIBEV;
	api_conn_init();		/* count what lws reads (pipeline.c) */
	if (!(a->ctx = lws_create_context(&info)))
		return api_listen_fail(addr, EADDRNOTAVAIL, "libwebsockets could not bind it (see its log line)");
	api_loop_learn_timers(a);
	a->vh = lws_get_vhost_by_name(a->ctx, "jobgate");
	a->port = a->vh ? lws_get_vhost_listen_port(a->vh) : -1;
	if (a->port <= 0)
		return api_listen_fail(addr, EADDRNOTAVAIL, "no listen socket after start-up");
	snprintf(addr, sizeof addr, v4 ? "%s:%d" : "[%s]:%d", host, a->port);
	jg_log(JG_INFO, "listening", "listen", addr, NULL);
	return 0;
}

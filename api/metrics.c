/*
 * metrics.c -- GET /healthz and GET /metrics (Prometheus text format
 * 0.0.4).  Api thread.
 *
 * The api's own series (enqueues by job and outcome, HTTP responses by
 * code) are plain counters only the api thread writes.  The log's come
 * from log_stats() (its own lock), then the projector, runner and stream
 * sections are appended by their owners.
 */
#include <string.h>

#include "api_int.h"
#include "../common/jg.h"

/* 200 "ok"; 503 "degraded" while new jobs are refused for lack of space
 * (from the first refusal until a trigger is taken again, or until
 * API_FULL_WINDOW_MS pass without one: a load balancer that stopped
 * sending then tries again, which matters once the disk was cleared), or
 * while the projector cannot apply the log (the
 * read model then stops moving: a damaged record needs an operator), or
 * has waited for a lock on jobs.db as long as a list waits for it (lists
 * then answer from a read model that lacks acknowledged jobs). */
int api_healthz(Api *a, ApiReq *r)
{
	Buf *b = &a->job;
	uint64_t seq;
	int rc = proj_failing(a->proj, &seq);
	int64_t stalled = rc ? 0 : proj_stalled_ms(a->proj, &seq);
	int64_t full = log_full_since(a->log, a->full_window_ms);
	int degraded = rc || stalled || full;

	buf_reset(b);
	buf_puts(b, degraded ? "{\"status\":\"degraded\",\"log_seq\":" :
		 "{\"status\":\"ok\",\"log_seq\":");
	buf_u64(b, log_head(a->log));
	buf_puts(b, ",\"projected_seq\":");
	buf_u64(b, proj_applied(a->proj));
	if (full) {
		char t[JG_TIME_LEN + 1];

		jg_fmt_time(full, t);
		buf_printf(b, ",\"error\":\"log: out of space since %s: new jobs get 503 "
			   "storage_full\"", t);
	} else if (rc) {
		buf_printf(b, ",\"error\":\"projector: %s at seq %llu\"", jg_strerror(rc),
			   (unsigned long long)seq);
	} else if (stalled) {
		buf_printf(b, ",\"error\":\"projector: stuck for %lld ms applying seq %llu "
			   "(is jobs.db locked?)\"", (long long)stalled, (unsigned long long)seq);
	}
	buf_puts(b, "}");
	return api_reply(a, r, degraded ? 503 : 200, "cache-control: no-store\r\n", b->p, b->len);
}

/* A histogram from fixed bucket counts (non-cumulative in, cumulative out). */
static void api_histogram(Buf *b, const char *name, const char *help,
			  const uint64_t *counts, const char *const *le, int n,
			  const char *sum, uint64_t count)
{
	uint64_t acc = 0;

	buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (int i = 0; i < n; i++) {
		acc += counts[i];
		buf_printf(b, "%s_bucket{le=\"%s\"} %llu\n", name, le[i], (unsigned long long)acc);
	}
	buf_printf(b, "%s_sum %s\n%s_count %llu\n", name, sum, name, (unsigned long long)count);
}

static void api_log_metrics(Api *a, Buf *b)
{
	static const char *const batch_le[8] = { "1", "4", "16", "64", "256", "1024", "4096", "+Inf" };
	static const char *const fsync_le[8] = { "0.00025", "0.0005", "0.001", "0.0025",
						 "0.005", "0.01", "0.025", "+Inf" };
	char sum[32];
	LogStats st;

	log_stats(a->log, &st);
	snprintf(sum, sizeof sum, "%llu", (unsigned long long)st.events);
	api_histogram(b, "jobgate_log_commit_batch_size", "Events per group commit.",
		      st.batch_hist, batch_le, 8, sum, st.commits);
	snprintf(sum, sizeof sum, "%.6f", (double)st.fsync_ns_total / 1e9);
	api_histogram(b, "jobgate_log_commit_seconds", "Seconds per commit (write + fsync).",
		      st.fsync_hist, fsync_le, 8, sum, st.commits);
	buf_printf(b, "# HELP jobgate_log_head_seq Last committed seq.\n"
		   "# TYPE jobgate_log_head_seq gauge\njobgate_log_head_seq %llu\n",
		   (unsigned long long)log_head(a->log));
	buf_printf(b, "# HELP jobgate_log_queue_length Entries waiting for the writer.\n"
		   "# TYPE jobgate_log_queue_length gauge\njobgate_log_queue_length %llu\n",
		   (unsigned long long)st.queue_len);
	buf_printf(b, "# HELP jobgate_log_batch_max Largest group commit.\n"
		   "# TYPE jobgate_log_batch_max gauge\njobgate_log_batch_max %llu\n",
		   (unsigned long long)st.batch_max);
}

static void api_own_metrics(Api *a, Buf *b)
{
	buf_puts(b, "# HELP jobgate_enqueues_total Trigger requests by job and outcome.\n"
		 "# TYPE jobgate_enqueues_total counter\n");
	for (int j = 0; j < a->cfg->njobs; j++)
		for (int o = 0; o < API_NOUTCOMES; o++)
			buf_printf(b, "jobgate_enqueues_total{job=\"%s\",outcome=\"%s\"} %llu\n",
				   a->cfg->jobs[j].name, api_outcome_name(o),
				   (unsigned long long)a->enq[j * API_NOUTCOMES + o]);
	buf_puts(b, "# HELP jobgate_http_responses_total HTTP responses by status code.\n"
		 "# TYPE jobgate_http_responses_total counter\n");
	/* This response is counted before it is written, so it shows itself. */
	for (int c = 100; c < 600; c++)
		if (a->http[c] || c == 200)
			buf_printf(b, "jobgate_http_responses_total{code=\"%d\"} %llu\n", c,
				   (unsigned long long)(a->http[c] + (c == 200)));
	buf_printf(b, "# HELP jobgate_http_requests_in_flight Requests waiting on the log, runner, "
		   "a /wait or the projector.\n"
		   "# TYPE jobgate_http_requests_in_flight gauge\n"
		   "jobgate_http_requests_in_flight %d\n",
		   a->inflight + a->nwait + atomic_load(&a->nproj_wait));
}

int api_metrics(Api *a, ApiReq *r)
{
	Buf *b = &a->job;

	buf_reset(b);
	api_own_metrics(a, b);
	api_log_metrics(a, b);
	proj_metrics(a->proj, b);
	runner_metrics(a->run, b);
	streams_metrics(a->streams, b);
	if (b->oom)
		return api_reply_error(a, r, 500, "internal", "out of memory");
	return api_reply(a, r, 200, "content-type: text/plain; version=0.0.4\r\n", b->p, b->len);
}

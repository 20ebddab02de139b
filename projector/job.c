/*
 * job.c -- fold events into the job object; render it.
 *
 * These rules are the projection: projector.c writes the same changes in
 * SQL, and docs/architecture.md lists them.  Change all three together.
 */
#include <string.h>

#include "job.h"

static const Span none;

void job_fold(JobState *js, const EventView *ev)
{
	switch (ev->type) {
	case JG_EV_ENQUEUED:
		memset(js, 0, sizeof *js);
		js->id = ev->job_id;
		js->job = ev->job;
		js->max_attempts = ev->max_attempts > 0 ? (uint32_t)ev->max_attempts : 1;
		js->payload = ev->payload;
		js->created_at = ev->at_ms;
		js->idem = ev->idem;
		break;
	case JG_EV_STARTED:
		js->attempts = ev->attempt;
		js->started_at = ev->at_ms;
		js->result = js->error = none;
		js->result_truncated = 0;
		js->has_exit_code = 0;
		js->signal = 0;
		js->finished_at = 0;
		break;
	case JG_EV_SUCCEEDED:
		js->has_exit_code = ev->has_exit_code;
		js->exit_code = ev->exit_code;
		js->result = ev->result;
		js->result_truncated = ev->result_truncated;
		js->finished_at = ev->at_ms;
		break;
	case JG_EV_FAILED:
		js->has_exit_code = ev->has_exit_code;
		js->exit_code = ev->exit_code;
		js->signal = ev->signal;
		js->error = ev->error;
		if (ev->status == JG_ST_FAILED)
			js->finished_at = ev->at_ms;
		break;
	case JG_EV_CANCELED:
		js->finished_at = ev->at_ms;
		break;
	case JG_EV_RETRIED:
		js->finished_at = 0;
		if (ev->max_attempts > 0)
			js->max_attempts = (uint32_t)ev->max_attempts;
		break;
	}
	js->status = ev->status;
	js->seq = ev->seq;
}

static void raw_or_null(Buf *b, Span s)
{
	if (s.n)
		buf_add(b, s.p, s.n);
	else
		buf_puts(b, "null");
}

void job_json(const JobState *js, Buf *b)
{
	buf_puts(b, "{\"id\":");
	buf_u64(b, js->id);
	buf_puts(b, ",\"job\":");
	buf_json_str(b, js->job.p, js->job.n);
	buf_puts(b, ",\"status\":\"");
	buf_puts(b, log_status_name(js->status));
	buf_puts(b, "\",\"attempts\":");
	buf_u64(b, js->attempts);
	buf_puts(b, ",\"max_attempts\":");
	buf_u64(b, js->max_attempts);
	buf_puts(b, ",\"payload\":");
	raw_or_null(b, js->payload);
	buf_puts(b, ",\"result\":");
	raw_or_null(b, js->result);
	if (js->result_truncated)
		buf_puts(b, ",\"result_truncated\":true");
	buf_puts(b, ",\"error\":");
	raw_or_null(b, js->error);
	buf_puts(b, ",\"exit_code\":");
	if (js->has_exit_code)
		buf_i64(b, js->exit_code);
	else
		buf_puts(b, "null");
	if (js->signal) {
		buf_puts(b, ",\"signal\":");
		buf_i64(b, js->signal);
	}
	buf_puts(b, ",\"created_at\":");
	buf_json_time(b, js->created_at);
	buf_puts(b, ",\"started_at\":");
	buf_json_time(b, js->started_at);
	buf_puts(b, ",\"finished_at\":");
	buf_json_time(b, js->finished_at);
	buf_puts(b, ",\"seq\":");
	buf_u64(b, js->seq);
	buf_puts(b, ",\"idempotency_key\":");
	raw_or_null(b, js->idem);
	buf_puts(b, "}");
}

/*
 * event.h -- the type-specific members of each event (SPEC §5), written
 * by the appenders and read back by the projector, the runner and the api.
 *
 * Builders fill a LogEntry (see log.h) for log_submit(): common header
 * fields plus e->extra.  Strings are copied; the entry owns them until its
 * done() ran and the owner calls event_entry_free().
 *
 * event_decode() parses one stored event's JSON with jsmn; the EventView
 * spans borrow from the LogEvent (valid as long as it is).  Spans of JSON
 * strings include their quotes (raw JSON); use json_str() to unescape.
 */
#ifndef JG_EVENT_H
#define JG_EVENT_H

#include <stddef.h>
#include <stdint.h>
#include "log.h"

typedef struct Span { const char *p; size_t n; } Span;	/* n == 0: absent */

/* job.enqueued: payload is validated JSON text (n == 0 means null);
 * idem/actor NULL when absent.  The idempotency scope (actor, job, key)
 * is set up in e->idem by the builder. */
int event_enqueued(LogEntry *e, const char *job, const char *payload, size_t n,
		   const char *idem, size_t idem_n, const char *actor, int max_attempts);
int event_started(LogEntry *e, const char *job, uint64_t job_id, uint32_t attempt);
/* result is raw JSON text (the runner turns non-JSON stdout into a string). */
int event_succeeded(LogEntry *e, const char *job, uint64_t job_id, uint32_t attempt,
		    int exit_code, const char *result, size_t n, int truncated,
		    int64_t duration_ms);
/* exit_code < 0: absent (killed by signal sig).  retry_at_ms > 0: another
 * attempt follows and the status is queued, else failed. */
int event_failed(LogEntry *e, const char *job, uint64_t job_id, uint32_t attempt,
		 int exit_code, int sig, const char *error, int64_t retry_at_ms,
		 int64_t duration_ms);
int event_canceled(LogEntry *e, const char *job, uint64_t job_id, uint32_t attempt,
		   const char *actor);
/* job.retried: back to queued; attempt is the attempt that will run next,
 * max_attempts the job's cap from now on (at least attempt). */
int event_retried(LogEntry *e, const char *job, uint64_t job_id, uint32_t attempt,
		  const char *actor, uint32_t max_attempts);
void event_entry_free(LogEntry *e);	/* frees extra and idem; not e itself */

typedef struct EventView {
	uint64_t seq, job_id;
	int      type, status;
	uint32_t attempt;
	int64_t  at_ms;
	Span     job;		/* unquoted name bytes */
	Span     payload;	/* raw JSON (enqueued) */
	Span     idem;		/* raw JSON string or null */
	Span     actor;		/* raw JSON string */
	Span     result;	/* raw JSON (succeeded) */
	int      result_truncated;
	Span     error;		/* raw JSON string (failed) */
	int      has_exit_code;
	int64_t  exit_code;
	int      signal;	/* 0 = none */
	int64_t  duration_ms;	/* -1 = absent */
	int64_t  retry_at_ms;	/* 0 = absent */
	int      max_attempts;	/* enqueued */
	/* The JSON's own copies of header fields, for `log verify` to compare
	 * (spans n == 0 and numbers -1 when absent). */
	Span     j_type, j_status, j_job, j_at;	/* raw JSON strings */
	int64_t  j_job_id, j_attempt;
} EventView;

/* 0, or JG_ECORRUPT when the JSON does not hold what the type needs. */
int event_decode(const LogEvent *ev, EventView *out);
/* Only what the binary header holds (seq, job_id, type, status, attempt,
 * at, job); every JSON member absent.  Enough for started/canceled. */
void event_view_header(const LogEvent *ev, EventView *out);

#endif

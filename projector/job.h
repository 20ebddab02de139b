/*
 * job.h -- the job object of SPEC §4.2 and the fold that builds it.
 *
 * The projection is a pure function of the log: job_fold() applies one
 * event to a JobState, and the same rules drive the projector's SQL
 * (projector.c) so a job read from SQLite and one folded from the log
 * render identically with job_json().
 *
 * Spans in a JobState borrow from whatever filled them (an LMDB snapshot
 * or a SQLite row); job_json() must run while those are valid.
 */
#ifndef JG_JOB_H
#define JG_JOB_H

#include "../common/buf.h"
#include "../log/event.h"

typedef struct JobState {
	uint64_t id, seq;
	Span     job;		/* name, unquoted */
	int      status;	/* JG_ST_* */
	uint32_t attempts, max_attempts;
	Span     payload;	/* raw JSON */
	Span     result;	/* raw JSON, n == 0: null */
	int      result_truncated;
	Span     error;		/* raw JSON string, n == 0: null */
	int      has_exit_code;
	int64_t  exit_code;
	int      signal;
	int64_t  created_at, started_at, finished_at;	/* ms, 0 = null */
	Span     idem;		/* raw JSON string, n == 0: null */
} JobState;

/* Apply ev (decoded) to js.  An enqueued event resets js. */
void job_fold(JobState *js, const EventView *ev);
/* The §4.2 object: {"id":..,"job":..,"status":..,...}. */
void job_json(const JobState *js, Buf *b);

#endif

/*
 * reader.c -- the read side of the log: snapshots (LogReader) over the
 * events and by-job databases, record decoding (format: top of log.c),
 * rendering, and the operator views behind `jobgate log stat|verify`.
 * Every function here runs on the caller's thread inside its own LMDB read
 * txn; none writes.
 */
#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/jg.h"
#include "../common/json.h"
#include "event.h"
#include "log.h"
#include "log_int.h"

/* ---- records ---- */

int log_decode(uint64_t seq, const MDB_val *v, LogEvent *ev)
{
	const unsigned char *p = v->mv_data;
	size_t n = v->mv_size;

	ev->seq = seq;		/* also when damaged: callers name it */
	if (n < REC_HDR + 2 || p[0] != REC_VERSION)
		return JG_ECORRUPT;
	ev->type = p[1];
	ev->status = p[2];
	ev->job_len = p[3];
	memcpy(&ev->attempt, p + 4, 4);
	memcpy(&ev->job_id, p + 8, 8);
	memcpy(&ev->at_ms, p + 16, 8);
	memcpy(&ev->pay_off, p + 24, 4);
	memcpy(&ev->pay_len, p + 28, 4);
	if (REC_HDR + ev->job_len + 2 > n)
		return JG_ECORRUPT;
	ev->job = (const char *)p + REC_HDR;
	ev->json = ev->job + ev->job_len;
	ev->json_len = n - REC_HDR - ev->job_len;
	if (ev->json[0] != '{' || ev->json[ev->json_len - 1] != '}' ||
	    (uint64_t)ev->pay_off + ev->pay_len > ev->json_len - 1 ||
	    (ev->pay_len && ev->pay_off < 1) ||	/* the member follows the "{" */
	    ev->type < JG_EV_ENQUEUED || ev->type > JG_EV_RETRIED ||
	    ev->status < JG_ST_QUEUED || ev->status > JG_ST_CANCELED)
		return JG_ECORRUPT;
	return 0;
}

void log_event_json(const LogEvent *ev, Buf *b, int with_payload)
{
	buf_puts(b, "{\"seq\":");
	buf_u64(b, ev->seq);
	buf_puts(b, ",");
	if (with_payload || !ev->pay_len) {
		buf_add(b, ev->json + 1, ev->json_len - 1);
		return;
	}
	buf_add(b, ev->json + 1, ev->pay_off - 1);
	buf_add(b, ev->json + ev->pay_off + ev->pay_len,
		ev->json_len - ev->pay_off - ev->pay_len);
}

/* ---- readers ---- */

int log_reader_open(Log *l, LogReader **out)
{
	LogReader *r = calloc(1, sizeof *r);

	if (!r)
		return ENOMEM;
	r->l = l;
	*out = r;
	return 0;
}

int log_reader_begin(LogReader *r)
{
	int rc;

	if (r->active)
		log_reader_end(r);
	rc = r->txn ? mdb_txn_renew(r->txn)
		    : mdb_txn_begin(r->l->env, NULL, MDB_RDONLY, &r->txn);
	if (rc != 0)
		return log_mdb_rc(rc);
	if (r->cur)
		rc = mdb_cursor_renew(r->txn, r->cur);
	else
		rc = mdb_cursor_open(r->txn, r->l->events, &r->cur);
	if (rc == 0)
		rc = r->jcur ? mdb_cursor_renew(r->txn, r->jcur)
			     : mdb_cursor_open(r->txn, r->l->byjob, &r->jcur);
	if (rc == 0)
		rc = log_last_seq(r->txn, r->l->events, &r->head);
	if (rc != 0) {
		mdb_txn_reset(r->txn);
		return log_mdb_rc(rc);
	}
	r->active = 1;
	return 0;
}

void log_reader_end(LogReader *r)
{
	if (r && r->active) {
		mdb_txn_reset(r->txn);
		r->active = 0;
	}
}

void log_reader_close(LogReader *r)
{
	if (!r)
		return;
	if (r->cur)
		mdb_cursor_close(r->cur);
	if (r->jcur)
		mdb_cursor_close(r->jcur);
	if (r->txn)
		mdb_txn_abort(r->txn);
	free(r);
}

static int ensure(LogReader *r)
{
	return r->active ? 0 : log_reader_begin(r);
}

uint64_t log_reader_head(LogReader *r)
{
	return ensure(r) == 0 ? r->head : 0;
}

static int cur_event(int rc, const MDB_val *k, const MDB_val *v, LogEvent *ev)
{
	uint64_t seq;

	if (rc != 0)
		return log_mdb_rc(rc);
	if (k->mv_size != 8)
		return JG_ECORRUPT;
	memcpy(&seq, k->mv_data, 8);
	return log_decode(seq, v, ev);
}

int log_reader_get(LogReader *r, uint64_t seq, LogEvent *ev)
{
	MDB_val k = { 8, &seq }, v;
	int rc;

	if ((rc = ensure(r)) != 0)
		return rc;
	rc = mdb_get(r->txn, r->l->events, &k, &v);
	return rc ? log_mdb_rc(rc) : log_decode(seq, &v, ev);
}

int log_reader_seek(LogReader *r, uint64_t from, LogEvent *ev)
{
	MDB_val k = { 8, &from }, v;
	int rc;

	if ((rc = ensure(r)) != 0)
		return rc;
	rc = mdb_cursor_get(r->cur, &k, &v, MDB_SET_RANGE);
	return cur_event(rc, &k, &v, ev);
}

int log_reader_next(LogReader *r, LogEvent *ev)
{
	MDB_val k, v;

	if (!r->active)
		return JG_EINVAL;
	return cur_event(mdb_cursor_get(r->cur, &k, &v, MDB_NEXT), &k, &v, ev);
}

static int job_event(LogReader *r, int rc, const MDB_val *v, LogEvent *ev)
{
	uint64_t seq;

	if (rc != 0)
		return log_mdb_rc(rc);
	if (v->mv_size != 8)
		return JG_ECORRUPT;
	memcpy(&seq, v->mv_data, 8);
	rc = log_reader_get(r, seq, ev);
	return rc == JG_ENOTFOUND ? JG_ECORRUPT : rc;
}

int log_reader_job_seek(LogReader *r, uint64_t job_id, uint64_t from, LogEvent *ev)
{
	MDB_val k = { 8, &job_id }, v = { 8, &from };
	int rc;

	if ((rc = ensure(r)) != 0)
		return rc;
	rc = mdb_cursor_get(r->jcur, &k, &v, MDB_GET_BOTH_RANGE);
	return job_event(r, rc, &v, ev);
}

int log_reader_job_next(LogReader *r, LogEvent *ev)
{
	MDB_val k, v;

	if (!r->active)
		return JG_EINVAL;
	return job_event(r, mdb_cursor_get(r->jcur, &k, &v, MDB_NEXT_DUP), &v, ev);
}

uint64_t log_reader_job_last(LogReader *r, uint64_t job_id)
{
	MDB_val k = { 8, &job_id }, v;
	uint64_t seq = 0;
	int rc;

	if (ensure(r) != 0)
		return 0;
	rc = mdb_cursor_get(r->jcur, &k, &v, MDB_SET);
	if (rc == 0)
		rc = mdb_cursor_get(r->jcur, &k, &v, MDB_LAST_DUP);
	if (rc == 0 && v.mv_size == 8)
		memcpy(&seq, v.mv_data, 8);
	else if (rc != 0 && rc != MDB_NOTFOUND)
		log_mdb_rc(rc);	/* damage ends a server; anything else is logged */
	return seq;
}

/* ---- operator views ---- */

unsigned log_verify_batch = 65536;	/* events per snapshot (log_int.h) */

int log_info(Log *l, LogInfo *out)
{
	MDB_envinfo ei;
	MDB_stat ms;
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_val k, v;
	int rc;

	memset(out, 0, sizeof *out);
	if ((rc = mdb_txn_begin(l->env, NULL, MDB_RDONLY, &txn)) != 0)
		return log_mdb_rc(rc);
	if ((rc = mdb_stat(txn, l->events, &ms)) != 0 ||
	    (rc = log_last_seq(txn, l->events, &out->head)) != 0 ||
	    (rc = mdb_cursor_open(txn, l->events, &c)) != 0)
		goto out;
	out->count = ms.ms_entries;
	rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
	mdb_cursor_close(c);
	if (rc == MDB_NOTFOUND)
		rc = 0;
	else if (rc == 0 && k.mv_size == 8)
		memcpy(&out->first, k.mv_data, 8);
	else if (rc == 0)
		rc = JG_ECORRUPT;
	if (rc != 0)
		goto out;
	mdb_env_info(l->env, &ei);
	mdb_env_stat(l->env, &ms);
	out->bytes = (uint64_t)(ei.me_last_pgno + 1) * ms.ms_psize;
	out->map_bytes = ei.me_mapsize;
out:
	mdb_txn_abort(txn);
	return log_mdb_rc(rc);
}

/* s is the JSON string "str" (names and type/status words never need
 * escapes, so bytes compare exactly). */
static int span_is(Span s, const char *str, size_t n)
{
	return s.n == n + 2 && s.p[0] == '"' && memcmp(s.p + 1, str, n) == 0 &&
	       s.p[n + 1] == '"';
}

/* Which field the binary header and the JSON disagree on, or NULL.
 * Consumers act on the header (projector, runner, filters) while clients
 * read the JSON, so a record where they differ is damage that decodes. */
static const char *header_mismatch(const LogEvent *ev, const EventView *v)
{
	static const char pay[] = ",\"payload\":";
	const char *t = log_type_name(ev->type), *st = log_status_name(ev->status);
	int64_t at;

	if (!span_is(v->j_type, t, strlen(t)))
		return "type";
	if (!span_is(v->j_status, st, strlen(st)))
		return "status";
	if (v->j_job_id < 0 || (uint64_t)v->j_job_id != ev->job_id)
		return "job_id";
	if (!span_is(v->j_job, ev->job, ev->job_len))
		return "job";
	if (ev->type == JG_EV_ENQUEUED ? v->j_attempt != -1
				       : v->j_attempt < 0 || (uint64_t)v->j_attempt != ev->attempt)
		return "attempt";
	if (v->j_at.n < 2 || jg_parse_time(v->j_at.p + 1, v->j_at.n - 2, &at) != 0 ||
	    at != ev->at_ms)
		return "at";
	/* The span readers cut to leave the payload out must be exactly the
	 * member: ",\"payload\":" and the value event_decode found. */
	if (ev->pay_len ? ev->pay_len < sizeof pay - 1 ||
			  memcmp(ev->json + ev->pay_off, pay, sizeof pay - 1) != 0 ||
			  v->payload.p != ev->json + ev->pay_off + sizeof pay - 1 ||
			  v->payload.n != ev->pay_len - (sizeof pay - 1)
			: v->payload.n != 0)
		return "payload";
	return NULL;
}

/* One record decodes and makes sense (log.h). */
int log_event_verify(const LogEvent *ev, char *msg, size_t cap)
{
	EventView v;
	const char *what;
	size_t at;

	/* event_decode reads members leniently (jsmn); what clients get must
	 * be JSON.  json_stored_error_at is strict but for lone surrogate
	 * escapes (records written before they were refused may hold them)
	 * and allows one level more than a payload or result may have (the
	 * event wraps them: helper 52).  A damaged byte inside a key passed
	 * the first and broke every stream that relayed it (fuzz_event). */
	if (event_decode(ev, &v) != 0 || json_stored_error_at(ev->json, ev->json_len, &at) != 0) {
		snprintf(msg, cap, "seq %llu: event JSON does not decode",
			 (unsigned long long)ev->seq);
		return JG_ECORRUPT;
	}
	if ((what = header_mismatch(ev, &v)) != NULL) {
		snprintf(msg, cap, "seq %llu: the record's header and its JSON disagree on %s",
			 (unsigned long long)ev->seq, what);
		return JG_ECORRUPT;
	}
	if (ev->type == JG_EV_ENQUEUED ? ev->job_id != ev->seq : ev->job_id >= ev->seq) {
		snprintf(msg, cap, "seq %llu: job_id %llu is impossible",
			 (unsigned long long)ev->seq, (unsigned long long)ev->job_id);
		return JG_ECORRUPT;
	}
	return 0;
}

int log_verify(Log *l, uint64_t *upto, char *msg, size_t cap)
{
	LogReader *r;
	LogEvent ev;
	uint64_t want = 1, head = 0;
	int rc, n, first = 1;

	msg[0] = 0;
	*upto = 0;
	if ((rc = log_reader_open(l, &r)) != 0)
		return rc;
	/* Up to the head of the first snapshot, each batch in a snapshot of
	 * its own: one long read txn beside a running server would pin every
	 * page its writer replaces meanwhile, and the map would grow. */
	do {
		if ((rc = log_reader_begin(r)) != 0)
			goto out;
		if (first) {
			head = log_reader_head(r);
			first = 0;
		}
		n = 0;
		rc = want <= head ? log_reader_seek(r, want, &ev) : JG_ENOTFOUND;
		for (; rc == 0 && n < (int)log_verify_batch; n++) {
			if (ev.seq != want) {
				snprintf(msg, cap, "seq %llu follows %llu: gap",
					 (unsigned long long)ev.seq, (unsigned long long)want - 1);
				rc = JG_ECORRUPT;
				break;
			}
			if ((rc = log_event_verify(&ev, msg, cap)) != 0 || ++want > head)
				break;
			rc = log_reader_next(r, &ev);
		}
		log_reader_end(r);
		if (rc == JG_ECORRUPT && !msg[0])
			snprintf(msg, cap, "record after seq %llu does not decode",
				 (unsigned long long)want - 1);
		if (rc != 0 && rc != JG_ENOTFOUND)
			goto out;
	} while (n == (int)log_verify_batch && want <= head);
	if (want <= head) {	/* the snapshot's head is missing: a gap at the end */
		snprintf(msg, cap, "seq %llu is missing", (unsigned long long)want);
		rc = JG_ECORRUPT;
		goto out;
	}
	rc = 0;
	*upto = head;
out:
	log_reader_close(r);
	return rc;
}

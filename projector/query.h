/*
 * query.h -- read-only queries on the read model, for the api thread.
 *
 * A Query holds one read-only SQLite connection and its prepared
 * statements; it belongs to the thread that opened it.  WAL readers never
 * block the projector nor are blocked by it.  Output is appended to a Buf.
 */
#ifndef JG_QUERY_H
#define JG_QUERY_H

#include <stdint.h>
#include "../common/buf.h"

typedef struct Query Query;

int  query_open(Query **out, const char *db_path);
void query_close(Query *q);		/* NULL is a no-op */
/* The job object of id into out; JG_ENOTFOUND if no row. *seq gets the
 * row's seq (last applied event of the job). */
int  query_job(Query *q, uint64_t id, Buf *out, uint64_t *seq);
/* {"jobs":[...],"next_cursor":"..."|null}, newest first.  job NULL = any,
 * status 0 = any, limit 1..1000, cursor NULL = first page.  The page ends
 * early, with a next_cursor, once it holds max_bytes (it always holds one
 * job).  JG_EINVAL for a malformed cursor. */
#define QUERY_PAGE_BYTES (16u << 20)	/* max_bytes of GET /jobs */
int  query_list(Query *q, const char *job, int status, int limit, size_t max_bytes,
		const char *cursor, Buf *out);

#endif

/*
 * fuzz_event.c -- libFuzzer target for reading stored log records: the
 * framing (log_decode), the JSON members (event_decode), the checks of
 * `log verify` (log_event_verify: the binary header against the JSON) and
 * the rendering every reader sends to clients (log_event_json).  A damaged
 * data.mdb hands any bytes to these, and LMDB keeps no checksums.
 *
 * An input is the record's seq (8 bytes, little-endian) and its bytes.
 * Properties checked on every input:
 *  - nothing reads outside the record (ASan) and nothing crashes;
 *  - a record that verifies renders, with and without its payload, to one
 *    valid JSON object (what /events, /ws and `log dump` send);
 *  - a record that verifies decodes (event_decode) with the header's type.
 */
#include "../../common/buf.h"
#include "../../common/json.h"
#include "../../log/event.h"
#include "../../log/log.h"
#include "../../log/log_int.h"

#include <stdlib.h>
#include <string.h>

#define FUZZ_ASSERT(c) do { if (!(c)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t n)
{
	unsigned char *copy;
	uint64_t seq;
	MDB_val v;
	LogEvent ev;
	EventView view;
	Buf b = {0};
	char msg[256];

	if (n < 8 || !(copy = malloc(n - 8 ? n - 8 : 1)))	/* exact size: ASan sees over-reads */
		return 0;
	memcpy(&seq, data, 8);
	memcpy(copy, data + 8, n - 8);
	v.mv_size = n - 8;
	v.mv_data = copy;
	if (log_decode(seq, &v, &ev) == 0) {
		int ok = log_event_verify(&ev, msg, sizeof msg) == 0;

		if (ok) {
			FUZZ_ASSERT(event_decode(&ev, &view) == 0 && view.type == ev.type);
			for (int with = 0; with < 2; with++) {
				buf_reset(&b);
				log_event_json(&ev, &b, with);
				FUZZ_ASSERT(!b.oom && json_valid(b.p, b.len) == 0);
			}
		} else {
			(void)event_decode(&ev, &view);
		}
	}
	buf_free(&b);
	free(copy);
	return 0;
}

/*
 * cmd_log.c -- `jobgate log dump|stat|verify`: read-only views of the
 * event log, safe beside a running server (LMDB readers take no locks
 * that block the writer).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/jg.h"
#include "../log/log.h"
#include "cli.h"

static const char usage[] =
	"usage: jobgate log dump   [--data-dir DIR] [--from SEQ] [--to SEQ]\n"
	"       jobgate log stat   [--data-dir DIR]\n"
	"       jobgate log verify [--data-dir DIR]\n"
	"\n"
	"  dump    print events as JSON lines, payloads included\n"
	"  stat    print head seq, event count and bytes as one JSON object\n"
	"  verify  check seqs are contiguous and every record decodes;\n"
	"          exit 1 on damage\n"
	"  --data-dir DIR  the server's data directory (default ./data)\n";

#define DUMP_BATCH_EVENTS 4096
#define DUMP_BATCH_BYTES  (1 << 20)	/* or once a batch holds this much */

typedef struct LogArgs {
	const char *dir;
	uint64_t from, to;
} LogArgs;

static int parse_seq(const char *cmd, const char *opt, const char *s, uint64_t *out)
{
	if (jg_parse_u64(s, strlen(s), out) != 0)
		return cli_bad(cmd, "%s expects a non-negative integer", opt);
	return 0;
}

static int parse_args(int argc, char **argv, const char *cmd, int seqs, LogArgs *a)
{
	const char *v;
	int rc, from_set = 0;

	a->dir = "./data";
	a->from = 1;
	a->to = UINT64_MAX;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--data-dir")) {
			if ((rc = cli_value(argc, argv, &i, cmd, &a->dir)) != 0)
				return rc;
		} else if (seqs && !strcmp(argv[i], "--from")) {
			if ((rc = cli_value(argc, argv, &i, cmd, &v)) != 0 ||
			    (rc = parse_seq(cmd, "--from", v, &a->from)) != 0)
				return rc;
			from_set = 1;
		} else if (seqs && !strcmp(argv[i], "--to")) {
			if ((rc = cli_value(argc, argv, &i, cmd, &v)) != 0 ||
			    (rc = parse_seq(cmd, "--to", v, &a->to)) != 0)
				return rc;
		} else {
			return cli_bad(cmd, "unknown argument '%s'", argv[i]);
		}
	}
	/* Seqs start at 1: --to 0 alone is an empty range, like
	 * --from 0 --to 0; only a --from given after --to is a mistake. */
	if (from_set && a->from > a->to)
		return cli_bad(cmd, "--from %llu is after --to %llu",
			       (unsigned long long)a->from, (unsigned long long)a->to);
	return 0;
}

/* Every record in range (up to the head when it starts) as a JSON line;
 * one that does not decode is named on stderr instead (it would not be
 * JSON), and the exit is 1.  Read in batches, each in a snapshot of its
 * own that ends before the batch is written: a dump blocked on a slow
 * stdout (a pager) must not hold a read txn, which beside a running
 * server pins every page the writer replaces and grows the map. */
static int dump(Log *l, const LogArgs *a)
{
	LogReader *r;
	LogEvent ev;
	Buf b = {0};
	char msg[256];
	uint64_t next = a->from, to = a->to;
	int rc, bad = 0, first = 1, more, n;

	if ((rc = log_reader_open(l, &r)) != 0)
		return rc;
	do {
		if ((rc = log_reader_begin(r)) != 0)
			break;
		if (first && log_reader_head(r) < to)
			to = log_reader_head(r);
		first = 0;
		buf_reset(&b);
		more = n = 0;
		ev.seq = 0;
		rc = next <= to ? log_reader_seek(r, next, &ev) : JG_ENOTFOUND;
		for (;; ev.seq = 0, rc = log_reader_next(r, &ev)) {
			/* A record whose header does not decode still names its
			 * seq (log_reader_next): say so and go on past it. */
			if (rc == JG_ECORRUPT && ev.seq >= next && ev.seq <= to) {
				fprintf(stderr, "jobgate log dump: damaged: seq %llu: the record "
					"does not decode\n", (unsigned long long)ev.seq);
				bad = 1;
			} else if (rc != 0 || ev.seq > to) {
				if (rc == JG_ECORRUPT && ev.seq > to)
					rc = JG_ENOTFOUND;	/* damage past --to is not ours */
				break;
			} else if (log_event_verify(&ev, msg, sizeof msg) != 0) {
				fprintf(stderr, "jobgate log dump: damaged: %s\n", msg);
				bad = 1;
			} else {
				log_event_json(&ev, &b, 1);
				buf_puts(&b, "\n");
			}
			next = ev.seq + 1;
			if (++n == DUMP_BATCH_EVENTS || b.len >= DUMP_BATCH_BYTES) {
				more = 1;
				break;
			}
		}
		log_reader_end(r);
		if (b.oom) {
			rc = ENOMEM;
			break;
		}
		if (b.len && fwrite(b.p, 1, b.len, stdout) != b.len) {
			rc = errno;
			break;
		}
	} while (more);
	log_reader_close(r);
	buf_free(&b);
	if (rc == JG_ECORRUPT) {
		fprintf(stderr, "jobgate log dump: damaged: a record after the last one printed "
			"does not decode\n");
		return rc;
	}
	if (rc != 0 && rc != JG_ENOTFOUND)
		return rc;
	return bad ? JG_ECORRUPT : 0;
}

static int stat_log(Log *l)
{
	LogInfo i;
	int rc = log_info(l, &i);

	if (rc == 0)
		printf("{\"head_seq\":%llu,\"first_seq\":%llu,\"events\":%llu,"
		       "\"bytes\":%llu,\"map_bytes\":%llu}\n",
		       (unsigned long long)i.head, (unsigned long long)i.first,
		       (unsigned long long)i.count, (unsigned long long)i.bytes,
		       (unsigned long long)i.map_bytes);
	return rc;
}

static int verify(Log *l)
{
	char msg[512];
	uint64_t head;
	int rc = log_verify(l, &head, msg, sizeof msg);

	if (rc == JG_ECORRUPT) {
		printf("damaged: %s\n", msg);
		return rc;
	}
	if (rc == 0)
		printf("ok: %llu events, seqs 1..%llu contiguous, every record decodes\n",
		       (unsigned long long)head, (unsigned long long)head);
	return rc;
}

int cmd_log(int argc, char **argv)
{
	LogArgs a;
	Log *l;
	const char *sub = argc > 1 ? argv[1] : "";
	char cmd[32];
	int rc;

	if (!strcmp(sub, "--help") || !strcmp(sub, "-h")) {
		fputs(usage, stdout);
		return 0;
	}
	if (strcmp(sub, "dump") && strcmp(sub, "stat") && strcmp(sub, "verify")) {
		fprintf(stderr, "jobgate log: expected dump, stat or verify (see 'jobgate log --help')\n");
		return 2;
	}
	for (int i = 2; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(usage, stdout);
			return 0;
		}
	snprintf(cmd, sizeof cmd, "log %s", sub);
	if ((rc = parse_args(argc - 1, argv + 1, cmd, !strcmp(sub, "dump"), &a)) != 0)
		return rc;
	if ((rc = cli_open_log("log", a.dir, &l)) != 0)
		return rc;
	if (!strcmp(sub, "dump"))
		rc = dump(l, &a);
	else if (!strcmp(sub, "stat"))
		rc = stat_log(l);
	else
		rc = verify(l);
	log_close(l);
	if (fflush(stdout) != 0 && rc == 0)
		rc = errno;
	if (rc != 0 && rc != JG_ECORRUPT)
		fprintf(stderr, "jobgate %s: %s\n", cmd, jg_strerror(rc));
	return rc ? 1 : 0;
}

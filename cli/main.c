/*
 * main.c -- the jobgate binary: dispatch to a subcommand.
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/jg.h"
#include "../log/log.h"
#include "cli.h"

static const char usage[] =
	"usage: jobgate <command> [options]\n"
	"\n"
	"commands:\n"
	"  serve [--config FILE] [--listen HOST:PORT] [--data-dir DIR]\n"
	"                      run the gateway\n"
	"  replay [--data-dir DIR] [--out FILE] [--check]\n"
	"                      rebuild the SQLite read model from the log\n"
	"  log dump|stat|verify [--data-dir DIR]\n"
	"                      inspect the event log\n"
	"\n"
	"Run 'jobgate <command> --help' for a command's options.\n";

int cli_bad(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "jobgate %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see 'jobgate %s --help')\n", cmd);
	return 2;
}

int cli_value(int argc, char **argv, int *i, const char *cmd, const char **out)
{
	if (*i + 1 >= argc || argv[*i + 1][0] == '\0')
		return cli_bad(cmd, "option %s needs a value", argv[*i]);
	*out = argv[++*i];
	return 0;
}

int cli_open_log(const char *cmd, const char *dir, Log **l)
{
	char path[4200];
	struct stat st;
	LogOptions o = { 1, 0, 0 };
	int rc;

	snprintf(path, sizeof path, "%s/log/data.mdb", dir);
	if (stat(path, &st) != 0) {
		fprintf(stderr, "jobgate %s: no event log in %s (expected %s)\n", cmd, dir, path);
		return 1;
	}
	if (st.st_size == 0) {
		fprintf(stderr, "jobgate %s: the event log file %s is empty (damaged)\n", cmd, path);
		return 1;
	}
	if ((rc = log_open(l, dir, &o)) != 0) {
		fprintf(stderr, "jobgate %s: cannot open the event log in %s: %s\n",
			cmd, dir, jg_strerror(rc));
		return 1;
	}
	return 0;
}

/* A command whose output was lost (a full disk, a closed pipe) did not
 * succeed: exit 1, whatever it returned. */
static int out_checked(int rc)
{
	if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout))) {
		fprintf(stderr, "jobgate: cannot write the output: %s\n", strerror(errno));
		return 1;
	}
	return rc;
}

int main(int argc, char **argv)
{
	/* No allocation statistics: they take a global mutex on every
	 * SQLite malloc, and nothing here reads them.  Must precede any
	 * other SQLite call. */
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	if (argc < 2) {		/* bad arguments: one line, like every command */
		fputs("jobgate: missing command: serve, replay or log (see 'jobgate --help')\n", stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(usage, stdout);
		return out_checked(0);
	}
	if (!strcmp(argv[1], "serve"))
		return cmd_serve(argc - 1, argv + 1);
	if (!strcmp(argv[1], "log"))
		return out_checked(cmd_log(argc - 1, argv + 1));
	if (!strcmp(argv[1], "replay"))
		return out_checked(cmd_replay(argc - 1, argv + 1));
	fprintf(stderr, "jobgate: unknown command '%s' (see 'jobgate --help')\n", argv[1]);
	return 2;
}

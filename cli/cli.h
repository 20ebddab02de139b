/*
 * cli.h -- subcommands of the jobgate binary.  Each returns the process
 * exit code: 0 ok, 1 failure at run time, 2 bad arguments (after printing
 * one line to stderr).  Every one prints its usage on --help.
 */
#ifndef JG_CLI_H
#define JG_CLI_H

int cmd_serve(int argc, char **argv);	/* jobgate serve ... */
int cmd_log(int argc, char **argv);	/* jobgate log dump|stat|verify ... */
int cmd_replay(int argc, char **argv);	/* jobgate replay ... (cli/cmd_replay.c) */

/* Shared argument helpers.  *i is the index of the option; on success it
 * is advanced past the value.  Print the one-line error and return 2. */
int cli_value(int argc, char **argv, int *i, const char *cmd, const char **out);
/* Open DIR's event log read-only for subcommand cmd: 0, or 1 after a
 * one-line message (no log there, or it cannot be opened). */
struct Log;
int cli_open_log(const char *cmd, const char *dir, struct Log **l);
int cli_bad(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif

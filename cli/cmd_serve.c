/*
 * cmd_serve.c -- `jobgate serve`: load the config, own the data dir, wire
 * the four roles together and run until SIGINT/SIGTERM/SIGHUP.
 *
 * Start order follows the watcher rule (log_watch before log_start):
 * open log -> open projector, runner, api (each registers a watcher) ->
 * start log writer, projector, runner -> run the api loop on this thread.
 * Stop order drains from the edge inward: the api answers what it owes
 * (new requests get 503) and closes its connections, the runner finishes
 * or interrupts jobs (appending their events), the projector catches up
 * with the head, and the log commits the rest.
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../api/api.h"
#include "../common/config.h"
#include "../common/jg.h"
#include "../log/log.h"
#include "../projector/projector.h"
#include "../runner/runner.h"
#include "cli.h"

#define SHUTDOWN_GRACE_S 10

static const char usage[] =
	"usage: jobgate serve [--config FILE] [--listen HOST:PORT] [--data-dir DIR]\n"
	"\n"
	"  --config FILE       JSON configuration (default: embedded: one builtin\n"
	"                      job 'echo', listen 127.0.0.1:8080, data dir ./data)\n"
	"  --listen HOST:PORT  overrides the config; port 0 picks a free port\n"
	"  --data-dir DIR      overrides the config\n"
	"\n"
	"Token: env JOBGATE_TOKEN adds one; with no token at all, one is\n"
	"generated, saved in DIR/token (mode 0600) and printed once.\n"
	"SIGINT/SIGTERM/SIGHUP stop gracefully; a second one, 0.5 s or more later,\n"
	"exits at once (code 1).\n";

typedef struct ServeArgs {
	const char *config, *listen, *data_dir;
} ServeArgs;

static int parse_args(int argc, char **argv, ServeArgs *a)
{
	int rc;

	memset(a, 0, sizeof *a);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--config"))
			rc = cli_value(argc, argv, &i, "serve", &a->config);
		else if (!strcmp(argv[i], "--listen"))
			rc = cli_value(argc, argv, &i, "serve", &a->listen);
		else if (!strcmp(argv[i], "--data-dir"))
			rc = cli_value(argc, argv, &i, "serve", &a->data_dir);
		else
			rc = cli_bad("serve", "unknown argument '%s'", argv[i]);
		if (rc)
			return rc;
	}
	return 0;
}

/* Load config and apply overrides; exit code or 0. */
static int load_config(const ServeArgs *a, Config **cfg)
{
	char err[512];
	int rc;

	rc = a->config ? config_load(a->config, cfg, err, sizeof err)
		       : config_default(cfg);
	if (rc != 0) {
		/* config_load's message names the file when it cannot read it. */
		if (!a->config || err[0] == '\0')
			snprintf(err, sizeof err, "%s", jg_strerror(rc));
		if (a->config && strncmp(err, a->config, strlen(a->config)) == 0)
			fprintf(stderr, "jobgate serve: %s\n", err);
		else
			fprintf(stderr, "jobgate serve: %s: %s\n",
				a->config ? a->config : "default config", err);
		return 2;
	}
	if (a->listen && config_set_listen(*cfg, a->listen) != 0) {
		fprintf(stderr, "jobgate serve: --listen: expected HOST:PORT, got '%s'\n", a->listen);
		return 2;
	}
	if (a->data_dir) {
		if (strlen(a->data_dir) >= sizeof (*cfg)->data_dir) {
			fprintf(stderr, "jobgate serve: --data-dir: path too long\n");
			return 2;
		}
		snprintf((*cfg)->data_dir, sizeof (*cfg)->data_dir, "%s", a->data_dir);
	}
	return 0;
}

/* Read DATA/token, or create it with a fresh random token.  *created says
 * which.  The token never goes to the log stream. */
static int data_token(const char *dir, char *tok, size_t cap, int *created)
{
	char path[4200];
	unsigned char raw[24];
	ssize_t n;
	int fd;

	snprintf(path, sizeof path, "%s/token", dir);
	*created = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
		n = read(fd, tok, cap - 1);
		close(fd);
		while (n > 0 && (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' '))
			n--;
		if (n <= 0 || !config_token_ok(tok, (size_t)n))
			return JG_EINVAL;
		tok[n] = 0;
		return 0;
	}
	if (errno != ENOENT)
		return errno;
	if (RAND_bytes(raw, sizeof raw) != 1)
		return JG_EINVAL;
	for (size_t i = 0; i < sizeof raw; i++)
		snprintf(tok + 2 * i, 3, "%02x", raw[i]);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
		return errno;
	n = write(fd, tok, strlen(tok));
	if (n != (ssize_t)strlen(tok) || write(fd, "\n", 1) != 1 || fsync(fd) != 0) {
		int e = errno ? errno : EIO;
		close(fd);
		unlink(path);
		return e;
	}
	close(fd);
	*created = 1;
	return 0;
}

/* Print how to try it; the token itself only when it was just generated. */
static void print_welcome(const Config *c, int port, const char *tok, int created)
{
	char auth[4400], dir[4096];
	int v6;

	if (created) {
		printf("jobgate: generated an API token, saved in %s/token:\n  %s\n",
		       c->data_dir, tok);
		snprintf(auth, sizeof auth, "%s", tok);
	} else {
		printf("jobgate: using the API token in %s/token\n", c->data_dir);
		/* Absolute, so the line works pasted in any directory. */
		snprintf(auth, sizeof auth, "$(cat %s/token)",
			 realpath(c->data_dir, dir) ? dir : c->data_dir);
	}
	/* An IPv6 literal needs brackets in a URL. */
	v6 = strchr(c->listen_host, ':') != NULL;
	printf("try it:\n  curl -s -w '\\n' -X POST -H \"Authorization: Bearer %s\" "
	       "-H 'Content-Type: application/json' -d '{\"hello\":\"world\"}' "
	       "'http://%s%s%s:%d/trigger/%s/wait'\n",
	       auth, v6 ? "[" : "", c->listen_host, v6 ? "]" : "", port, c->jobs[0].name);
	fflush(stdout);
}

/* The tokens beyond the config's: JOBGATE_TOKEN, else DATA/token.  On
 * failure a one-line reason is in msg and the exit code is returned. */
static int setup_tokens(Config *c, char *tok, size_t cap, int *created, int *have_data_token,
			char *msg, size_t mcap)
{
	const char *env = getenv("JOBGATE_TOKEN");
	int rc;

	*have_data_token = 0;
	if (env && *env) {
		if (!config_token_ok(env, strlen(env))) {
			snprintf(msg, mcap, "JOBGATE_TOKEN: must be 1 to 256 bytes of printable ASCII without spaces");
			return 2;
		}
		/* Named "env" unless the config already uses that name. */
		rc = config_add_token(c, "env", env);
		if (rc == JG_EINVAL)
			rc = config_add_token(c, "JOBGATE_TOKEN", env);
		if (rc == JG_ECONFLICT) {
			snprintf(msg, mcap, "JOBGATE_TOKEN: a token in the config has the same "
				 "secret (the actor would be ambiguous)");
			return 2;
		}
		if (rc == JG_EINVAL) {
			snprintf(msg, mcap, "JOBGATE_TOKEN: the config already has tokens named "
				 "\"env\" and \"JOBGATE_TOKEN\", the names it would take; "
				 "rename one of them");
			return 2;
		}
		if (rc != 0) {
			snprintf(msg, mcap, "JOBGATE_TOKEN: %s", jg_strerror(rc));
			return 1;
		}
	}
	if (c->ntokens > 0)
		return 0;
	if ((rc = data_token(c->data_dir, tok, cap, created)) != 0) {
		if (rc == JG_EINVAL)
			snprintf(msg, mcap, "%s/token: empty or not a token (1 to 256 bytes of printable ASCII "
				 "without spaces); delete it to have a new one generated", c->data_dir);
		else
			snprintf(msg, mcap, "%s/token: %s", c->data_dir, jg_strerror(rc));
		return 1;
	}
	*have_data_token = 1;
	if ((rc = config_add_token(c, "default", tok)) != 0) {
		snprintf(msg, mcap, "token: %s", jg_strerror(rc));
		return 1;
	}
	return 0;
}

/* A job whose command cannot be executed would fail every attempt with
 * "spawn failed": refuse it at start-up with the key's path, like any
 * other bad value.  (A command removed later still fails per attempt.) */
static int check_commands(const Config *c, const char *file)
{
	char path[4096];
	struct stat st;
	const char *why;
	int i;

	for (i = 0; i < c->njobs; i++) {
		const JgJob *j = &c->jobs[i];
		if (j->builtin_echo || !j->argv)
			continue;
		runner_resolve(j->argv[0], path, sizeof path);
		if (!strchr(path, '/') || stat(path, &st) != 0)
			why = strchr(j->argv[0], '/') ? "no such file" :
			      "not found in " RUNNER_PATH;
		else if (!S_ISREG(st.st_mode) || access(path, X_OK) != 0)
			why = "not an executable file";
		else
			continue;
		fprintf(stderr, "jobgate serve: %s: jobs.%s.command[0]: %s: %s\n",
			file ? file : "default config", j->name, j->argv[0], why);
		return 2;
	}
	return 0;
}

/* Raise the soft fd limit to the hard one, and say so if even that leaves
 * little room: each running job holds 4 descriptors in the gateway (its
 * pipes and pidfd), and a spawn that finds none fails the attempt. */
static void raise_fd_limit(const Config *c)
{
	struct rlimit rl;
	char have[24], want[24];
	rlim_t need = (rlim_t)c->max_running * 4 + 1024;	/* + connections, files */
	rlim_t given;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	given = rl.rlim_cur;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			jg_log(JG_WARN, "cannot raise the open file limit", "error", strerror(errno), NULL);
			getrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	runner_set_child_nofile(given);		/* jobs keep the limit we were given */
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
		snprintf(have, sizeof have, "%llu", (unsigned long long)rl.rlim_cur);
		snprintf(want, sizeof want, "%llu", (unsigned long long)need);
		jg_log(JG_WARN, "the open file limit is low for limits.max_running: jobs may fail "
		       "to spawn and clients to connect (raise it: ulimit -n)",
		       "#limit", have, "#suggested", want, NULL);
	}
}

/* The api the signal thread may stop; NULL once it is being torn down. */
static pthread_mutex_t sig_mu = PTHREAD_MUTEX_INITIALIZER;
static Api *sig_api;		/* {sig_mu} */

/* Signal thread: the only place SIGINT/SIGTERM/SIGHUP are taken.  SIGHUP
 * (the terminal or SSH session of a foreground server went away) stops
 * gracefully too: dying of it would leave running attempts for recovery
 * instead of recording them interrupted. */
static void *signal_main(void *arg)
{
	sigset_t set;
	int64_t first_ns = 0;
	int sig, n = 0;

	pthread_setname_np(pthread_self(), "jg-signal");
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		/* `timeout` and process-group kills deliver the same signal
		 * twice within microseconds: only a second signal at least
		 * half a second after the first means "stop now". */
		if (++n > 1) {
			if (jg_mono_ns() - first_ns < 500000000LL)
				continue;
			jg_log(JG_WARN, "second signal: exiting now", NULL);
			_exit(1);
		}
		first_ns = jg_mono_ns();
		jg_log(JG_INFO, "shutting down", "signal",
		       sig == SIGINT ? "SIGINT" : sig == SIGHUP ? "SIGHUP" : "SIGTERM", NULL);
		pthread_mutex_lock(&sig_mu);
		if (sig_api)
			api_stop(sig_api);
		pthread_mutex_unlock(&sig_mu);
	}
	return NULL;
}

static int fail(const char *what, int rc)
{
	jg_log(JG_ERROR, what, "error", jg_strerror(rc), NULL);
	return 1;
}

/* Build, run and tear down the roles.  Returns the exit code; *welcomed
 * says whether the token and curl line were printed, *served whether the
 * api ever ran (took requests). */
static int run(Config *c, const char *tok, int created, int have_data_token,
	       int *welcomed, int *served)
{
	char db[4200];
	Log *log = NULL;
	Projector *proj = NULL;
	Runner *run = NULL;
	Api *api = NULL;
	LogOptions lo = { 0, c->queue_max, c->map_size_mb };
	pthread_t sig;
	int rc, code = 1;

	snprintf(db, sizeof db, "%s/jobs.db", c->data_dir);
	if ((rc = log_open(&log, c->data_dir, &lo)) != 0) { code = fail("cannot open the event log", rc); goto out; }
	if ((rc = proj_open(&proj, db, log)) != 0) { code = fail("cannot open the read model", rc); goto out; }
	if ((rc = runner_open(&run, c, log)) != 0) { code = fail("cannot start the runner", rc); goto out; }
	if ((rc = api_open(&api, c, log, proj, run, db)) != 0) { code = 1; goto out; }	/* api_open logged why */
	if ((rc = log_start(log)) != 0 || (rc = proj_start(proj)) != 0 ||
	    (rc = runner_start(run)) != 0) {
		code = fail("cannot start threads", rc);
		goto out;
	}
	pthread_mutex_lock(&sig_mu);
	sig_api = api;
	pthread_mutex_unlock(&sig_mu);
	if (pthread_create(&sig, NULL, signal_main, NULL) == 0)
		pthread_detach(sig);
	if (have_data_token) {
		print_welcome(c, api_port(api), tok, created);
		*welcomed = 1;
	}
	*served = 1;
	rc = api_run(api);
	code = rc == 0 ? 0 : fail("api loop failed", rc);
out:
	pthread_mutex_lock(&sig_mu);
	sig_api = NULL;			/* a late signal must not reach a freed api */
	pthread_mutex_unlock(&sig_mu);
	/* The api goes first: once it has answered what it owed, its
	 * connections are closed at once rather than left hanging while
	 * running jobs get their grace period. */
	api_close(api);
	runner_close(run, SHUTDOWN_GRACE_S);
	proj_close(proj);
	log_close(log);
	if (code == 0)
		jg_log(JG_INFO, "stopped", NULL);
	return code;
}

/* How much of the data dir a start may take back if it fails before its
 * api ran (the port was taken, say): the directories it created (made by
 * jg_datadir_lock), with what it put in them; the files of an existing dir
 * that held nothing (the lock file it then created aside); else nothing.  Decided once the lock
 * is held, on what mkdir really did: a path like "new/../old" names an
 * existing dir through a new one.  No request was taken, so nothing
 * acknowledged can be in what is removed. */
enum { FRESH_NO, FRESH_EMPTY, FRESH_MADE };

static int fresh_kind(const char *dir, const JgMade *made)
{
	struct dirent *de;
	DIR *d;
	int empty = 1;

	if (made->leaf && made->n > 0)
		return FRESH_MADE;
	if (!(d = opendir(dir)))
		return FRESH_NO;
	while (empty && (de = readdir(d)))
		empty = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
			(made->lock && !strcmp(de->d_name, "lock"));
	closedir(d);
	return empty ? FRESH_EMPTY : FRESH_NO;
}

/* Remove what serve made in a fresh data dir (each module names its own
 * files), then the directories it created, deepest first (for "new/../old"
 * only "new": rmdir leaves anything that is not empty). */
static void drop_fresh(const char *dir, int kind, const JgMade *made)
{
	char path[4200];

	if (kind != FRESH_NO) {
		snprintf(path, sizeof path, "%s/token", dir);
		unlink(path);
		snprintf(path, sizeof path, "%s/jobs.db", dir);
		proj_remove(path);
		log_remove(dir);
		snprintf(path, sizeof path, "%s/lock", dir);
		if (made->lock)
			unlink(path);
	}
	jg_made_undo(dir, made);
}

int cmd_serve(int argc, char **argv)
{
	ServeArgs a;
	Config *c = NULL;
	char tok[JG_TOKEN_MAX + 2] = "", msg[4608];	/* + 1 to tell "too long" */
	sigset_t set;
	int rc, lockfd, created = 0, have_data_token = 0, welcomed = 0, served = 0, code, fresh;
	JgMade made;

	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			fputs(usage, stdout);
			return 0;
		}
	/* Block the stop signals first thing, in this thread and every one
	 * created later: the signal thread takes them with sigwait().  A stop
	 * that comes while the server is still starting waits until it can be
	 * graceful, instead of killing it half set up (exit 143). */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if ((rc = parse_args(argc, argv, &a)) != 0 || (rc = load_config(&a, &c)) != 0 ||
	    (rc = check_commands(c, a.config)) != 0) {
		config_free(c);
		return rc;
	}
	rc = jg_datadir_lock(c->data_dir, &lockfd, &made);
	if (rc == JG_ELOCKED) {
		fprintf(stderr, "jobgate serve: data dir %s is in use by another jobgate serve\n", c->data_dir);
		config_free(c);
		return 1;
	}
	if (rc != 0) {
		struct stat st;
		/* The dir is there: what failed is its lock file (a read-only
		 * or special filesystem such as /proc). */
		int there = stat(c->data_dir, &st) == 0 && S_ISDIR(st.st_mode);
		fprintf(stderr, "jobgate serve: data dir %s: %s%s\n", c->data_dir,
			there ? "cannot create its lock file: " : "", jg_strerror(rc));
		config_free(c);
		return 1;
	}
	fresh = fresh_kind(c->data_dir, &made);
	if ((rc = setup_tokens(c, tok, sizeof tok, &created, &have_data_token, msg,
			       sizeof msg)) != 0) {
		fprintf(stderr, "jobgate serve: %s\n", msg);
		drop_fresh(c->data_dir, fresh, &made);
		config_free(c);
		return rc;
	}
	raise_fd_limit(c);
	code = run(c, tok, created, have_data_token, &welcomed, &served);
	if (created && !welcomed) {
		/* The token generated for this start was never shown (the port
		 * was taken, say): drop it, so the next start makes and prints
		 * one instead of pointing at a file the user never saw. */
		char path[4200];

		snprintf(path, sizeof path, "%s/token", c->data_dir);
		unlink(path);
	}
	if (code != 0 && !served)	/* never after taking a request */
		drop_fresh(c->data_dir, fresh, &made);
	memset(tok, 0, sizeof tok);
	config_free(c);
	return code;
}

/*
 * metrics.c -- the runner's Prometheus series: processes running (gauge),
 * attempts started and finished (counters by job and status) and attempt
 * durations (histogram by job and status).  The runner thread updates them
 * under one mutex; runner_metrics() renders them from the api thread.
 * Held briefly: a handful of integer updates per finished attempt.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "../common/jg.h"
#include "../log/log.h"
#include "runner.h"

/* Bucket upper bounds in milliseconds (+Inf is implicit). */
static const int64_t bounds_ms[] = { 5, 10, 25, 50, 100, 250, 500, 1000, 2500,
	5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000 };
#define NB ((int)(sizeof bounds_ms / sizeof bounds_ms[0]))

/* Final statuses kept: succeeded, failed, canceled. */
enum { S_OK, S_FAIL, S_CANCEL, NS };
static const char *st_names[NS] = { "succeeded", "failed", "canceled" };

typedef struct Series {
	uint64_t started;
	uint64_t finished[NS];
	uint64_t bucket[NS][NB + 1];
	int64_t  sum_ms[NS];
} Series;

struct RunnerStats {
	const Config   *cfg;
	pthread_mutex_t mu;
	atomic_int      running;
	Series         *s;	/* cfg->njobs entries {mu} */
};

int runner_stats_open(RunnerStats **out, const Config *cfg)
{
	RunnerStats *s = calloc(1, sizeof *s);

	if (!s || !(s->s = calloc((size_t)cfg->njobs + 1, sizeof *s->s))) {
		free(s);
		return ENOMEM;
	}
	s->cfg = cfg;
	pthread_mutex_init(&s->mu, NULL);
	*out = s;
	return 0;
}

void runner_stats_close(RunnerStats *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->mu);
	free(s->s);
	free(s);
}

/* Runner thread. */
void runner_stats_running(RunnerStats *s, int delta)
{
	atomic_fetch_add(&s->running, delta);
}

/* Runner thread. */
void runner_stats_started(RunnerStats *s, int spec)
{
	if (spec < 0 || spec >= s->cfg->njobs)
		return;
	pthread_mutex_lock(&s->mu);
	s->s[spec].started++;
	pthread_mutex_unlock(&s->mu);
}

/* Runner thread. */
void runner_stats_finished(RunnerStats *s, int spec, int status, int64_t dur_ms)
{
	int k = status == JG_ST_SUCCEEDED ? S_OK : status == JG_ST_CANCELED ? S_CANCEL : S_FAIL;
	int b = 0;

	if (spec < 0 || spec >= s->cfg->njobs)
		return;
	while (b < NB && dur_ms > bounds_ms[b])
		b++;
	pthread_mutex_lock(&s->mu);
	s->s[spec].finished[k]++;
	s->s[spec].bucket[k][b]++;
	s->s[spec].sum_ms[k] += dur_ms;
	pthread_mutex_unlock(&s->mu);
}

static void write_hist(Buf *out, const char *job, int k, const Series *x)
{
	uint64_t cum = 0;
	int b;

	for (b = 0; b <= NB; b++) {
		cum += x->bucket[k][b];
		buf_printf(out, "jobgate_job_duration_seconds_bucket{job=\"%s\",status=\"%s\",le=\"",
			   job, st_names[k]);
		if (b < NB)
			buf_printf(out, "%g", (double)bounds_ms[b] / 1000.0);
		else
			buf_puts(out, "+Inf");
		buf_printf(out, "\"} %llu\n", (unsigned long long)cum);
	}
	buf_printf(out, "jobgate_job_duration_seconds_sum{job=\"%s\",status=\"%s\"} %.3f\n",
		   job, st_names[k], (double)x->sum_ms[k] / 1000.0);
	buf_printf(out, "jobgate_job_duration_seconds_count{job=\"%s\",status=\"%s\"} %llu\n",
		   job, st_names[k], (unsigned long long)x->finished[k]);
}

/* Any thread.  Job names are [A-Za-z0-9_.-] (config.h): no label escaping. */
void runner_stats_write(RunnerStats *s, Buf *out)
{
	const Config *c = s->cfg;
	int i, k;

	buf_puts(out, "# HELP jobgate_jobs_running Job processes running now.\n"
		 "# TYPE jobgate_jobs_running gauge\n");
	buf_printf(out, "jobgate_jobs_running %d\n", atomic_load(&s->running));
	pthread_mutex_lock(&s->mu);
	buf_puts(out, "# HELP jobgate_runs_started_total Attempts started.\n"
		 "# TYPE jobgate_runs_started_total counter\n");
	for (i = 0; i < c->njobs; i++)
		buf_printf(out, "jobgate_runs_started_total{job=\"%s\"} %llu\n",
			   c->jobs[i].name, (unsigned long long)s->s[i].started);
	buf_puts(out, "# HELP jobgate_runs_finished_total Attempts finished, by status.\n"
		 "# TYPE jobgate_runs_finished_total counter\n");
	for (i = 0; i < c->njobs; i++)
		for (k = 0; k < NS; k++)
			buf_printf(out, "jobgate_runs_finished_total{job=\"%s\",status=\"%s\"} %llu\n",
				   c->jobs[i].name, st_names[k],
				   (unsigned long long)s->s[i].finished[k]);
	buf_puts(out, "# HELP jobgate_job_duration_seconds Attempt durations.\n"
		 "# TYPE jobgate_job_duration_seconds histogram\n");
	for (i = 0; i < c->njobs; i++)
		for (k = 0; k < NS; k++)
			write_hist(out, c->jobs[i].name, k, &s->s[i]);
	pthread_mutex_unlock(&s->mu);
}

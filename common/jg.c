/*
 * jg.c -- error names, JSON-lines logging, clocks, RFC 3339 times, the
 * data directory lock and strict number parsing shared by every module.
 *
 * Logging: a line is built in a private buffer and written with a single
 * write(2) under a process-wide mutex, so lines from different threads never
 * interleave even when one is longer than PIPE_BUF.  Keys and values are
 * JSON-escaped by buf_json_cstr(); a failed allocation degrades to a fixed
 * line rather than silence.
 *
 * Time: "YYYY-MM-DDTHH:MM:SS.mmmZ", always 24 bytes.  Instants outside years
 * 0000..9999 are clamped so the width never changes; jg_parse_time accepts
 * exactly that form with calendar-valid fields (no leap second 60).
 */
#include "jg.h"
#include "buf.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int jg_log_level = JG_INFO;

static pthread_mutex_t jg_log_mu = PTHREAD_MUTEX_INITIALIZER;

static const struct {
	int rc;
	const char *s;
} jg_errs[] = {
	{JG_EINVAL, "invalid argument or input"},
	{JG_ENOTFOUND, "not found"},
	{JG_EFULL, "queue full"},
	{JG_ESTORAGE, "storage full"},
	{JG_ECORRUPT, "corrupt record"},
	{JG_ECLOSED, "shutting down"},
	{JG_ECONFLICT, "conflict"},
	{JG_ELOCKED, "data directory is locked by another process"},
	{JG_ESQLITE, "SQLite failure"},
	{JG_ELMDB, "LMDB failure"},
	{JG_ETOODEEP, "JSON nested too deep"},
	{JG_ETRUNCATED, "the log file is truncated or empty (damaged: restore it from a backup)"},
	{JG_EDAMAGED, "the event log is damaged (restore it from a backup)"},
};

const char *jg_strerror(int rc)
{
	size_t i;

	if (rc == 0)
		return "success";
	if (rc > 0)
		return strerror(rc);	/* glibc: static or thread-local text */
	for (i = 0; i < sizeof jg_errs / sizeof jg_errs[0]; i++)
		if (jg_errs[i].rc == rc)
			return jg_errs[i].s;
	return "unknown error";
}

static const char *jg_level_name(int level)
{
	static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

	if (level < JG_DEBUG)
		level = JG_DEBUG;
	if (level > JG_ERROR)
		level = JG_ERROR;
	return names[level];
}

/* Write all of p[0..n) to fd; the loop only matters for partial writes. */
static void jg_write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;	/* nowhere left to report it */
		p += w;
		n -= (size_t)w;
	}
}

/* Is s a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int jg_is_number(const char *s)
{
	const char *d;

	if (*s == '-')
		s++;
	if (*s == '0')
		s++;
	else if (*s >= '1' && *s <= '9')
		while (*s >= '0' && *s <= '9')
			s++;
	else
		return 0;
	if (*s == '.') {
		for (d = ++s; *s >= '0' && *s <= '9'; s++) {}
		if (s == d)
			return 0;
	}
	if (*s == 'e' || *s == 'E') {
		if (*++s == '+' || *s == '-')
			s++;
		for (d = s; *s >= '0' && *s <= '9'; s++) {}
		if (s == d)
			return 0;
	}
	return *s == 0;
}

static void jg_log_attrs(Buf *b, va_list ap)
{
	for (;;) {
		const char *k = va_arg(ap, const char *);
		const char *v;
		int num;

		if (!k)
			return;
		v = va_arg(ap, const char *);
		if ((num = k[0] == '#'))
			k++;
		buf_puts(b, ",");
		buf_json_cstr(b, k);
		buf_puts(b, ":");
		if (num && v && jg_is_number(v))
			buf_puts(b, v);
		else
			buf_json_cstr(b, v);	/* NULL value ends the list as null */
		if (!v)
			return;
	}
}

void jg_log(int level, const char *msg, ...)
{
	static const char oom_line[] =
		"{\"level\":\"ERROR\",\"msg\":\"log line lost: out of memory\"}\n";
	char ts[JG_TIME_LEN + 1];
	Buf b = {0};
	va_list ap;

	if (level < jg_log_level)
		return;
	jg_fmt_time(jg_now_ms(), ts);
	buf_puts(&b, "{\"time\":\"");
	buf_puts(&b, ts);
	buf_puts(&b, "\",\"level\":\"");
	buf_puts(&b, jg_level_name(level));
	buf_puts(&b, "\",\"msg\":");
	buf_json_cstr(&b, msg ? msg : "");
	va_start(ap, msg);
	jg_log_attrs(&b, ap);
	va_end(ap);
	buf_puts(&b, "}\n");

	pthread_mutex_lock(&jg_log_mu);
	if (b.oom)
		jg_write_all(2, oom_line, sizeof oom_line - 1);
	else
		jg_write_all(2, b.p, b.len);
	pthread_mutex_unlock(&jg_log_mu);
	buf_free(&b);
}

int64_t jg_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t jg_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z in ms. */
#define JG_MS_MIN (-62167219200000LL)
#define JG_MS_MAX (253402300799999LL)

/* v as exactly n zero-padded digits (the caller keeps v in range). */
static void jg_put_digits(char *out, int n, int v)
{
	while (n-- > 0) {
		out[n] = (char)('0' + v % 10);
		v /= 10;
	}
}

int jg_fmt_time(int64_t ms, char *out)
{
	struct tm tm;
	time_t secs;
	int64_t frac;

	if (ms < JG_MS_MIN)
		ms = JG_MS_MIN;
	if (ms > JG_MS_MAX)
		ms = JG_MS_MAX;
	/* Floor division so instants before 1970 keep a positive fraction. */
	frac = ms % 1000;
	if (frac < 0)
		frac += 1000;
	secs = (time_t)((ms - frac) / 1000);
	gmtime_r(&secs, &tm);
	memcpy(out, "0000-00-00T00:00:00.000Z", JG_TIME_LEN + 1);
	jg_put_digits(out, 4, tm.tm_year + 1900);
	jg_put_digits(out + 5, 2, tm.tm_mon + 1);
	jg_put_digits(out + 8, 2, tm.tm_mday);
	jg_put_digits(out + 11, 2, tm.tm_hour);
	jg_put_digits(out + 14, 2, tm.tm_min);
	jg_put_digits(out + 17, 2, tm.tm_sec);
	jg_put_digits(out + 20, 3, (int)frac);
	return JG_TIME_LEN;
}

/* n decimal digits at s into *v; 0 or -1. */
static int jg_digits(const char *s, int n, int *v)
{
	int i;

	*v = 0;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		*v = *v * 10 + (s[i] - '0');
	}
	return 0;
}

static int jg_mdays(int year, int mon)
{
	static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

	return mon == 2 && leap ? 29 : d[mon - 1];
}

int jg_parse_time(const char *s, size_t n, int64_t *ms)
{
	int y, mo, d, h, mi, sec, frac;
	struct tm tm;
	time_t t;

	if (!s || n != JG_TIME_LEN)
		return JG_EINVAL;
	if (s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
	    s[16] != ':' || s[19] != '.' || s[23] != 'Z')
		return JG_EINVAL;
	if (jg_digits(s, 4, &y) || jg_digits(s + 5, 2, &mo) ||
	    jg_digits(s + 8, 2, &d) || jg_digits(s + 11, 2, &h) ||
	    jg_digits(s + 14, 2, &mi) || jg_digits(s + 17, 2, &sec) ||
	    jg_digits(s + 20, 3, &frac))
		return JG_EINVAL;
	if (mo < 1 || mo > 12 || d < 1 || d > jg_mdays(y, mo) || h > 23 ||
	    mi > 59 || sec > 59)
		return JG_EINVAL;
	memset(&tm, 0, sizeof tm);
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	*ms = (int64_t)t * 1000 + frac;
	return 0;
}

/* mkdir -p: create each missing component of dir with mode 0700, noting
 * in *made (if not NULL) each one this call created. */
static int jg_mkdirs(const char *dir, JgMade *made)
{
	char path[4096];
	size_t i, n = strlen(dir);

	if (made)
		made->n = made->leaf = made->lock = 0;
	if (n == 0 || n >= sizeof path)
		return n == 0 ? JG_EINVAL : ENAMETOOLONG;
	memcpy(path, dir, n + 1);
	for (i = 1; i <= n; i++) {
		if ((path[i] != '/' && path[i] != '\0') || path[i - 1] == '/')
			continue;	/* "a//b", "a/": no second mkdir of "a" */
		path[i] = '\0';
		if (mkdir(path, 0700) == 0) {
			if (made && made->n >= 0 && made->n < JG_MADE_MAX)
				made->len[made->n++] = i;
			else if (made)
				made->n = -1;	/* too many to note: none is removed */
			if (made)
				made->leaf = 1;
		} else if (errno == EEXIST) {
			if (made)
				made->leaf = 0;
		} else {
			return errno;
		}
		path[i] = i < n ? '/' : '\0';
	}
	return 0;
}

void jg_made_undo(const char *dir, const JgMade *made)
{
	char path[4096];

	for (int k = made->n - 1; k >= 0; k--) {
		if (made->len[k] >= sizeof path)
			return;
		memcpy(path, dir, made->len[k]);
		path[made->len[k]] = '\0';
		if (rmdir(path) != 0)
			return;		/* not empty (not ours alone): leave it and above */
	}
}

static int jg_lock_path(const char *dir, char *out, size_t cap)
{
	int k = snprintf(out, cap, "%s/lock", dir);

	return k < 0 || (size_t)k >= cap ? ENAMETOOLONG : 0;
}

int jg_datadir_lock(const char *dir, int *fd, JgMade *made)
{
	char path[4096];
	JgMade own;
	int rc, lfd = -1;

	*fd = -1;
	if (!made)
		made = &own;
	if ((rc = jg_mkdirs(dir, made)) != 0)
		goto out;
	if ((rc = jg_lock_path(dir, path, sizeof path)) != 0)
		goto out;
	lfd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (lfd >= 0)
		made->lock = 1;
	else if (errno == EEXIST)
		lfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lfd < 0) {
		rc = errno;
		goto out;
	}
	if (flock(lfd, LOCK_EX | LOCK_NB) != 0) {
		rc = errno == EWOULDBLOCK ? JG_ELOCKED : errno;
		goto out;
	}
	*fd = lfd;
	lfd = -1;
out:
	if (lfd >= 0)
		close(lfd);
	if (rc != 0 && rc != JG_ELOCKED) {
		/* Nothing of ours can be in what this call made but the lock
		 * file (a lock held elsewhere means another process uses the
		 * dir: leave it alone). */
		if (made->lock && jg_lock_path(dir, path, sizeof path) == 0)
			unlink(path);
		jg_made_undo(dir, made);
		made->n = made->leaf = made->lock = 0;
	}
	return rc;
}

int jg_datadir_busy(const char *dir)
{
	char path[4096];
	int fd, busy = 0;

	if (jg_lock_path(dir, path, sizeof path) != 0)
		return 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;	/* no lock file: nobody ever served here */
	/* flock locks belong to the open file description, so this probe
	 * conflicts even with a lock held by this very process. */
	if (flock(fd, LOCK_SH | LOCK_NB) != 0)
		busy = errno == EWOULDBLOCK;
	close(fd);
	return busy;
}

int jg_parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (!s || n == 0)
		return JG_EINVAL;
	for (i = 0; i < n; i++) {
		unsigned d = (unsigned char)s[i] - '0';
		if (d > 9)
			return JG_EINVAL;
		if (v > (UINT64_MAX - d) / 10)
			return JG_EINVAL;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int jg_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

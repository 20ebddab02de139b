/*
 * json.c -- strict JSON over jsmn, and the one copy of jsmn's code.
 *
 * jsmn's strict mode still accepts text that is not JSON: it never checks
 * that a key is followed by ':' or that values are separated by ',', so
 * `{"a" 1}`, `[1 2]`, `[1,]` and `{"a":1,}` tokenize; primitives are any run
 * of printable bytes starting with a digit, '-', 't', 'f' or 'n' (`01`,
 * `1.`, `-`, `tru`, `nul`); strings may hold raw control bytes and invalid
 * UTF-8; and whatever follows a complete value is tokenized too.  So
 * json_parse() first runs json_scan(), a small state machine for the RFC
 * 8259 grammar that also counts the tokens jsmn will produce, then lets
 * jsmn fill an array of exactly that size.  A top-level primitive is built
 * by hand: strict jsmn wants a delimiter after a primitive and reports
 * `1` alone as incomplete.
 *
 * Nesting deeper than JSON_MAX_DEPTH is rejected (RFC 8259 §9 allows the
 * limit), so code that walks a document recursively cannot blow the stack.
 * Escapes such as "\ud800" that name a lone surrogate are grammatical JSON,
 * but no Unicode text: jq refuses them and SQLite's JSON functions turn
 * them into invalid UTF-8 (RFC 8259 §8.2).  json_valid(), which checks
 * what clients and jobs hand us, refuses them; json_parse() accepts them
 * (config, and log records written before that check), and decoding turns
 * them into U+FFFD.
 */
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>	/* without JSMN_HEADER: emits jsmn_parse() here */

#include "json.h"
#include "buf.h"
#include "jg.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Scanner state: where we are, what the open containers are. */
typedef struct JsonScan {
	const char *s;
	size_t n, i;
	int ntok;			/* tokens jsmn will emit */
	int depth;
	int strict_u;			/* refuse lone surrogate escapes */
	int max_depth;			/* JSON_MAX_DEPTH, or one more (stored events) */
	unsigned char obj[JSON_MAX_DEPTH / 8 + 1];	/* bit set: level is an object */
} JsonScan;

static void json_ws(JsonScan *sc)
{
	while (sc->i < sc->n) {
		char c = sc->s[sc->i];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
			return;
		sc->i++;
	}
}

/* The escape after a backslash at s[i]; returns bytes consumed or 0. */
static size_t json_scan_esc(const char *s, size_t n, size_t i)
{
	int k;

	if (i >= n)
		return 0;
	if (strchr("\"\\/bfnrt", s[i]) && s[i] != '\0')
		return 1;
	if (s[i] != 'u' || n - i < 5)
		return 0;
	for (k = 1; k <= 4; k++)
		if (jg_hexval(s[i + k]) < 0)
			return 0;
	return 5;
}

/* The code unit of the \uXXXX escape at s[i] (the backslash), or -1. */
static long json_u16_at(const char *s, size_t n, size_t i)
{
	long v = 0;

	if (n - i < 6 || s[i] != '\\' || s[i + 1] != 'u')
		return -1;
	for (int k = 2; k < 6; k++) {
		int h = jg_hexval(s[i + k]);
		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

/* strict_u: a high surrogate escape at s[i] must be followed by a low one
 * (the pair is consumed: 12 bytes); a low one alone is refused (0). */
static size_t json_scan_pair(const char *s, size_t n, size_t i, size_t k)
{
	long hi = json_u16_at(s, n, i), lo;

	if (hi < 0xd800 || hi > 0xdfff)
		return k;
	if (hi >= 0xdc00)
		return 0;
	lo = i + 6 < n ? json_u16_at(s, n, i + 6) : -1;
	return lo >= 0xdc00 && lo <= 0xdfff ? 12 : 0;
}

/* String starting at the opening quote s[i]; 0 or JG_EINVAL. */
static int json_scan_str(JsonScan *sc)
{
	const char *s = sc->s;
	size_t n = sc->n, i = sc->i + 1, k;

	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"') {
			sc->i = i + 1;
			sc->ntok++;
			return 0;
		}
		if (c < 0x20)
			return JG_EINVAL;	/* raw control byte */
		if (c == '\\') {
			k = json_scan_esc(s, n, i + 1), k = k ? k + 1 : 0;
			if (k == 6 && sc->strict_u)
				k = json_scan_pair(s, n, i, k);
		}
		else
			k = buf_utf8_seq(s + i, n - i);
		if (k == 0)
			return JG_EINVAL;
		i += k;
	}
	return JG_EINVAL;	/* unterminated */
}

static size_t json_digits(const char *s, size_t n, size_t i)
{
	size_t j = i;

	while (j < n && s[j] >= '0' && s[j] <= '9')
		j++;
	return j - i;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int json_scan_num(JsonScan *sc)
{
	const char *s = sc->s;
	size_t n = sc->n, i = sc->i, d;

	if (i < n && s[i] == '-')
		i++;
	if ((d = json_digits(s, n, i)) == 0 || (s[i] == '0' && d > 1))
		return JG_EINVAL;
	i += d;
	if (i < n && s[i] == '.') {
		if ((d = json_digits(s, n, ++i)) == 0)
			return JG_EINVAL;
		i += d;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		if ((d = json_digits(s, n, i)) == 0)
			return JG_EINVAL;
		i += d;
	}
	sc->i = i;
	sc->ntok++;
	return 0;
}

static int json_scan_lit(JsonScan *sc, const char *lit)
{
	size_t k = strlen(lit);

	if (sc->n - sc->i < k || memcmp(sc->s + sc->i, lit, k) != 0)
		return JG_EINVAL;
	sc->i += k;
	sc->ntok++;
	return 0;
}

static int json_push(JsonScan *sc, int is_obj)
{
	unsigned char bit = (unsigned char)(1u << (sc->depth & 7));

	if (sc->depth >= sc->max_depth)
		return JG_ETOODEEP;
	if (is_obj)
		sc->obj[sc->depth >> 3] |= bit;
	else
		sc->obj[sc->depth >> 3] &= (unsigned char)~bit;
	sc->depth++;
	sc->ntok++;
	sc->i++;
	return 0;
}

static int json_top_is_obj(const JsonScan *sc)
{
	int d = sc->depth - 1;

	return sc->obj[d >> 3] >> (d & 7) & 1;
}

enum { JS_VALUE, JS_KEY, JS_AFTER, JS_DONE };

/* One value; containers are opened here and closed by json_scan_after. */
static int json_scan_value(JsonScan *sc, int *state)
{
	char c;
	int rc, obj;

	json_ws(sc);
	if (sc->i >= sc->n)
		return JG_EINVAL;
	c = sc->s[sc->i];
	*state = JS_AFTER;
	switch (c) {
	case '{':
	case '[':
		obj = c == '{';
		if ((rc = json_push(sc, obj)) != 0)
			return rc;
		json_ws(sc);
		if (sc->i < sc->n && sc->s[sc->i] == (obj ? '}' : ']')) {
			sc->i++;
			sc->depth--;
		} else {
			*state = obj ? JS_KEY : JS_VALUE;
		}
		return 0;
	case '"': return json_scan_str(sc);
	case 't': return json_scan_lit(sc, "true");
	case 'f': return json_scan_lit(sc, "false");
	case 'n': return json_scan_lit(sc, "null");
	default:  return json_scan_num(sc);
	}
}

static int json_scan_key(JsonScan *sc, int *state)
{
	int rc;

	json_ws(sc);
	if (sc->i >= sc->n || sc->s[sc->i] != '"')
		return JG_EINVAL;
	if ((rc = json_scan_str(sc)) != 0)
		return rc;
	json_ws(sc);
	if (sc->i >= sc->n || sc->s[sc->i] != ':')
		return JG_EINVAL;
	sc->i++;
	*state = JS_VALUE;
	return 0;
}

/* After a value: ',' or the closing bracket of the open container, or the
 * end of input at depth 0. */
static int json_scan_after(JsonScan *sc, int *state)
{
	char c;
	int obj;

	json_ws(sc);
	if (sc->depth == 0) {
		*state = JS_DONE;
		return sc->i == sc->n ? 0 : JG_EINVAL;
	}
	if (sc->i >= sc->n)
		return JG_EINVAL;
	c = sc->s[sc->i];
	obj = json_top_is_obj(sc);
	if (c == ',') {
		sc->i++;
		*state = obj ? JS_KEY : JS_VALUE;
		return 0;
	}
	if (c != (obj ? '}' : ']'))
		return JG_EINVAL;	/* at the culprit: error positions name it */
	sc->i++;
	sc->depth--;
	return 0;
}

/* Validate js[0..n) as one JSON value; 0 and the token count, or JG_EINVAL
 * (JG_ETOODEEP: valid so far, but nested deeper than JSON_MAX_DEPTH). */
static int json_scan_at(const char *js, size_t n, int *ntok, size_t *at, int strict_u,
			int max_depth)
{
	JsonScan sc;
	int rc = 0, state = JS_VALUE;

	memset(&sc, 0, sizeof sc);
	sc.s = js;
	sc.n = n;
	sc.strict_u = strict_u;
	sc.max_depth = max_depth;
	/* jsmn keeps offsets in int; refuse what it cannot address. */
	if (!js || n == 0 || n >= INT_MAX)
		return JG_EINVAL;
	while (rc == 0 && state != JS_DONE) {
		if (state == JS_VALUE)
			rc = json_scan_value(&sc, &state);
		else if (state == JS_KEY)
			rc = json_scan_key(&sc, &state);
		else
			rc = json_scan_after(&sc, &state);
	}
	*ntok = sc.ntok;
	if (at)
		*at = sc.i;
	return rc;
}

static int json_scan(const char *js, size_t n, int *ntok)
{
	return json_scan_at(js, n, ntok, NULL, 0, JSON_MAX_DEPTH);
}

int json_error_at(const char *js, size_t n, size_t *at)
{
	int ntok;

	*at = 0;
	return json_scan_at(js, n, &ntok, at, 0, JSON_MAX_DEPTH);
}

int json_stored_error_at(const char *js, size_t n, size_t *at)
{
	int ntok;

	*at = 0;
	return json_scan_at(js, n, &ntok, at, 0, JSON_MAX_DEPTH + 1);
}

int json_valid(const char *js, size_t n)
{
	int ntok;

	return json_scan_at(js, n, &ntok, NULL, 1, JSON_MAX_DEPTH);
}

/* The root is a bare primitive: one token jsmn would refuse to emit. */
static void json_root_prim(const char *js, size_t n, jsmntok_t *t)
{
	size_t a = 0, b = n;

	while (strchr(" \t\r\n", js[a]))
		a++;
	while (strchr(" \t\r\n", js[b - 1]))
		b--;
	t->type = JSMN_PRIMITIVE;
	t->start = (int)a;
	t->end = (int)b;
	t->size = 0;
	t->parent = -1;
}

static int json_is_prim_root(const char *js, size_t n)
{
	size_t i = 0;

	while (i < n && strchr(" \t\r\n", js[i]) && js[i] != '\0')
		i++;
	return i < n && js[i] != '{' && js[i] != '[' && js[i] != '"';
}

/* Let jsmn tokenize validated text.  The scanner's count is exact, but a
 * NOMEM still retries with a bigger array: every token spans at least one
 * input byte, so n + 1 tokens always suffice and bound the growth. */
static int json_tokenize(const char *js, size_t n, int ntok, jsmntok_t **out)
{
	jsmntok_t *toks = NULL, *t;
	size_t cap = (size_t)ntok;
	jsmn_parser p;
	int r;

	for (;;) {
		t = realloc(toks, cap * sizeof *toks);
		if (!t) {
			r = ENOMEM;
			goto out;
		}
		toks = t;
		jsmn_init(&p);
		r = jsmn_parse(&p, js, n, toks, (unsigned)cap);
		if (r != JSMN_ERROR_NOMEM || cap > n)
			break;
		cap = cap * 2 > n + 1 ? n + 1 : cap * 2;
	}
	/* jsmn disagreeing with the scanner means one of them is wrong:
	 * refuse the input rather than hand out a malformed tree. */
	r = r == ntok ? 0 : JG_EINVAL;
out:
	if (r == 0)
		*out = toks;
	else
		free(toks);
	return r;
}

/* The tokens form one tree whose root spans all n of them, so that
 * json_skip() never walks past the end.  jsmn alone guarantees that only
 * for well-formed input, and a damaged log record need not be. */
static int json_tree_ok(const jsmntok_t *t, int n)
{
	long owed = 1;
	int i = 0;

	while (owed > 0) {
		if (i >= n)
			return 0;
		owed += t[i].size - 1;
		i++;
	}
	return i == n;
}

int json_parse_own(const char *js, size_t n, jsmntok_t *stack, int nstack,
		   jsmntok_t **heap, jsmntok_t **out)
{
	jsmn_parser p;
	int r;

	*heap = NULL;
	*out = stack;
	jsmn_init(&p);
	r = jsmn_parse(&p, js, n, stack, (unsigned)nstack);
	if (r == JSMN_ERROR_NOMEM) {
		jsmn_init(&p);
		r = jsmn_parse(&p, js, n, NULL, 0);	/* count only */
		if (r <= 0 || !(*heap = malloc((size_t)r * sizeof **heap)))
			return JG_EINVAL;
		jsmn_init(&p);
		r = jsmn_parse(&p, js, n, *heap, (unsigned)r);
		*out = *heap;
	}
	return r > 0 && json_tree_ok(*out, r) ? r : JG_EINVAL;
}

int json_parse(const char *js, size_t n, jsmntok_t **toks)
{
	int rc, ntok = 0;

	*toks = NULL;
	if ((rc = json_scan(js, n, &ntok)) != 0)
		return rc;
	if (json_is_prim_root(js, n)) {
		if (!(*toks = malloc(sizeof **toks)))
			return JG_EINVAL;
		json_root_prim(js, n, *toks);
		return 1;
	}
	if ((rc = json_tokenize(js, n, ntok, toks)) != 0)
		return JG_EINVAL;	/* the contract has one failure code */
	return ntok;
}

int json_skip(const jsmntok_t *toks, int i)
{
	/* Every token but the root is a child of exactly one token, and
	 * size counts direct children (a key's child is its value), so the
	 * subtree ends when the children still owed drop to zero. */
	long owed = 1;

	while (owed > 0) {
		owed += toks[i].size - 1;
		i++;
	}
	return i;
}

/*
 * Decode the character at js[*i] of a validated string body ending at end
 * into out (up to 4 bytes); returns the byte count and advances *i.
 */
static size_t json_dec(const char *js, int *i, int end, char *out)
{
	uint32_t cp, lo;
	int k = *i;

	if (js[k] != '\\') {
		*out = js[k];
		*i = k + 1;
		return 1;
	}
	*i = k + 2;
	switch (js[k + 1]) {
	case 'b': *out = '\b'; return 1;
	case 'f': *out = '\f'; return 1;
	case 'n': *out = '\n'; return 1;
	case 'r': *out = '\r'; return 1;
	case 't': *out = '\t'; return 1;
	case 'u': break;
	default:  *out = js[k + 1]; return 1;	/* " \ / */
	}
	cp = (uint32_t)(jg_hexval(js[k + 2]) << 12 | jg_hexval(js[k + 3]) << 8 |
			jg_hexval(js[k + 4]) << 4 | jg_hexval(js[k + 5]));
	*i = k + 6;
	if (cp >= 0xd800 && cp <= 0xdbff && end - *i >= 6 && js[*i] == '\\' &&
	    js[*i + 1] == 'u') {
		lo = (uint32_t)(jg_hexval(js[*i + 2]) << 12 | jg_hexval(js[*i + 3]) << 8 |
				jg_hexval(js[*i + 4]) << 4 | jg_hexval(js[*i + 5]));
		if (lo >= 0xdc00 && lo <= 0xdfff) {
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			*i += 6;
		}
	}
	if (cp >= 0xd800 && cp <= 0xdfff)
		cp = 0xfffd;	/* lone surrogate */
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

int json_eq(const char *js, const jsmntok_t *t, const char *s)
{
	int i, end;
	size_t j = 0, k, m;
	char c[4];

	if (t->type != JSMN_STRING)
		return 0;
	for (i = t->start, end = t->end; i < end;) {
		k = json_dec(js, &i, end, c);
		for (m = 0; m < k; m++, j++)
			if (s[j] == '\0' || s[j] != c[m])
				return 0;
	}
	return s[j] == '\0';
}

int json_get(const char *js, const jsmntok_t *toks, int obj, const char *key)
{
	int i, k;

	if (toks[obj].type != JSMN_OBJECT)
		return -1;
	for (i = obj + 1, k = 0; k < toks[obj].size; k++) {
		if (json_eq(js, &toks[i], key))
			return i + 1;
		i = json_skip(toks, i);
	}
	return -1;
}

/* Decoded length of string token t, or -1 if it holds U+0000, which no C
 * string can carry (and which would let "a\u0000b" pose as "a"). */
static long json_dec_len(const char *js, const jsmntok_t *t)
{
	int i = t->start;
	long len = 0;
	size_t k;
	char c[4];

	while (i < t->end) {
		k = json_dec(js, &i, t->end, c);
		if (k == 1 && c[0] == '\0')
			return -1;
		len += (long)k;
	}
	return len;
}

static void json_dec_into(const char *js, const jsmntok_t *t, char *out)
{
	int i = t->start;
	size_t len = 0;

	while (i < t->end)
		len += json_dec(js, &i, t->end, out + len);
	out[len] = '\0';
}

int json_str(const char *js, const jsmntok_t *t, char *out, size_t cap)
{
	long len;

	if (t->type != JSMN_STRING || (len = json_dec_len(js, t)) < 0)
		return JG_EINVAL;
	if ((size_t)len >= cap)
		return ENAMETOOLONG;
	json_dec_into(js, t, out);
	return 0;
}

char *json_strdup(const char *js, const jsmntok_t *t)
{
	long len;
	char *s;

	if (t->type != JSMN_STRING || (len = json_dec_len(js, t)) < 0)
		return NULL;
	if (!(s = malloc((size_t)len + 1)))
		return NULL;
	json_dec_into(js, t, s);
	return s;
}

int json_int(const char *js, const jsmntok_t *t, int64_t min, int64_t max, int64_t *out)
{
	int i = t->start, neg = 0;
	uint64_t v = 0, lim;

	if (t->type != JSMN_PRIMITIVE || t->end <= t->start)
		return JG_EINVAL;
	if (js[i] == '-')
		neg = 1, i++;
	if (i >= t->end)
		return JG_EINVAL;
	lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; i < t->end; i++) {
		unsigned d = (unsigned char)js[i] - '0';
		if (d > 9 || v > (lim - d) / 10)
			return JG_EINVAL;	/* fraction, exponent, literal, overflow */
		v = v * 10 + d;
	}
	if (neg)
		*out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
	else
		*out = (int64_t)v;
	if (*out < min || *out > max)
		return JG_EINVAL;
	return 0;
}

int json_utf8_ok(const char *s, size_t n)
{
	size_t i = 0, k;

	while (i < n) {
		if ((k = buf_utf8_seq(s + i, n - i)) == 0)
			return 0;
		i += k;
	}
	return 1;
}

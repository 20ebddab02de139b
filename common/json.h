/*
 * json.h -- small helpers over jsmn (Debian's header-only libjsmn-dev).
 *
 * jsmn tokenizes without copying; these helpers validate a whole document
 * strictly (jsmn alone accepts some non-JSON), compare and extract tokens.
 * All functions are reentrant; token arrays are owned by the caller.
 */
#ifndef JG_JSON_H
#define JG_JSON_H

#define JSMN_HEADER
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>
#include <stddef.h>
#include <stdint.h>

/* Documents nested deeper than this are rejected (RFC 8259 §9 allows the
 * limit), so recursive walkers of a parsed document are safe. */
#define JSON_MAX_DEPTH 512

/* Tokenize js[0..n) as exactly one JSON value with strict grammar (numbers,
 * literals, escapes, UTF-8 and no trailing bytes other than whitespace).
 * On success *toks is a malloc'd array the caller frees and the count is
 * returned; on failure returns <0 (JG_ETOODEEP when nesting is the first
 * fault, else JG_EINVAL) and *toks is NULL. */
int json_parse(const char *js, size_t n, jsmntok_t **toks);

/* Tokenize JSON this program wrote itself (log records): jsmn alone, no
 * strict pass, since the writer only stores validated or generated JSON;
 * but the tokens are checked to form one tree (a damaged record is
 * JG_EINVAL, never a json_skip() past the end).
 * Tokens go to stack[0..nstack) when they fit, else to a malloc'd array
 * in *heap that the caller frees (*heap stays NULL otherwise); *out points
 * at whichever holds them.  Returns the count or JG_EINVAL. */
int json_parse_own(const char *js, size_t n, jsmntok_t *stack, int nstack,
		   jsmntok_t **heap, jsmntok_t **out);

/* Validate without keeping tokens: 0 if js[0..n) is one strict JSON value
 * whose strings are Unicode text (no lone surrogate escape like "\ud800"),
 * JG_ETOODEEP if it opens more than JSON_MAX_DEPTH arrays/objects before
 * any other fault, else JG_EINVAL.  For what clients and jobs hand us. */
int json_valid(const char *js, size_t n);
/* What json_parse() accepts (lone surrogates included), and where the scan
 * stopped: for a refused document, the byte offset of (or just after) the
 * first thing wrong. */
int json_error_at(const char *js, size_t n, size_t *at);
/* json_error_at for a stored event, one level deeper: the event object
 * wraps a payload or result that was itself allowed JSON_MAX_DEPTH. */
int json_stored_error_at(const char *js, size_t n, size_t *at);

/* Index of the token after the subtree rooted at toks[i]. */
int json_skip(const jsmntok_t *toks, int i);

/* 1 if toks[i] is a string equal to s. */
int json_eq(const char *js, const jsmntok_t *t, const char *s);

/* In object toks[obj], the index of the value of key, or -1. */
int json_get(const char *js, const jsmntok_t *toks, int obj, const char *key);

/* Decode the string token t (escapes resolved) into out (cap bytes incl.
 * NUL).  0, or JG_EINVAL if not a string (or it holds \u0000, which a C
 * string cannot carry), ENAMETOOLONG if it does not fit.  Lone surrogate
 * escapes decode to U+FFFD, so the output is always valid UTF-8. */
int json_str(const char *js, const jsmntok_t *t, char *out, size_t cap);
/* Same, into a fresh malloc'd string the caller frees; NULL on error. */
char *json_strdup(const char *js, const jsmntok_t *t);

/* Integer primitive in [min,max]: 0 or JG_EINVAL. */
int json_int(const char *js, const jsmntok_t *t, int64_t min, int64_t max, int64_t *out);

/* 1 if s[0..n) is valid UTF-8 (no overlongs, no surrogates). */
int json_utf8_ok(const char *s, size_t n);

#endif

/*
 * cachectl.h: parsing of the fields that carry caching directives and dates: Cache-Control
 * (RFC 9111 §5.2), targeted fields such as CDN-Cache-Control (RFC 9213) through a strict RFC 8941
 * Dictionary parser, and HTTP-date (RFC 9110 §5.6.7).
 *
 * Everything here is pure: no clock, no I/O, no allocation, no global state. Any thread.
 * Parsed results point into the caller's input strings and live as long as those strings.
 */
#ifndef CDNODE_CACHECTL_H
#define CDNODE_CACHECTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cdn_hdrs;

/*
 * Delta-seconds saturate here (RFC 9111 §1.2.2: a value too large, or a calculation that
 * overflows, is taken as 2147483648).
 */
#define CDN_DELTA_MAX INT64_C(2147483648)

/*
 * delta-seconds = 1*DIGIT (RFC 9111 §1.2.2) in s[0..n), nothing else around it; values above
 * CDN_DELTA_MAX give CDN_DELTA_MAX. Returns 0 or CDN_EINVAL.
 */
int cdn_delta_seconds_parse(const char *s, size_t n, int64_t *out);

/* Field names a qualified no-cache="..." or private="..." may list before it is taken as the
 * unqualified directive (which is always the stricter reading). */
#define CDN_CC_MAX_FIELDS 16

/* A list of field names (a qualified no-cache or private argument); spans point into the input. */
struct cdn_cc_fields {
    size_t n;
    const char *name[CDN_CC_MAX_FIELDS];
    size_t len[CDN_CC_MAX_FIELDS];
};

/*
 * Directives from one or more Cache-Control field lines (or one targeted field), request or
 * response side. Delta-seconds members are -1 when the directive is absent.
 *
 * Duplicates and invalid arguments (RFC 9111 §4.2.1: "either the first occurrence should be used
 * or the response should be considered stale"; "caches are encouraged to consider responses that
 * have invalid freshness information ... to be stale") are resolved to the most restrictive
 * reading, so a response can never become fresher by being malformed:
 *  - max-age, s-maxage: a missing, empty, non-numeric or negative argument, or two occurrences
 *    with different values, give 0 (stale at once; for s-maxage its proxy-revalidate meaning
 *    stays). Same value twice is fine.
 *  - stale-while-revalidate, stale-if-error, max-stale=N: an invalid argument drops that
 *    occurrence (absent is the stricter reading); several valid ones give the smallest.
 *  - min-fresh: invalid occurrences are dropped; several valid ones give the largest.
 *  - no-cache / private: the unqualified form wins over any qualified one; field lists of several
 *    qualified occurrences are concatenated; more than CDN_CC_MAX_FIELDS names, or an argument
 *    that is not a list of tokens, gives the unqualified form.
 * Arguments may be a token or a quoted-string (max-age="5" is accepted, RFC 9111 §5.2: senders
 * should not, recipients should). Directive names are case-insensitive. Unknown directives are
 * ignored (§5.2.3). Delta-seconds is 1*DIGIT; larger values saturate at CDN_DELTA_MAX.
 */
struct cdn_cc {
    int64_t max_age;
    int64_t s_maxage;
    int64_t stale_while_revalidate;
    int64_t stale_if_error;
    int64_t max_stale; /* request; CDN_DELTA_MAX when present without argument */
    int64_t min_fresh; /* request */
    bool no_cache;     /* unqualified, or qualified with no_cache_fields.n > 0 */
    bool no_store;
    bool private_; /* unqualified, or qualified with private_fields.n > 0 */
    bool public_;
    bool must_revalidate;
    bool proxy_revalidate;
    bool must_understand;
    bool immutable;
    bool no_transform;
    bool only_if_cached;                  /* request */
    struct cdn_cc_fields no_cache_fields; /* n == 0 with no_cache set: unqualified */
    struct cdn_cc_fields private_fields;  /* n == 0 with private_ set: unqualified */
};

/* Empties cc: every delta -1, every flag false. */
void cdn_cc_init(struct cdn_cc *cc);

/*
 * Adds the directives of one Cache-Control field line s[0..n) to cc (call once per line, after
 * cdn_cc_init, to combine several lines as RFC 9110 §5.3 combines them). Never fails: malformed
 * members are handled as described above or ignored. cc points into s afterwards.
 */
void cdn_cc_parse(const char *s, size_t n, struct cdn_cc *cc);

/*
 * cdn_cc_init plus cdn_cc_parse of every field line named `name` in h. Returns the number of
 * lines (0: the field is absent and cc is empty).
 */
size_t cdn_cc_from_hdrs(const struct cdn_hdrs *h, const char *name, struct cdn_cc *cc);

/* ---- RFC 8941 Structured Field Dictionary ------------------------------------------------- */

/* Members one Dictionary may hold; more makes the field invalid (CDN_ETOOBIG). */
#define CDN_SF_MAX_MEMBERS 64

enum cdn_sf_type {
    CDN_SF_INTEGER,
    CDN_SF_DECIMAL,
    CDN_SF_STRING,
    CDN_SF_TOKEN,
    CDN_SF_BYTES,
    CDN_SF_BOOLEAN,
    CDN_SF_INNER_LIST
};

/*
 * One Dictionary member. `key` and every span point into the parsed input.
 *  str/len is the value's text: the digits (with any '-') of a number, the content between the
 *  quotes of a String (escapes not removed), the Token, the base64 text between the colons of a
 *  Byte Sequence (not decoded), "?0" / "?1" for a Boolean, "(...)" for an Inner List.
 *  INTEGER: integer. DECIMAL: integer holds the value times 1000 (three fraction digits at most).
 *  BOOLEAN: boolean. INNER_LIST: n_inner counts its items.
 * n_params counts the member's parameters (for an inner list, its own, not its items'); their
 * text is params/params_len (starting at the first ';', empty when there are none).
 */
struct cdn_sf_member {
    const char *key;
    size_t klen;
    enum cdn_sf_type type;
    int64_t integer;
    bool boolean;
    const char *str;
    size_t len;
    size_t n_inner;
    size_t n_params;
    const char *params;
    size_t params_len;
};

struct cdn_sf_dict {
    size_t n;
    struct cdn_sf_member m[CDN_SF_MAX_MEMBERS];
};

/*
 * Parses s[0..n) as a Dictionary with the algorithm of RFC 8941 §4.2 (leading and trailing SP
 * discarded; a later duplicate key overwrites the earlier value and keeps its position).
 * Returns 0, CDN_EINVAL on any parse error (the whole field is then invalid), or CDN_ETOOBIG for
 * more than CDN_SF_MAX_MEMBERS distinct keys. On error *d holds nothing meaningful.
 */
int cdn_sf_parse_dict(const char *s, size_t n, struct cdn_sf_dict *d);

/*
 * Parses one targeted cache-control field value (RFC 9213 §2.1) into cc (cdn_cc_init first):
 * the value must be a valid, non-empty Dictionary, else CDN_EINVAL and cc is left empty (the
 * caller then ignores the field and falls back to Cache-Control and Expires, §2.2). Members map to
 * the same directives as Cache-Control: Boolean true is a directive without argument, Boolean
 * false is no directive, Integer / Token / String are its argument (so max-age=-1, max-age=1.5
 * or max-age=?1 are an invalid max-age, i.e. 0, as in Cache-Control). Parameters are ignored.
 * Inner lists and byte sequences are invalid arguments.
 */
int cdn_cc_parse_targeted(const char *s, size_t n, struct cdn_cc *cc);

/*
 * Parses a Surrogate-Control value (W3C Edge Architecture 1.0 §2.2-2.3, which predates RFC 9213
 * and keeps its own syntax) into cc (cdn_cc_init first): a list of Cache-Control-style directives,
 * each optionally targeted with ";device-token". Directives targeted at `device` (compared
 * without case; NULL or "" is no device) replace the untargeted ones when there are any;
 * directives targeted at another device never apply. Directive names are case-insensitive, as
 * in Cache-Control, and mean what they mean there (max-age, no-store, ...; others are ignored).
 * Returns 0, or CDN_EINVAL when no directive applies to this device (the caller then falls back
 * as for an absent field).
 */
int cdn_cc_parse_surrogate(const char *s, size_t n, const char *device, struct cdn_cc *cc);

/* Whether a targeted field name is Surrogate-Control, which cdn_cc_targeted_from_hdrs() reads
 * with cdn_cc_parse_surrogate() (and whose device token a node announces upstream). */
bool cdn_cc_is_surrogate_field(const char *name);

/*
 * The targeted field of a response: tries each name in `names` (the target list, most specific
 * first) and uses the first one present whose value (all its lines combined, as RFC 8941 §4.2
 * combines them) is a valid non-empty Dictionary. Returns the index into `names` of the field
 * used, or -1 when none applies (cc is then empty). Several lines are parsed line by line; an
 * empty line among several makes the field invalid, as its comma-joined value would be.
 * Surrogate-Control is read with cdn_cc_parse_surrogate() for `device` instead (its lines
 * joined into one list), and applies when some directive of it is for this device.
 */
int cdn_cc_targeted_from_hdrs(const struct cdn_hdrs *h, const char *const *names, size_t n_names,
                              const char *device, struct cdn_cc *cc);

/* ---- HTTP-date ------------------------------------------------------------------------------ */

#define CDN_HTTP_DATE_LEN 29 /* "Sun, 06 Nov 1994 08:49:37 GMT" */

/*
 * Parses an HTTP-date (RFC 9110 §5.6.7) into seconds since the epoch: IMF-fixdate
 * ("Sun, 06 Nov 1994 08:49:37 GMT"), the obsolete RFC 850 form ("Sunday, 06-Nov-94 08:49:37 GMT")
 * and asctime ("Sun Nov  6 08:49:37 1994"). OWS around the value is allowed. Names and "GMT" are
 * case-sensitive as the grammar says; the day name must be a valid one but need not agree with the
 * date. Second 60 (leap second) is accepted. A two-digit RFC 850 year is placed in the century
 * that keeps it no more than 50 years after `ref` (the current time or the time the message was
 * received). Returns 0 or CDN_EINVAL (any other text, impossible dates such as Feb 30).
 */
int cdn_http_date_parse(const char *s, size_t n, int64_t ref, int64_t *out);

/*
 * Writes t as IMF-fixdate plus a NUL into buf (at least CDN_HTTP_DATE_LEN + 1 bytes) and returns
 * buf. Times before year 1 or after year 9999 are clamped to the first / last second of that
 * range.
 */
char *cdn_http_date_format(int64_t t, char *buf);

#endif

/*
 * policy.c: storability, freshness, age, the serving decision, revalidation, conditionals,
 * ranges and invalidation for a shared cache.
 *
 * Model: a stored response is its status, its stored header fields and the two clock readings
 * taken around its fetch; every decision is recomputed from those and `now`, so nothing derived
 * (lifetime, age) can go out of date in the store. Time values are int64 seconds; lifetimes and
 * ages saturate at CDN_DELTA_MAX so arithmetic on them cannot overflow. The response directives
 * are those of the first valid targeted field, else Cache-Control (RFC 9213 §2.2). Whenever a
 * field is malformed the reading chosen is the one that serves less from cache.
 */
#include "cdnode/policy.h"
#include "cdnode/arena.h"
#include "cdnode/cachekey.h"
#include "cdnode/common.h"
#include "cdnode/config.h"
#include "cdnode/headers.h"
#include "cdnode/hop.h"

#include <string.h>

void
cdn_policy_opts_from_config(const struct cdn_config *c, struct cdn_policy_opts *o)
{
    o->heuristic_percent = c->heuristic_percent;
    o->heuristic_max_s = c->heuristic_max_s;
    o->targeted = (const char *const *)c->target_cache_control;
    o->n_targeted = c->n_target_cache_control;
    o->surrogate_id = c->cdn_id;
    o->stale_if_error_grace_s = c->stale_if_error_grace_s;
    o->cache_set_cookie = c->cache_set_cookie;
}

bool
cdn_response_cc(const struct cdn_hdrs *resp, const struct cdn_policy_opts *o, struct cdn_cc *cc)
{
    if (cdn_cc_targeted_from_hdrs(resp, o->targeted, o->n_targeted, o->surrogate_id, cc) >= 0)
        return true;
    cdn_cc_from_hdrs(resp, "Cache-Control", cc);
    return false;
}

static int64_t
sat(int64_t v)
{
    return v > CDN_DELTA_MAX ? CDN_DELTA_MAX : v;
}

/* A date field's first line, parsed; false when absent or invalid. */
static bool
date_field(const struct cdn_hdrs *h, const char *name, int64_t ref, int64_t *out)
{
    const struct cdn_hdr *f = cdn_hdrs_get(h, name);
    return f != NULL && cdn_http_date_parse(f->value, f->vlen, ref, out) == 0;
}

/* Whether a comma-separated field of h has an element equal (case-insensitively) to elem. */
static bool
list_has(const struct cdn_hdrs *h, const char *name, const char *elem)
{
    for (size_t i = 0; i < h->n; i++) {
        const struct cdn_hdr *f = &h->v[i];
        if (!cdn_name_eq(f->name, f->nlen, name))
            continue;
        const char *pos = f->value, *e;
        size_t elen;
        while (cdn_list_next(&pos, f->value + f->vlen, &e, &elen))
            if (cdn_name_eq(e, elen, elem))
                return true;
    }
    return false;
}

/* ---- Storing ------------------------------------------------------------------------------- */

bool
cdn_status_heuristic(int status)
{
    switch (status) {
    case 200:
    case 203:
    case 204:
    case 206:
    case 300:
    case 301:
    case 308:
    case 404:
    case 405:
    case 410:
    case 414:
    case 501:
        return true;
    default:
        return false;
    }
}

/* Final status codes defined by RFC 9110, whose requirements this cache knows. */
static bool
status_known(int s)
{
    return (s >= 200 && s <= 206) || (s >= 300 && s <= 305) || s == 307 || s == 308 ||
           (s >= 400 && s <= 417) || s == 421 || s == 422 || s == 426 || (s >= 500 && s <= 505);
}

/* Directives that forbid serving the response stale (RFC 9111 §4.2.4). */
static bool
forbids_stale(const struct cdn_cc *cc)
{
    return cc->must_revalidate || cc->proxy_revalidate || cc->s_maxage >= 0;
}

static bool
no_cache_unqualified(const struct cdn_cc *cc)
{
    return cc->no_cache && cc->no_cache_fields.n == 0;
}

static bool
fields_have(const struct cdn_cc_fields *f, const char *name, size_t nlen)
{
    for (size_t i = 0; i < f->n; i++)
        if (f->len[i] == nlen && cdn_case_eq(f->name[i], name, nlen))
            return true;
    return false;
}

enum cdn_store_verdict
cdn_storable(const char *method, const struct cdn_hdrs *req, int status,
             const struct cdn_hdrs *resp, const struct cdn_policy_opts *o)
{
    struct cdn_cc cc;
    bool targeted = cdn_response_cc(resp, o, &cc);
    return cdn_storable_cc(method, req, status, resp, o, &cc, targeted);
}

enum cdn_store_verdict
cdn_storable_cc(const char *method, const struct cdn_hdrs *req, int status,
                const struct cdn_hdrs *resp, const struct cdn_policy_opts *o,
                const struct cdn_cc *cc, bool targeted)
{
    if (method == NULL || strcmp(method, "GET") != 0)
        return CDN_NOSTORE_METHOD;
    if (status < 200 || status > 599 || status == 206 || status == 304)
        return CDN_NOSTORE_STATUS;
    struct cdn_cc rq;
    cdn_cc_from_hdrs(req, "Cache-Control", &rq);
    if (rq.no_store)
        return CDN_NOSTORE_REQ_NO_STORE;
    bool known = status_known(status);
    if (cc->must_understand && !known)
        return CDN_NOSTORE_MUST_UNDERSTAND;
    if (cc->no_store && !(cc->must_understand && known))
        return CDN_NOSTORE_NO_STORE;
    if (cc->private_ && cc->private_fields.n == 0)
        return CDN_NOSTORE_PRIVATE;
    if (cdn_hdrs_get(req, "Authorization") != NULL &&
        !(cc->public_ || cc->s_maxage >= 0 || cc->must_revalidate))
        return CDN_NOSTORE_AUTHORIZATION;
    if (list_has(resp, "Vary", "*"))
        return CDN_NOSTORE_VARY_STAR;
    /* Set-Cookie named by a qualified private or no-cache is stripped before storing. */
    static const char sc[] = "Set-Cookie";
    if (!o->cache_set_cookie && cdn_hdrs_get(resp, sc) != NULL &&
        !(cc->public_ || cc->s_maxage >= 0 || (targeted && cc->max_age >= 0)) &&
        !(cc->private_ && fields_have(&cc->private_fields, sc, sizeof(sc) - 1)) &&
        !(cc->no_cache && fields_have(&cc->no_cache_fields, sc, sizeof(sc) - 1)))
        return CDN_NOSTORE_SET_COOKIE;
    bool explicit = cc->public_ || cc->max_age >= 0 || cc->s_maxage >= 0 ||
                    (!targeted && cdn_hdrs_get(resp, "Expires") != NULL);
    if (!explicit && !cdn_status_heuristic(status))
        return CDN_NOSTORE_NOT_CACHEABLE;
    return CDN_STORE_OK;
}

const char *
cdn_store_reason(enum cdn_store_verdict v)
{
    switch (v) {
    case CDN_STORE_OK:
        return "ok";
    case CDN_NOSTORE_METHOD:
        return "method";
    case CDN_NOSTORE_STATUS:
        return "status";
    case CDN_NOSTORE_REQ_NO_STORE:
        return "req-no-store";
    case CDN_NOSTORE_NO_STORE:
        return "no-store";
    case CDN_NOSTORE_MUST_UNDERSTAND:
        return "must-understand";
    case CDN_NOSTORE_PRIVATE:
        return "private";
    case CDN_NOSTORE_AUTHORIZATION:
        return "authorization";
    case CDN_NOSTORE_VARY_STAR:
        return "vary-star";
    case CDN_NOSTORE_SET_COOKIE:
        return "set-cookie";
    case CDN_NOSTORE_NOT_CACHEABLE:
        return "not-cacheable";
    }
    return "unknown";
}

/* A line that carries response directives: Cache-Control or one of the targeted fields. */
static bool
is_cc_line(const struct cdn_hdr *f, const struct cdn_policy_opts *o)
{
    if (cdn_name_eq(f->name, f->nlen, "Cache-Control"))
        return true;
    for (size_t i = 0; i < o->n_targeted; i++)
        if (cdn_name_eq(f->name, f->nlen, o->targeted[i]))
            return true;
    return false;
}

/* cdn_policy_strip_for_store; with o, *cc_removed counts the directive lines it removed. */
static size_t
strip(struct cdn_hdrs *resp, const struct cdn_cc *cc, const struct cdn_policy_opts *o,
      size_t *cc_removed)
{
    if (resp->n == 0)
        return 0;
    /* Decide on the untouched list first: Connection names fields anywhere in it. */
    bool *drop = cdn_arena_alloc(resp->arena, resp->n * sizeof(*drop));
    cdn_hop_mark(resp, drop);
    for (size_t i = 0; i < resp->n; i++) {
        const struct cdn_hdr *f = &resp->v[i];
        drop[i] = drop[i] || cdn_name_eq(f->name, f->nlen, "Content-Length") ||
                  (cc->no_cache && fields_have(&cc->no_cache_fields, f->name, f->nlen)) ||
                  (cc->private_ && fields_have(&cc->private_fields, f->name, f->nlen));
    }
    size_t w = 0;
    for (size_t i = 0; i < resp->n; i++) {
        if (!drop[i])
            resp->v[w++] = resp->v[i];
        else if (o != NULL && is_cc_line(&resp->v[i], o))
            (*cc_removed)++;
    }
    size_t removed = resp->n - w;
    resp->n = w;
    return removed;
}

size_t
cdn_policy_strip_for_store(struct cdn_hdrs *resp, const struct cdn_cc *cc)
{
    return strip(resp, cc, NULL, NULL);
}

bool
cdn_policy_strip_keep_cc(struct cdn_hdrs *resp, const struct cdn_policy_opts *o, struct cdn_cc *cc,
                         bool targeted)
{
    /* Stripping only removes lines: with none of the directive lines among them, cc still
     * describes what remains. */
    size_t cc_removed = 0;
    strip(resp, cc, o, &cc_removed);
    if (cc_removed > 0)
        return cdn_response_cc(resp, o, cc);
    return targeted;
}

/* ---- Freshness ------------------------------------------------------------------------------ */

/* Expires - Date, or 0 when Expires is invalid or its lines disagree (RFC 9111 §4.2.1). */
static int64_t
expires_lifetime(const struct cdn_hdrs *resp, int64_t response_time)
{
    const struct cdn_hdr *first = NULL;
    for (size_t i = 0; i < resp->n; i++) {
        const struct cdn_hdr *f = &resp->v[i];
        if (!cdn_name_eq(f->name, f->nlen, "Expires"))
            continue;
        if (first == NULL)
            first = f;
        else if (f->vlen != first->vlen || memcmp(f->value, first->value, f->vlen) != 0)
            return 0;
    }
    int64_t expires, date;
    if (cdn_http_date_parse(first->value, first->vlen, response_time, &expires) < 0)
        return 0;
    if (!date_field(resp, "Date", response_time, &date))
        date = response_time;
    return expires > date ? sat(expires - date) : 0;
}

void
cdn_freshness_lifetime(int status, const struct cdn_hdrs *resp, int64_t response_time,
                       const struct cdn_policy_opts *o, struct cdn_freshness *out)
{
    struct cdn_cc cc;
    bool targeted = cdn_response_cc(resp, o, &cc);
    cdn_freshness_lifetime_cc(status, resp, response_time, o, &cc, targeted, out);
}

void
cdn_freshness_lifetime_cc(int status, const struct cdn_hdrs *resp, int64_t response_time,
                          const struct cdn_policy_opts *o, const struct cdn_cc *cc, bool targeted,
                          struct cdn_freshness *out)
{
    out->targeted = false;
    out->lifetime = 0;
    if (cc->s_maxage >= 0 || cc->max_age >= 0) {
        bool shared = cc->s_maxage >= 0;
        out->source = shared ? CDN_FRESH_S_MAXAGE : CDN_FRESH_MAX_AGE;
        out->lifetime = shared ? cc->s_maxage : cc->max_age;
        out->targeted = targeted;
        return;
    }
    if (!targeted && cdn_hdrs_get(resp, "Expires") != NULL) {
        out->source = CDN_FRESH_EXPIRES;
        out->lifetime = expires_lifetime(resp, response_time);
        return;
    }
    out->source = CDN_FRESH_NONE;
    int64_t date, lm;
    if (o->heuristic_percent == 0 || !(cdn_status_heuristic(status) || cc->public_) ||
        !date_field(resp, "Last-Modified", response_time, &lm))
        return;
    if (!date_field(resp, "Date", response_time, &date))
        date = response_time;
    if (lm > date)
        return;
    /* Both factors are below 2^32, so the product fits in 64 bits. */
    uint64_t span = (uint64_t)sat(date - lm);
    int64_t h = (int64_t)(span * o->heuristic_percent / 100);
    if (h > o->heuristic_max_s)
        h = o->heuristic_max_s;
    out->source = CDN_FRESH_HEURISTIC;
    out->lifetime = sat(h < 0 ? 0 : h);
}

/* ---- Age ------------------------------------------------------------------------------------ */

void
cdn_age_compute(const struct cdn_hdrs *resp, int64_t request_time, int64_t response_time,
                int64_t now, struct cdn_age *out)
{
    /* §5.1: of a list-valued Age the first member counts; an invalid value (or several Age
     * lines, which cannot be told apart from a forged one) makes the response stale. */
    const struct cdn_hdr *age = cdn_hdrs_get(resp, "Age");
    out->age_value = 0;
    if (age != NULL) {
        const char *p = age->value, *end = age->value + age->vlen, *e = NULL;
        size_t el = 0;
        if (cdn_hdrs_count(resp, "Age") != 1 || !cdn_list_next(&p, end, &e, &el) ||
            cdn_delta_seconds_parse(e, el, &out->age_value) < 0)
            out->age_value = CDN_DELTA_MAX;
    }
    if (!date_field(resp, "Date", response_time, &out->date_value))
        out->date_value = response_time;
    int64_t d = response_time - out->date_value;
    out->apparent_age = d > 0 ? sat(d) : 0;
    d = response_time - request_time;
    out->response_delay = d > 0 ? sat(d) : 0;
    out->corrected_age_value = sat(out->age_value + out->response_delay);
    out->corrected_initial_age =
        out->apparent_age > out->corrected_age_value ? out->apparent_age : out->corrected_age_value;
    d = now - response_time;
    out->resident_time = d > 0 ? sat(d) : 0;
    out->current_age = sat(out->corrected_initial_age + out->resident_time);
}

/* ---- Serving decision ----------------------------------------------------------------------- */

/* The lifetime and current age of a stored response, and its response directives. */
struct state {
    struct cdn_cc cc;
    int64_t lifetime;
    int64_t age;
};

static void
state_of(const struct cdn_stored *st, const struct cdn_policy_opts *o, int64_t now, struct state *s)
{
    struct cdn_freshness f;
    struct cdn_age a;
    bool targeted = cdn_response_cc(st->hdrs, o, &s->cc);
    cdn_freshness_lifetime_cc(st->status, st->hdrs, st->response_time, o, &s->cc, targeted, &f);
    cdn_age_compute(st->hdrs, st->request_time, st->response_time, now, &a);
    s->lifetime = f.lifetime;
    s->age = a.current_age;
}

static void
decided(struct cdn_decide_out *out, enum cdn_decision d, enum cdn_decide_reason r)
{
    out->decision = d;
    out->reason = r;
}

static void
decide(const struct cdn_cc *rq, bool pragma_no_cache, bool authorization,
       const struct cdn_stored *st, const struct cdn_policy_opts *o, int64_t now,
       struct cdn_decide_out *out)
{
    if (st == NULL) {
        decided(out, CDN_DECIDE_MISS, CDN_WHY_NOT_STORED);
        return;
    }
    if (rq->no_store) {
        decided(out, CDN_DECIDE_MISS, CDN_WHY_REQ_NO_STORE);
        return;
    }
    struct state s;
    state_of(st, o, now, &s);
    out->age = s.age;
    out->lifetime = s.lifetime;
    out->ttl = s.lifetime - s.age;
    const struct cdn_cc *cc = &s.cc;
    if (authorization && !(cc->public_ || cc->s_maxage >= 0 || cc->must_revalidate)) {
        decided(out, CDN_DECIDE_MISS, CDN_WHY_AUTHORIZATION);
        return;
    }
    if (no_cache_unqualified(cc)) {
        decided(out, CDN_DECIDE_REVALIDATE, CDN_WHY_RESP_NO_CACHE);
        return;
    }
    if (rq->no_cache || pragma_no_cache) {
        decided(out, CDN_DECIDE_REVALIDATE, CDN_WHY_REQ_NO_CACHE);
        return;
    }
    bool fresh = s.lifetime > s.age;
    bool reload_skipped = false;
    if (rq->max_age >= 0 && s.age > rq->max_age) {
        if (!(fresh && cc->immutable)) {
            decided(out, CDN_DECIDE_REVALIDATE, CDN_WHY_REQ_MAX_AGE);
            return;
        }
        reload_skipped = true;
    }
    if (rq->min_fresh >= 0 && s.lifetime - s.age < rq->min_fresh) {
        decided(out, CDN_DECIDE_REVALIDATE, CDN_WHY_MIN_FRESH);
        return;
    }
    if (fresh) {
        decided(out, CDN_DECIDE_FRESH, reload_skipped ? CDN_WHY_IMMUTABLE : CDN_WHY_FRESH);
        return;
    }
    int64_t staleness = s.age - s.lifetime;
    bool max_stale_ok = rq->max_stale >= 0 && staleness <= rq->max_stale;
    bool swr_ok = cc->stale_while_revalidate >= 0 && staleness <= cc->stale_while_revalidate;
    if (forbids_stale(cc))
        decided(out, CDN_DECIDE_REVALIDATE,
                max_stale_ok || swr_ok ? CDN_WHY_MUST_REVALIDATE : CDN_WHY_STALE);
    else if (max_stale_ok)
        decided(out, CDN_DECIDE_STALE, CDN_WHY_MAX_STALE);
    else if (swr_ok)
        decided(out, CDN_DECIDE_STALE_SWR, CDN_WHY_SWR);
    else
        decided(out, CDN_DECIDE_REVALIDATE, CDN_WHY_STALE);
}

void
cdn_decide(const struct cdn_hdrs *req, const struct cdn_stored *st, const struct cdn_policy_opts *o,
           int64_t now, struct cdn_decide_out *out)
{
    memset(out, 0, sizeof(*out));
    struct cdn_cc rq;
    size_t cc_lines = cdn_cc_from_hdrs(req, "Cache-Control", &rq);
    bool pragma = cc_lines == 0 && list_has(req, "Pragma", "no-cache");
    decide(&rq, pragma, cdn_hdrs_get(req, "Authorization") != NULL, st, o, now, out);
    if (rq.only_if_cached &&
        (out->decision == CDN_DECIDE_REVALIDATE || out->decision == CDN_DECIDE_MISS))
        out->decision = CDN_DECIDE_504;
}

const char *
cdn_decide_reason_str(enum cdn_decide_reason r)
{
    switch (r) {
    case CDN_WHY_FRESH:
        return "fresh";
    case CDN_WHY_NOT_STORED:
        return "not-stored";
    case CDN_WHY_REQ_NO_STORE:
        return "req-no-store";
    case CDN_WHY_AUTHORIZATION:
        return "authorization";
    case CDN_WHY_RESP_NO_CACHE:
        return "no-cache";
    case CDN_WHY_REQ_NO_CACHE:
        return "req-no-cache";
    case CDN_WHY_REQ_MAX_AGE:
        return "req-max-age";
    case CDN_WHY_MIN_FRESH:
        return "min-fresh";
    case CDN_WHY_STALE:
        return "stale";
    case CDN_WHY_MUST_REVALIDATE:
        return "must-revalidate";
    case CDN_WHY_MAX_STALE:
        return "max-stale";
    case CDN_WHY_SWR:
        return "swr";
    case CDN_WHY_IMMUTABLE:
        return "immutable";
    }
    return "unknown";
}

bool
cdn_may_serve_stale_while_revalidate(const struct cdn_stored *st, const struct cdn_policy_opts *o,
                                     int64_t now)
{
    struct state s;
    state_of(st, o, now, &s);
    if (forbids_stale(&s.cc) || no_cache_unqualified(&s.cc))
        return false;
    int64_t staleness = s.age - s.lifetime;
    return staleness < 0 ||
           (s.cc.stale_while_revalidate >= 0 && staleness <= s.cc.stale_while_revalidate);
}

bool
cdn_may_serve_stale_on_error(const struct cdn_hdrs *req, const struct cdn_stored *st,
                             const struct cdn_policy_opts *o, int64_t now)
{
    struct state s;
    state_of(st, o, now, &s);
    if (forbids_stale(&s.cc) || no_cache_unqualified(&s.cc))
        return false;
    int64_t staleness = s.age - s.lifetime;
    if (staleness < 0)
        return true;
    int64_t allow = o->stale_if_error_grace_s;
    if (s.cc.stale_if_error > allow)
        allow = s.cc.stale_if_error;
    if (req != NULL) {
        struct cdn_cc rq;
        cdn_cc_from_hdrs(req, "Cache-Control", &rq);
        if (rq.stale_if_error > allow)
            allow = rq.stale_if_error;
    }
    return allow > 0 && staleness <= allow;
}

bool
cdn_status_is_stale_error(int status)
{
    return status == 500 || status == 502 || status == 503 || status == 504;
}

/* ---- Entity tags ---------------------------------------------------------------------------- */

/* entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, exactly s[0..n). */
static bool
parse_etag(const char *s, size_t n, bool *weak, const char **opaque, size_t *olen)
{
    *weak = n >= 2 && s[0] == 'W' && s[1] == '/';
    if (*weak) {
        s += 2;
        n -= 2;
    }
    if (n < 2 || s[0] != '"' || s[n - 1] != '"')
        return false;
    for (size_t i = 1; i + 1 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(c == 0x21 || (c >= 0x23 && c <= 0x7e) || c >= 0x80))
            return false;
    }
    *opaque = s + 1;
    *olen = n - 2;
    return true;
}

bool
cdn_etag_match(const char *a, size_t alen, const char *b, size_t blen, bool weak)
{
    bool aw, bw;
    const char *ao, *bo;
    size_t al, bl;
    if (!parse_etag(a, alen, &aw, &ao, &al) || !parse_etag(b, blen, &bw, &bo, &bl))
        return false;
    if (!weak && (aw || bw))
        return false;
    return al == bl && memcmp(ao, bo, al) == 0;
}

/* Whether a list field (If-Match, If-None-Match) has "*" or a tag matching etag. */
static bool
etag_list_match(const struct cdn_hdrs *req, const char *name, const struct cdn_hdr *etag, bool weak)
{
    for (size_t i = 0; i < req->n; i++) {
        const struct cdn_hdr *f = &req->v[i];
        if (!cdn_name_eq(f->name, f->nlen, name))
            continue;
        const char *pos = f->value, *e;
        size_t elen;
        while (cdn_list_next(&pos, f->value + f->vlen, &e, &elen)) {
            if (elen == 1 && e[0] == '*')
                return true;
            if (etag != NULL && cdn_etag_match(e, elen, etag->value, etag->vlen, weak))
                return true;
        }
    }
    return false;
}

/* ---- Revalidation -----------------------------------------------------------------------------
 */

void
cdn_revalidation_validators(const struct cdn_hdrs *stored, struct cdn_validators *out)
{
    memset(out, 0, sizeof(*out));
    const struct cdn_hdr *etag = cdn_hdrs_get(stored, "ETag");
    bool w;
    const char *op;
    size_t ol;
    if (etag != NULL && parse_etag(etag->value, etag->vlen, &w, &op, &ol)) {
        out->etag = etag->value;
        out->etag_len = etag->vlen;
    }
    const struct cdn_hdr *lm = cdn_hdrs_get(stored, "Last-Modified");
    int64_t t;
    if (lm != NULL && cdn_http_date_parse(lm->value, lm->vlen, 0, &t) == 0) {
        out->last_modified = lm->value;
        out->lm_len = lm->vlen;
    }
}

bool
cdn_304_matches(const struct cdn_hdrs *stored, const struct cdn_hdrs *resp304)
{
    const struct cdn_hdr *e304 = cdn_hdrs_get(resp304, "ETag");
    if (e304 != NULL) {
        const struct cdn_hdr *es = cdn_hdrs_get(stored, "ETag");
        bool weak;
        const char *op;
        size_t ol;
        if (es == NULL || !parse_etag(e304->value, e304->vlen, &weak, &op, &ol))
            return false;
        return cdn_etag_match(e304->value, e304->vlen, es->value, es->vlen, weak);
    }
    const struct cdn_hdr *lm304 = cdn_hdrs_get(resp304, "Last-Modified");
    if (lm304 != NULL) {
        /* The stored date anchors the century of a two-digit year in the other. */
        int64_t a, b;
        return date_field(stored, "Last-Modified", 0, &b) &&
               cdn_http_date_parse(lm304->value, lm304->vlen, b, &a) == 0 && a == b;
    }
    return true;
}

/*
 * A 304 field that may replace stored ones (§3.2), given it is not hop-by-hop: none of the fields
 * that describe the stored bytes themselves (their length, coding, digest, range) or that
 * identify the stored representation (ETag): a 304 selects that representation, it does not
 * redefine it.
 */
static bool
updates_stored(const struct cdn_hdr *f)
{
    static const char *const fixed[] = {"Content-Length", "Content-Encoding", "Content-MD5",
                                        "Content-Range", "ETag"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (cdn_name_eq(f->name, f->nlen, fixed[i]))
            return false;
    return true;
}

bool
cdn_merge_304(const struct cdn_hdrs *stored, const struct cdn_hdrs *resp304,
              const struct cdn_policy_opts *o, struct cdn_hdrs *out, struct cdn_cc *cc)
{
    /* Which 304 fields count, decided once (the 304's Connection list is read once). */
    bool on_stack[32];
    bool *upd = resp304->n <= 32 ? on_stack : cdn_arena_alloc(out->arena, resp304->n);
    cdn_hop_mark(resp304, upd);
    for (size_t j = 0; j < resp304->n; j++)
        upd[j] = !upd[j] && updates_stored(&resp304->v[j]);
    for (size_t i = 0; i < stored->n; i++) {
        const struct cdn_hdr *f = &stored->v[i];
        bool replaced = false;
        for (size_t j = 0; j < resp304->n && !replaced; j++) {
            const struct cdn_hdr *g = &resp304->v[j];
            replaced = upd[j] && g->nlen == f->nlen && cdn_case_eq(g->name, f->name, f->nlen);
        }
        if (!replaced)
            cdn_hdrs_add(out, f->name, f->nlen, f->value, f->vlen);
    }
    for (size_t j = 0; j < resp304->n; j++) {
        const struct cdn_hdr *g = &resp304->v[j];
        if (upd[j])
            cdn_hdrs_add(out, g->name, g->nlen, g->value, g->vlen);
    }
    return cdn_policy_strip_keep_cc(out, o, cc, cdn_response_cc(out, o, cc));
}

/* ---- Client conditionals -------------------------------------------------------------------- */

/* A conditional date field: exactly one line holding a valid date. */
static bool
cond_date(const struct cdn_hdrs *req, const char *name, int64_t ref, int64_t *out)
{
    return cdn_hdrs_count(req, name) == 1 && date_field(req, name, ref, out);
}

static bool
get_or_head(const char *method)
{
    return method != NULL && (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0);
}

/* Whether the request has any of the four conditionals cdn_eval_conditionals() evaluates. */
static bool
has_conditional(const struct cdn_hdrs *req)
{
    static const char *const names[] = {"If-Match", "If-None-Match", "If-Modified-Since",
                                        "If-Unmodified-Since"};
    for (size_t i = 0; i < req->n; i++) {
        const struct cdn_hdr *f = &req->v[i];
        if (f->nlen < 8 || (f->name[0] | 0x20) != 'i')
            continue;
        for (size_t j = 0; j < sizeof(names) / sizeof(names[0]); j++)
            if (cdn_name_eq(f->name, f->nlen, names[j]))
                return true;
    }
    return false;
}

enum cdn_cond_result
cdn_eval_conditionals(const char *method, const struct cdn_hdrs *req, const struct cdn_stored *st)
{
    /* Most requests have none: then the stored validators are not even parsed. */
    if (st->status < 200 || st->status > 299 || !has_conditional(req))
        return CDN_COND_PROCEED;
    /* Each stored validator is looked up or parsed only when a condition asks for it: with
     * If-None-Match, the usual revalidation, Last-Modified is never parsed (§13.2.2 ignores
     * If-Modified-Since then). */
    const struct cdn_hdr *etag = NULL;
    bool match = cdn_hdrs_get(req, "If-Match") != NULL;
    bool none_match = cdn_hdrs_get(req, "If-None-Match") != NULL;
    if (match || none_match)
        etag = cdn_hdrs_get(st->hdrs, "ETag");
    int64_t ref = st->response_time, lm, when;
    if (match) {
        if (!etag_list_match(req, "If-Match", etag, false))
            return CDN_COND_412;
    } else if (cond_date(req, "If-Unmodified-Since", ref, &when) &&
               date_field(st->hdrs, "Last-Modified", ref, &lm) && lm > when) {
        return CDN_COND_412;
    }
    if (none_match) {
        if (!etag_list_match(req, "If-None-Match", etag, true))
            return CDN_COND_PROCEED;
        return get_or_head(method) ? CDN_COND_304 : CDN_COND_412;
    }
    if (get_or_head(method) && cond_date(req, "If-Modified-Since", ref, &when)) {
        int64_t last;
        if (!date_field(st->hdrs, "Last-Modified", ref, &last) &&
            !date_field(st->hdrs, "Date", ref, &last))
            last = st->response_time;
        if (last <= when)
            return CDN_COND_304;
    }
    return CDN_COND_PROCEED;
}

/* ---- Range ------------------------------------------------------------------------------------
 */

/* 1*DIGIT, saturating at UINT64_MAX. */
static bool
parse_u64(const char *s, size_t n, uint64_t *out)
{
    if (n == 0)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
    }
    *out = v;
    return true;
}

enum cdn_range_result
cdn_range_parse(const char *s, size_t n, uint64_t length, uint64_t *first, uint64_t *last)
{
    const char *end = s + n;
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    const char *eq = memchr(s, '=', (size_t)(end - s));
    if (eq == NULL || !cdn_name_eq(s, (size_t)(eq - s), "bytes"))
        return CDN_RANGE_FULL;
    const char *pos = eq + 1, *e, *spec = NULL;
    size_t elen, slen = 0, count = 0;
    while (cdn_list_next(&pos, end, &e, &elen)) {
        spec = e;
        slen = elen;
        count++;
    }
    if (count != 1)
        return CDN_RANGE_FULL;
    const char *dash = memchr(spec, '-', slen);
    if (dash == NULL)
        return CDN_RANGE_FULL;
    uint64_t a, b;
    if (dash == spec) {
        if (!parse_u64(spec + 1, slen - 1, &b))
            return CDN_RANGE_FULL;
        if (b == 0 || length == 0)
            return CDN_RANGE_UNSATISFIABLE;
        *first = b >= length ? 0 : length - b;
        *last = length - 1;
        return CDN_RANGE_PARTIAL;
    }
    if (!parse_u64(spec, (size_t)(dash - spec), &a))
        return CDN_RANGE_FULL;
    size_t rest = slen - (size_t)(dash - spec) - 1;
    if (rest == 0) {
        b = UINT64_MAX;
    } else if (!parse_u64(dash + 1, rest, &b) || b < a) {
        return CDN_RANGE_FULL;
    }
    if (a >= length)
        return CDN_RANGE_UNSATISFIABLE;
    *first = a;
    *last = b >= length ? length - 1 : b;
    return CDN_RANGE_PARTIAL;
}

bool
cdn_if_range_ok(const struct cdn_hdrs *req, const struct cdn_hdrs *stored)
{
    size_t lines = cdn_hdrs_count(req, "If-Range");
    if (lines == 0)
        return true;
    if (lines > 1)
        return false;
    const struct cdn_hdr *ir = cdn_hdrs_get(req, "If-Range");
    const char *v = ir->value;
    size_t n = ir->vlen;
    while (n && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n >= 1 && (v[0] == '"' || (n >= 2 && v[0] == 'W' && v[1] == '/'))) {
        const struct cdn_hdr *etag = cdn_hdrs_get(stored, "ETag");
        return etag != NULL && cdn_etag_match(v, n, etag->value, etag->vlen, false);
    }
    int64_t when, lm, date;
    return date_field(stored, "Date", 0, &date) && date_field(stored, "Last-Modified", date, &lm) &&
           cdn_http_date_parse(v, n, date, &when) == 0 && when == lm && lm <= date - 60;
}

enum cdn_range_result
cdn_range_eval(const char *method, const struct cdn_hdrs *req, const struct cdn_stored *st,
               uint64_t length, uint64_t *first, uint64_t *last)
{
    if (method == NULL || strcmp(method, "GET") != 0 || st->status != 200 ||
        cdn_hdrs_count(req, "Range") != 1 || !cdn_if_range_ok(req, st->hdrs))
        return CDN_RANGE_FULL;
    const struct cdn_hdr *r = cdn_hdrs_get(req, "Range");
    return cdn_range_parse(r->value, r->vlen, length, first, last);
}

char *
cdn_content_range(enum cdn_range_result r, uint64_t first, uint64_t last, uint64_t length,
                  char *buf, size_t size)
{
    if (r == CDN_RANGE_PARTIAL)
        snprintf(buf, size, "bytes %llu-%llu/%llu", (unsigned long long)first,
                 (unsigned long long)last, (unsigned long long)length);
    else if (r == CDN_RANGE_UNSATISFIABLE)
        snprintf(buf, size, "bytes */%llu", (unsigned long long)length);
    else if (size)
        buf[0] = '\0';
    return buf;
}

/* ---- Invalidation -----------------------------------------------------------------------------
 */

static bool
safe_method(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 || strcmp(m, "OPTIONS") == 0 ||
           strcmp(m, "TRACE") == 0;
}

/*
 * Resolves a Location / Content-Location reference against the request (RFC 3986 §5.2, without
 * dot-segment removal). False when it is malformed or has another origin.
 */
static bool
resolve_same_origin(const char *ref, size_t n, const char *scheme, const char *host,
                    const char *target, struct cdn_arena *a, struct cdn_uri *u)
{
    const char *hash = memchr(ref, '#', n);
    if (hash)
        n = (size_t)(hash - ref);
    while (n && (*ref == ' ' || *ref == '\t')) {
        ref++;
        n--;
    }
    while (n && (ref[n - 1] == ' ' || ref[n - 1] == '\t'))
        n--;
    u->scheme = scheme;
    u->host = host;
    size_t i = 0;
    while (i < n && ((ref[i] >= 'a' && ref[i] <= 'z') || (ref[i] >= 'A' && ref[i] <= 'Z') ||
                     (i > 0 && ((ref[i] >= '0' && ref[i] <= '9') || ref[i] == '+' ||
                                ref[i] == '-' || ref[i] == '.'))))
        i++;
    const char *rest = ref;
    size_t rn = n;
    if (i > 0 && i < n && ref[i] == ':') {
        if (!cdn_name_eq(ref, i, scheme))
            return false;
        rest = ref + i + 1;
        rn = n - i - 1;
        if (rn < 2 || rest[0] != '/' || rest[1] != '/')
            return false;
    }
    if (rn >= 2 && rest[0] == '/' && rest[1] == '/') {
        const char *auth = rest + 2, *aend = auth;
        while (aend < rest + rn && *aend != '/' && *aend != '?')
            aend++;
        if (memchr(auth, '@', (size_t)(aend - auth)) != NULL)
            return false;
        const char *h = cdn_key_host(scheme, auth, (size_t)(aend - auth), a);
        if (h == NULL || h[0] == '\0' || strcmp(h, host) != 0)
            return false;
        size_t pn = (size_t)(rest + rn - aend);
        if (pn == 0 || aend[0] == '?')
            u->target = cdn_arena_printf(a, "/%.*s", (int)pn, aend);
        else
            u->target = cdn_arena_strndup(a, aend, pn);
        return true;
    }
    const char *q = strchr(target, '?');
    size_t path_len = q ? (size_t)(q - target) : strlen(target);
    if (rn == 0) {
        u->target = target;
    } else if (rest[0] == '/') {
        u->target = cdn_arena_strndup(a, rest, rn);
    } else if (rest[0] == '?') {
        u->target = cdn_arena_printf(a, "%.*s%.*s", (int)path_len, target, (int)rn, rest);
    } else {
        size_t dir = path_len;
        while (dir > 0 && target[dir - 1] != '/')
            dir--;
        u->target = cdn_arena_printf(a, "%.*s%.*s", (int)dir, target, (int)rn, rest);
    }
    return u->target[0] == '/';
}

size_t
cdn_invalidation_targets(const char *method, int status, const char *scheme, const char *host,
                         const char *target, const struct cdn_hdrs *resp, struct cdn_arena *arena,
                         struct cdn_uri out[3])
{
    if (method == NULL || safe_method(method) || status < 200 || status > 399)
        return 0;
    size_t n = 0;
    out[n++] = (struct cdn_uri){scheme, host, target};
    static const char *const fields[] = {"Location", "Content-Location"};
    for (size_t k = 0; k < CDN_ARRAY_LEN(fields); k++) {
        const struct cdn_hdr *f = cdn_hdrs_get(resp, fields[k]);
        struct cdn_uri u;
        if (f == NULL || !resolve_same_origin(f->value, f->vlen, scheme, host, target, arena, &u))
            continue;
        bool dup = false;
        for (size_t j = 0; j < n && !dup; j++)
            dup = strcmp(out[j].target, u.target) == 0;
        if (!dup)
            out[n++] = u;
    }
    return n;
}

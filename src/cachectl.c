/*
 * cachectl.c: Cache-Control, targeted fields (RFC 9213 over RFC 8941 Dictionaries) and
 * HTTP-date.
 *
 * Model: both directive syntaxes reduce to one operation, "directive NAME was seen, with or
 * without an argument", applied to a struct cdn_cc. Applying is where duplicates and bad
 * arguments are resolved, always towards the more restrictive reading, so the two front syntaxes
 * cannot disagree about what a directive means. Nothing here allocates: results point into the
 * input. Dates are converted with proleptic Gregorian day arithmetic, not libc, so the module
 * needs no time zone state and works for any int64 time.
 */
#include "cdnode/cachectl.h"
#include "cdnode/common.h"
#include "cdnode/headers.h"

#include <string.h>

/* ---- Cache-Control ----------------------------------------------------------------------------
 */

void
cdn_cc_init(struct cdn_cc *cc)
{
    memset(cc, 0, sizeof(*cc));
    cc->max_age = -1;
    cc->s_maxage = -1;
    cc->stale_while_revalidate = -1;
    cc->stale_if_error = -1;
    cc->max_stale = -1;
    cc->min_fresh = -1;
}

static bool
is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

int
cdn_delta_seconds_parse(const char *s, size_t n, int64_t *out)
{
    if (n == 0)
        return CDN_EINVAL;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return CDN_EINVAL;
        if (v < CDN_DELTA_MAX)
            v = v * 10 + (s[i] - '0');
    }
    *out = v > CDN_DELTA_MAX ? CDN_DELTA_MAX : v;
    return 0;
}

/* An argument as the directive sees it: absent, present and usable, or present but malformed. */
struct cc_arg {
    bool present;
    bool valid;
    const char *s;
    size_t n;
};

/* max-age and s-maxage: invalid is 0, a second different value is 0 (stale). */
static void
set_freshness(int64_t *slot, const struct cc_arg *a)
{
    int64_t v = 0;
    if (!(a->present && a->valid && cdn_delta_seconds_parse(a->s, a->n, &v) == 0))
        v = 0;
    if (*slot == -1)
        *slot = v;
    else if (*slot != v)
        *slot = 0;
}

/* Directives that widen what may be served: invalid occurrences dropped, smallest wins. */
static void
set_min(int64_t *slot, const struct cc_arg *a)
{
    int64_t v;
    if (!(a->present && a->valid && cdn_delta_seconds_parse(a->s, a->n, &v) == 0))
        return;
    if (*slot == -1 || v < *slot)
        *slot = v;
}

/* Qualified no-cache / private: a list of field-name tokens, else the unqualified form. */
static void
set_fields(bool *flag, struct cdn_cc_fields *f, const struct cc_arg *a)
{
    bool was_unqualified = *flag && f->n == 0;
    *flag = true;
    if (was_unqualified)
        return;
    if (!a->present || !a->valid)
        goto unqualified;
    const char *pos = a->s, *end = a->s + a->n, *e;
    size_t elen, added = 0;
    while (cdn_list_next(&pos, end, &e, &elen)) {
        if (!cdn_is_token(e, elen) || f->n == CDN_CC_MAX_FIELDS)
            goto unqualified;
        f->name[f->n] = e;
        f->len[f->n] = elen;
        f->n++;
        added++;
    }
    if (added)
        return;
unqualified:
    f->n = 0;
}

static void
apply(struct cdn_cc *cc, const char *name, size_t nlen, const struct cc_arg *a)
{
    if (cdn_name_eq(name, nlen, "max-age")) {
        set_freshness(&cc->max_age, a);
    } else if (cdn_name_eq(name, nlen, "s-maxage")) {
        set_freshness(&cc->s_maxage, a);
    } else if (cdn_name_eq(name, nlen, "stale-while-revalidate")) {
        set_min(&cc->stale_while_revalidate, a);
    } else if (cdn_name_eq(name, nlen, "stale-if-error")) {
        set_min(&cc->stale_if_error, a);
    } else if (cdn_name_eq(name, nlen, "max-stale")) {
        if (!a->present) {
            if (cc->max_stale == -1)
                cc->max_stale = CDN_DELTA_MAX;
        } else {
            set_min(&cc->max_stale, a);
        }
    } else if (cdn_name_eq(name, nlen, "min-fresh")) {
        int64_t v;
        if (a->present && a->valid && cdn_delta_seconds_parse(a->s, a->n, &v) == 0 &&
            v > cc->min_fresh)
            cc->min_fresh = v;
    } else if (cdn_name_eq(name, nlen, "no-cache")) {
        set_fields(&cc->no_cache, &cc->no_cache_fields, a);
    } else if (cdn_name_eq(name, nlen, "private")) {
        set_fields(&cc->private_, &cc->private_fields, a);
    } else if (cdn_name_eq(name, nlen, "no-store")) {
        cc->no_store = true;
    } else if (cdn_name_eq(name, nlen, "must-revalidate")) {
        cc->must_revalidate = true;
    } else if (cdn_name_eq(name, nlen, "proxy-revalidate")) {
        cc->proxy_revalidate = true;
    } else if (cdn_name_eq(name, nlen, "no-transform")) {
        cc->no_transform = true;
    } else if (cdn_name_eq(name, nlen, "only-if-cached")) {
        cc->only_if_cached = true;
    } else if (!a->present) {
        /* These relax what a cache does, so an argument they do not take voids them. */
        if (cdn_name_eq(name, nlen, "public"))
            cc->public_ = true;
        else if (cdn_name_eq(name, nlen, "immutable"))
            cc->immutable = true;
        else if (cdn_name_eq(name, nlen, "must-understand"))
            cc->must_understand = true;
    }
}

/* One cache-directive = token [ "=" ( token / quoted-string ) ]; OWS around "=" tolerated. */
static void
parse_directive(struct cdn_cc *cc, const char *s, size_t n)
{
    const char *end = s + n, *p = s;
    while (p < end && cdn_is_tchar((unsigned char)*p))
        p++;
    const char *name = s;
    size_t nlen = (size_t)(p - s);
    while (p < end && is_ows(*p))
        p++;
    struct cc_arg a = {0};
    if (p < end) {
        if (*p != '=')
            return; /* not a directive */
        p++;
        while (p < end && is_ows(*p))
            p++;
        a.present = true;
        if (p < end && *p == '"') {
            const char *q = ++p;
            while (q < end && *q != '"') {
                if (*q == '\\' && q + 1 < end)
                    q++;
                q++;
            }
            a.s = p;
            a.n = (size_t)(q - p);
            a.valid = q < end && q + 1 == end;
        } else {
            a.s = p;
            a.n = (size_t)(end - p);
            a.valid = cdn_is_token(p, a.n);
        }
    }
    if (nlen == 0)
        return;
    apply(cc, name, nlen, &a);
}

void
cdn_cc_parse(const char *s, size_t n, struct cdn_cc *cc)
{
    const char *pos = s, *end = s + n, *e;
    size_t elen;
    while (cdn_list_next(&pos, end, &e, &elen))
        parse_directive(cc, e, elen);
}

size_t
cdn_cc_from_hdrs(const struct cdn_hdrs *h, const char *name, struct cdn_cc *cc)
{
    size_t lines = 0;
    cdn_cc_init(cc);
    for (size_t i = 0; i < h->n; i++) {
        if (!cdn_name_eq(h->v[i].name, h->v[i].nlen, name))
            continue;
        cdn_cc_parse(h->v[i].value, h->v[i].vlen, cc);
        lines++;
    }
    return lines;
}

/* ---- RFC 8941 Dictionary -------------------------------------------------------------------- */

struct sf_in {
    const char *p;
    const char *end;
};

static bool
sf_lcalpha(char c)
{
    return c >= 'a' && c <= 'z';
}

static bool
sf_alpha(char c)
{
    return sf_lcalpha(c) || (c >= 'A' && c <= 'Z');
}

static void
sf_skip_sp(struct sf_in *in)
{
    while (in->p < in->end && *in->p == ' ')
        in->p++;
}

/* §4.2.3.3 key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" ) */
static int
sf_key(struct sf_in *in, const char **k, size_t *klen)
{
    if (in->p >= in->end || !(sf_lcalpha(*in->p) || *in->p == '*'))
        return CDN_EINVAL;
    const char *start = in->p;
    while (in->p < in->end) {
        char c = *in->p;
        if (!(sf_lcalpha(c) || is_digit(c) || c == '_' || c == '-' || c == '.' || c == '*'))
            break;
        in->p++;
    }
    *k = start;
    *klen = (size_t)(in->p - start);
    return 0;
}

/* §4.2.4 Integer or Decimal. */
static int
sf_number(struct sf_in *in, struct cdn_sf_member *m)
{
    const char *start = in->p;
    bool neg = false;
    if (*in->p == '-') {
        neg = true;
        in->p++;
    }
    if (in->p >= in->end || !is_digit(*in->p))
        return CDN_EINVAL;
    int64_t ip = 0, frac = 0;
    size_t idigits = 0, fdigits = 0;
    bool decimal = false;
    while (in->p < in->end) {
        char c = *in->p;
        if (is_digit(c)) {
            if (decimal) {
                if (++fdigits > 3)
                    return CDN_EINVAL;
                frac = frac * 10 + (c - '0');
            } else {
                if (++idigits > 15)
                    return CDN_EINVAL;
                ip = ip * 10 + (c - '0');
            }
        } else if (c == '.' && !decimal) {
            if (idigits > 12)
                return CDN_EINVAL;
            decimal = true;
        } else {
            break;
        }
        in->p++;
    }
    if (decimal) {
        if (fdigits == 0)
            return CDN_EINVAL;
        while (fdigits++ < 3)
            frac *= 10;
        m->type = CDN_SF_DECIMAL;
        m->integer = ip * 1000 + frac;
    } else {
        m->type = CDN_SF_INTEGER;
        m->integer = ip;
    }
    if (neg)
        m->integer = -m->integer;
    m->str = start;
    m->len = (size_t)(in->p - start);
    return 0;
}

/* §4.2.5 String: printable ASCII, backslash only before DQUOTE or backslash. */
static int
sf_string(struct sf_in *in, struct cdn_sf_member *m)
{
    const char *start = ++in->p;
    while (in->p < in->end) {
        unsigned char c = (unsigned char)*in->p;
        if (c == '\\') {
            if (in->p + 1 >= in->end || (in->p[1] != '"' && in->p[1] != '\\'))
                return CDN_EINVAL;
            in->p += 2;
            continue;
        }
        if (c == '"') {
            m->type = CDN_SF_STRING;
            m->str = start;
            m->len = (size_t)(in->p - start);
            in->p++;
            return 0;
        }
        if (c < 0x20 || c > 0x7e)
            return CDN_EINVAL;
        in->p++;
    }
    return CDN_EINVAL;
}

/* §4.2.6 Token: ( ALPHA / "*" ) *( tchar / ":" / "/" ) */
static int
sf_token(struct sf_in *in, struct cdn_sf_member *m)
{
    const char *start = in->p++;
    while (in->p < in->end &&
           (cdn_is_tchar((unsigned char)*in->p) || *in->p == ':' || *in->p == '/'))
        in->p++;
    m->type = CDN_SF_TOKEN;
    m->str = start;
    m->len = (size_t)(in->p - start);
    return 0;
}

/* §4.2.7 Byte Sequence: ":" *base64 ":" */
static int
sf_bytes(struct sf_in *in, struct cdn_sf_member *m)
{
    const char *start = ++in->p;
    while (in->p < in->end && *in->p != ':') {
        char c = *in->p;
        if (!(sf_alpha(c) || is_digit(c) || c == '+' || c == '/' || c == '='))
            return CDN_EINVAL;
        in->p++;
    }
    if (in->p >= in->end)
        return CDN_EINVAL;
    m->type = CDN_SF_BYTES;
    m->str = start;
    m->len = (size_t)(in->p - start);
    in->p++;
    return 0;
}

/* §4.2.3.1 Bare Item. */
static int
sf_bare_item(struct sf_in *in, struct cdn_sf_member *m)
{
    if (in->p >= in->end)
        return CDN_EINVAL;
    char c = *in->p;
    if (c == '-' || is_digit(c))
        return sf_number(in, m);
    if (c == '"')
        return sf_string(in, m);
    if (c == '*' || sf_alpha(c))
        return sf_token(in, m);
    if (c == ':')
        return sf_bytes(in, m);
    if (c == '?') {
        if (in->p + 1 >= in->end || (in->p[1] != '0' && in->p[1] != '1'))
            return CDN_EINVAL;
        m->type = CDN_SF_BOOLEAN;
        m->boolean = in->p[1] == '1';
        m->str = in->p;
        m->len = 2;
        in->p += 2;
        return 0;
    }
    return CDN_EINVAL;
}

/* §4.2.3.2 Parameters; returns how many distinct keys through *count. */
static int
sf_params(struct sf_in *in, size_t *count)
{
    /* Distinct keys are counted by comparing with the earlier ones: parameter lists are short. */
    const char *keys[CDN_SF_MAX_MEMBERS];
    size_t klens[CDN_SF_MAX_MEMBERS];
    size_t n = 0;
    while (in->p < in->end && *in->p == ';') {
        in->p++;
        sf_skip_sp(in);
        const char *k;
        size_t klen;
        if (sf_key(in, &k, &klen) < 0)
            return CDN_EINVAL;
        if (in->p < in->end && *in->p == '=') {
            in->p++;
            struct cdn_sf_member scratch;
            if (sf_bare_item(in, &scratch) < 0)
                return CDN_EINVAL;
        }
        bool dup = false;
        for (size_t i = 0; i < n && !dup; i++)
            dup = klens[i] == klen && memcmp(keys[i], k, klen) == 0;
        if (!dup) {
            if (n == CDN_SF_MAX_MEMBERS)
                return CDN_ETOOBIG;
            keys[n] = k;
            klens[n] = klen;
            n++;
        }
    }
    *count = n;
    return 0;
}

/* §4.2.1.2 Inner List. */
static int
sf_inner_list(struct sf_in *in, struct cdn_sf_member *m)
{
    const char *start = in->p++;
    size_t items = 0;
    while (in->p < in->end) {
        sf_skip_sp(in);
        if (in->p < in->end && *in->p == ')') {
            in->p++;
            m->type = CDN_SF_INNER_LIST;
            m->str = start;
            m->len = (size_t)(in->p - start);
            m->n_inner = items;
            return 0;
        }
        struct cdn_sf_member item;
        size_t np;
        int rc = sf_bare_item(in, &item);
        if (rc == 0)
            rc = sf_params(in, &np);
        if (rc < 0)
            return rc;
        items++;
        if (in->p >= in->end || (*in->p != ' ' && *in->p != ')'))
            return CDN_EINVAL;
    }
    return CDN_EINVAL;
}

static int
sf_member_value(struct sf_in *in, struct cdn_sf_member *m)
{
    int rc;
    if (in->p < in->end && *in->p == '(')
        rc = sf_inner_list(in, m);
    else
        rc = sf_bare_item(in, m);
    if (rc < 0)
        return rc;
    m->params = in->p;
    rc = sf_params(in, &m->n_params);
    m->params_len = (size_t)(in->p - m->params);
    return rc;
}

int
cdn_sf_parse_dict(const char *s, size_t n, struct cdn_sf_dict *d)
{
    struct sf_in in = {s, s + n};
    d->n = 0;
    sf_skip_sp(&in);
    while (in.p < in.end) {
        struct cdn_sf_member m;
        memset(&m, 0, sizeof(m));
        int rc = sf_key(&in, &m.key, &m.klen);
        if (rc < 0)
            return rc;
        if (in.p < in.end && *in.p == '=') {
            in.p++;
            rc = sf_member_value(&in, &m);
        } else {
            m.type = CDN_SF_BOOLEAN;
            m.boolean = true;
            m.str = "?1";
            m.len = 2;
            m.params = in.p;
            rc = sf_params(&in, &m.n_params);
            m.params_len = (size_t)(in.p - m.params);
        }
        if (rc < 0)
            return rc;
        size_t i;
        for (i = 0; i < d->n; i++)
            if (d->m[i].klen == m.klen && memcmp(d->m[i].key, m.key, m.klen) == 0)
                break;
        if (i == d->n) {
            if (d->n == CDN_SF_MAX_MEMBERS)
                return CDN_ETOOBIG;
            d->n++;
        }
        d->m[i] = m;
        while (in.p < in.end && is_ows(*in.p))
            in.p++;
        if (in.p >= in.end)
            return 0;
        if (*in.p != ',')
            return CDN_EINVAL;
        in.p++;
        while (in.p < in.end && is_ows(*in.p))
            in.p++;
        if (in.p >= in.end)
            return CDN_EINVAL; /* trailing comma */
    }
    return 0;
}

static void
cc_from_dict(const struct cdn_sf_dict *d, struct cdn_cc *cc)
{
    for (size_t i = 0; i < d->n; i++) {
        const struct cdn_sf_member *m = &d->m[i];
        struct cc_arg a = {0};
        switch (m->type) {
        case CDN_SF_BOOLEAN:
            if (!m->boolean)
                continue;
            break;
        case CDN_SF_INTEGER:
        case CDN_SF_DECIMAL:
        case CDN_SF_TOKEN:
        case CDN_SF_STRING:
            a = (struct cc_arg){true, true, m->str, m->len};
            break;
        case CDN_SF_BYTES:
        case CDN_SF_INNER_LIST:
            a = (struct cc_arg){true, false, m->str, m->len};
            break;
        }
        apply(cc, m->key, m->klen, &a);
    }
}

int
cdn_cc_parse_targeted(const char *s, size_t n, struct cdn_cc *cc)
{
    struct cdn_sf_dict d;
    if (cdn_sf_parse_dict(s, n, &d) < 0 || d.n == 0)
        return CDN_EINVAL;
    cc_from_dict(&d, cc);
    return 0;
}

/*
 * One Surrogate-Control element, "directive [ ';' device-token ]": returns the directive's length
 * (trimmed of OWS) and sets *t and *tlen to the device token (trimmed), or *t to NULL when the
 * element is untargeted. The ';' is the last one outside a quoted string, so a quoted argument
 * may hold one. "max-age=5;" names an empty device, which is nobody's.
 */
static size_t
surrogate_split(const char *e, size_t el, const char **t, size_t *tlen)
{
    const char *semi = NULL;
    bool quoted = false;
    for (size_t i = 0; i < el; i++) {
        if (quoted && e[i] == '\\' && i + 1 < el)
            i++;
        else if (e[i] == '"')
            quoted = !quoted;
        else if (!quoted && e[i] == ';')
            semi = e + i;
    }
    *t = NULL;
    *tlen = 0;
    if (semi == NULL)
        return el;
    size_t dlen = (size_t)(semi - e);
    while (dlen && is_ows(e[dlen - 1]))
        dlen--;
    const char *p = semi + 1, *end = e + el;
    while (p < end && is_ows(*p))
        p++;
    *t = p;
    *tlen = (size_t)(end - p);
    return dlen;
}

/* Applies the directives of s that are for this device: with targeted, those targeted at it,
 * else the untargeted ones. Returns how many there were. */
static size_t
surrogate_elems(const char *s, size_t n, bool targeted, const char *device, size_t devlen,
                struct cdn_cc *cc)
{
    const char *pos = s, *end = s + n, *e, *t;
    size_t elen, tlen, used = 0;
    while (cdn_list_next(&pos, end, &e, &elen)) {
        size_t dlen = surrogate_split(e, elen, &t, &tlen);
        bool mine = t != NULL && devlen > 0 && tlen == devlen && cdn_case_eq(t, device, tlen);
        if (targeted ? !mine : t != NULL)
            continue;
        if (dlen == 0 || !cdn_is_tchar((unsigned char)e[0]))
            continue;
        parse_directive(cc, e, dlen);
        used++;
    }
    return used;
}

int
cdn_cc_parse_surrogate(const char *s, size_t n, const char *device, struct cdn_cc *cc)
{
    /* The directives targeted at this device replace the untargeted ones. */
    size_t devlen = device ? strlen(device) : 0;
    if (surrogate_elems(s, n, true, device, devlen, cc) > 0 ||
        surrogate_elems(s, n, false, device, devlen, cc) > 0)
        return 0;
    return CDN_EINVAL;
}

bool
cdn_cc_is_surrogate_field(const char *name)
{
    return cdn_name_eq(name, strlen(name), "Surrogate-Control");
}

/* Surrogate-Control, all its lines as one list: it keeps the Edge Architecture's own syntax. */
static int
surrogate_field(const struct cdn_hdrs *h, const char *name, const char *device, struct cdn_cc *cc)
{
    if (cdn_hdrs_count(h, name) == 0)
        return CDN_ENOTFOUND;
    size_t devlen = device ? strlen(device) : 0;
    for (int targeted = 1; targeted >= 0; targeted--) {
        size_t used = 0;
        for (size_t i = 0; i < h->n; i++)
            if (cdn_name_eq(h->v[i].name, h->v[i].nlen, name))
                used += surrogate_elems(h->v[i].value, h->v[i].vlen, targeted, device, devlen, cc);
        if (used > 0)
            return 0;
    }
    return CDN_EINVAL;
}

static bool
only_ows(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_ows(s[i]))
            return false;
    return true;
}

/* Parses every line of one targeted field; the lines together must form a valid Dictionary. */
static int
targeted_field(const struct cdn_hdrs *h, const char *name, struct cdn_cc *cc)
{
    size_t lines = cdn_hdrs_count(h, name), members = 0;
    if (lines == 0)
        return CDN_ENOTFOUND;
    /* The dictionary is parsed line by line and kept whole so a later line's duplicate key
     * overwrites an earlier one before anything is applied, as in the joined value. */
    struct cdn_sf_dict all, line;
    all.n = 0;
    for (size_t i = 0; i < h->n; i++) {
        const struct cdn_hdr *f = &h->v[i];
        if (!cdn_name_eq(f->name, f->nlen, name))
            continue;
        if (only_ows(f->value, f->vlen)) {
            if (lines > 1)
                return CDN_EINVAL;
            continue;
        }
        if (cdn_sf_parse_dict(f->value, f->vlen, &line) < 0)
            return CDN_EINVAL;
        for (size_t j = 0; j < line.n; j++) {
            size_t k;
            for (k = 0; k < all.n; k++)
                if (all.m[k].klen == line.m[j].klen &&
                    memcmp(all.m[k].key, line.m[j].key, line.m[j].klen) == 0)
                    break;
            if (k == all.n) {
                if (all.n == CDN_SF_MAX_MEMBERS)
                    return CDN_EINVAL;
                all.n++;
            }
            all.m[k] = line.m[j];
            members++;
        }
    }
    if (members == 0)
        return CDN_EINVAL;
    cc_from_dict(&all, cc);
    return 0;
}

int
cdn_cc_targeted_from_hdrs(const struct cdn_hdrs *h, const char *const *names, size_t n_names,
                          const char *device, struct cdn_cc *cc)
{
    for (size_t i = 0; i < n_names; i++) {
        cdn_cc_init(cc);
        int rc = cdn_cc_is_surrogate_field(names[i]) ? surrogate_field(h, names[i], device, cc)
                                                     : targeted_field(h, names[i], cc);
        if (rc == 0)
            return (int)i;
    }
    cdn_cc_init(cc);
    return -1;
}

/* ---- HTTP-date --------------------------------------------------------------------------------
 */

static const char *const wkday[7] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
static const char *const weekday[7] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                       "Friday", "Saturday", "Sunday"};
static const char *const month_name[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* Days since 1970-01-01 of a proleptic Gregorian date (month 1..12). */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void
civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int
days_in_month(int64_t y, int m)
{
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return dim[m - 1];
}

/* Exactly n digits at s. */
static bool
digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static bool
match_name(const char *s, size_t n, const char *const *names, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (strlen(names[i]) == n && memcmp(s, names[i], n) == 0)
            return true;
    return false;
}

static int
month_of(const char *s)
{
    for (int i = 0; i < 12; i++)
        if (memcmp(s, month_name[i], 3) == 0)
            return i + 1;
    return 0;
}

/* time-of-day = hour ":" minute ":" second (8 characters) */
static bool
time_of_day(const char *s, int *hh, int *mm, int *ss)
{
    return digits(s, 2, hh) && s[2] == ':' && digits(s + 3, 2, mm) && s[5] == ':' &&
           digits(s + 6, 2, ss) && *hh <= 23 && *mm <= 59 && *ss <= 60;
}

static int
finish_date(int64_t y, int mon, int day, int hh, int mm, int ss, int64_t *out)
{
    if (mon == 0 || day < 1 || day > days_in_month(y, mon))
        return CDN_EINVAL;
    *out = days_from_civil(y, mon, day) * 86400 + hh * 3600 + mm * 60 + ss;
    return 0;
}

int
cdn_http_date_parse(const char *s, size_t n, int64_t ref, int64_t *out)
{
    while (n && is_ows(*s)) {
        s++;
        n--;
    }
    while (n && is_ows(s[n - 1]))
        n--;
    int day, year, hh, mm, ss, mon;
    if (n == 29 && s[3] == ',') {
        /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
        if (!match_name(s, 3, wkday, 7) || s[4] != ' ' || !digits(s + 5, 2, &day) || s[7] != ' ' ||
            (mon = month_of(s + 8)) == 0 || s[11] != ' ' || !digits(s + 12, 4, &year) ||
            s[16] != ' ' || !time_of_day(s + 17, &hh, &mm, &ss) || memcmp(s + 25, " GMT", 4) != 0)
            return CDN_EINVAL;
        return finish_date(year, mon, day, hh, mm, ss, out);
    }
    if (n == 24 && s[3] == ' ') {
        /* asctime: "Sun Nov  6 08:49:37 1994" */
        if (!match_name(s, 3, wkday, 7) || (mon = month_of(s + 4)) == 0 || s[7] != ' ')
            return CDN_EINVAL;
        if (s[8] == ' ') {
            if (!digits(s + 9, 1, &day))
                return CDN_EINVAL;
        } else if (!digits(s + 8, 2, &day)) {
            return CDN_EINVAL;
        }
        if (s[10] != ' ' || !time_of_day(s + 11, &hh, &mm, &ss) || s[19] != ' ' ||
            !digits(s + 20, 4, &year))
            return CDN_EINVAL;
        return finish_date(year, mon, day, hh, mm, ss, out);
    }
    /* rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT" */
    const char *comma = memchr(s, ',', n);
    if (!comma || !match_name(s, (size_t)(comma - s), weekday, 7))
        return CDN_EINVAL;
    const char *p = comma + 1;
    if ((size_t)(s + n - p) != 23 || p[0] != ' ' || !digits(p + 1, 2, &day) || p[3] != '-' ||
        (mon = month_of(p + 4)) == 0 || p[7] != '-' || !digits(p + 8, 2, &year) || p[10] != ' ' ||
        !time_of_day(p + 11, &hh, &mm, &ss) || memcmp(p + 19, " GMT", 4) != 0)
        return CDN_EINVAL;
    int64_t ref_year;
    int rm, rd;
    civil_from_days((ref >= 0 ? ref : ref - 86399) / 86400, &ref_year, &rm, &rd);
    int64_t y = ref_year - ((ref_year % 100) + 100) % 100 + year;
    if (y > ref_year + 50)
        y -= 100;
    else if (y + 100 <= ref_year + 50)
        y += 100;
    return finish_date(y, mon, day, hh, mm, ss, out);
}

char *
cdn_http_date_format(int64_t t, char *buf)
{
    const int64_t lo = INT64_C(-62135596800); /* 0001-01-01T00:00:00Z */
    const int64_t hi = INT64_C(253402300799); /* 9999-12-31T23:59:59Z */
    if (t < lo)
        t = lo;
    if (t > hi)
        t = hi;
    int64_t days = (t >= 0 ? t : t - 86399) / 86400;
    int64_t secs = t - days * 86400;
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    /* 1970-01-01 was a Thursday: index 3 in wkday[]. */
    int wd = (int)(((days % 7) + 7 + 3) % 7);
    /* Formatted through a roomy buffer: the compiler cannot see the fields' ranges. */
    char tmp[64];
    snprintf(tmp, sizeof(tmp), "%s, %02d %s %04d %02d:%02d:%02d GMT", wkday[wd], d,
             month_name[m - 1], (int)y, (int)(secs / 3600), (int)(secs / 60 % 60),
             (int)(secs % 60));
    memcpy(buf, tmp, CDN_HTTP_DATE_LEN + 1);
    return buf;
}

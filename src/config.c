/*
 * config.c: the configuration is one flat struct described by one table of keys. Every way of
 * setting a value (a file line, a command-line flag) goes through cdn_config_set(), which finds the
 * key in the table and parses the value by the key's kind, so a key means the same thing wherever
 * it is written. Each value is checked alone when it is set; rules that tie several keys together
 * wait for cdn_config_check(), once the file and the flags are both in.
 *
 * A failed set leaves the key as it was: a list key takes all of one value's items or none.
 * Strings are owned by the struct; replacing a scalar string frees the old one.
 */
#include "cdnode/config.h"
#include "cdnode/accesslog.h"
#include "cdnode/common.h"
#include "cdnode/headers.h"
#include "cdnode/log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define WS " \t\r\n\f\v"
#define MAX_LINE 4096
#define MAX_CDN_ID 63
#define MAX_WORKERS 256
#define MIN_ADMIN_TOKEN 16
#define KIB 1024ull
#define MIB (1024ull * 1024)
#define GIB (1024ull * 1024 * 1024)

enum kind {
    K_STRING,    /* any non-empty string (file and directory names) */
    K_ADDR,      /* ADDR:PORT to listen on; port 0 lets the OS pick */
    K_ADDR_PORT, /* ADDR:PORT to listen on, port 1..65535 */
    K_UINT,      /* unsigned, plain number */
    K_SIZE,      /* size_t, bytes with k/m/g */
    K_SIZE64,    /* uint64_t, bytes with k/m/g */
    K_MS,        /* unsigned, a duration kept in milliseconds */
    K_SECONDS,   /* unsigned, a duration kept in whole seconds */
    K_BOOL,
    K_ORIGINS, /* list of origin URLs */
    K_PARAMS,  /* list of query parameter names */
    K_FIELDS,  /* list of header field names */
    K_CDN_ID,
    K_CC, /* a TCP congestion control name, or off */
    K_SECRET,
    K_LOG_LEVEL,
    K_ACCESS_LOG_FORMAT,
    K_BALANCE,
    K_PATH, /* origin-form path and query: a leading '/', no whitespace, controls or '#' */
};

struct key {
    const char *name;
    enum kind kind;
    size_t off;
    uint64_t min, max; /* numeric bounds in the field's unit (bytes, ms, seconds) */
};

#define F(field) offsetof(struct cdn_config, field)

static const struct key keys[] = {
    {"listen", K_ADDR, F(listen), 0, 0},
    {"listen_tls", K_ADDR_PORT, F(listen_tls), 0, 0},
    {"tls_cert", K_STRING, F(tls_cert), 0, 0},
    {"tls_key", K_STRING, F(tls_key), 0, 0},
    {"workers", K_UINT, F(workers), 1, MAX_WORKERS},
    {"connection_limit", K_UINT, F(connection_limit), 1, UINT_MAX},
    {"connection_timeout", K_SECONDS, F(connection_timeout_s), 1, UINT_MAX},
    /* Above 32k MHD mmaps a pool per connection (DESIGN.md §3). */
    {"connection_memory", K_SIZE, F(connection_memory), 8 * KIB, 32 * KIB},
    {"listen_backlog", K_UINT, F(listen_backlog), 1, INT_MAX},
    /* SO_SNDBUF is an int, which the kernel doubles. */
    {"send_buffer", K_SIZE, F(send_buffer), 0, 256 * MIB},
    {"loopback_send_buffer", K_SIZE, F(loopback_send_buffer), 0, 256 * MIB},
    {"loopback_congestion_control", K_CC, F(loopback_congestion_control), 0, 0},
    {"max_request_body", K_SIZE, F(max_request_body), 0, SIZE_MAX},
    {"origin", K_ORIGINS, F(origins), 0, 0},
    {"parent", K_ORIGINS, F(parents), 0, 0},
    {"origin_connect_timeout", K_MS, F(origin_connect_timeout_ms), 1, UINT_MAX},
    {"origin_first_byte_timeout", K_MS, F(origin_first_byte_timeout_ms), 1, UINT_MAX},
    {"origin_idle_timeout", K_MS, F(origin_idle_timeout_ms), 1, UINT_MAX},
    {"origin_ca_file", K_STRING, F(origin_ca_file), 0, 0},
    /* Stays under connection_memory's ceiling so a stored header block can always be sent. */
    {"max_origin_headers", K_SIZE, F(max_origin_headers), 1 * KIB, 24 * KIB},
    {"origin_balance", K_BALANCE, F(origin_balance), 0, 0},
    {"origin_fall", K_UINT, F(origin_fall), 1, 1000},
    {"origin_rise", K_UINT, F(origin_rise), 1, 1000},
    {"origin_health_path", K_PATH, F(origin_health_path), 0, 0},
    {"origin_health_interval", K_MS, F(origin_health_interval_ms), 50, 3600000},
    /* libcurl's per-host limit is a long; beyond this the OS runs out of ports first. */
    {"origin_max_connections", K_UINT, F(origin_max_connections), 1, 65535},
    {"max_inflight_misses", K_UINT, F(max_inflight_misses), 1, 1000000},
    {"collapse_wait", K_MS, F(collapse_wait_ms), 1, UINT_MAX},
    {"stale_if_error_grace", K_SECONDS, F(stale_if_error_grace_s), 0, UINT_MAX},
    {"strip_cache_tags", K_BOOL, F(strip_cache_tags), 0, 0},
    {"gzip", K_BOOL, F(gzip), 0, 0},
    {"cache_set_cookie", K_BOOL, F(cache_set_cookie), 0, 0},
    {"request_head_timeout", K_SECONDS, F(request_head_timeout_s), 1, 3600},
    {"cdn_id", K_CDN_ID, F(cdn_id), 0, 0},
    {"loop_allowance", K_UINT, F(loop_allowance), 0, UINT_MAX},
    {"forwarded", K_BOOL, F(forwarded), 0, 0},
    {"x_forwarded_for", K_BOOL, F(x_forwarded_for), 0, 0},
    {"trusted_hops", K_UINT, F(trusted_hops), 0, UINT_MAX},
    {"cache_dir", K_STRING, F(cache_dir), 0, 0},
    /* The LMDB map size is a size_t. */
    {"cache_size", K_SIZE64, F(cache_size), 1 * MIB, SIZE_MAX},
    {"max_object_size", K_SIZE, F(max_object_size), 1, SIZE_MAX},
    {"max_variants", K_UINT, F(max_variants), 1, 1024},
    {"cache_writemap", K_BOOL, F(cache_writemap), 0, 0},
    {"cache_key_ignore_query", K_BOOL, F(cache_key_ignore_query), 0, 0},
    {"cache_key_sort_query", K_BOOL, F(cache_key_sort_query), 0, 0},
    {"cache_key_drop_params", K_PARAMS, F(cache_key_drop_params), 0, 0},
    {"target_cache_control", K_FIELDS, F(target_cache_control), 0, 0},
    {"heuristic_percent", K_UINT, F(heuristic_percent), 0, 100},
    {"heuristic_max", K_SECONDS, F(heuristic_max_s), 0, UINT_MAX},
    {"admin_listen", K_ADDR, F(admin_listen), 0, 0},
    {"admin_token", K_SECRET, F(admin_token), 0, 0},
    {"purge_parents", K_ORIGINS, F(purge_parents), 0, 0},
    {"purge_children", K_ORIGINS, F(purge_children), 0, 0},
    {"purge_peer_token", K_SECRET, F(purge_peer_token), 0, 0},
    {"purge_peer_ca_file", K_STRING, F(purge_peer_ca_file), 0, 0},
    {"purge_peer_timeout", K_MS, F(purge_peer_timeout_ms), 1, 600000},
    {"log_level", K_LOG_LEVEL, F(log_level), 0, 0},
    {"access_log", K_STRING, F(access_log), 0, 0}, /* "stderr", "off" or a file */
    {"access_log_format", K_ACCESS_LOG_FORMAT, F(access_log_format), 0, 0},
};

static int errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes the reason into err (when there is room for one) and returns CDN_EINVAL. */
static int
errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return CDN_EINVAL;
}

/* Value parsers. The private ones tell overflow (CDN_ETOOBIG) from bad syntax (CDN_EINVAL). */

static int
parse_digits(const char *s, uint64_t *out, const char **end)
{
    if (!isdigit((unsigned char)*s))
        return CDN_EINVAL;
    uint64_t v = 0;
    for (; isdigit((unsigned char)*s); s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return CDN_ETOOBIG;
        v = v * 10 + d;
    }
    *out = v;
    *end = s;
    return 0;
}

static int
parse_number(const char *s, uint64_t *out)
{
    const char *end;
    uint64_t v;
    int rc = parse_digits(s, &v, &end);
    if (rc != 0)
        return rc;
    if (*end != '\0')
        return CDN_EINVAL;
    *out = v;
    return 0;
}

struct unit {
    const char *suffix;
    uint64_t mul;
};

/* Digits and one optional unit suffix (case-insensitive) from units; "" is the bare number. */
static int
parse_scaled(const char *s, const struct unit *units, size_t n_units, uint64_t *out)
{
    const char *end;
    uint64_t v;
    int rc = parse_digits(s, &v, &end);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n_units; i++) {
        if (strcasecmp(end, units[i].suffix) != 0)
            continue;
        if (v > UINT64_MAX / units[i].mul)
            return CDN_ETOOBIG;
        *out = v * units[i].mul;
        return 0;
    }
    return CDN_EINVAL;
}

static const struct unit size_units[] = {{"", 1}, {"k", KIB}, {"m", MIB}, {"g", GIB}};
static const struct unit duration_units[] = {
    {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
};

static int
size_value(const char *s, uint64_t *out)
{
    return parse_scaled(s, size_units, CDN_ARRAY_LEN(size_units), out);
}

static int
duration_value(const char *s, uint64_t *out)
{
    return parse_scaled(s, duration_units, CDN_ARRAY_LEN(duration_units), out);
}

int
cdn_parse_size(const char *s, uint64_t *out)
{
    return size_value(s, out) == 0 ? 0 : CDN_EINVAL;
}

int
cdn_parse_duration_ms(const char *s, uint64_t *out)
{
    return duration_value(s, out) == 0 ? 0 : CDN_EINVAL;
}

int
cdn_parse_bool(const char *s, bool *out)
{
    static const struct {
        const char *name;
        bool value;
    } names[] = {
        {"on", true},   {"yes", true}, {"true", true},   {"1", true},
        {"off", false}, {"no", false}, {"false", false}, {"0", false},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(names); i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].value;
            return 0;
        }
    }
    return CDN_EINVAL;
}

static bool
is_host_char(char ch)
{
    return isalnum((unsigned char)ch) || ch == '-' || ch == '.' || ch == '_';
}

static bool
is_ipv6(const char *s, size_t len)
{
    char buf[INET6_ADDRSTRLEN];
    struct in6_addr a;
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, &a) == 1;
}

/* Splits HOST:PORT without judging the port's range, so callers can say what is wrong with it. */
static int
split_hostport(const char *s, char *host, size_t hostlen, uint64_t *port)
{
    const char *h = s, *colon;
    size_t hlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':' || !is_ipv6(s + 1, (size_t)(close - s - 1)))
            return CDN_EINVAL;
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strchr(s, ':');
        if (colon == NULL)
            return CDN_EINVAL;
        hlen = (size_t)(colon - s);
        if (hlen == 1 && s[0] == '*')
            hlen = 0;
        for (size_t i = 0; i < hlen; i++)
            if (!is_host_char(h[i]))
                return CDN_EINVAL;
    }
    const char *end;
    if (parse_digits(colon + 1, port, &end) != 0 || *end != '\0')
        return CDN_EINVAL;
    if (hlen >= hostlen)
        return CDN_EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    return 0;
}

int
cdn_parse_hostport(const char *s, char *host, size_t hostlen, unsigned *port)
{
    uint64_t p;
    if (split_hostport(s, host, hostlen, &p) != 0 || p > 65535)
        return CDN_EINVAL;
    *port = (unsigned)p;
    return 0;
}

/* Setters, one per kind of key. Each returns 0 or CDN_EINVAL with "key: reason". */

static void *
field(struct cdn_config *c, const struct key *k)
{
    return (char *)c + k->off;
}

static void
replace_string(char **slot, const char *value)
{
    free(*slot);
    *slot = cdn_strdup(value);
}

/* What the front end and the admin listener can bind: an IP literal, localhost, or any. */
static bool
is_listen_host(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    return host[0] == '\0' || strcmp(host, "localhost") == 0 ||
           inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

static int
set_addr(struct cdn_config *c, const struct key *k, const char *v, char *err, size_t errlen)
{
    char host[INET6_ADDRSTRLEN];
    uint64_t port;
    if (split_hostport(v, host, sizeof(host), &port) != 0)
        return errf(err, errlen, "%s: expected ADDR:PORT, got '%s'", k->name, v);
    uint64_t min = k->kind == K_ADDR ? 0 : 1;
    if (port < min || port > 65535)
        return errf(err, errlen, "%s: port must be between %" PRIu64 " and 65535, got '%s'",
                    k->name, min, v);
    if (!is_listen_host(host))
        return errf(err, errlen, "%s: address must be an IP address, localhost or *, got '%s'",
                    k->name, v);
    replace_string(field(c, k), v);
    return 0;
}

/* A bound as the user would write it: the largest unit that divides it exactly. */
static void
format_amount(enum kind kind, uint64_t v, char *buf, size_t len)
{
    static const struct unit bytes[] = {{"g", GIB}, {"m", MIB}, {"k", KIB}, {"", 1}};
    static const struct unit ms[] = {
        {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
    const struct unit *units = bytes;
    size_t n = CDN_ARRAY_LEN(bytes);
    if (kind == K_MS || kind == K_SECONDS) {
        units = ms;
        n = CDN_ARRAY_LEN(ms);
        if (kind == K_SECONDS)
            v *= 1000; /* bounds in seconds are at most UINT_MAX: no overflow */
    } else if (kind == K_UINT) {
        n = 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (v != 0 && v % units[i].mul == 0) {
            snprintf(buf, len, "%" PRIu64 "%s", v / units[i].mul, units[i].suffix);
            return;
        }
    }
    snprintf(buf, len, "%" PRIu64, v);
}

static int
set_number(struct cdn_config *c, const struct key *k, const char *v, char *err, size_t errlen)
{
    uint64_t x = 0;
    int rc;
    switch (k->kind) {
    case K_UINT:
        rc = parse_number(v, &x);
        if (rc == CDN_EINVAL)
            return errf(err, errlen, "%s: expected a number, got '%s'", k->name, v);
        break;
    case K_SIZE:
    case K_SIZE64:
        rc = size_value(v, &x);
        if (rc == CDN_EINVAL)
            return errf(err, errlen, "%s: expected a size such as 512, 64k, 16m or 1g, got '%s'",
                        k->name, v);
        break;
    default:
        rc = duration_value(v, &x);
        if (rc == CDN_EINVAL)
            return errf(err, errlen,
                        "%s: expected a duration such as 500ms, 30s, 5m, 1h or 1d, got '%s'",
                        k->name, v);
        if (rc == 0 && k->kind == K_SECONDS) {
            if (x % 1000 != 0)
                return errf(err, errlen, "%s: must be whole seconds, got '%s'", k->name, v);
            x /= 1000;
        }
        break;
    }
    char bound[32];
    if (rc == CDN_ETOOBIG || x > k->max) {
        format_amount(k->kind, k->max, bound, sizeof(bound));
        return errf(err, errlen, "%s: must be at most %s, got '%s'", k->name, bound, v);
    }
    if (x < k->min) {
        format_amount(k->kind, k->min, bound, sizeof(bound));
        return errf(err, errlen, "%s: must be at least %s, got '%s'", k->name, bound, v);
    }
    if (k->kind == K_SIZE)
        *(size_t *)field(c, k) = (size_t)x;
    else if (k->kind == K_SIZE64)
        *(uint64_t *)field(c, k) = x;
    else
        *(unsigned *)field(c, k) = (unsigned)x;
    return 0;
}

/* Checks one origin URL and stores its canonical form (lowercase, no trailing '/') in *item. */
static int
origin_item(const char *name, char **item, char *err, size_t errlen)
{
    const char *s = *item, *rest;
    if (strncasecmp(s, "http://", 7) == 0)
        rest = s + 7;
    else if (strncasecmp(s, "https://", 8) == 0)
        rest = s + 8;
    else
        return errf(err, errlen, "%s: expected an http:// or https:// URL, got '%s'", name, s);
    size_t alen = strcspn(rest, "/?#");
    if (strchr(rest, '?') != NULL)
        return errf(err, errlen, "%s: a query is not allowed, got '%s'", name, s);
    if (strchr(rest, '#') != NULL)
        return errf(err, errlen, "%s: a fragment is not allowed, got '%s'", name, s);
    if (memchr(rest, '@', alen) != NULL)
        return errf(err, errlen, "%s: user info is not allowed, got '%s'", name, s);
    if (rest[alen] == '/' && rest[alen + 1] != '\0')
        return errf(err, errlen,
                    "%s: a path is not allowed (scheme, host and port only), "
                    "got '%s'", name,
                    s);
    const char *port = NULL;
    size_t hlen;
    if (rest[0] == '[') {
        const char *close = memchr(rest, ']', alen);
        if (close == NULL || !is_ipv6(rest + 1, (size_t)(close - rest - 1)))
            return errf(err, errlen, "%s: bad IPv6 address in '%s'", name, s);
        hlen = (size_t)(close + 1 - rest);
        if (hlen < alen && rest[hlen] != ':')
            return errf(err, errlen, "%s: bad host in '%s'", name, s);
    } else {
        hlen = 0;
        while (hlen < alen && is_host_char(rest[hlen]))
            hlen++;
        if (hlen < alen && rest[hlen] != ':')
            return errf(err, errlen, "%s: bad host in '%s'", name, s);
    }
    if (hlen == 0)
        return errf(err, errlen, "%s: no host in '%s'", name, s);
    if (hlen < alen) {
        port = rest + hlen + 1;
        uint64_t p;
        const char *end;
        if (parse_digits(port, &p, &end) != 0 || end != rest + alen || p < 1 || p > 65535)
            return errf(err, errlen, "%s: port must be between 1 and 65535, got '%s'", name, s);
    }
    char *canon = cdn_strndup(s, (size_t)(rest - s) + alen);
    for (char *p = canon; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    free(*item);
    *item = canon;
    return 0;
}

static int
list_item(const struct key *k, char **item, char *err, size_t errlen)
{
    switch (k->kind) {
    case K_ORIGINS:
        return origin_item(k->name, item, err, errlen);
    case K_PARAMS:
        if (strpbrk(*item, "&=#") != NULL)
            return errf(err, errlen, "%s: '%s' is not a query parameter name", k->name, *item);
        return 0;
    default:
        if (!cdn_is_token(*item, strlen(*item)))
            return errf(err, errlen, "%s: '%s' is not a header field name", k->name, *item);
        return 0;
    }
}

static int
set_list(struct cdn_config *c, const struct key *k, const char *v, char *err, size_t errlen)
{
    char **list = field(c, k);
    size_t *n, cap = CDN_MAX_LIST;
    bool replace = false;
    if (k->kind == K_ORIGINS) {
        n = k->off == F(origins)         ? &c->n_origins
            : k->off == F(parents)       ? &c->n_parents
            : k->off == F(purge_parents) ? &c->n_purge_parents
                                         : &c->n_purge_children;
        cap = CDN_MAX_ORIGINS;
    } else if (k->kind == K_PARAMS) {
        n = &c->n_cache_key_drop_params;
    } else {
        n = &c->n_target_cache_control;
        replace = c->target_cache_control_is_default;
    }
    size_t have = replace ? 0 : *n;
    char *add[CDN_MAX_LIST];
    size_t n_add = 0;
    int rc = 0;
    for (const char *p = v + strspn(v, WS); *p != '\0'; p += strspn(p, WS)) {
        size_t len = strcspn(p, WS);
        if (have + n_add == cap) {
            rc = errf(err, errlen, "%s: too many values (at most %zu)", k->name, cap);
            break;
        }
        char *item = cdn_strndup(p, len);
        p += len;
        rc = list_item(k, &item, err, errlen);
        if (rc != 0) {
            free(item);
            break;
        }
        add[n_add++] = item;
    }
    if (rc != 0) {
        for (size_t i = 0; i < n_add; i++)
            free(add[i]);
        return rc;
    }
    if (replace) {
        for (size_t i = 0; i < *n; i++)
            free(list[i]);
        *n = 0;
        c->target_cache_control_is_default = false;
    }
    for (size_t i = 0; i < n_add; i++)
        list[(*n)++] = add[i];
    return 0;
}

static const struct key *
find_key(const char *name)
{
    for (size_t i = 0; i < CDN_ARRAY_LEN(keys); i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

int
cdn_config_set(struct cdn_config *c, const char *key, const char *value, char *err, size_t errlen)
{
    const struct key *k = find_key(key);
    if (k == NULL)
        return errf(err, errlen, "unknown key '%s'", key);
    if (value[strspn(value, WS)] == '\0')
        return errf(err, errlen, "%s: empty value", k->name);
    switch (k->kind) {
    case K_STRING:
        replace_string(field(c, k), value);
        return 0;
    case K_ADDR:
    case K_ADDR_PORT:
        return set_addr(c, k, value, err, errlen);
    case K_UINT:
    case K_SIZE:
    case K_SIZE64:
    case K_MS:
    case K_SECONDS:
        return set_number(c, k, value, err, errlen);
    case K_BOOL:
        if (cdn_parse_bool(value, field(c, k)) != 0)
            return errf(err, errlen, "%s: expected on or off, got '%s'", k->name, value);
        return 0;
    case K_ORIGINS:
    case K_PARAMS:
    case K_FIELDS:
        return set_list(c, k, value, err, errlen);
    case K_CDN_ID:
        if (strlen(value) > MAX_CDN_ID || !cdn_is_token(value, strlen(value)))
            return errf(err, errlen,
                        "%s: expected a token of 1 to %d letters, digits or !#$%%&'*+-.^_`|~, "
                        "got '%s'",
                        k->name, MAX_CDN_ID, value);
        replace_string(field(c, k), value);
        return 0;
    case K_CC: {
        /* The kernel's names: at most 15 characters (TCP_CA_NAME_MAX), letters, digits, '_'. */
        size_t n = strlen(value);
        bool ok = n <= 15;
        for (size_t i = 0; ok && i < n; i++)
            ok = isalnum((unsigned char)value[i]) || value[i] == '_';
        if (!ok)
            return errf(err, errlen,
                        "%s: expected a TCP congestion control name such as reno or cubic, or "
                        "off, got '%s'",
                        k->name, value);
        replace_string(field(c, k), value);
        return 0;
    }
    case K_SECRET:
        /* The value is a secret: never echo it back. */
        for (const char *p = value; *p; p++)
            if ((unsigned char)*p <= ' ' || *p == 0x7f)
                return errf(err, errlen, "%s: must not contain whitespace or control characters",
                            k->name);
        replace_string(field(c, k), value);
        return 0;
    case K_BALANCE:
        if (cdn_balance_parse(value, field(c, k)) != 0)
            return errf(err, errlen,
                        "%s: expected round-robin, least-outstanding or hash, got '%s'", k->name,
                        value);
        return 0;
    case K_PATH:
        if (value[0] != '/' || strchr(value, '#') != NULL)
            return errf(err, errlen, "%s: expected a path starting with '/', got '%s'", k->name,
                        value);
        for (const char *p = value; *p; p++)
            if ((unsigned char)*p <= ' ' || *p == 0x7f)
                return errf(err, errlen, "%s: must not contain whitespace or control characters",
                            k->name);
        replace_string(field(c, k), value);
        return 0;
    case K_ACCESS_LOG_FORMAT: {
        enum cdn_accesslog_format format;
        if (cdn_accesslog_parse_format(value, &format) != 0)
            return errf(err, errlen, "%s: expected combined or json, got '%s'", k->name, value);
        c->access_log_format = (int)format;
        return 0;
    }
    case K_LOG_LEVEL: {
        enum cdn_log_level level;
        if (cdn_log_parse_level(value, &level) != 0)
            return errf(err, errlen, "%s: expected error, warn, info or debug, got '%s'", k->name,
                        value);
        c->log_level = (int)level;
        return 0;
    }
    }
    cdn_panic(__FILE__, __LINE__, "unhandled key kind");
}

/* The host name as a token: lowercase, other characters as '-', at most 63 of them. */
static char *
default_cdn_id(void)
{
    char name[256];
    if (gethostname(name, sizeof(name)) != 0)
        return cdn_strdup("cdnode");
    name[sizeof(name) - 1] = '\0';
    name[MAX_CDN_ID] = '\0';
    if (name[0] == '\0')
        return cdn_strdup("cdnode");
    for (char *p = name; *p; p++) {
        unsigned char ch = (unsigned char)tolower((unsigned char)*p);
        *p = cdn_is_tchar(ch) ? (char)ch : '-';
    }
    return cdn_strdup(name);
}

static unsigned
default_workers(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return 1;
    int n = CPU_COUNT(&set);
    if (n < 1)
        return 1;
    return n > MAX_WORKERS ? MAX_WORKERS : (unsigned)n;
}

void
cdn_config_defaults(struct cdn_config *c)
{
    memset(c, 0, sizeof(*c));
    c->listen = cdn_strdup("127.0.0.1:8080");
    c->workers = default_workers();
    c->connection_limit = 4096;
    c->connection_timeout_s = 30;
    c->connection_memory = 32 * KIB;
    c->listen_backlog = 1024;
    c->loopback_send_buffer = 64 * KIB;
    c->loopback_congestion_control = cdn_strdup("reno");
    c->max_request_body = 16 * MIB;
    c->origin_connect_timeout_ms = 5000;
    c->origin_first_byte_timeout_ms = 30000;
    c->origin_idle_timeout_ms = 30000;
    c->max_origin_headers = 16 * KIB;
    c->origin_balance = CDN_BALANCE_ROUND_ROBIN;
    c->origin_fall = 3;
    c->origin_rise = 2;
    c->origin_health_interval_ms = 5000;
    c->origin_max_connections = 256;
    c->max_inflight_misses = 1024;
    c->collapse_wait_ms = 10000;
    c->stale_if_error_grace_s = 0;
    c->strip_cache_tags = true;
    c->gzip = true;
    c->cache_set_cookie = false;
    c->request_head_timeout_s = 10;
    c->cdn_id = default_cdn_id();
    c->loop_allowance = 0;
    c->forwarded = false;
    c->x_forwarded_for = true;
    c->trusted_hops = 0;
    c->cache_dir = cdn_strdup("cache");
    c->cache_size = 1 * GIB;
    c->max_object_size = 256 * MIB;
    c->max_variants = 8;
    c->target_cache_control[0] = cdn_strdup("CDN-Cache-Control");
    c->target_cache_control[1] = cdn_strdup("Surrogate-Control");
    c->n_target_cache_control = 2;
    c->target_cache_control_is_default = true;
    c->heuristic_percent = 10;
    c->heuristic_max_s = 86400;
    c->admin_listen = cdn_strdup("127.0.0.1:9090");
    c->purge_peer_timeout_ms = 2000;
    c->log_level = CDN_LOG_INFO;
    c->access_log = cdn_strdup("stderr");
    c->access_log_format = CDN_ACCESSLOG_COMBINED;
}

/* File syntax. */

static char *
trim(char *s)
{
    s += strspn(s, WS);
    size_t n = strlen(s);
    while (n > 0 && strchr(WS, s[n - 1]) != NULL)
        n--;
    s[n] = '\0';
    return s;
}

/* Removes the quotes and the \" and \\ escapes of a trimmed value that starts with '"'. */
static int
unquote(char *v, char *err, size_t errlen)
{
    char *r = v + 1, *w = v;
    for (;;) {
        if (*r == '\0')
            return errf(err, errlen, "unterminated quoted value");
        if (*r == '"')
            break;
        if (*r == '\\') {
            if (r[1] == '\0')
                return errf(err, errlen, "unterminated quoted value");
            if (r[1] != '"' && r[1] != '\\')
                return errf(err, errlen, "bad escape '\\%c' in quoted value (only \\\" and \\\\)",
                            r[1]);
            r++;
        }
        *w++ = *r++;
    }
    if (r[1] != '\0')
        return errf(err, errlen, "unexpected text after the closing quote");
    *w = '\0';
    return 0;
}

static int
load_line(struct cdn_config *c, char *line, size_t len, char *err, size_t errlen)
{
    if (len > 0 && line[len - 1] == '\n')
        len--;
    if (len > MAX_LINE)
        return errf(err, errlen, "line longer than %d bytes", MAX_LINE);
    if (memchr(line, '\0', len) != NULL)
        return errf(err, errlen, "NUL byte in line");
    line[len] = '\0';
    bool quoted = false;
    for (size_t i = 0; i < len; i++) {
        if (quoted && line[i] == '\\' && line[i + 1] != '\0') {
            i++;
        } else if (line[i] == '"') {
            quoted = !quoted;
        } else if (line[i] == '#' && !quoted) {
            line[i] = '\0';
            break;
        }
    }
    char *s = trim(line);
    if (*s == '\0')
        return 0;
    char *eq = strchr(s, '=');
    if (eq == NULL)
        return errf(err, errlen, "expected 'key = value'");
    *eq = '\0';
    char *key = trim(s), *value = trim(eq + 1);
    if (*key == '\0')
        return errf(err, errlen, "expected 'key = value'");
    if (find_key(key) == NULL)
        return errf(err, errlen, "unknown key '%s'", key);
    if (*value == '"') {
        int rc = unquote(value, err, errlen);
        if (rc != 0)
            return rc;
    }
    if (*value == '\0')
        return errf(err, errlen, "%s: empty value", key);
    return cdn_config_set(c, key, value, err, errlen);
}

int
cdn_config_load(struct cdn_config *c, const char *path, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        errf(err, errlen, "%s: %s", path, strerror(errno));
        return CDN_EIO;
    }
    char *line = NULL, reason[1024];
    size_t cap = 0;
    unsigned lineno = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, fp)) != -1) {
        lineno++;
        rc = load_line(c, line, (size_t)n, reason, sizeof(reason));
        if (rc != 0)
            errf(err, errlen, "%s:%u: %s", path, lineno, reason);
    }
    if (rc == 0 && ferror(fp)) {
        errf(err, errlen, "%s: %s", path, strerror(errno));
        rc = CDN_EIO;
    }
    free(line);
    fclose(fp);
    return rc;
}

/* Cross-key rules. */

static int
check_readable(const char *key, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errf(err, errlen, "%s: cannot read '%s': %s", key, path, strerror(errno));
    struct stat st;
    bool regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    close(fd);
    if (!regular)
        return errf(err, errlen, "%s: '%s' is not a regular file", key, path);
    return 0;
}

/* True when binding both addresses would collide (a port of 0 never does: the OS picks). */
static bool
same_listener(const char *a, const char *b)
{
    char ha[INET6_ADDRSTRLEN], hb[INET6_ADDRSTRLEN];
    unsigned pa, pb;
    if (a == NULL || b == NULL || cdn_parse_hostport(a, ha, sizeof(ha), &pa) != 0 ||
        cdn_parse_hostport(b, hb, sizeof(hb), &pb) != 0)
        return false;
    if (pa != pb || pa == 0)
        return false;
    const char *na = strcmp(ha, "localhost") == 0 ? "127.0.0.1" : ha;
    const char *nb = strcmp(hb, "localhost") == 0 ? "127.0.0.1" : hb;
    return na[0] == '\0' || nb[0] == '\0' || strcmp(na, nb) == 0;
}

size_t
cdn_config_max_request_head(const struct cdn_config *c)
{
    size_t taken = c->max_origin_headers + CDN_RESPONSE_HEAD_RESERVE;
    return c->connection_memory > taken ? c->connection_memory - taken : 0;
}

int
cdn_config_check(const struct cdn_config *c, char *err, size_t errlen)
{
    int rc;
    if (c->n_origins + c->n_parents == 0)
        return errf(err, errlen, "no origin configured (set 'origin' or --origin, or 'parent')");
    if (c->n_origins + c->n_parents > CDN_MAX_ORIGINS)
        return errf(err, errlen, "origin and parent: at most %d upstreams in all, got %zu",
                    CDN_MAX_ORIGINS, c->n_origins + c->n_parents);
    if (c->connection_memory < c->max_origin_headers + CDN_RESPONSE_HEAD_RESERVE ||
        cdn_config_max_request_head(c) < CDN_MIN_REQUEST_HEAD)
        return errf(err, errlen,
                    "connection_memory (%zu bytes) must hold max_origin_headers (%zu) plus %d "
                    "for the node's own response fields and at least %d for a request's head: "
                    "lower max_origin_headers or raise connection_memory",
                    c->connection_memory, c->max_origin_headers, CDN_RESPONSE_HEAD_RESERVE,
                    CDN_MIN_REQUEST_HEAD);
    if (c->listen_tls != NULL) {
        if (c->tls_cert == NULL || c->tls_key == NULL)
            return errf(err, errlen, "listen_tls requires tls_cert and tls_key");
        if ((rc = check_readable("tls_cert", c->tls_cert, err, errlen)) != 0 ||
            (rc = check_readable("tls_key", c->tls_key, err, errlen)) != 0)
            return rc;
    }
    if (c->origin_ca_file != NULL &&
        (rc = check_readable("origin_ca_file", c->origin_ca_file, err, errlen)) != 0)
        return rc;
    if (c->purge_peer_ca_file != NULL &&
        (rc = check_readable("purge_peer_ca_file", c->purge_peer_ca_file, err, errlen)) != 0)
        return rc;
    if (c->admin_token != NULL && strlen(c->admin_token) < MIN_ADMIN_TOKEN)
        return errf(err, errlen, "admin_token: must be at least %d bytes", MIN_ADMIN_TOKEN);
    if (c->purge_peer_token != NULL && strlen(c->purge_peer_token) < MIN_ADMIN_TOKEN)
        return errf(err, errlen, "purge_peer_token: must be at least %d bytes", MIN_ADMIN_TOKEN);
    if (c->n_purge_parents + c->n_purge_children > 0 && c->purge_peer_token == NULL &&
        c->admin_token == NULL)
        return errf(err, errlen, "purge_parents/purge_children need purge_peer_token or "
                                 "admin_token (the peers' bearer token)");
    const struct {
        const char *name, *addr;
    } l[] = {
        {"listen", c->listen}, {"listen_tls", c->listen_tls}, {"admin_listen", c->admin_listen}};
    for (size_t i = 0; i < CDN_ARRAY_LEN(l); i++)
        for (size_t j = i + 1; j < CDN_ARRAY_LEN(l); j++)
            if (same_listener(l[i].addr, l[j].addr))
                return errf(err, errlen, "%s and %s must differ (got '%s' and '%s')", l[i].name,
                            l[j].name, l[i].addr, l[j].addr);
    return 0;
}

void
cdn_config_free(struct cdn_config *c)
{
    char **strings[] = {&c->listen,
                        &c->listen_tls,
                        &c->tls_cert,
                        &c->tls_key,
                        &c->origin_ca_file,
                        &c->cdn_id,
                        &c->cache_dir,
                        &c->admin_listen,
                        &c->admin_token,
                        &c->origin_health_path,
                        &c->purge_peer_token,
                        &c->purge_peer_ca_file,
                        &c->loopback_congestion_control};
    for (size_t i = 0; i < CDN_ARRAY_LEN(strings); i++)
        free(*strings[i]);
    free(c->access_log);
    for (size_t i = 0; i < c->n_origins; i++)
        free(c->origins[i]);
    for (size_t i = 0; i < c->n_parents; i++)
        free(c->parents[i]);
    for (size_t i = 0; i < c->n_purge_parents; i++)
        free(c->purge_parents[i]);
    for (size_t i = 0; i < c->n_purge_children; i++)
        free(c->purge_children[i]);
    for (size_t i = 0; i < c->n_cache_key_drop_params; i++)
        free(c->cache_key_drop_params[i]);
    for (size_t i = 0; i < c->n_target_cache_control; i++)
        free(c->target_cache_control[i]);
    memset(c, 0, sizeof(*c));
}

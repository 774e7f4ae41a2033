/*
 * config.h: the node's configuration. One struct, filled with defaults, then from a file of
 * `key = value` lines, then from command-line flags; every flag is the same setter as its key, so
 * a flag and a file line can never disagree about what a value means.
 *
 * File syntax: one `key = value` per line; `#` starts a comment (outside quotes); blank lines are
 * ignored; a value may be wrapped in double quotes. List keys (origin, parent, purge_parents,
 * purge_children, cache_key_drop_params, target_cache_control) take several whitespace-separated values and may be repeated to append.
 * Sizes take k/m/g suffixes (powers of 1024), durations ms/s/m/h (bare numbers are seconds).
 *
 * Strings in the struct are owned by it (malloc) and released by cdn_config_free(). A config is
 * built by one thread and then read-only; a reload builds a new one.
 */
#ifndef CDNODE_CONFIG_H
#define CDNODE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cdnode/pool.h"

#define CDN_MAX_ORIGINS 16
#define CDN_MAX_LIST 32

struct cdn_config {
    /* front end */
    char *listen;               /* listen = ADDR:PORT            default 127.0.0.1:8080 */
    char *listen_tls;           /* listen_tls = ADDR:PORT        default none (NULL) */
    char *tls_cert;             /* tls_cert = FILE (PEM)         required with listen_tls */
    char *tls_key;              /* tls_key = FILE (PEM)          required with listen_tls */
    unsigned workers;           /* workers = N                   default: CPUs usable (>= 1) */
    unsigned connection_limit;  /* connection_limit = N          default 4096; plain and TLS
                                   together, a connection beyond it gets 503 and is closed */
    unsigned connection_timeout_s; /* connection_timeout = DUR   default 30s: no progress inside a
                                   request (whole seconds) */
    size_t connection_memory;   /* connection_memory = SIZE      default 32k (max 32k, min 8k) */
    unsigned listen_backlog;    /* listen_backlog = N            default 1024 */
    size_t send_buffer;         /* send_buffer = SIZE            default 0: the kernel's tuning */
    size_t loopback_send_buffer; /* loopback_send_buffer = SIZE  default 64k (0: the kernel's) */
    /* loopback_congestion_control = NAME  default reno ("off": the kernel's) */
    char *loopback_congestion_control;
    size_t max_request_body;    /* max_request_body = SIZE       default 16m */
    /* upstream */
    char *origins[CDN_MAX_ORIGINS]; /* origin = URL [URL...]     http:// or https://, no path */
    size_t n_origins;           /*                               default none */
    char *parents[CDN_MAX_ORIGINS]; /* parent = URL [URL...]     parent nodes, default none: each
                                   object goes to the parent rendezvous hashing of its cache key
                                   picks, then the next parent; origins are used only when no
                                   parent can be reached. At least one origin or parent is needed;
                                   parents + origins together at most CDN_MAX_ORIGINS. */
    size_t n_parents;
    unsigned origin_connect_timeout_ms;    /* origin_connect_timeout = DUR   default 5s */
    unsigned origin_first_byte_timeout_ms; /* origin_first_byte_timeout = DUR default 30s */
    unsigned origin_idle_timeout_ms;       /* origin_idle_timeout = DUR      default 30s */
    char *origin_ca_file;       /* origin_ca_file = FILE         default: system CA store */
    size_t max_origin_headers;  /* max_origin_headers = SIZE     default 16k (max 24k) */
    /* origin pool (pool.h) */
    enum cdn_balance origin_balance; /* origin_balance = round-robin|least-outstanding|hash
                                                                  default round-robin */
    unsigned origin_fall;       /* origin_fall = N               default 3 (1..1000) */
    unsigned origin_rise;       /* origin_rise = N               default 2 (1..1000) */
    char *origin_health_path;   /* origin_health_path = /PATH    default none: no HTTP checks */
    unsigned origin_health_interval_ms; /* origin_health_interval = DUR default 5s */
    unsigned origin_max_connections; /* origin_max_connections = N default 256 per upstream */
    unsigned max_inflight_misses; /* max_inflight_misses = N     default 1024 per node */
    unsigned collapse_wait_ms;  /* collapse_wait = DUR           default 10s: a request waiting on
                                   another's fetch gets 504 after this without a response head */
    unsigned stale_if_error_grace_s; /* stale_if_error_grace = DUR default 0 (off): serve stale
                                   this long past expiry when the origin fails, without a
                                   stale-if-error directive (never against must-revalidate) */
    bool strip_cache_tags;      /* strip_cache_tags = on|off    default on: Surrogate-Key and
                                   Cache-Tag are not sent to clients */
    bool gzip;                  /* gzip = on|off                default on: store compressible
                                   identity responses gzip-compressed (text, JSON, SVG, ...) */
    bool cache_set_cookie;      /* cache_set_cookie = on|off    default off: a response with
                                   Set-Cookie is stored only with an explicit public, s-maxage or
                                   targeted max-age (it would hand one user's cookie to others) */
    unsigned request_head_timeout_s; /* request_head_timeout = DUR default 10s: a connection must
                                   send a whole request head this long after it opens or after its
                                   previous response; otherwise it is closed (slow clients) */
    /* hops */
    char *cdn_id;               /* cdn_id = NAME (token)         default: derived from host name */
    unsigned loop_allowance;    /* loop_allowance = N            default 0: our id once = 508 */
    bool forwarded;             /* forwarded = on|off            default off (RFC 7239 field) */
    bool x_forwarded_for;       /* x_forwarded_for = on|off      default on */
    unsigned trusted_hops;      /* trusted_hops = N              default 0 */
    /* store and cache */
    char *cache_dir;            /* cache_dir = DIR               default cache */
    uint64_t cache_size;        /* cache_size = SIZE             default 1g */
    size_t max_object_size;     /* max_object_size = SIZE        default 256m */
    unsigned max_variants;      /* max_variants = N              default 8 */
    bool cache_writemap;        /* cache_writemap = on|off       default off (store.h) */
    bool cache_key_ignore_query; /* cache_key_ignore_query = on|off default off */
    bool cache_key_sort_query;  /* cache_key_sort_query = on|off default off */
    char *cache_key_drop_params[CDN_MAX_LIST]; /* cache_key_drop_params = NAME [NAME...] */
    size_t n_cache_key_drop_params;
    char *target_cache_control[CDN_MAX_LIST];  /* target_cache_control = FIELD [FIELD...] */
    size_t n_target_cache_control;             /* default: CDN-Cache-Control Surrogate-Control */
    bool target_cache_control_is_default; /* private to config.c: the first set replaces it */
    unsigned heuristic_percent; /* heuristic_percent = N         default 10 (% of LM age) */
    unsigned heuristic_max_s;   /* heuristic_max = DUR           default 1d (86400 s) */
    /* admin */
    char *admin_listen;         /* admin_listen = ADDR:PORT      default 127.0.0.1:9090 */
    char *admin_token;          /* admin_token = STRING          default none: only /healthz */
    char *purge_parents[CDN_MAX_ORIGINS];  /* purge_parents = URL [URL...] admin listeners of the
                                   parent nodes: each purge is forwarded to them first */
    size_t n_purge_parents;
    char *purge_children[CDN_MAX_ORIGINS]; /* purge_children = URL [URL...] admin listeners of the
                                   child nodes: each purge is forwarded to them after the parents */
    size_t n_purge_children;
    char *purge_peer_token;     /* purge_peer_token = STRING     default: admin_token */
    char *purge_peer_ca_file;   /* purge_peer_ca_file = FILE     default: system CA store */
    unsigned purge_peer_timeout_ms; /* purge_peer_timeout = DUR  default 2s per peer */
    /* logging */
    int log_level;              /* log_level = error|warn|info|debug  default info */
    char *access_log;           /* access_log = stderr|off|FILE  default stderr */
    int access_log_format;      /* access_log_format = combined|json  default combined */
};

/* Fills c with the defaults above (cdn_id from gethostname, workers from the CPU affinity). */
void cdn_config_defaults(struct cdn_config *c);
/*
 * Sets one key from its string value, exactly as a file line would. Returns 0, or CDN_EINVAL with
 * a reason (no file or line prefix) in err. Unknown keys are CDN_EINVAL ("unknown key 'x'").
 */
int cdn_config_set(struct cdn_config *c, const char *key, const char *value, char *err,
                   size_t errlen);
/*
 * Reads a file into c (on top of what c holds). Returns 0, CDN_EIO if the file cannot be read
 * ("FILE: strerror"), or CDN_EINVAL with "FILE:LINE: reason" in err. On error c may be partly
 * updated: callers load into a scratch config.
 */
int cdn_config_load(struct cdn_config *c, const char *path, char *err, size_t errlen);
/*
 * Checks cross-key rules after everything is set (at least one origin, TLS files present with
 * listen_tls, room for a request's head in connection_memory, ...). Returns 0 or CDN_EINVAL with
 * the reason in err.
 */
int cdn_config_check(const struct cdn_config *c, char *err, size_t errlen);
/*
 * A client connection's memory (connection_memory) holds the request's head and then the
 * response's header block: the origin's fields (at most max_origin_headers) and ours and the
 * front end's, for which CDN_RESPONSE_HEAD_RESERVE is kept. What is left is the most a request's
 * head may take (request.h cdn_request_head_memory; beyond it: 431). cdn_config_check() wants at
 * least CDN_MIN_REQUEST_HEAD left.
 */
#define CDN_RESPONSE_HEAD_RESERVE 1024
#define CDN_MIN_REQUEST_HEAD 4096
size_t cdn_config_max_request_head(const struct cdn_config *c);

/* Releases every string c owns; c may be reused after cdn_config_defaults(). */
void cdn_config_free(struct cdn_config *c);

/* Value parsers shared with other modules. Each returns 0 or CDN_EINVAL. */
int cdn_parse_size(const char *s, uint64_t *out);          /* "64k", "1g", "123" */
int cdn_parse_duration_ms(const char *s, uint64_t *out);   /* "500ms", "5s", "2m", "1h", "1d", "7" */
int cdn_parse_bool(const char *s, bool *out);              /* on/off, yes/no, true/false, 1/0 */
/*
 * "ADDR:PORT" or "[V6]:PORT"; host copied into host (hostlen bytes) without brackets. "*:PORT" and
 * ":PORT" mean any address and give host "". Port 0..65535 (0: the OS picks one).
 */
int cdn_parse_hostport(const char *s, char *host, size_t hostlen, unsigned *port);

#endif

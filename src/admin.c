/*
 * admin.c: the admin listener (see admin.h). One internal polling thread: admin traffic is light
 * and must not compete with the front end's workers. Responses are queued on the second
 * access-handler call so keep-alive works for scrapers.
 *
 * GET / is a status page and GET /status.json its numbers. A browser opens the page by URL, so
 * these two (and only these: nothing that changes state) also take the token as ?token=.
 *
 * Purges: the handler suspends the connection and queues the purge for the store's writer; the
 * store's done callback (writer thread) records the result and resumes the connection, and the
 * next handler call answers. So a 200 is sent only once the purge is synced to disk. `pending`
 * counts purges whose done has not run: stop waits for them, because MHD must not be stopped
 * with a connection still suspended.
 *
 * Fan-out (peers.h): when the local purge succeeded and the node has purge peers, the store's
 * done hands the purge to the peers thread instead of resuming; that thread's done writes the
 * JSON answer with every peer's result and resumes. `pending` covers both steps. A purge that
 * carries CDN-Purge-Forwarded came from a peer and is applied here only.
 *
 * What a reload may change (tokens, purge peers, their timeout) lives in a struct aconf: an
 * immutable, refcounted snapshot copied from a config. Each request takes a reference when it
 * starts and uses that one snapshot to its end, fan-out included; cdn_admin_reconfigure()
 * installs a new one under conf_mu. Nothing is read from the start-up config after start.
 */
#include "cdnode/admin.h"
#include "cdnode/arena.h"
#include "cdnode/cache.h"
#include "cdnode/collapse.h"
#include "cdnode/common.h"
#include "cdnode/config.h"
#include "cdnode/front.h"
#include "cdnode/log.h"
#include "cdnode/peers.h"
#include "cdnode/purge.h"
#include "cdnode/store.h"
#include "cdnode/upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define ADMIN_MAGIC 0xad3140a1u
#define AREQ_MAGIC 0xad3140a2u

/* How long stop waits for purges the store has not settled yet. */
#define STOP_WAIT_S 30

/* The reloadable part of the configuration (see the top comment). */
struct aconf {
    atomic_uint refs;
    char *token;        /* admin_token; NULL: only /healthz */
    char *peer_token;   /* sent to peers: purge_peer_token, else admin_token */
    char *peer_ca_file; /* purge_peer_ca_file; NULL: the system CA store */
    unsigned timeout_ms;
    size_t n_parents, n_children;
    char *parents[CDN_MAX_ORIGINS];
    char *children[CDN_MAX_ORIGINS];
};

struct cdn_admin {
    uint32_t magic;
    char *cdn_id;
    struct cdn_peers *peers;
    pthread_mutex_t conf_mu; /* guards conf (the pointer; what it points to never changes) */
    struct aconf *conf;
    _Atomic uint64_t purges_client, purges_peer; /* purges accepted, by where they came from */
    struct cdn_front *fe;
    struct cdn_upstream *up;
    struct cdn_cache *cache;
    struct cdn_collapse *collapse;
    struct MHD_Daemon *d;
    /* Failed authentication: counted, and past AUTH_FAIL_BUDGET in AUTH_FAIL_WINDOW_MS answered
     * 429 instead of 401 until the window ends (the admin daemon has one thread: no locking). */
    _Atomic uint64_t auth_failures, auth_limited;
    int64_t fail_window_start;
    unsigned fail_in_window;
    pthread_mutex_t mu; /* guards stopping and pending */
    pthread_cond_t settled;
    bool stopping;
    unsigned pending;
    struct timespec started; /* CLOCK_MONOTONIC, for uptime */
    char csp[320];           /* Content-Security-Policy of the status page */
};

/* One request, from MHD's URI callback to its completion notice. */
struct areq {
    uint32_t magic;
    struct cdn_admin *a;
    struct aconf *conf; /* the snapshot this request uses, referenced */
    struct MHD_Connection *conn;
    struct cdn_arena *arena;
    const char *raw_uri; /* the request-target as received (MHD strips the query from `url`) */
    bool started;        /* the first handler call (headers only) happened */
    bool waiting;        /* a purge is queued; the connection is suspended */
    const char *what;    /* the purge, for the log */
    const char *fwd;     /* the query to forward to the peers; NULL: no fan-out */
    char *answer;        /* with fan-out: the JSON answer (malloc), written before resuming */
    unsigned peer_failures;
    atomic_bool settled; /* the store's done ran: `result` is valid */
    atomic_int result;
};

static struct aconf *
conf_new(const struct cdn_config *cfg)
{
    struct aconf *c = cdn_calloc(1, sizeof(*c));
    atomic_init(&c->refs, 1);
    c->token = cfg->admin_token ? cdn_strdup(cfg->admin_token) : NULL;
    const char *pt = cfg->purge_peer_token ? cfg->purge_peer_token : cfg->admin_token;
    c->peer_token = pt ? cdn_strdup(pt) : NULL;
    c->peer_ca_file = cfg->purge_peer_ca_file ? cdn_strdup(cfg->purge_peer_ca_file) : NULL;
    c->timeout_ms = cfg->purge_peer_timeout_ms;
    for (size_t i = 0; i < cfg->n_purge_parents && i < CDN_MAX_ORIGINS; i++)
        c->parents[c->n_parents++] = cdn_strdup(cfg->purge_parents[i]);
    for (size_t i = 0; i < cfg->n_purge_children && i < CDN_MAX_ORIGINS; i++)
        c->children[c->n_children++] = cdn_strdup(cfg->purge_children[i]);
    return c;
}

static void
conf_unref(struct aconf *c)
{
    if (c == NULL || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    free(c->token);
    free(c->peer_token);
    free(c->peer_ca_file);
    for (size_t i = 0; i < c->n_parents; i++)
        free(c->parents[i]);
    for (size_t i = 0; i < c->n_children; i++)
        free(c->children[i]);
    free(c);
}

/* The current snapshot, referenced: release with conf_unref(). */
static struct aconf *
conf_get(struct cdn_admin *a)
{
    pthread_mutex_lock(&a->conf_mu);
    struct aconf *c = a->conf;
    atomic_fetch_add(&c->refs, 1);
    pthread_mutex_unlock(&a->conf_mu);
    return c;
}

static enum MHD_Result
reply(struct MHD_Connection *conn, unsigned status, const char *ctype, const char *body, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(resp, "Content-Type", ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"cdnode admin\"");
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result
reply_json_error(struct MHD_Connection *conn, unsigned status, const char *msg)
{
    char buf[256];
    int n = snprintf(buf, sizeof(buf), "{\"error\": \"%s\"}\n", msg);
    return reply(conn, status, "application/json", buf, (size_t)n);
}

/* Whether cand is the admin token tok. Both are hashed so the comparison takes the same time
 * whatever the length or content. */
static bool
same_token(const char *tok, const char *cand)
{
    unsigned char want[SHA256_DIGEST_LENGTH], got[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)tok, strlen(tok), want);
    SHA256((const unsigned char *)cand, strlen(cand), got);
    return CRYPTO_memcmp(want, got, sizeof(want)) == 0;
}

/*
 * The token comes from `Authorization: Bearer`, or with query_ok from a `token` query parameter.
 * query_ok only for GET/HEAD of the status page and its JSON, which a browser opens by URL; never
 * for anything that changes state, which a cross-site form could then trigger.
 */
static bool
authorized(const struct aconf *c, struct MHD_Connection *conn, bool query_ok)
{
    const char *tok = c->token;
    if (tok == NULL)
        return false;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (h != NULL && strncasecmp(h, "Bearer ", 7) == 0 && same_token(tok, h + 7))
        return true;
    const char *q =
        query_ok ? MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "token") : NULL;
    return q != NULL && same_token(tok, q);
}

#define AUTH_FAIL_BUDGET 20
#define AUTH_FAIL_WINDOW_MS 10000

/*
 * Answers a request that failed authentication: 401, or 429 once the node has seen more than
 * AUTH_FAIL_BUDGET failures in the current window. A valid token is always checked first, so
 * the limit slows guessing without locking the operator out.
 */
static enum MHD_Result
refuse(struct cdn_admin *a, struct MHD_Connection *conn)
{
    int64_t now = cdn_now_ms();
    atomic_fetch_add(&a->auth_failures, 1);
    if (now - a->fail_window_start >= AUTH_FAIL_WINDOW_MS) {
        if (a->fail_in_window > AUTH_FAIL_BUDGET)
            cdn_warn("admin: %u failed authentications in the last %d s", a->fail_in_window,
                     AUTH_FAIL_WINDOW_MS / 1000);
        a->fail_window_start = now;
        a->fail_in_window = 0;
    }
    if (++a->fail_in_window <= AUTH_FAIL_BUDGET)
        return reply(conn, MHD_HTTP_UNAUTHORIZED, "text/plain", "401 Unauthorized\n", 17);
    atomic_fetch_add(&a->auth_limited, 1);
    char retry[24];
    snprintf(retry, sizeof(retry), "%lld",
             (long long)((a->fail_window_start + AUTH_FAIL_WINDOW_MS - now + 999) / 1000));
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        22, (void *)"429 Too Many Requests\n", MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(resp, "Content-Type", "text/plain");
    MHD_add_response_header(resp, "Retry-After", retry);
    enum MHD_Result r = MHD_queue_response(conn, 429, resp);
    MHD_destroy_response(resp);
    return r;
}

static void
metric(FILE *out, const char *name, const char *type, const char *labels, uint64_t v)
{
    if (type)
        fprintf(out, "# TYPE %s %s\n", name, type);
    fprintf(out, "%s%s %llu\n", name, labels ? labels : "", (unsigned long long)v);
}

/* Every counter the node keeps, read now (collapse and store zero when there are none). */
static void
read_stats(struct cdn_admin *a, struct cdn_front_stats *fs, struct cdn_upstream_stats *us,
           struct cdn_collapse_stats *cs, struct cdn_store_stats *ss)
{
    memset(cs, 0, sizeof(*cs));
    memset(ss, 0, sizeof(*ss));
    cdn_front_stats(a->fe, fs);
    cdn_upstream_stats(a->up, us);
    if (a->collapse)
        cdn_collapse_stats(a->collapse, cs);
    if (a->cache)
        cdn_store_stats(cdn_cache_store(a->cache), ss);
}

/* Prometheus text exposition of every counter the node keeps. */
static enum MHD_Result
metrics(struct cdn_admin *a, struct MHD_Connection *conn)
{
    struct cdn_front_stats fs;
    struct cdn_upstream_stats us;
    struct cdn_collapse_stats cs;
    struct cdn_store_stats ss;
    read_stats(a, &fs, &us, &cs, &ss);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    if (out == NULL)
        return reply(conn, 500, "text/plain", "500 out of memory\n", 18);
    const char *ctr = "counter", *gauge = "gauge";
    metric(out, "cdnode_requests_total", ctr, NULL, fs.requests);
    metric(out, "cdnode_admin_auth_failures_total", ctr, NULL, atomic_load(&a->auth_failures));
    metric(out, "cdnode_admin_auth_limited_total", ctr, NULL, atomic_load(&a->auth_limited));
    struct cdn_peers_stats ps;
    cdn_peers_stats(a->peers, &ps);
    metric(out, "cdnode_admin_purges_total", ctr, "{from=\"client\"}",
           atomic_load(&a->purges_client));
    metric(out, "cdnode_admin_purges_total", NULL, "{from=\"peer\"}", atomic_load(&a->purges_peer));
    metric(out, "cdnode_purge_peer_requests_total", ctr, NULL, ps.forwarded);
    metric(out, "cdnode_purge_peer_failures_total", ctr, NULL, ps.failures);
    metric(out, "cdnode_requests_rejected_total", ctr, NULL, fs.rejected);
    metric(out, "cdnode_loops_total", ctr, NULL, fs.loops);
    metric(out, "cdnode_requests_active", gauge, NULL, fs.active);
    metric(out, "cdnode_connections_open", gauge, NULL, fs.connections);
    metric(out, "cdnode_connections_refused_total", ctr, NULL, fs.conn_refused);
    metric(out, "cdnode_connections_head_timeouts_total", ctr, NULL, fs.head_timeouts);
    metric(out, "cdnode_bytes_out_total", ctr, NULL, fs.bytes_out);
    metric(out, "cdnode_cache_responses_total", ctr, "{outcome=\"hit\"}", fs.hits);
    metric(out, "cdnode_cache_responses_total", NULL, "{outcome=\"stale\"}", fs.stale);
    metric(out, "cdnode_cache_responses_total", NULL, "{outcome=\"revalidated\"}", fs.revalidated);
    metric(out, "cdnode_cache_responses_total", NULL, "{outcome=\"miss\"}", fs.misses);
    metric(out, "cdnode_cache_stored_total", ctr, NULL, fs.stored);
    fputs("# TYPE cdnode_request_duration_seconds histogram\n", out);
    uint64_t cum = 0;
    for (size_t i = 0; i <= CDN_LATENCY_BUCKETS; i++) {
        cum += fs.latency[i];
        if (i < CDN_LATENCY_BUCKETS)
            fprintf(out, "cdnode_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                    (double)cdn_latency_bounds_us[i] / 1e6, (unsigned long long)cum);
        else
            fprintf(out, "cdnode_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                    (unsigned long long)cum);
    }
    fprintf(out, "cdnode_request_duration_seconds_sum %.6f\n", (double)fs.latency_sum_us / 1e6);
    fprintf(out, "cdnode_request_duration_seconds_count %llu\n", (unsigned long long)cum);
    metric(out, "cdnode_origin_requests_total", ctr, NULL, us.requests);
    metric(out, "cdnode_origin_errors_total", ctr, NULL, us.errors);
    metric(out, "cdnode_origin_bytes_in_total", ctr, NULL, us.bytes_in);
    metric(out, "cdnode_origin_active", gauge, NULL, us.active);
    metric(out, "cdnode_origin_retries_total", ctr, NULL, us.retries);
    metric(out, "cdnode_origin_shed_total", ctr, NULL, us.shed);
    metric(out, "cdnode_origin_health_transitions_total", ctr, "{to=\"down\"}", us.marked_down);
    metric(out, "cdnode_origin_health_transitions_total", NULL, "{to=\"up\"}", us.marked_up);
    metric(out, "cdnode_origin_health_checks_total", ctr, NULL, us.health_checks);
    struct cdn_origin_status os[CDN_MAX_ORIGINS];
    size_t no = cdn_upstream_origins(a->up, os, CDN_MAX_ORIGINS);
    if (no > CDN_MAX_ORIGINS)
        no = CDN_MAX_ORIGINS;
    static const char *const per[] = {"cdnode_origin_healthy", "cdnode_origin_outstanding",
                                      "cdnode_origin_upstream_requests_total",
                                      "cdnode_origin_failures_total"};
    static const char *const per_type[] = {"gauge", "gauge", "counter", "counter"};
    for (size_t m = 0; m < CDN_ARRAY_LEN(per); m++) {
        for (size_t i = 0; i < no; i++) {
            /* Origin URLs are validated at load (no quotes or backslashes can reach here). */
            char label[300];
            snprintf(label, sizeof(label), "{origin=\"%.255s\"}", os[i].url);
            uint64_t v = m == 0   ? os[i].healthy
                         : m == 1 ? os[i].outstanding
                         : m == 2 ? os[i].requests
                                  : os[i].failures;
            metric(out, per[m], i == 0 ? per_type[m] : NULL, label, v);
        }
    }
    metric(out, "cdnode_collapse_leaders_total", ctr, NULL, cs.leaders);
    metric(out, "cdnode_collapse_followers_total", ctr, NULL, cs.followers);
    metric(out, "cdnode_collapse_unshared_total", ctr, NULL, fs.unshared);
    metric(out, "cdnode_hit_for_miss_markers_total", ctr, NULL, cs.markers);
    metric(out, "cdnode_hit_for_miss_total", ctr, NULL, cs.hit_for_miss);
    metric(out, "cdnode_collapse_entries", gauge, NULL, cs.entries);
    metric(out, "cdnode_store_objects", gauge, NULL, ss.objects);
    metric(out, "cdnode_store_bytes", gauge, NULL, ss.bytes);
    metric(out, "cdnode_store_used_pages", gauge, NULL, ss.used_pages);
    metric(out, "cdnode_store_map_pages", gauge, NULL, ss.map_pages);
    metric(out, "cdnode_store_puts_total", ctr, NULL, ss.puts);
    metric(out, "cdnode_store_updates_total", ctr, NULL, ss.updates);
    metric(out, "cdnode_store_evictions_total", ctr, NULL, ss.evictions);
    metric(out, "cdnode_store_map_full_drops_total", ctr, NULL, ss.map_full_drops);
    metric(out, "cdnode_store_corrupt_deleted_total", ctr, NULL, ss.corrupt_deleted);
    metric(out, "cdnode_store_deletes_total", ctr, NULL, ss.deletes);
    metric(out, "cdnode_store_soft_purges_total", ctr, NULL, ss.soft_purges);
    metric(out, "cdnode_store_lease_copies_total", ctr, NULL, ss.lease_copies);
    metric(out, "cdnode_store_write_txns_total", ctr, NULL, ss.write_txns);
    fclose(out);
    enum MHD_Result r = reply(conn, 200, "text/plain; version=0.0.4", buf, len);
    free(buf);
    return r;
}

/*
 * The status page: fixed HTML whose script fetches /status.json every 2 s with the token it was
 * opened with (?token=) and fills the page with textContent only, so nothing from the node is
 * ever parsed as HTML. The style and script are inline; the Content-Security-Policy allows
 * exactly them by hash (computed at start), and nothing else but fetches to this listener.
 */
#define PAGE_HEAD                                                                                  \
    "<!doctype html>\n"                                                                            \
    "<html lang=\"en\">\n"                                                                         \
    "<head>\n"                                                                                     \
    "<meta charset=\"utf-8\">\n"                                                                   \
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"                   \
    "<meta name=\"referrer\" content=\"no-referrer\">\n"                                           \
    "<link rel=\"icon\" href=\"data:,\">\n"                                                        \
    "<title>cdnode status</title>\n"                                                               \
    "<style>"
#define PAGE_CSS                                                                                   \
    "\n"                                                                                           \
    ":root { color-scheme: light dark; --fg: #1b1f24; --muted: #5b6470; --bg: #f3f4f6;\n"          \
    "  --card: #fff; --line: #dde1e6; --accent: #2f6fdf; --ok: #1a7f37; --err: #c62828; }\n"       \
    "@media (prefers-color-scheme: dark) { :root { --fg: #e6e8eb; --muted: #9aa4af;\n"             \
    "  --bg: #16181b; --card: #202328; --line: #343840; --accent: #5b9bff; --ok: #4ac26b;\n"       \
    "  --err: #ff6b6b; } }\n"                                                                      \
    "* { box-sizing: border-box; }\n"                                                              \
    "body { margin: 0; padding: 1.25rem 1.5rem; font: 14px/1.45 system-ui, sans-serif;\n"          \
    "  background: var(--bg); color: var(--fg); }\n"                                               \
    "header { display: flex; flex-wrap: wrap; align-items: baseline; gap: .25rem 1.25rem;\n"       \
    "  margin-bottom: 1rem; }\n"                                                                   \
    "h1 { font-size: 1.35rem; margin: 0; }\n"                                                      \
    "h2 { font-size: .75rem; text-transform: uppercase; letter-spacing: .06em;\n"                  \
    "  color: var(--muted); margin: 0 0 .6rem; }\n"                                                \
    "main { display: grid; grid-template-columns: repeat(auto-fill, minmax(16rem, 1fr));\n"        \
    "  gap: 1rem; }\n"                                                                             \
    "section { background: var(--card); border: 1px solid var(--line); border-radius: 8px;\n"      \
    "  padding: .9rem 1rem; }\n"                                                                   \
    "dl { display: grid; grid-template-columns: 1fr auto; gap: .2rem 1rem; margin: 0; }\n"         \
    "dt { color: var(--muted); }\n"                                                                \
    "dd { margin: 0; text-align: right; font-variant-numeric: tabular-nums; }\n"                   \
    ".big { font-size: 1.7rem; font-weight: 600; font-variant-numeric: tabular-nums; }\n"          \
    ".bar { position: relative; height: .55rem; background: var(--line); border-radius: 3px;\n"    \
    "  overflow: hidden; margin: .35rem 0 .8rem; }\n"                                              \
    ".bar > div { height: 100%; width: 0; background: var(--accent); }\n"                          \
    ".bar > .mark { position: absolute; top: 0; width: 2px; background: var(--err); }\n"           \
    "#origins { margin-top: 1rem; }\n"                                                             \
    "table { width: 100%; border-collapse: collapse; }\n"                                          \
    "th, td { text-align: left; padding: .3rem .6rem;\n"                                           \
    "  border-bottom: 1px solid var(--line); }\n"                                                  \
    "th { color: var(--muted); font-weight: 500; }\n"                                              \
    ".muted { color: var(--muted); }\n"                                                            \
    ".ok { color: var(--ok); }\n"                                                                  \
    ".err { color: var(--err); }\n"
#define PAGE_MID                                                                                   \
    "</style>\n"                                                                                   \
    "</head>\n"                                                                                    \
    "<body>\n"                                                                                     \
    "<header>\n"                                                                                   \
    "<h1>cdnode <span id=\"node\"></span></h1>\n"                                                  \
    "<span class=\"muted\">version <span id=\"version\">&ndash;</span>,\n"                         \
    "up <span id=\"uptime\">&ndash;</span></span>\n"                                               \
    "<span id=\"state\" class=\"muted\">loading</span>\n"                                          \
    "</header>\n"                                                                                  \
    "<noscript><p class=\"err\">This page needs JavaScript.\n"                                     \
    "The same numbers: /status.json and /metrics.</p></noscript>\n"                                \
    "<main>\n"                                                                                     \
    "<section>\n"                                                                                  \
    "<h2>Requests</h2>\n"                                                                          \
    "<dl>\n"                                                                                       \
    "<dt>Requests</dt><dd id=\"requests\">&ndash;</dd>\n"                                          \
    "<dt>Per second</dt><dd id=\"rate\">&ndash;</dd>\n"                                            \
    "<dt>Active</dt><dd id=\"active\">&ndash;</dd>\n"                                              \
    "<dt>Rejected (malformed)</dt><dd id=\"rejected\">&ndash;</dd>\n"                              \
    "<dt>Loops (508)</dt><dd id=\"loops\">&ndash;</dd>\n"                                          \
    "<dt>Bytes out</dt><dd id=\"bytes_out\">&ndash;</dd>\n"                                        \
    "</dl>\n"                                                                                      \
    "</section>\n"                                                                                 \
    "<section>\n"                                                                                  \
    "<h2>Cache</h2>\n"                                                                             \
    "<div class=\"big\" id=\"hit_ratio\">&ndash;</div>\n"                                          \
    "<div class=\"muted\">served from cache (hit, stale, revalidated)</div>\n"                     \
    "<div class=\"bar\"><div id=\"hit_bar\"></div></div>\n"                                        \
    "<dl>\n"                                                                                       \
    "<dt>Hits</dt><dd id=\"hits\">&ndash;</dd>\n"                                                  \
    "<dt>Stale</dt><dd id=\"stale\">&ndash;</dd>\n"                                                \
    "<dt>Revalidated</dt><dd id=\"revalidated\">&ndash;</dd>\n"                                    \
    "<dt>Misses</dt><dd id=\"misses\">&ndash;</dd>\n"                                              \
    "<dt>Stored</dt><dd id=\"stored\">&ndash;</dd>\n"                                              \
    "</dl>\n"                                                                                      \
    "</section>\n"                                                                                 \
    "<section>\n"                                                                                  \
    "<h2>Origin</h2>\n"                                                                            \
    "<dl>\n"                                                                                       \
    "<dt>Requests</dt><dd id=\"origin_requests\">&ndash;</dd>\n"                                   \
    "<dt>Errors</dt><dd id=\"origin_errors\">&ndash;</dd>\n"                                       \
    "<dt>Active</dt><dd id=\"origin_active\">&ndash;</dd>\n"                                       \
    "<dt>Bytes in</dt><dd id=\"origin_bytes_in\">&ndash;</dd>\n"                                   \
    "</dl>\n"                                                                                      \
    "</section>\n"                                                                                 \
    "<section>\n"                                                                                  \
    "<h2>Collapsed forwarding</h2>\n"                                                              \
    "<dl>\n"                                                                                       \
    "<dt>Leaders</dt><dd id=\"leaders\">&ndash;</dd>\n"                                            \
    "<dt>Followers</dt><dd id=\"followers\">&ndash;</dd>\n"                                        \
    "<dt>Followers gone alone</dt><dd id=\"unshared\">&ndash;</dd>\n"                              \
    "<dt>Hit-for-miss markers</dt><dd id=\"markers\">&ndash;</dd>\n"                               \
    "<dt>Hit-for-miss</dt><dd id=\"hit_for_miss\">&ndash;</dd>\n"                                  \
    "<dt>In flight</dt><dd id=\"collapse_entries\">&ndash;</dd>\n"                                 \
    "</dl>\n"                                                                                      \
    "</section>\n"                                                                                 \
    "<section>\n"                                                                                  \
    "<h2>Store</h2>\n"                                                                             \
    "<p id=\"store_off\" class=\"muted\" hidden>No cache: every request is forwarded.</p>\n"       \
    "<div id=\"store_on\">\n"                                                                      \
    "<div class=\"big\" id=\"pages_pct\">&ndash;</div>\n"                                          \
    "<div class=\"muted\" id=\"pages\">&ndash;</div>\n"                                            \
    "<div class=\"bar\"><div id=\"pages_bar\"></div><div id=\"high_mark\" class=\"mark\"\n"        \
    "title=\"high watermark: eviction starts here\"></div></div>\n"                                \
    "<dl>\n"                                                                                       \
    "<dt>Objects</dt><dd id=\"objects\">&ndash;</dd>\n"                                            \
    "<dt>Bytes</dt><dd id=\"store_bytes\">&ndash;</dd>\n"                                          \
    "<dt>Evicting above</dt><dd id=\"high_pages\">&ndash;</dd>\n"                                  \
    "<dt>Evictions</dt><dd id=\"evictions\">&ndash;</dd>\n"                                        \
    "<dt>Dropped (map full)</dt><dd id=\"map_full_drops\">&ndash;</dd>\n"                          \
    "</dl>\n"                                                                                      \
    "</div>\n"                                                                                     \
    "</section>\n"                                                                                 \
    "</main>\n"                                                                                    \
    "<section id=\"origins\">\n"                                                                   \
    "<h2>Origins</h2>\n"                                                                           \
    "<table><thead id=\"origins_head\"></thead><tbody id=\"origins_body\"></tbody></table>\n"      \
    "</section>\n"                                                                                 \
    "<script>"
#define PAGE_JS                                                                                    \
    "\n"                                                                                           \
    "'use strict';\n"                                                                              \
    "const token = new URLSearchParams(location.search).get('token');\n"                           \
    "const $ = (id) => document.getElementById(id);\n"                                             \
    "const none = '\\u2013';\n"                                                                    \
    "const set = (id, text) => { $(id).textContent = text; };\n"                                   \
    "const int = (n) => n.toLocaleString('en-US');\n"                                              \
    "function bytes(n) {\n"                                                                        \
    "  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];\n"                                  \
    "  let i = 0, v = n;\n"                                                                        \
    "  for (; v >= 1024 && i < units.length - 1; i++) v /= 1024;\n"                                \
    "  return i ? v.toFixed(1) + ' ' + units[i] : n + ' B';\n"                                     \
    "}\n"                                                                                          \
    "const pct = (part, whole) => (whole ? (100 * part / whole).toFixed(1) + ' %' : none);\n"      \
    "const share = (part, whole) => (whole ? Math.min(100, 100 * part / whole) : 0) + '%';\n"      \
    "/* Human-readable, with the exact count on hover. */\n"                                       \
    "function setBytes(id, n) {\n"                                                                 \
    "  set(id, bytes(n));\n"                                                                       \
    "  $(id).title = int(n) + ' bytes';\n"                                                         \
    "}\n"                                                                                          \
    "function duration(s) {\n"                                                                     \
    "  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24;\n"                          \
    "  const m = Math.floor(s / 60) % 60;\n"                                                       \
    "  return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + m + 'm ' + (s % 60) + 's';\n"       \
    "}\n"                                                                                          \
    "/* Every field of an origin's object is a column: what the upstream reports\n"                \
    " * per origin shows up here without changing the page. */\n"                                  \
    "function origins(list) {\n"                                                                   \
    "  const keys = ['url'];\n"                                                                    \
    "  for (const o of list)\n"                                                                    \
    "    for (const k of Object.keys(o))\n"                                                        \
    "      if (!keys.includes(k)) keys.push(k);\n"                                                 \
    "  const head = document.createElement('tr');\n"                                               \
    "  for (const k of keys) {\n"                                                                  \
    "    const th = document.createElement('th');\n"                                               \
    "    th.textContent = k === 'url' ? 'URL' : k.replace(/_/g, ' ');\n"                           \
    "    head.append(th);\n"                                                                       \
    "  }\n"                                                                                        \
    "  $('origins_head').replaceChildren(head);\n"                                                 \
    "  $('origins_body').replaceChildren(...list.map((o) => {\n"                                   \
    "    const tr = document.createElement('tr');\n"                                               \
    "    for (const k of keys) {\n"                                                                \
    "      const td = document.createElement('td'), v = o[k];\n"                                   \
    "      td.textContent = v === undefined || v === null ? none\n"                                \
    "                     : typeof v === 'object' ? JSON.stringify(v) : String(v);\n"              \
    "      tr.append(td);\n"                                                                       \
    "    }\n"                                                                                      \
    "    return tr;\n"                                                                             \
    "  }));\n"                                                                                     \
    "}\n"                                                                                          \
    "let last = null;\n"                                                                           \
    "function show(s, now) {\n"                                                                    \
    "  const f = s.front, o = s.origin, c = s.collapse, st = s.store;\n"                           \
    "  document.title = 'cdnode ' + s.node;\n"                                                     \
    "  set('node', s.node);\n"                                                                     \
    "  set('version', s.version);\n"                                                               \
    "  set('uptime', duration(s.uptime_s));\n"                                                     \
    "  for (const k of ['requests', 'active', 'rejected', 'loops', 'hits', 'stale',\n"             \
    "                   'revalidated', 'misses', 'stored'])\n"                                     \
    "    set(k, int(f[k]));\n"                                                                     \
    "  setBytes('bytes_out', f.bytes_out);\n"                                                      \
    "  const dt = last ? now - last.at : 0;\n"                                                     \
    "  set('rate', dt > 0 ? ((f.requests - last.requests) * 1000 / dt).toFixed(1) : none);\n"      \
    "  last = {requests: f.requests, at: now};\n"                                                  \
    "  const cached = f.hits + f.stale + f.revalidated;\n"                                         \
    "  set('hit_ratio', pct(cached, cached + f.misses));\n"                                        \
    "  $('hit_bar').style.width = share(cached, cached + f.misses);\n"                             \
    "  set('origin_requests', int(o.requests));\n"                                                 \
    "  set('origin_errors', int(o.errors));\n"                                                     \
    "  set('origin_active', int(o.active));\n"                                                     \
    "  setBytes('origin_bytes_in', o.bytes_in);\n"                                                 \
    "  set('leaders', int(c.leaders));\n"                                                          \
    "  set('followers', int(c.followers));\n"                                                      \
    "  set('unshared', int(f.unshared));\n"                                                        \
    "  set('markers', int(c.markers));\n"                                                          \
    "  set('hit_for_miss', int(c.hit_for_miss));\n"                                                \
    "  set('collapse_entries', int(c.entries));\n"                                                 \
    "  $('store_off').hidden = st !== null;\n"                                                     \
    "  $('store_on').hidden = st === null;\n"                                                      \
    "  if (st) {\n"                                                                                \
    "    set('objects', int(st.objects));\n"                                                       \
    "    setBytes('store_bytes', st.bytes);\n"                                                     \
    "    set('pages', int(st.used_pages) + ' of ' + int(st.map_pages) + ' pages');\n"              \
    "    set('pages_pct', pct(st.used_pages, st.map_pages));\n"                                    \
    "    $('pages_bar').style.width = share(st.used_pages, st.map_pages);\n"                       \
    "    $('high_mark').style.left = share(st.high_pages, st.map_pages);\n"                        \
    "    set('high_pages', pct(st.high_pages, st.map_pages));\n"                                   \
    "    set('evictions', int(st.evictions));\n"                                                   \
    "    set('map_full_drops', int(st.map_full_drops));\n"                                         \
    "  }\n"                                                                                        \
    "  origins(s.origins);\n"                                                                      \
    "}\n"                                                                                          \
    "async function refresh() {\n"                                                                 \
    "  try {\n"                                                                                    \
    "    const r = await fetch('/status.json', {\n"                                                \
    "      cache: 'no-store',\n"                                                                   \
    "      headers: token ? {Authorization: 'Bearer ' + token} : {},\n"                            \
    "    });\n"                                                                                    \
    "    if (!r.ok) throw new Error('HTTP ' + r.status);\n"                                        \
    "    show(await r.json(), performance.now());\n"                                               \
    "    set('state', 'live, updated ' + new Date().toLocaleTimeString('en-GB'));\n"               \
    "    $('state').className = 'ok';\n"                                                           \
    "  } catch (e) {\n"                                                                            \
    "    set('state', 'refresh failed (' + e.message + '), retrying');\n"                          \
    "    $('state').className = 'err';\n"                                                          \
    "  }\n"                                                                                        \
    "  setTimeout(refresh, 2000);\n"                                                               \
    "}\n"                                                                                          \
    "refresh();\n"
#define PAGE_TAIL                                                                                  \
    "</script>\n"                                                                                  \
    "</body>\n"                                                                                    \
    "</html>\n"

static const char status_html[] = PAGE_HEAD PAGE_CSS PAGE_MID PAGE_JS PAGE_TAIL;

/* "'sha256-<base64>'" of src, for a CSP source list; out holds at least 60 bytes. */
static void
csp_hash(const char *src, char *out)
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)src, strlen(src), d);
    memcpy(out, "'sha256-", 8);
    int n = EVP_EncodeBlock((unsigned char *)out + 8, d, sizeof(d));
    memcpy(out + 8 + n, "'", 2);
}

static enum MHD_Result
status_page(struct cdn_admin *a, struct MHD_Connection *conn)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        sizeof(status_html) - 1, (void *)status_html, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(resp, "Content-Type", "text/html; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "Content-Security-Policy", a->csp);
    /* The URL carries the token: never send it anywhere as a Referer. */
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    enum MHD_Result r = MHD_queue_response(conn, 200, resp);
    MHD_destroy_response(resp);
    return r;
}

/* s as a JSON string. <, > and & are escaped too, so the text is inert if it ever lands in HTML.
 * Bytes >= 0x80 pass through: what is written here are validated config values. */
static void
json_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f || *p == '<' || *p == '>' || *p == '&')
            fprintf(out, "\\u%04x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

struct jnum {
    const char *name; /* a literal: written unescaped */
    uint64_t v;
};

/* ,\n  "name": {"a": 1, "b": 2} */
static void
json_counters(FILE *out, const char *name, const struct jnum *f, size_t n)
{
    fprintf(out, ",\n  \"%s\": {", name);
    for (size_t i = 0; i < n; i++)
        fprintf(out, "%s\"%s\": %llu", i ? ", " : "", f[i].name, (unsigned long long)f[i].v);
    fputc('}', out);
}
#define JSON_COUNTERS(out, name, ...)                                                              \
    json_counters((out), (name), (const struct jnum[]){__VA_ARGS__},                               \
                  sizeof((const struct jnum[]){__VA_ARGS__}) / sizeof(struct jnum))

/*
 * One origin of the "origins" array: {"url": ...} from the config for now. Per-origin health
 * from the upstream goes here as more fields of the same object; the page shows every field as
 * a column of its origins table.
 */
static void
origin_json(FILE *out, const struct cdn_origin_status *o)
{
    fputs("{\"url\": ", out);
    json_str(out, o->url);
    fprintf(out, ", \"healthy\": %s, \"outstanding\": %u, \"requests\": %llu, \"failures\": %llu}",
            o->healthy ? "true" : "false", o->outstanding, (unsigned long long)o->requests,
            (unsigned long long)o->failures);
}

/* GET /status.json: the numbers of the status page (and of /metrics) as one JSON object. */
static enum MHD_Result
status_json(struct cdn_admin *a, struct MHD_Connection *conn)
{
    struct cdn_front_stats fs;
    struct cdn_upstream_stats us;
    struct cdn_collapse_stats cs;
    struct cdn_store_stats ss;
    read_stats(a, &fs, &us, &cs, &ss);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    if (out == NULL)
        return reply_json_error(conn, 500, "out of memory");
    fputs("{\n  \"node\": ", out);
    json_str(out, a->cdn_id);
    fputs(",\n  \"version\": ", out);
    json_str(out, CDNODE_VERSION);
    fprintf(out, ",\n  \"uptime_s\": %lld", (long long)(now.tv_sec - a->started.tv_sec));
    JSON_COUNTERS(out, "front", {"requests", fs.requests}, {"rejected", fs.rejected},
                  {"loops", fs.loops}, {"active", fs.active}, {"bytes_out", fs.bytes_out},
                  {"hits", fs.hits}, {"stale", fs.stale}, {"revalidated", fs.revalidated},
                  {"misses", fs.misses}, {"stored", fs.stored}, {"unshared", fs.unshared});
    JSON_COUNTERS(out, "origin", {"requests", us.requests}, {"errors", us.errors},
                  {"bytes_in", us.bytes_in}, {"active", us.active});
    JSON_COUNTERS(out, "collapse", {"leaders", cs.leaders}, {"followers", cs.followers},
                  {"hit_for_miss", cs.hit_for_miss}, {"markers", cs.markers},
                  {"entries", cs.entries});
    if (a->cache)
        JSON_COUNTERS(out, "store", {"objects", ss.objects}, {"bytes", ss.bytes},
                      {"used_pages", ss.used_pages}, {"map_pages", ss.map_pages},
                      {"high_pages", ss.high_pages}, {"puts", ss.puts}, {"updates", ss.updates},
                      {"deletes", ss.deletes}, {"soft_purges", ss.soft_purges},
                      {"evictions", ss.evictions}, {"map_full_drops", ss.map_full_drops});
    else
        fputs(",\n  \"store\": null", out);
    JSON_COUNTERS(out, "connections", {"open", fs.connections}, {"refused", fs.conn_refused},
                  {"head_timeouts", fs.head_timeouts});
    struct cdn_peers_stats ps;
    cdn_peers_stats(a->peers, &ps);
    JSON_COUNTERS(out, "purge", {"from_clients", atomic_load(&a->purges_client)},
                  {"from_peers", atomic_load(&a->purges_peer)}, {"peer_requests", ps.forwarded},
                  {"peer_failures", ps.failures});
    fputs(",\n  \"origins\": [", out);
    struct cdn_origin_status os[CDN_MAX_ORIGINS];
    size_t no = cdn_upstream_origins(a->up, os, CDN_MAX_ORIGINS);
    for (size_t i = 0; i < no && i < CDN_MAX_ORIGINS; i++) {
        fputs(i ? ", " : "", out);
        origin_json(out, &os[i]);
    }
    fputs("]\n}\n", out);
    fclose(out);
    enum MHD_Result r = reply(conn, 200, "application/json", buf, len);
    free(buf);
    return r;
}

/*
 * The answer to a purge with fan-out: {"purged": N, "peers": [...]} with one object per peer in
 * res order: "peer" and "role", then "status" when the peer answered, then "purged" (its count)
 * on success or "error". Returns malloc'ed text (NUL-terminated) with its length in *len.
 */
static char *
purge_json(int purged, const struct cdn_peer_result *res, size_t n, size_t *len)
{
    char *buf = NULL;
    FILE *out = open_memstream(&buf, len);
    CDN_ASSERT(out != NULL);
    fprintf(out, "{\"purged\": %d, \"peers\": [", purged);
    for (size_t i = 0; i < n; i++) {
        fputs(i ? ", {\"peer\": " : "{\"peer\": ", out);
        json_str(out, res[i].url);
        fprintf(out, ", \"role\": \"%s\"", res[i].role == CDN_PEER_PARENT ? "parent" : "child");
        if (res[i].status != 0)
            fprintf(out, ", \"status\": %d", res[i].status);
        if (res[i].error[0] == '\0') {
            fprintf(out, ", \"purged\": %ld}", res[i].purged);
        } else {
            fputs(", \"error\": ", out);
            json_str(out, res[i].error);
            fputc('}', out);
        }
    }
    fputs("]}\n", out);
    fclose(out);
    return buf;
}

/* The purge of r is settled, fan-out included: let the MHD thread answer. Any thread. */
static void
settle(struct areq *r)
{
    struct cdn_admin *a = r->a;
    atomic_store(&r->settled, true);
    /* From here the MHD thread may finish the request and free r. */
    MHD_resume_connection(r->conn);
    pthread_mutex_lock(&a->mu);
    a->pending--;
    pthread_cond_broadcast(&a->settled);
    pthread_mutex_unlock(&a->mu);
}

/* Peers thread: every peer has answered or failed. */
static void
fanned(void *arg, const struct cdn_peer_result *res, size_t n)
{
    struct areq *r = arg;
    CDN_CHECK_MAGIC(r, AREQ_MAGIC);
    size_t len;
    for (size_t i = 0; i < n; i++)
        r->peer_failures += res[i].error[0] != '\0';
    r->answer = purge_json(atomic_load(&r->result), res, n, &len);
    settle(r);
}

/* Writer thread: the purge is settled (synced when result >= 0). Short: store, then resume or
 * hand over to the peers thread. */
static void
purged(void *arg, int result)
{
    struct areq *r = arg;
    CDN_CHECK_MAGIC(r, AREQ_MAGIC);
    atomic_store(&r->result, result);
    if (result >= 0 && r->fwd != NULL) {
        const struct aconf *c = r->conf;
        struct cdn_peers_job job = {
            .parents = (const char *const *)c->parents,
            .n_parents = c->n_parents,
            .children = (const char *const *)c->children,
            .n_children = c->n_children,
            .query = r->fwd,
            .token = c->peer_token,
            .origin = r->a->cdn_id,
            .ca_file = c->peer_ca_file,
            .timeout_ms = c->timeout_ms,
        };
        cdn_peers_forward(r->a->peers, &job, fanned, r);
        return;
    }
    settle(r);
}

/* Queues the purge p. fwd: the same purge as a POST /purge query, for the peers. */
static enum MHD_Result
submit(struct areq *r, const struct cdn_purge_req *p, const char *fwd)
{
    struct cdn_admin *a = r->a;
    pthread_mutex_lock(&a->mu);
    bool stopping = a->stopping;
    if (!stopping)
        a->pending++;
    pthread_mutex_unlock(&a->mu);
    if (stopping)
        return reply_json_error(r->conn, 503, "stopping");
    static const char *const kinds[] = {"url", "prefix", "tag", "all"};
    const char *from = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, CDN_PEERS_MARKER);
    r->what = cdn_arena_printf(r->arena, "%s%s%s%.*s%s%.64s", p->soft ? "soft " : "",
                               kinds[p->kind], p->kind == CDN_PURGE_ALL ? "" : " ", (int)p->len,
                               p->pattern, from ? " forwarded by " : "", from ? from : "");
    /* A forwarded purge is never forwarded again: fan-out is one hop, so no loop can form. */
    if (from != NULL) {
        atomic_fetch_add(&a->purges_peer, 1);
    } else {
        atomic_fetch_add(&a->purges_client, 1);
        if (r->conf->n_parents + r->conf->n_children > 0)
            r->fwd = fwd;
    }
    r->waiting = true;
    /* Suspend first: done may run before cdn_store_purge returns. */
    MHD_suspend_connection(r->conn);
    cdn_store_purge(cdn_cache_store(a->cache), p->kind, p->pattern, p->len, p->soft, purged, r);
    return MHD_YES;
}

/* The connection was resumed by settle(): answer with the store's result (and the peers'). */
static enum MHD_Result
purge_reply(struct areq *r)
{
    int result = atomic_load(&r->result);
    if (result < 0) {
        cdn_error("admin: purge %s failed: %s", r->what, cdn_strerror(result));
        return reply_json_error(r->conn, result == CDN_ESHUTDOWN ? 503 : 500, cdn_strerror(result));
    }
    if (r->answer != NULL) {
        size_t n = r->conf->n_parents + r->conf->n_children;
        if (r->peer_failures > 0)
            cdn_warn("admin: purge %s: %d records; %u of %zu peers failed", r->what, result,
                     r->peer_failures, n);
        else
            cdn_info("admin: purge %s: %d records; forwarded to %zu peers", r->what, result, n);
        /* 200 even when a peer failed: the purge happened here, and the body says the rest. */
        enum MHD_Result ret = reply(r->conn, 200, "application/json", r->answer, strlen(r->answer));
        free(r->answer);
        r->answer = NULL;
        return ret;
    }
    cdn_info("admin: purge %s: %d records", r->what, result);
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "{\"purged\": %d}\n", result);
    return reply(r->conn, 200, "application/json", buf, (size_t)n);
}

struct args {
    const char *names[CDN_PURGE_MAX_ARGS + 1];
    const char *values[CDN_PURGE_MAX_ARGS + 1];
    size_t n;
};

static enum MHD_Result
collect_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    struct args *g = cls;
    if (g->n == CDN_PURGE_MAX_ARGS + 1) /* one more than allowed: enough to refuse */
        return MHD_NO;
    g->names[g->n] = key;
    g->values[g->n] = value;
    g->n++;
    return MHD_YES;
}

/* POST /purge?url=|prefix=|tag=|all=1[&soft=1] */
static enum MHD_Result
purge_api(struct areq *r, const char *method)
{
    if (strcmp(method, "POST") != 0) {
        static const char body[] = "{\"error\": \"use POST\"}\n";
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(sizeof(body) - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(resp, "Content-Type", "application/json");
        MHD_add_response_header(resp, "Cache-Control", "no-store");
        MHD_add_response_header(resp, "Allow", "POST");
        enum MHD_Result ret = MHD_queue_response(r->conn, 405, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    struct args g = {.n = 0};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, collect_arg, &g);
    struct cdn_purge_req p;
    const char *reason;
    if (cdn_purge_parse(g.names, g.values, g.n, cdn_cache_key_opts(r->a->cache), r->arena, &p,
                        &reason) != 0)
        return reply_json_error(r->conn, 400, reason);
    return submit(r, &p, cdn_peers_query(g.names, g.values, g.n, r->arena));
}

/* PURGE /path?query with Host: purges every variant of that URL (http://). Peers get it as
 * POST /purge?url=<that absolute URL>. */
static enum MHD_Result
purge_method(struct areq *r)
{
    const char *host = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Host");
    struct cdn_purge_req p = {.kind = CDN_PURGE_URL};
    if (cdn_purge_method_key(host, r->raw_uri, cdn_cache_key_opts(r->a->cache), r->arena,
                             &p.pattern, &p.len) != 0)
        return reply_json_error(r->conn, 400,
                                "PURGE needs an origin-form target and a valid "
                                "Host, or an absolute http(s) URL");
    return submit(r, &p, cdn_peers_url_query(host, r->raw_uri, r->arena));
}

static void *
on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct areq *r = cdn_calloc(1, sizeof(*r));
    r->magic = AREQ_MAGIC;
    r->a = cls;
    r->conf = conf_get(r->a);
    r->conn = conn;
    r->arena = cdn_arena_new(1024);
    r->raw_uri = cdn_arena_strdup(r->arena, uri);
    atomic_init(&r->settled, false);
    atomic_init(&r->result, 0);
    return r;
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    struct areq *r = *con_cls;
    if (r == NULL)
        return;
    CDN_CHECK_MAGIC(r, AREQ_MAGIC);
    *con_cls = NULL;
    free(r->answer);
    conf_unref(r->conf);
    cdn_arena_free(r->arena);
    r->magic = 0;
    free(r);
}

static enum MHD_Result
on_admin(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
         const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    struct cdn_admin *a = cls;
    struct areq *r = *con_cls;
    CDN_CHECK_MAGIC(r, AREQ_MAGIC);
    if (!r->started) {
        r->started = true;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->waiting) {
        if (!atomic_load(&r->settled))
            return MHD_YES; /* not resumed by settle(): nothing to do yet */
        r->waiting = false;
        return purge_reply(r);
    }
    bool purge = strcmp(method, "PURGE") == 0;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (!purge && strcmp(url, "/healthz") == 0)
        return reply(conn, 200, "text/plain", "ok\n", 3);
    bool page = get && strcmp(url, "/") == 0, json = get && strcmp(url, "/status.json") == 0;
    if (!authorized(r->conf, conn, page || json))
        return refuse(a, conn);
    if (purge)
        return purge_method(r);
    if (page)
        return status_page(a, conn);
    if (json)
        return status_json(a, conn);
    if (strcmp(url, "/purge") == 0)
        return purge_api(r, method);
    if (get && strcmp(url, "/metrics") == 0)
        return metrics(a, conn);
    return reply(conn, 404, "text/plain", "404 Not Found\n", 14);
}

static void
admin_free(struct cdn_admin *a)
{
    cdn_peers_free(a->peers);
    conf_unref(a->conf);
    pthread_cond_destroy(&a->settled);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->conf_mu);
    free(a->cdn_id);
    a->magic = 0;
    free(a);
}

struct cdn_admin *
cdn_admin_start(const struct cdn_config *cfg, struct cdn_front *fe, struct cdn_upstream *up,
                struct cdn_cache *cache, struct cdn_collapse *collapse)
{
    char host[256];
    unsigned port;
    if (cdn_parse_hostport(cfg->admin_listen, host, sizeof(host), &port) != 0) {
        cdn_error("cannot use admin address '%s'", cfg->admin_listen);
        return NULL;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (host[0] == '\0' || strcmp(host, "*") == 0) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET, strcmp(host, "localhost") == 0 ? "127.0.0.1" : host,
                         &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        flags |= MHD_USE_IPv6;
    } else {
        cdn_error("cannot use admin address '%s'", cfg->admin_listen);
        return NULL;
    }
    struct cdn_peers *peers = cdn_peers_start();
    if (peers == NULL)
        return NULL;
    struct cdn_admin *a = cdn_calloc(1, sizeof(*a));
    a->magic = ADMIN_MAGIC;
    a->cdn_id = cdn_strdup(cfg->cdn_id ? cfg->cdn_id : "");
    a->peers = peers;
    a->conf = conf_new(cfg);
    a->fe = fe;
    a->up = up;
    a->cache = cache;
    a->collapse = collapse;
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->conf_mu, NULL);
    pthread_cond_init(&a->settled, NULL);
    clock_gettime(CLOCK_MONOTONIC, &a->started);
    char css[64], js[64];
    csp_hash(PAGE_CSS, css);
    csp_hash(PAGE_JS, js);
    snprintf(a->csp, sizeof(a->csp),
             "default-src 'none'; style-src %s; script-src %s; connect-src 'self'; "
             "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
             css, js);
    a->d = MHD_start_daemon(flags, 0, NULL, NULL, on_admin, a, MHD_OPTION_SOCK_ADDR, &ss,
                            MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384,
                            MHD_OPTION_URI_LOG_CALLBACK, on_uri, a, MHD_OPTION_NOTIFY_COMPLETED,
                            on_completed, a, MHD_OPTION_END);
    if (a->d == NULL) {
        cdn_error("cannot listen on admin address %s: %s", cfg->admin_listen, strerror(errno));
        admin_free(a);
        return NULL;
    }
    return a;
}

int
cdn_admin_reconfigure(struct cdn_admin *a, const struct cdn_config *cfg)
{
    CDN_CHECK_MAGIC(a, ADMIN_MAGIC);
    struct aconf *c = conf_new(cfg);
    pthread_mutex_lock(&a->conf_mu);
    struct aconf *old = a->conf;
    a->conf = c;
    pthread_mutex_unlock(&a->conf_mu);
    /* Requests still holding the old snapshot finish with it; the last one frees it. */
    conf_unref(old);
    cdn_info("admin: reconfigured (%s token, %zu purge parents, %zu purge children)",
             c->token ? "with" : "no", c->n_parents, c->n_children);
    return 0;
}

/* Waits until no purge is pending or the deadline (CLOCK_REALTIME) passes; returns how many are
 * still pending. */
static unsigned
wait_settled(struct cdn_admin *a, const struct timespec *deadline)
{
    pthread_mutex_lock(&a->mu);
    int rc = 0;
    while (a->pending > 0 && rc == 0)
        rc = pthread_cond_timedwait(&a->settled, &a->mu, deadline);
    unsigned pending = a->pending;
    pthread_mutex_unlock(&a->mu);
    return pending;
}

void
cdn_admin_stop(struct cdn_admin *a)
{
    if (a == NULL)
        return;
    CDN_CHECK_MAGIC(a, ADMIN_MAGIC);
    pthread_mutex_lock(&a->mu);
    a->stopping = true;
    pthread_mutex_unlock(&a->mu);
    /* The store calls done for every queued purge and a fan-out ends within two peer timeouts,
     * so this ends; the deadline is for a store that hangs on its disk or very long timeouts. */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += STOP_WAIT_S;
    unsigned pending = wait_settled(a, &deadline);
    if (pending > 0) {
        /* Fan-outs still waiting on peers end now, reporting "node stopping". */
        cdn_peers_stop(a->peers);
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += 5;
        pending = wait_settled(a, &deadline);
    }
    if (pending > 0) {
        /* MHD would abort on a suspended connection, and purged() will still touch a. */
        cdn_error("admin: %u purges not settled after %d s: leaving the admin listener open",
                  pending, STOP_WAIT_S);
        return;
    }
    MHD_stop_daemon(a->d);
    admin_free(a);
}

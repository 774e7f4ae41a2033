/*
 * admin.c: the admin listener (see admin.h). One internal polling thread: admin traffic is light
 * and must not compete with the front end's workers. Responses are queued on the second
 * access-handler call so keep-alive works for scrapers.
 *
 * Purges: the handler suspends the connection and queues the purge for the store's writer; the
 * store's done callback (writer thread) records the result and resumes the connection, and the
 * next handler call answers. So a 200 is sent only once the purge is synced to disk. `pending`
 * counts purges whose done has not run: stop waits for them, because MHD must not be stopped
 * with a connection still suspended.
 */
#include "cdnode/admin.h"
#include "cdnode/arena.h"
#include "cdnode/cache.h"
#include "cdnode/collapse.h"
#include "cdnode/common.h"
#include "cdnode/config.h"
#include "cdnode/front.h"
#include "cdnode/log.h"
#include "cdnode/purge.h"
#include "cdnode/store.h"
#include "cdnode/upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define ADMIN_MAGIC 0xad3140a1u
#define AREQ_MAGIC 0xad3140a2u

/* How long stop waits for purges the store has not settled yet. */
#define STOP_WAIT_S 30

struct cdn_admin {
    uint32_t magic;
    const struct cdn_config *cfg;
    struct cdn_front *fe;
    struct cdn_upstream *up;
    struct cdn_cache *cache;
    struct cdn_collapse *collapse;
    struct MHD_Daemon *d;
    pthread_mutex_t mu; /* guards stopping and pending */
    pthread_cond_t settled;
    bool stopping;
    unsigned pending;
};

/* One request, from MHD's URI callback to its completion notice. */
struct areq {
    uint32_t magic;
    struct cdn_admin *a;
    struct MHD_Connection *conn;
    struct cdn_arena *arena;
    const char *raw_uri; /* the request-target as received (MHD strips the query from `url`) */
    bool started;        /* the first handler call (headers only) happened */
    bool waiting;        /* a purge is queued; the connection is suspended */
    const char *what;    /* the purge, for the log */
    atomic_bool settled; /* the store's done ran: `result` is valid */
    atomic_int result;
};

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

static bool
authorized(struct cdn_admin *a, struct MHD_Connection *conn)
{
    const char *tok = a->cfg->admin_token;
    if (tok == NULL)
        return false;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    /* Hash both sides so the comparison takes the same time whatever the length or content. */
    unsigned char want[SHA256_DIGEST_LENGTH], got[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)tok, strlen(tok), want);
    SHA256((const unsigned char *)h + 7, strlen(h + 7), got);
    return CRYPTO_memcmp(want, got, sizeof(want)) == 0;
}

static void
metric(FILE *out, const char *name, const char *type, const char *labels, uint64_t v)
{
    if (type)
        fprintf(out, "# TYPE %s %s\n", name, type);
    fprintf(out, "%s%s %llu\n", name, labels ? labels : "", (unsigned long long)v);
}

/* Prometheus text exposition of every counter the node keeps. */
static enum MHD_Result
metrics(struct cdn_admin *a, struct MHD_Connection *conn)
{
    struct cdn_front_stats fs;
    struct cdn_upstream_stats us;
    struct cdn_collapse_stats cs = {0};
    struct cdn_store_stats ss = {0};
    cdn_front_stats(a->fe, &fs);
    cdn_upstream_stats(a->up, &us);
    if (a->collapse)
        cdn_collapse_stats(a->collapse, &cs);
    if (a->cache)
        cdn_store_stats(cdn_cache_store(a->cache), &ss);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    if (out == NULL)
        return reply(conn, 500, "text/plain", "500 out of memory\n", 18);
    const char *ctr = "counter", *gauge = "gauge";
    metric(out, "cdnode_requests_total", ctr, NULL, fs.requests);
    metric(out, "cdnode_requests_rejected_total", ctr, NULL, fs.rejected);
    metric(out, "cdnode_loops_total", ctr, NULL, fs.loops);
    metric(out, "cdnode_requests_active", gauge, NULL, fs.active);
    metric(out, "cdnode_bytes_out_total", ctr, NULL, fs.bytes_out);
    metric(out, "cdnode_cache_responses_total", ctr, "{outcome=\"hit\"}", fs.hits);
    metric(out, "cdnode_cache_responses_total", NULL, "{outcome=\"stale\"}", fs.stale);
    metric(out, "cdnode_cache_responses_total", NULL, "{outcome=\"revalidated\"}",
           fs.revalidated);
    metric(out, "cdnode_cache_responses_total", NULL, "{outcome=\"miss\"}", fs.misses);
    metric(out, "cdnode_cache_stored_total", ctr, NULL, fs.stored);
    metric(out, "cdnode_origin_requests_total", ctr, NULL, us.requests);
    metric(out, "cdnode_origin_errors_total", ctr, NULL, us.errors);
    metric(out, "cdnode_origin_bytes_in_total", ctr, NULL, us.bytes_in);
    metric(out, "cdnode_origin_active", gauge, NULL, us.active);
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

static enum MHD_Result
reply_json_error(struct MHD_Connection *conn, unsigned status, const char *msg)
{
    char buf[256];
    int n = snprintf(buf, sizeof(buf), "{\"error\": \"%s\"}\n", msg);
    return reply(conn, status, "application/json", buf, (size_t)n);
}

/* Writer thread: the purge is settled (synced when result >= 0). Short: store, resume, count. */
static void
purged(void *arg, int result)
{
    struct areq *r = arg;
    struct cdn_admin *a = r->a;
    atomic_store(&r->result, result);
    atomic_store(&r->settled, true);
    /* From here the MHD thread may finish the request and free r. */
    MHD_resume_connection(r->conn);
    pthread_mutex_lock(&a->mu);
    a->pending--;
    pthread_cond_broadcast(&a->settled);
    pthread_mutex_unlock(&a->mu);
}

static enum MHD_Result
submit(struct areq *r, const struct cdn_purge_req *p)
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
    r->what = cdn_arena_printf(r->arena, "%s%s%s%.*s", p->soft ? "soft " : "", kinds[p->kind],
                               p->kind == CDN_PURGE_ALL ? "" : " ", (int)p->len, p->pattern);
    r->waiting = true;
    /* Suspend first: done may run before cdn_store_purge returns. */
    MHD_suspend_connection(r->conn);
    cdn_store_purge(cdn_cache_store(a->cache), p->kind, p->pattern, p->len, p->soft, purged, r);
    return MHD_YES;
}

/* The connection was resumed by purged(): answer with the store's result. */
static enum MHD_Result
purge_reply(struct areq *r)
{
    int result = atomic_load(&r->result);
    if (result < 0) {
        cdn_error("admin: purge %s failed: %s", r->what, cdn_strerror(result));
        return reply_json_error(r->conn, result == CDN_ESHUTDOWN ? 503 : 500, cdn_strerror(result));
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
    return submit(r, &p);
}

/* PURGE /path?query with Host: purges every variant of that URL (http://). */
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
    return submit(r, &p);
}

static void *
on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct areq *r = cdn_calloc(1, sizeof(*r));
    r->magic = AREQ_MAGIC;
    r->a = cls;
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
            return MHD_YES; /* not resumed by purged(): nothing to do yet */
        r->waiting = false;
        return purge_reply(r);
    }
    bool purge = strcmp(method, "PURGE") == 0;
    if (!purge && strcmp(url, "/healthz") == 0)
        return reply(conn, 200, "text/plain", "ok\n", 3);
    if (!authorized(a, conn))
        return reply(conn, MHD_HTTP_UNAUTHORIZED, "text/plain", "401 Unauthorized\n", 17);
    if (purge)
        return purge_method(r);
    if (strcmp(url, "/purge") == 0)
        return purge_api(r, method);
    if (strcmp(url, "/metrics") == 0 && (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0))
        return metrics(a, conn);
    return reply(conn, 404, "text/plain", "404 Not Found\n", 14);
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
    struct cdn_admin *a = cdn_calloc(1, sizeof(*a));
    a->magic = ADMIN_MAGIC;
    a->cfg = cfg;
    a->fe = fe;
    a->up = up;
    a->cache = cache;
    a->collapse = collapse;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->settled, NULL);
    a->d = MHD_start_daemon(flags, 0, NULL, NULL, on_admin, a, MHD_OPTION_SOCK_ADDR, &ss,
                            MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384,
                            MHD_OPTION_URI_LOG_CALLBACK, on_uri, a, MHD_OPTION_NOTIFY_COMPLETED,
                            on_completed, a, MHD_OPTION_END);
    if (a->d == NULL) {
        cdn_error("cannot listen on admin address %s: %s", cfg->admin_listen, strerror(errno));
        pthread_cond_destroy(&a->settled);
        pthread_mutex_destroy(&a->mu);
        free(a);
        return NULL;
    }
    return a;
}

void
cdn_admin_stop(struct cdn_admin *a)
{
    if (a == NULL)
        return;
    CDN_CHECK_MAGIC(a, ADMIN_MAGIC);
    /* The store calls done for every queued purge, so this ends; the deadline is for a store
     * that hangs on its disk. */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += STOP_WAIT_S;
    pthread_mutex_lock(&a->mu);
    a->stopping = true;
    int rc = 0;
    while (a->pending > 0 && rc == 0)
        rc = pthread_cond_timedwait(&a->settled, &a->mu, &deadline);
    unsigned pending = a->pending;
    pthread_mutex_unlock(&a->mu);
    if (pending > 0) {
        /* MHD would abort on a suspended connection, and purged() will still touch a. */
        cdn_error("admin: %u purges not settled after %d s: leaving the admin listener open",
                  pending, STOP_WAIT_S);
        return;
    }
    MHD_stop_daemon(a->d);
    pthread_cond_destroy(&a->settled);
    pthread_mutex_destroy(&a->mu);
    a->magic = 0;
    free(a);
}

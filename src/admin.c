/*
 * admin.c: the admin listener (see admin.h). One internal polling thread: admin traffic is light
 * and must not compete with the front end's workers. Responses are queued on the second
 * access-handler call so keep-alive works for scrapers.
 */
#include "cdnode/admin.h"
#include "cdnode/common.h"
#include "cdnode/config.h"
#include "cdnode/front.h"
#include "cdnode/log.h"
#include "cdnode/upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <string.h>

#define ADMIN_MAGIC 0xad3140a1u

struct cdn_admin {
    uint32_t magic;
    const struct cdn_config *cfg;
    struct cdn_front *fe;
    struct cdn_upstream *up;
    struct MHD_Daemon *d;
};

static enum MHD_Result
reply(struct MHD_Connection *conn, unsigned status, const char *ctype, const char *body,
      size_t len)
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

static enum MHD_Result
metrics(struct cdn_admin *a, struct MHD_Connection *conn)
{
    struct cdn_front_stats fs;
    struct cdn_upstream_stats us;
    cdn_front_stats(a->fe, &fs);
    cdn_upstream_stats(a->up, &us);
    char buf[4096];
    int n = snprintf(buf, sizeof(buf),
                     "# TYPE cdnode_requests_total counter\n"
                     "cdnode_requests_total %llu\n"
                     "# TYPE cdnode_requests_rejected_total counter\n"
                     "cdnode_requests_rejected_total %llu\n"
                     "# TYPE cdnode_loops_total counter\n"
                     "cdnode_loops_total %llu\n"
                     "# TYPE cdnode_requests_active gauge\n"
                     "cdnode_requests_active %llu\n"
                     "# TYPE cdnode_bytes_out_total counter\n"
                     "cdnode_bytes_out_total %llu\n"
                     "# TYPE cdnode_origin_requests_total counter\n"
                     "cdnode_origin_requests_total %llu\n"
                     "# TYPE cdnode_origin_errors_total counter\n"
                     "cdnode_origin_errors_total %llu\n"
                     "# TYPE cdnode_origin_bytes_in_total counter\n"
                     "cdnode_origin_bytes_in_total %llu\n"
                     "# TYPE cdnode_origin_active gauge\n"
                     "cdnode_origin_active %llu\n"
                     "# TYPE cdnode_cache_responses_total counter\n"
                     "cdnode_cache_responses_total{outcome=\"hit\"} %llu\n"
                     "cdnode_cache_responses_total{outcome=\"stale\"} %llu\n"
                     "cdnode_cache_responses_total{outcome=\"revalidated\"} %llu\n"
                     "cdnode_cache_responses_total{outcome=\"miss\"} %llu\n"
                     "# TYPE cdnode_cache_stored_total counter\n"
                     "cdnode_cache_stored_total %llu\n",
                     (unsigned long long)fs.requests, (unsigned long long)fs.rejected,
                     (unsigned long long)fs.loops, (unsigned long long)fs.active,
                     (unsigned long long)fs.bytes_out, (unsigned long long)us.requests,
                     (unsigned long long)us.errors, (unsigned long long)us.bytes_in,
                     (unsigned long long)us.active, (unsigned long long)fs.hits,
                     (unsigned long long)fs.stale, (unsigned long long)fs.revalidated,
                     (unsigned long long)fs.misses, (unsigned long long)fs.stored);
    return reply(conn, 200, "text/plain; version=0.0.4", buf, (size_t)n);
}

static enum MHD_Result
on_admin(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
         const char *version, const char *upload_data, size_t *upload_data_size,
         void **con_cls)
{
    static int first_call_marker;
    struct cdn_admin *a = cls;
    if (*con_cls == NULL) {
        *con_cls = &first_call_marker;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(url, "/healthz") == 0)
        return reply(conn, 200, "text/plain", "ok\n", 3);
    if (!authorized(a, conn))
        return reply(conn, MHD_HTTP_UNAUTHORIZED, "text/plain", "401 Unauthorized\n", 17);
    if (strcmp(url, "/metrics") == 0 && (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0))
        return metrics(a, conn);
    return reply(conn, 404, "text/plain", "404 Not Found\n", 14);
}

struct cdn_admin *
cdn_admin_start(const struct cdn_config *cfg, struct cdn_front *fe, struct cdn_upstream *up)
{
    char host[256];
    unsigned port;
    if (cdn_parse_hostport(cfg->admin_listen, host, sizeof(host), &port) != 0) {
        cdn_error("cannot use admin address '%s'", cfg->admin_listen);
        return NULL;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
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
    a->d = MHD_start_daemon(flags, 0, NULL, NULL, on_admin, a, MHD_OPTION_SOCK_ADDR, &ss,
                            MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384,
                            MHD_OPTION_END);
    if (a->d == NULL) {
        cdn_error("cannot listen on admin address %s: %s", cfg->admin_listen, strerror(errno));
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
    MHD_stop_daemon(a->d);
    a->magic = 0;
    free(a);
}

/*
 * front.c: the client-facing listeners (see front.h).
 *
 * A request is a `struct req`, created by the URI-log callback (so the raw request-target is
 * kept: MHD hands the access handler an unescaped path without the query) and freed when both
 * MHD's completion notice and the response's free callback have released it (two references).
 *
 * Access-handler calls for one request:
 *   1st: collect fields, validate (a refusal is queued now, so MHD closes the connection), check
 *        for loops, build the upstream request and submit the fetch at once.
 *   body calls: feed the upload pipe; when it is full the connection is parked until drained.
 *   last call (no upload data): wait for the response head (parked until the fetch wakes us),
 *        then queue the response; its body is pulled from the fetch by body_reader(), which parks
 *        the connection whenever the fetch has nothing new.
 * Parking is MHD_suspend_connection, waking is MHD_resume_connection, both under the fetch mutex
 * (fetch.h), so a wake-up cannot slip between "nothing to read" and "suspended".
 */
#include "cdnode/front.h"
#include "cdnode/arena.h"
#include "cdnode/common.h"
#include "cdnode/config.h"
#include "cdnode/fetch.h"
#include "cdnode/headers.h"
#include "cdnode/hop.h"
#include "cdnode/log.h"
#include "cdnode/request.h"
#include "cdnode/upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>

#define FRONT_MAGIC 0xf407e4d1u
#define REQ_MAGIC 0x4e9c0a7bu
/* Body bytes read and dropped after a 413 decision before closing instead of answering. */
#define DRAIN_LIMIT (1024 * 1024)

struct cdn_front {
    uint32_t magic;
    const struct cdn_config *cfg;
    struct cdn_upstream *up;
    struct MHD_Daemon *plain;
    struct MHD_Daemon *tls;
    struct cdn_hop_opts hop;
    char *tls_cert_pem;
    char *tls_key_pem;
    struct listener {
        struct cdn_front *fe;
        bool tls;
    } l_plain, l_tls;
    _Atomic uint64_t n_requests, n_rejected, n_loops, n_active, n_bytes_out;
};

enum phase { P_NEW = 0, P_FORWARD, P_ERROR, P_DONE };

struct req {
    uint32_t magic;
    _Atomic int refs;
    struct cdn_front *fe;
    struct MHD_Connection *conn;
    struct cdn_arena *arena;
    const char *raw_uri;
    bool tls;
    enum phase phase;
    int err_status;
    const char *err_reason;
    struct cdn_hdrs hdrs;
    struct cdn_request_info info;
    struct cdn_fetch *fetch;
    struct cdn_waiter w;
    bool upload_done;
    uint64_t body_seen;
};

static void
req_unref(struct req *r)
{
    CDN_CHECK_MAGIC(r, REQ_MAGIC);
    if (atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    if (r->fetch) {
        cdn_fetch_detach(r->fetch, &r->w);
        cdn_fetch_unref(r->fetch);
    }
    cdn_arena_free(r->arena);
    r->magic = 0;
    free(r);
}

static void
park_conn(struct cdn_waiter *w)
{
    struct req *r = w->owner;
    MHD_suspend_connection(r->conn);
}

static void
wake_conn(struct cdn_waiter *w)
{
    struct req *r = w->owner;
    MHD_resume_connection(r->conn);
}

static void *
on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct listener *l = cls;
    struct req *r = cdn_calloc(1, sizeof(*r));
    r->magic = REQ_MAGIC;
    atomic_init(&r->refs, 1);
    r->fe = l->fe;
    r->tls = l->tls;
    r->conn = conn;
    r->arena = cdn_arena_new(4096);
    r->raw_uri = cdn_arena_strdup(r->arena, uri);
    r->w.magic = CDN_WAITER_MAGIC;
    r->w.park = park_conn;
    r->w.wake = wake_conn;
    r->w.owner = r;
    cdn_hdrs_init(&r->hdrs, r->arena);
    atomic_fetch_add(&l->fe->n_requests, 1);
    atomic_fetch_add(&l->fe->n_active, 1);
    return r;
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    struct req *r = *con_cls;
    if (r == NULL)
        return;
    *con_cls = NULL;
    atomic_fetch_sub(&r->fe->n_active, 1);
    r->phase = P_DONE;
    req_unref(r);
}

static enum MHD_Result
collect_field(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
              const char *value, size_t value_size)
{
    struct req *r = cls;
    cdn_hdrs_add(&r->hdrs, key, key_size, value ? value : "", value ? value_size : 0);
    return MHD_YES;
}

static void
add_via(struct cdn_front *fe, struct MHD_Response *resp)
{
    char via[96];
    snprintf(via, sizeof(via), "1.1 %s", fe->cfg->cdn_id);
    MHD_add_response_header(resp, "Via", via);
}

/* A short text response; `close` asks MHD to close the connection after it. */
static enum MHD_Result
queue_text(struct req *r, int status, const char *reason, bool close)
{
    char body[600];
    int n = snprintf(body, sizeof(body), "%d %s: %s\n", status,
                     MHD_get_reason_phrase_for((unsigned)status), reason);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(body))
        n = (int)sizeof(body) - 1;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer((size_t)n, body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(resp, "Content-Type", "text/plain; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    add_via(r->fe, resp);
    if (close)
        MHD_add_response_header(resp, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static const char *
peer_address(struct req *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char buf[INET6_ADDRSTRLEN] = "0.0.0.0";
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, sizeof(buf));
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, sizeof(buf));
    }
    return cdn_arena_strdup(r->arena, buf);
}

/* Builds the upstream request and submits it. */
static void
start_forward(struct req *r, const char *method)
{
    struct cdn_front *fe = r->fe;
    const struct cdn_config *cfg = fe->cfg;
    struct cdn_hdrs out;
    cdn_hdrs_init(&out, r->arena);
    cdn_hop_request_headers(&r->hdrs, &out, &fe->hop, peer_address(r), r->info.host,
                            r->info.scheme, r->info.http10);
    /* "Name: value" lines for libcurl; empty "Name:" lines stop libcurl adding its own. */
    const char **lines = cdn_arena_alloc(r->arena, (out.n + 4) * sizeof(char *));
    size_t k = 0;
    /* An HTTP/1.0 request may come without Host: then the origin's own authority is sent. */
    if (r->info.host[0] != '\0')
        lines[k++] = cdn_arena_printf(r->arena, "Host: %s", r->info.host);
    for (size_t i = 0; i < out.n; i++) {
        if (out.v[i].vlen == 0)
            lines[k++] = cdn_arena_printf(r->arena, "%.*s;", (int)out.v[i].nlen, out.v[i].name);
        else
            lines[k++] = cdn_arena_printf(r->arena, "%.*s: %.*s", (int)out.v[i].nlen,
                                          out.v[i].name, (int)out.v[i].vlen, out.v[i].value);
    }
    if (!cdn_hdrs_get(&r->hdrs, "Accept"))
        lines[k++] = "Accept:";
    lines[k++] = "Expect:";
    lines[k] = NULL;
    struct cdn_fetch_req fr = {
        .method = method,
        .url = cdn_arena_printf(r->arena, "%s%s", cfg->origins[0],
                                strcmp(r->info.target, "*") == 0 ? "" : r->info.target),
        .headers = lines,
        .body_len = r->info.content_length,
        .has_body = r->info.has_body,
        .window = 1024 * 1024,
    };
    r->fetch = cdn_fetch_new(&fr);
    cdn_fetch_attach(r->fetch, &r->w);
    cdn_upstream_submit(fe->up, r->fetch);
}

static ssize_t
body_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct req *r = cls;
    size_t n = 0;
    switch (cdn_fetch_read(r->fetch, &r->w, buf, max, &n)) {
    case CDN_READ_DATA:
        atomic_fetch_add_explicit(&r->fe->n_bytes_out, n, memory_order_relaxed);
        return (ssize_t)n;
    case CDN_READ_PARKED:
        return 0;
    case CDN_READ_END:
        return MHD_CONTENT_READER_END_OF_STREAM;
    case CDN_READ_ERROR:
    default:
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static void
body_reader_free(void *cls)
{
    req_unref(cls);
}

static bool
status_has_body(int status)
{
    return status >= 200 && status != 204 && status != 304;
}

static enum MHD_Result
queue_forwarded(struct req *r, const char *method)
{
    struct cdn_fetch *f = r->fetch;
    int status = cdn_fetch_status(f);
    int64_t cl = cdn_fetch_content_length(f);
    bool head = strcmp(method, "HEAD") == 0;
    struct MHD_Response *resp;
    if (head || !status_has_body(status)) {
        /* No body goes out; for HEAD (and 304) MHD writes Content-Length from the size. */
        uint64_t size = (cl >= 0 && status != 204) ? (uint64_t)cl : 0;
        resp = MHD_create_response_from_callback(size, 4096, body_reader, r, body_reader_free);
    } else {
        resp = MHD_create_response_from_callback(cl >= 0 ? (uint64_t)cl : MHD_SIZE_UNKNOWN,
                                                 32 * 1024, body_reader, r, body_reader_free);
    }
    if (resp == NULL)
        return queue_text(r, 500, "cannot create response", true);
    atomic_fetch_add(&r->refs, 1); /* released by body_reader_free */
    struct cdn_hdrs out;
    cdn_hdrs_init(&out, r->arena);
    cdn_hop_response_headers(cdn_fetch_resp_headers(f), &out, &r->fe->hop);
    for (size_t i = 0; i < out.n; i++) {
        const char *name = cdn_arena_strndup(r->arena, out.v[i].name, out.v[i].nlen);
        const char *value = cdn_arena_strndup(r->arena, out.v[i].value, out.v[i].vlen);
        if (MHD_add_response_header(resp, name, value) != MHD_YES)
            cdn_debug("response field %s not accepted by the front end", name);
    }
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_data_size,
           void **con_cls)
{
    struct req *r = *con_cls;
    struct cdn_front *fe = ((struct listener *)cls)->fe;
    if (r == NULL)
        return MHD_NO;
    CDN_CHECK_MAGIC(r, REQ_MAGIC);

    if (r->phase == P_NEW) {
        MHD_get_connection_values_n(conn, MHD_HEADER_KIND, collect_field, r);
        struct cdn_request_limits lim = {
            .max_body = fe->cfg->max_request_body,
            .max_target = 8192,
        };
        const char *reason = NULL;
        int st = cdn_request_validate(method, version, r->raw_uri, &r->hdrs, r->tls, &lim,
                                      r->arena, &r->info, &reason);
        if (st != 0) {
            atomic_fetch_add(&fe->n_rejected, 1);
            r->phase = P_DONE;
            cdn_info("refused %s request: %d %s", method, st, reason);
            return queue_text(r, st, reason, true);
        }
        unsigned seen = cdn_hop_loop_count(&r->hdrs, fe->cfg->cdn_id);
        if (seen > fe->cfg->loop_allowance) {
            atomic_fetch_add(&fe->n_loops, 1);
            r->phase = P_ERROR;
            r->err_status = 508;
            r->err_reason = cdn_arena_printf(r->arena, "request already passed through %s",
                                             fe->cfg->cdn_id);
            return MHD_YES;
        }
        r->phase = P_FORWARD;
        start_forward(r, method);
        return MHD_YES;
    }

    if (*upload_data_size > 0) {
        if (r->phase != P_FORWARD) {
            /* Discard: the answer does not depend on it. Past the drain bound, just close. */
            r->body_seen += *upload_data_size;
            *upload_data_size = 0;
            if (r->body_seen > fe->cfg->max_request_body + DRAIN_LIMIT)
                return MHD_NO;
            return MHD_YES;
        }
        size_t n = *upload_data_size;
        if (r->body_seen + n > fe->cfg->max_request_body) {
            /* libmicrohttpd cannot queue a response while a body is arriving: stop the
             * upstream, drain a bounded amount and answer 413 at the end, or close. */
            atomic_fetch_add(&fe->n_rejected, 1);
            cdn_fetch_fail(r->fetch, 413, "request body too large");
            r->phase = P_ERROR;
            r->err_status = 413;
            r->err_reason = "request body exceeds max_request_body";
            r->body_seen += n;
            *upload_data_size = 0;
            return MHD_YES;
        }
        ssize_t took = cdn_fetch_upload_push(r->fetch, &r->w, upload_data, n);
        if (took < 0) {
            *upload_data_size = 0; /* the fetch failed: drop the rest, answer below */
            return MHD_YES;
        }
        r->body_seen += (uint64_t)took;
        *upload_data_size = n - (size_t)took;
        return MHD_YES;
    }

    switch (r->phase) {
    case P_ERROR:
        r->phase = P_DONE;
        return queue_text(r, r->err_status, r->err_reason, r->err_status == 413);
    case P_FORWARD:
        break;
    default:
        return MHD_YES;
    }
    if (!r->upload_done && r->info.has_body) {
        r->upload_done = true;
        cdn_fetch_upload_end(r->fetch);
    }
    enum cdn_fetch_state s = cdn_fetch_wait_headers(r->fetch, &r->w);
    if (s == CDN_FETCH_PENDING)
        return MHD_YES; /* parked: called again when the head arrives */
    r->phase = P_DONE;
    if (s == CDN_FETCH_FAILED && cdn_fetch_status(r->fetch) == 0) {
        const char *why;
        int st = cdn_fetch_error(r->fetch, &why);
        return queue_text(r, st, why, false);
    }
    if (s == CDN_FETCH_FAILED)
        return queue_text(r, 502, "origin response failed before it could be relayed", true);
    return queue_forwarded(r, method);
}

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    cdn_debug("http: %s", buf);
}

static char *
read_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return NULL;
    size_t cap = 8192, len = 0;
    char *buf = cdn_malloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, fp)) > 0) {
        len += n;
        if (cap - len - 1 == 0) {
            cap *= 2;
            buf = cdn_realloc(buf, cap);
        }
    }
    fclose(fp);
    buf[len] = '\0';
    return buf;
}

static int
make_addr(const char *hostport, struct sockaddr_storage *ss, bool *v6)
{
    char host[256];
    unsigned port;
    if (cdn_parse_hostport(hostport, host, sizeof(host), &port) != 0)
        return CDN_EINVAL;
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    *v6 = false;
    if (host[0] == '\0' || strcmp(host, "*") == 0) {
        in4->sin_family = AF_INET;
        in4->sin_addr.s_addr = htonl(INADDR_ANY);
        in4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *v6 = true;
    } else if (strcmp(host, "localhost") == 0) {
        in4->sin_family = AF_INET;
        in4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        in4->sin_port = htons((uint16_t)port);
    } else {
        return CDN_EINVAL;
    }
    return 0;
}

static struct MHD_Daemon *
start_daemon(struct cdn_front *fe, const char *hostport, struct listener *l)
{
    const struct cdn_config *cfg = fe->cfg;
    struct sockaddr_storage ss;
    bool v6;
    if (make_addr(hostport, &ss, &v6) != 0) {
        cdn_error("cannot use listen address '%s'", hostport);
        return NULL;
    }
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (v6)
        flags |= MHD_USE_IPv6;
    if (l->tls)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem ops[16];
    size_t k = 0;
#define OPT(o, v, p) (ops[k++] = (struct MHD_OptionItem){(o), (intptr_t)(v), (p)})
    OPT(MHD_OPTION_SOCK_ADDR, 0, &ss);
    OPT(MHD_OPTION_CONNECTION_LIMIT, cfg->connection_limit, NULL);
    OPT(MHD_OPTION_CONNECTION_TIMEOUT, cfg->connection_timeout_s, NULL);
    OPT(MHD_OPTION_CONNECTION_MEMORY_LIMIT, cfg->connection_memory, NULL);
    OPT(MHD_OPTION_LISTEN_BACKLOG_SIZE, cfg->listen_backlog, NULL);
    /* 0: libmicrohttpd 0.9.75's own missing-Host answer is malformed (its header block is
     * sent twice); cdn_request_validate() makes that check and the stricter ones. */
    OPT(MHD_OPTION_STRICT_FOR_CLIENT, 0, NULL);
    if (cfg->workers > 1)
        OPT(MHD_OPTION_THREAD_POOL_SIZE, cfg->workers, NULL);
    if (l->tls) {
        OPT(MHD_OPTION_HTTPS_MEM_CERT, 0, fe->tls_cert_pem);
        OPT(MHD_OPTION_HTTPS_MEM_KEY, 0, fe->tls_key_pem);
    }
    OPT(MHD_OPTION_END, 0, NULL);
#undef OPT
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, l, MHD_OPTION_URI_LOG_CALLBACK, on_uri, l,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, l, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
    if (d == NULL)
        cdn_error("cannot listen on %s%s: %s", hostport, l->tls ? " (TLS)" : "",
                  strerror(errno));
    return d;
}

struct cdn_front *
cdn_front_start(const struct cdn_config *cfg, struct cdn_upstream *up)
{
    struct cdn_front *fe = cdn_calloc(1, sizeof(*fe));
    fe->magic = FRONT_MAGIC;
    fe->cfg = cfg;
    fe->up = up;
    fe->hop = (struct cdn_hop_opts){
        .cdn_id = cfg->cdn_id,
        .x_forwarded_for = cfg->x_forwarded_for,
        .forwarded = cfg->forwarded,
        .trusted_hops = cfg->trusted_hops,
    };
    fe->l_plain = (struct listener){fe, false};
    fe->l_tls = (struct listener){fe, true};
    fe->plain = start_daemon(fe, cfg->listen, &fe->l_plain);
    if (fe->plain == NULL)
        goto fail;
    if (cfg->listen_tls) {
        fe->tls_cert_pem = read_file(cfg->tls_cert);
        fe->tls_key_pem = read_file(cfg->tls_key);
        if (fe->tls_cert_pem == NULL || fe->tls_key_pem == NULL) {
            cdn_error("cannot read tls_cert/tls_key: %s", strerror(errno));
            goto fail;
        }
        fe->tls = start_daemon(fe, cfg->listen_tls, &fe->l_tls);
        if (fe->tls == NULL)
            goto fail;
    }
    return fe;
fail:
    cdn_front_stop(fe);
    return NULL;
}

void
cdn_front_quiesce(struct cdn_front *fe)
{
    if (fe->plain)
        MHD_quiesce_daemon(fe->plain);
    if (fe->tls)
        MHD_quiesce_daemon(fe->tls);
}

uint64_t
cdn_front_active(struct cdn_front *fe)
{
    return atomic_load(&fe->n_active);
}

void
cdn_front_stop(struct cdn_front *fe)
{
    if (fe == NULL)
        return;
    if (fe->plain)
        MHD_stop_daemon(fe->plain);
    if (fe->tls)
        MHD_stop_daemon(fe->tls);
    free(fe->tls_cert_pem);
    free(fe->tls_key_pem);
    fe->magic = 0;
    free(fe);
}

void
cdn_front_stats(struct cdn_front *fe, struct cdn_front_stats *out)
{
    out->requests = atomic_load(&fe->n_requests);
    out->rejected = atomic_load(&fe->n_rejected);
    out->loops = atomic_load(&fe->n_loops);
    out->active = atomic_load(&fe->n_active);
    out->bytes_out = atomic_load(&fe->n_bytes_out);
}

unsigned
cdn_front_port(struct cdn_front *fe)
{
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(fe->plain, MHD_DAEMON_INFO_BIND_PORT);
    return di ? di->port : 0;
}

/*
 * front.c: the client-facing listeners (see front.h).
 *
 * A request is a `struct req`, created by the URI-log callback (so the raw request-target is
 * kept: MHD hands the access handler an unescaped path without the query) and freed when both
 * MHD's completion notice and the response's free callback have released it (two references).
 * A HIT's response body points into the store's lease, which the request holds until then.
 *
 * Access-handler calls for one request:
 *   1st: collect fields, validate (a refusal is queued now, so MHD closes the connection), check
 *        for loops; GET and HEAD look the cache up and decide (policy.h cdn_decide); anything
 *        that needs the origin submits its fetch at once, with a store sink for GET.
 *   body calls: feed the upload pipe; when it is full the connection is parked until drained.
 *   last call (no upload data): a HIT is queued from the lease; otherwise wait for the response
 *        head (parked until the fetch wakes us) and queue either the freshened stored response
 *        (304 to our revalidation), the stale one (origin error where allowed), or the origin's
 *        response, whose body is pulled from the fetch by body_reader(), parking whenever the
 *        fetch has nothing new.
 * Parking is MHD_suspend_connection, waking is MHD_resume_connection, both under the fetch mutex
 * (fetch.h), so a wake-up cannot slip between "nothing to read" and "suspended".
 *
 * Connections (both listeners together) are tracked from MHD's STARTED notice to its CLOSED notice
 * by a `struct conn_slot`, the connection's socket context, linked in fe->slots under conn_mu.
 *   - connection_limit: MHD's own limit is set higher (MHD at its limit stops accepting and new
 *     connections wait in the listen queue); a connection that finds connection_limit others open
 *     gets a 503 written straight to its socket (TLS: nothing) and is shut down, so MHD sees the
 *     end of input and closes it at once. Its socket context is `refused_conn`; the access handler
 *     drops any request that still arrives on it.
 *   - request_head_timeout: a slot carries a deadline from its start, cleared by the first
 *     access-handler call of a request (the head is complete) and set again when MHD reports the
 *     request done. The reaper thread shuts down the socket of any slot past its deadline; MHD
 *     then reads the end of input and closes the connection itself.
 * libmicrohttpd 0.9.75 sends both notices from the worker thread that owns the connection and
 * closes the descriptor only after CLOSED, which takes conn_mu: the reaper, holding conn_mu, never
 * shuts down a descriptor that was closed and reused.
 */
#include "cdnode/front.h"
#include "cdnode/accesslog.h"
#include "cdnode/arena.h"
#include "cdnode/cache.h"
#include "cdnode/cachectl.h"
#include "cdnode/collapse.h"
#include "cdnode/common.h"
#include "cdnode/config.h"
#include "cdnode/encoding.h"
#include "cdnode/fetch.h"
#include "cdnode/headers.h"
#include "cdnode/hop.h"
#include "cdnode/log.h"
#include "cdnode/request.h"
#include "cdnode/store.h"
#include "cdnode/tcache.h"
#include "cdnode/upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define FRONT_MAGIC 0xf407e4d1u
#define REQ_MAGIC 0x4e9c0a7bu
#define SLOT_MAGIC 0x5107c0e2u
/* How often the reaper looks for connections past their request-head deadline. */
#define REAP_INTERVAL_MS 250
/* Body bytes read and dropped after a 413 decision before closing instead of answering. */
#define DRAIN_LIMIT (1024 * 1024)
/* A forwarded body up to this size that is complete when its response is made goes out from
 * one buffer instead of through the streaming reader. */
#define WHOLE_BODY_MAX (64 * 1024)

struct cdn_front {
    uint32_t magic;
    const struct cdn_config *cfg;
    struct cdn_upstream *up;
    struct cdn_cache *cache;
    struct cdn_collapse *collapse;
    struct cdn_accesslog *alog;
    struct MHD_Daemon *plain;
    struct MHD_Daemon *tls;
    struct cdn_hop_opts hop;
    /* Fields every HIT sends, made once (cdn_id needs a restart to change). */
    char via[128];        /* "1.1 <cdn_id>" */
    char cs_hit[128];     /* Cache-Status of a HIT before "; ttl=" */
    char cs_hit_swr[128]; /* the same, served stale while revalidating */
    const char *loopback_cc; /* loopback_congestion_control, NULL: off or refused by the kernel */
    char *tls_cert_pem;
    char *tls_key_pem;
    struct listener {
        struct cdn_front *fe;
        bool tls;
    } l_plain, l_tls;
    _Atomic uint64_t n_requests, n_rejected, n_loops, n_active, n_bytes_out;
    _Atomic uint64_t n_hits, n_stale, n_revalidated, n_misses, n_stored, n_unshared;
    _Atomic uint64_t latency[CDN_LATENCY_BUCKETS + 1], latency_sum_us;
    /* connections: the slot list, its count and the reaper (see the top of this file) */
    pthread_mutex_t conn_mu;
    pthread_cond_t reaper_cv;     /* signalled to stop the reaper */
    pthread_t reaper;
    bool reaper_running;
    bool stopping;                /* under conn_mu */
    struct conn_slot *slots;      /* under conn_mu */
    _Atomic uint64_t n_conns;     /* slots linked now; changed under conn_mu */
    _Atomic uint64_t n_conn_refused, n_head_timeouts;
};

struct conn_slot {
    uint32_t magic;
    struct conn_slot *prev, *next; /* under conn_mu */
    int fd;                        /* valid until the CLOSED notice unlinks the slot */
    _Atomic int64_t head_deadline_us; /* monotonic; 0 while a request is being served */
    _Atomic bool expired;          /* shut down by the reaper */
    size_t sndbuf;                 /* SO_SNDBUF we set, 0: none (the connection's worker only) */
    bool cc_switched;              /* TCP_CONGESTION is fe->loopback_cc (worker only) */
    bool cc_refused;               /* the kernel refused a switch: left as it is from then on */
    char cc_kernel[17];            /* the one the kernel gave the connection, "" until read */
};

/* Whether a client address is on this host: 127.0.0.0/8, ::1, or ::ffff:127.0.0.0/104. */
static bool
is_loopback(const struct sockaddr *sa)
{
    if (sa == NULL)
        return false;
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family != AF_INET6)
        return false;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

/* send_buffer / loopback_send_buffer (conf/cdnode.conf explains the choice): 0 leaves the
 * kernel's autotuning alone. Applied from a connection's first response body above this, so a
 * connection that only carries small objects costs no setsockopt(). Not higher: with 256 KiB
 * bodies on autotuning, full benchmark runs were bimodal (10k or 20k req/s, the node at full
 * CPU in both) where the 64 KiB buffer held 15k to 20k. */
#define SEND_BUFFER_FROM (64 * 1024)
/* A body up to this size gets a buffer that takes it whole when the configured one is smaller
 * (the kernel doubles the value set, which leaves room for the head; it also caps the value at
 * net.core.wmem_max, 208 KiB by default, which still takes 256 KiB whole): one sendmsg() per
 * response instead of three, and no wait for the client to make room. Measured with 256 KiB
 * HITs, 64 loopback clients: 4.3 -> 2 system calls per response, +5 to +10 % req/s and a lower
 * p99 over interleaved runs. Larger bodies keep the configured size: with 4 MiB bodies a 256 KiB
 * buffer made runs bimodal (about 1,400 or 950 req/s) where 64 KiB held 1,300 to 1,600. */
#define SEND_WHOLE_MAX (512 * 1024)

/*
 * loopback_congestion_control (conf/cdnode.conf): a loopback connection whose response goes out
 * whole, in one send, uses `name`; otherwise (NULL) the congestion control the kernel gave it.
 * The kernel's default here is BBR, which paces: it releases a 256 KiB response in bursts timed
 * by a per-socket timer, and on a virtual machine each timer costs the sending CPU. Loss-based
 * reno sends it at once. Paired runs (bench/ab.sh, 64 loopback clients): 256 KiB HITs +59 %
 * with this switch (better in 14 of 16 pairs); 4 MiB HITs, whose 64 KiB buffer refills as the
 * client reads, were 11 % slower with reno (0 of 12), so those keep the kernel's. It happens only
 * where a fixed send buffer is set: under autotuning (a send buffer of 0) no size goes out whole.
 */
static void
set_congestion(struct conn_slot *s, const char *name)
{
    if ((name != NULL) == s->cc_switched || s->cc_refused)
        return;
    if (s->cc_kernel[0] == '\0') {
        socklen_t len = sizeof(s->cc_kernel) - 1;
        if (getsockopt(s->fd, IPPROTO_TCP, TCP_CONGESTION, s->cc_kernel, &len) != 0 || len == 0) {
            s->cc_refused = true; /* without the kernel's name there is no way back */
            return;
        }
        s->cc_kernel[len] = '\0';
    }
    const char *to = name != NULL ? name : s->cc_kernel;
    if (setsockopt(s->fd, IPPROTO_TCP, TCP_CONGESTION, to, (socklen_t)strlen(to)) != 0) {
        cdn_debug("TCP_CONGESTION %s: %s", to, strerror(errno));
        s->cc_refused = true; /* one system call per connection, not one per response */
        return;
    }
    s->cc_switched = name != NULL;
}

/* Sets the send buffer the configuration asks for when a body of `size` bytes goes out. */
static void
set_send_buffer(const struct cdn_front *fe, struct MHD_Connection *conn, struct conn_slot *s,
                uint64_t size)
{
    const union MHD_ConnectionInfo *ai =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    bool loopback = ai != NULL && is_loopback(ai->client_addr);
    size_t want = loopback ? fe->cfg->loopback_send_buffer : fe->cfg->send_buffer;
    if (want == 0)
        return; /* autotuning */
    if (size != MHD_SIZE_UNKNOWN && size <= SEND_WHOLE_MAX && size > want)
        want = (size_t)size;
    if (loopback && fe->loopback_cc != NULL)
        set_congestion(s, size != MHD_SIZE_UNKNOWN && size <= want ? fe->loopback_cc : NULL);
    if (want == s->sndbuf)
        return;
    int v = (int)want;
    if (setsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)) != 0)
        cdn_debug("SO_SNDBUF %d: %s", v, strerror(errno));
    s->sndbuf = want;
}

/* Socket context of a connection refused at connection_limit (it has no slot). */
static char refused_conn;

enum phase { P_NEW = 0, P_FORWARD, P_HIT, P_INVALIDATE, P_ERROR, P_DONE };

struct req {
    uint32_t magic;
    _Atomic int refs;
    struct cdn_front *fe;
    struct MHD_Connection *conn;
    struct cdn_arena *arena;
    const char *raw_uri;
    const char *peer; /* the client's address, formatted once (peer_address) */
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
    /* cache */
    const char *key;
    size_t klen;
    uint8_t key_hash[CDN_STORE_KEY_HASH_LEN]; /* cdn_store_key_hash(key), set with key */
    struct cdn_hit hit;          /* lease held until the request is freed */
    struct cdn_decide_out dec;
    const char *fwd;             /* Cache-Status fwd value when forwarded */
    _Atomic int inval_pending;   /* invalidations not yet acknowledged by the store */
    bool follower;               /* reading a fetch another request leads */
    bool retried;                /* already re-joined once after a leader's failure */
    /* for the access log */
    int64_t start_us;            /* monotonic, first byte of the request seen */
    int64_t start_wall_ms;
    int64_t origin_start_us;     /* monotonic, when the current fetch was started */
    int64_t origin_start_wall;   /* the same as wall seconds: a revalidation's request_time */
    double origin_ms;            /* until the origin's head arrived; < 0: not asked */
    const char *version;
    const char *method;
    int status_sent;
    uint64_t bytes_sent;
    const char *outcome;
    struct cdn_gunzip *gunzip;   /* inflating a stored gzip body for a client without gzip */
};

const uint64_t cdn_latency_bounds_us[CDN_LATENCY_BUCKETS] = {
    250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
    10000000};

static void
req_destroy(void *p)
{
    struct req *r = p;
    cdn_arena_free(r->arena);
    free(r);
}

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
    cdn_gunzip_free(r->gunzip);
    cdn_cache_hit_release(&r->hit);
    cdn_arena_reset(r->arena);
    r->magic = 0;
    cdn_tcache_put(CDN_TC_REQ, r, req_destroy);
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

#define BUSY_BODY "503 Service Unavailable: too many connections (connection_limit); retry\n"
#define BUSY_HEAD                                                                                  \
    "HTTP/1.1 503 Service Unavailable\r\n"                                                         \
    "Content-Type: text/plain; charset=utf-8\r\n"                                                  \
    "Cache-Control: no-store\r\n"                                                                  \
    "Retry-After: 1\r\n"                                                                           \
    "Connection: close\r\n"                                                                        \
    "Content-Length: "

/*
 * A connection beyond connection_limit, on the worker thread that accepted it: a plain one gets a
 * 503 if the socket takes it at once (it is new and empty, so it does); both are shut down, so
 * MHD's next read sees the end of input and closes them.
 */
static void
refuse_conn(int fd, bool tls)
{
    if (!tls) {
        char msg[256];
        int n = snprintf(msg, sizeof(msg), "%s%zu\r\n\r\n%s", BUSY_HEAD, sizeof(BUSY_BODY) - 1,
                         BUSY_BODY);
        CDN_ASSERT(n > 0 && (size_t)n < sizeof(msg));
        if (send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
            cdn_debug("refused connection: 503 not sent: %s", strerror(errno));
    }
    shutdown(fd, SHUT_RDWR);
}

static void
on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
              enum MHD_ConnectionNotificationCode toe)
{
    struct listener *l = cls;
    struct cdn_front *fe = l->fe;
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        struct conn_slot *s = *socket_context;
        *socket_context = NULL;
        if (s == NULL || s == (void *)&refused_conn)
            return;
        CDN_CHECK_MAGIC(s, SLOT_MAGIC);
        pthread_mutex_lock(&fe->conn_mu);
        if (s->prev)
            s->prev->next = s->next;
        else
            fe->slots = s->next;
        if (s->next)
            s->next->prev = s->prev;
        atomic_fetch_sub(&fe->n_conns, 1);
        pthread_mutex_unlock(&fe->conn_mu);
        s->magic = 0;
        free(s);
        return;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    CDN_ASSERT(ci != NULL);
    struct conn_slot *s = cdn_calloc(1, sizeof(*s));
    s->magic = SLOT_MAGIC;
    s->fd = ci->connect_fd;
    atomic_init(&s->head_deadline_us,
                cdn_now_us() + (int64_t)fe->cfg->request_head_timeout_s * 1000000);
    atomic_init(&s->expired, false);
    pthread_mutex_lock(&fe->conn_mu);
    bool full = atomic_load(&fe->n_conns) >= fe->cfg->connection_limit;
    if (!full) {
        s->next = fe->slots;
        if (fe->slots)
            fe->slots->prev = s;
        fe->slots = s;
        atomic_fetch_add(&fe->n_conns, 1);
    }
    pthread_mutex_unlock(&fe->conn_mu);
    if (!full) {
        *socket_context = s;
        return;
    }
    free(s);
    *socket_context = &refused_conn;
    atomic_fetch_add(&fe->n_conn_refused, 1);
    refuse_conn(ci->connect_fd, l->tls);
}

/* The slot of conn, or NULL when it was refused at connection_limit. */
static struct conn_slot *
slot_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct conn_slot *s = ci ? ci->socket_context : NULL;
    if (s == NULL || s == (void *)&refused_conn)
        return NULL;
    CDN_CHECK_MAGIC(s, SLOT_MAGIC);
    return s;
}

/* A response body of `size` bytes (MHD_SIZE_UNKNOWN: unknown) is about to go out on conn. */
static void
size_send_buffer(const struct cdn_front *fe, struct MHD_Connection *conn, uint64_t size)
{
    if (size <= SEND_BUFFER_FROM)
        return;
    struct conn_slot *s = slot_of(conn);
    if (s != NULL)
        set_send_buffer(fe, conn, s, size);
}

/* A request head is complete: its connection has no deadline while the request runs. Returns
 * false when the connection is being closed (refused, or past its deadline already). */
static bool
head_arrived(struct MHD_Connection *conn)
{
    struct conn_slot *s = slot_of(conn);
    if (s == NULL)
        return false;
    atomic_store(&s->head_deadline_us, 0);
    return !atomic_load(&s->expired);
}

/* The reaper: every REAP_INTERVAL_MS, shuts down the connections past their head deadline. */
static void *
reaper_main(void *arg)
{
    struct cdn_front *fe = arg;
    pthread_setname_np(pthread_self(), "cdn-reaper"); /* visible in top -H and perf */
    pthread_mutex_lock(&fe->conn_mu);
    while (!fe->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += REAP_INTERVAL_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&fe->reaper_cv, &fe->conn_mu, &ts);
        int64_t now = cdn_now_us();
        for (struct conn_slot *s = fe->slots; s; s = s->next) {
            int64_t d = atomic_load(&s->head_deadline_us);
            if (d == 0 || now < d || atomic_load(&s->expired))
                continue;
            atomic_store(&s->expired, true);
            shutdown(s->fd, SHUT_RDWR);
            atomic_fetch_add(&fe->n_head_timeouts, 1);
        }
    }
    pthread_mutex_unlock(&fe->conn_mu);
    return NULL;
}

static void *
on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct listener *l = cls;
    /* This thread's last finished request context, with its arena emptied, when there is one. */
    struct req *r = cdn_tcache_get(CDN_TC_REQ);
    struct cdn_arena *arena = r != NULL ? r->arena : cdn_arena_new(CDN_ARENA_POOLED);
    if (r == NULL)
        r = cdn_malloc(sizeof(*r));
    memset(r, 0, sizeof(*r));
    r->magic = REQ_MAGIC;
    atomic_init(&r->refs, 1);
    r->fe = l->fe;
    r->tls = l->tls;
    r->conn = conn;
    r->arena = arena;
    r->raw_uri = cdn_arena_strdup(r->arena, uri);
    r->w.magic = CDN_WAITER_MAGIC;
    r->w.park = park_conn;
    r->w.wake = wake_conn;
    r->w.owner = r;
    cdn_hdrs_init(&r->hdrs, r->arena);
    r->start_us = cdn_now_us();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    r->start_wall_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    r->origin_ms = -1;
    atomic_fetch_add(&l->fe->n_requests, 1);
    atomic_fetch_add(&l->fe->n_active, 1);
    return r;
}

static const char *peer_address(struct req *r);

/* One access-log line, when libmicrohttpd is done with the request. */
static void
log_request(struct req *r, enum MHD_RequestTerminationCode toe)
{
    const struct cdn_hdr *ref = cdn_hdrs_get(&r->hdrs, "Referer");
    const struct cdn_hdr *ua = cdn_hdrs_get(&r->hdrs, "User-Agent");
    const char *outcome = r->outcome ? r->outcome : "none";
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && r->status_sent != 0)
        outcome = cdn_arena_printf(r->arena, "%s,aborted", outcome);
    struct cdn_accesslog_entry e = {
        /* The client as trusted_hops says: the peer, or the X-Forwarded-For entry that many
         * hops from the right (never a forged leftmost one). */
        .client = cdn_hop_client_addr(&r->hdrs, peer_address(r), r->fe->cfg->trusted_hops,
                                      r->arena),
        .method = r->method,
        .target = r->raw_uri,
        .version = r->version ? r->version : "HTTP/1.1",
        .status = r->status_sent,
        .bytes = r->bytes_sent,
        .referer = ref ? ref->value : NULL,
        .user_agent = ua ? ua->value : NULL,
        .outcome = outcome,
        .origin_ms = r->origin_ms,
        .total_ms = (double)(cdn_now_us() - r->start_us) / 1000.0,
        .wall_s = r->start_wall_ms / 1000,
        .wall_ms = (unsigned)(r->start_wall_ms % 1000),
    };
    cdn_accesslog_write(r->fe->alog, &e);
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    struct cdn_front *fe = ((struct listener *)cls)->fe;
    /* The next request head on this connection must arrive in time (from now). */
    struct conn_slot *s = slot_of(conn);
    if (s)
        atomic_store(&s->head_deadline_us,
                     cdn_now_us() + (int64_t)fe->cfg->request_head_timeout_s * 1000000);
    struct req *r = *con_cls;
    if (r == NULL)
        return;
    *con_cls = NULL;
    uint64_t took = (uint64_t)(cdn_now_us() - r->start_us);
    size_t b = 0;
    while (b < CDN_LATENCY_BUCKETS && took > cdn_latency_bounds_us[b])
        b++;
    atomic_fetch_add_explicit(&r->fe->latency[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->fe->latency_sum_us, took, memory_order_relaxed);
    if (r->fe->alog && r->method && cdn_accesslog_on(r->fe->alog))
        log_request(r, toe);
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

/* Via and our Cache-Status member (RFC 9211), appended after any from upstream. */
static void
add_hop_fields(struct req *r, struct MHD_Response *resp, const char *cache_status)
{
    MHD_add_response_header(resp, "Via", r->fe->via);
    MHD_add_response_header(resp, "Cache-Status", cache_status);
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
    if (status == 503)
        MHD_add_response_header(resp, "Retry-After", "1");
    const char *cs = r->fwd ? cdn_arena_printf(r->arena, "%s; fwd=%s; detail=\"%d\"",
                                               r->fe->cfg->cdn_id, r->fwd, status)
                            : cdn_arena_printf(r->arena, "%s; detail=\"%d\"", r->fe->cfg->cdn_id,
                                               status);
    add_hop_fields(r, resp, cs);
    if (close)
        MHD_add_response_header(resp, "Connection", "close");
    r->status_sent = status;
    r->bytes_sent = (uint64_t)n;
    if (r->outcome == NULL)
        r->outcome = status == 508 ? "loop" : status < 500 ? "refused" : "error";
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Dotted quad into out (16 bytes): inet_ntop formats through printf, about 1,700 instructions
 * a call, and every forwarded request names its client in X-Forwarded-For. */
static void
fmt_ipv4(const struct in_addr *in, char *out)
{
    const uint8_t *a = (const uint8_t *)&in->s_addr; /* network order: first octet first */
    for (int i = 0; i < 4; i++) {
        if (i > 0)
            *out++ = '.';
        unsigned v = a[i];
        if (v >= 100)
            *out++ = (char)('0' + v / 100);
        if (v >= 10)
            *out++ = (char)('0' + v / 10 % 10);
        *out++ = (char)('0' + v % 10);
    }
    *out = '\0';
}

/* The peer's address as text: for X-Forwarded-For and the access log, both of which a forwarded
 * request writes. */
static const char *
peer_address(struct req *r)
{
    if (r->peer)
        return r->peer;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char buf[INET6_ADDRSTRLEN] = "0.0.0.0";
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            fmt_ipv4(&((const struct sockaddr_in *)sa)->sin_addr, buf);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, sizeof(buf));
    }
    r->peer = cdn_arena_strdup(r->arena, buf);
    return r->peer;
}

/* Client fields a cache does not forward when it fetches for itself: it evaluates them locally
 * against what it stores (RFC 9111 §4.3.2). */
static bool
is_client_conditional(const struct cdn_hdr *h)
{
    static const char *names[] = {"If-None-Match", "If-Modified-Since", "If-Match",
                                  "If-Unmodified-Since", "If-Range", "Range"};
    for (size_t i = 0; i < CDN_ARRAY_LEN(names); i++)
        if (cdn_name_eq(h->name, h->nlen, names[i]))
            return true;
    return false;
}

/* "Name: value" for libcurl, or "Name;" for an empty value (libcurl's way to send one). */
static const char *
field_line(struct cdn_arena *a, const char *name, size_t nlen, const char *value, size_t vlen)
{
    char *p = cdn_arena_alloc(a, nlen + vlen + 3);
    memcpy(p, name, nlen);
    if (vlen == 0) {
        memcpy(p + nlen, ";", 2);
        return p;
    }
    memcpy(p + nlen, ": ", 2);
    memcpy(p + nlen + 2, value, vlen);
    p[nlen + 2 + vlen] = '\0';
    return p;
}

/*
 * Builds the upstream request for r. `for_cache`: a GET the cache will store: the client's
 * conditionals and Range stay here, the stored validators (if any) go up instead, and a store
 * sink sees the response. Returns the fetch with one reference, not yet submitted.
 */
static struct cdn_fetch *
make_fetch(struct req *r, const char *method, bool for_cache)
{
    struct cdn_front *fe = r->fe;
    struct cdn_hdrs out;
    cdn_hdrs_init(&out, r->arena);
    cdn_hop_request_headers(&r->hdrs, &out, &fe->hop, peer_address(r), r->info.host,
                            r->info.scheme, r->info.http10);
    /* "Name: value" lines for libcurl; "Name;" sends an empty field, "Name:" stops libcurl from
     * adding its own. */
    const char **lines = cdn_arena_alloc(r->arena, (out.n + 6) * sizeof(char *));
    size_t k = 0;
    /* An HTTP/1.0 request may come without Host: then the origin's own authority is sent. */
    if (r->info.host[0] != '\0')
        lines[k++] = field_line(r->arena, "Host", 4, r->info.host, strlen(r->info.host));
    for (size_t i = 0; i < out.n; i++) {
        if (for_cache && is_client_conditional(&out.v[i]))
            continue;
        lines[k++] =
            field_line(r->arena, out.v[i].name, out.v[i].nlen, out.v[i].value, out.v[i].vlen);
    }
    if (for_cache && r->hit.lease) {
        struct cdn_validators v;
        cdn_revalidation_validators(&r->hit.hdrs, &v);
        if (v.etag)
            lines[k++] = field_line(r->arena, "If-None-Match", 13, v.etag, v.etag_len);
        if (v.last_modified)
            lines[k++] =
                field_line(r->arena, "If-Modified-Since", 17, v.last_modified, v.lm_len);
    }
    if (!cdn_hdrs_get(&r->hdrs, "Accept"))
        lines[k++] = "Accept:";
    lines[k++] = "Expect:";
    lines[k] = NULL;
    struct cdn_fetch_req fr = {
        .method = method,
        .target = r->info.target,
        .key = r->key,
        .headers = lines,
        .body_len = r->info.content_length,
        .has_body = r->info.has_body,
        .window = 1024 * 1024,
    };
    struct cdn_fetch *f = cdn_fetch_new(&fr);
    if (for_cache) {
        struct cdn_cache_sink_req sr = {
            .method = method,
            .key = r->key,
            .klen = r->klen,
            .req = &r->hdrs,
            .request_time = cdn_wall_s(),
            .reval = r->hit.lease ? &r->hit : NULL,
            .fetch = f,
            .key_hash = r->key ? r->key_hash : NULL,
        };
        struct cdn_fetch_sink sink;
        cdn_cache_sink(fe->cache, &sr, &sink);
        cdn_fetch_set_sink(f, &sink);
        cdn_fetch_keep_request(f, &r->hdrs);
    }
    return f;
}

/* The collapse key: the cache key, plus the stored variant when revalidating it (a 304 answers
 * the validators of that variant only). */
static const char *
collapse_key(struct req *r, size_t *len)
{
    if (r->hit.lease == NULL) {
        *len = r->klen;
        return r->key;
    }
    size_t vl = r->hit.meta->vary_len;
    char *k = cdn_arena_alloc(r->arena, r->klen + 1 + vl);
    memcpy(k, r->key, r->klen);
    k[r->klen] = '\x01';
    if (vl)
        memcpy(k + r->klen + 1, r->hit.meta->vary, vl);
    *len = r->klen + 1 + vl;
    return k;
}

/*
 * Sends r upstream. With `collapse`, a GET joins the fetch in flight for its key (or leads it);
 * otherwise, or when the key is marked hit-for-miss, it goes alone.
 */
static void
start_forward(struct req *r, const char *method, bool for_cache, bool collapse)
{
    struct cdn_front *fe = r->fe;
    struct cdn_fetch *f = make_fetch(r, method, for_cache);
    r->follower = false;
    r->w.follower = false;
    r->w.timed_out = false;
    r->origin_start_us = cdn_now_us();
    r->origin_start_wall = cdn_wall_s();
    if (collapse && for_cache && fe->collapse && strcmp(method, "GET") == 0) {
        size_t cklen;
        const char *ck = collapse_key(r, &cklen);
        struct cdn_fetch *got = NULL;
        switch (cdn_collapse_join(fe->collapse, ck, cklen, &r->w, f, &got)) {
        case CDN_JOIN_FOLLOW:
            cdn_fetch_unref(f); /* never submitted: its sink ends unused */
            r->fetch = got;
            r->follower = true;
            r->w.follower = true;
            return;
        case CDN_JOIN_LEAD:
            r->fetch = f;
            cdn_upstream_submit(fe->up, f);
            return;
        case CDN_JOIN_ALONE:
            break;
        }
    }
    r->fetch = f;
    cdn_fetch_attach(f, &r->w);
    cdn_upstream_submit(fe->up, f);
}

/* stale-while-revalidate: refresh the stored response in the background, once per key. */
static void
refresh_in_background(struct req *r)
{
    struct cdn_front *fe = r->fe;
    if (fe->collapse == NULL)
        return;
    struct cdn_fetch *f = make_fetch(r, "GET", true);
    size_t cklen;
    const char *ck = collapse_key(r, &cklen);
    if (cdn_collapse_lead_detached(fe->collapse, ck, cklen, f))
        cdn_upstream_submit(fe->up, f);
    cdn_fetch_unref(f);
}

static ssize_t
body_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct req *r = cls;
    size_t n = 0;
    switch (cdn_fetch_read(r->fetch, &r->w, buf, max, &n)) {
    case CDN_READ_DATA:
        atomic_fetch_add_explicit(&r->fe->n_bytes_out, n, memory_order_relaxed);
        r->bytes_sent += n;
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
release_req(void *cls)
{
    req_unref(cls);
}

static bool
status_has_body(int status)
{
    return status >= 200 && status != 204 && status != 304;
}

/* A field name add_fields() leaves out, with its length (from a literal: no strlen per field). */
struct skip_name {
    const char *s;
    size_t n;
};
#define SKIP(lit) ((struct skip_name){(lit), sizeof(lit) - 1})

/*
 * Adds every field of h to resp, except the ns named in skip. Every list served has
 * NUL-terminated names and values, which libmicrohttpd copies as they are: fields decoded from
 * the store (a block of "name\0value\0"), copied by the upstream client (cdn_hdrs_add_copy),
 * merges of those two, and our own strings.
 */
static void
add_fields(struct MHD_Response *resp, const struct cdn_hdrs *h, const struct skip_name *skip,
           size_t ns)
{
    for (size_t i = 0; i < h->n; i++) {
        const struct cdn_hdr *f = &h->v[i];
        bool skipped = false;
        for (size_t k = 0; k < ns && !skipped; k++)
            skipped = f->nlen == skip[k].n && cdn_case_eq(f->name, skip[k].s, f->nlen);
        if (skipped)
            continue;
        CDN_ASSERT(f->name[f->nlen] == '\0' && f->value[f->vlen] == '\0');
        if (MHD_add_response_header(resp, f->name, f->value) != MHD_YES)
            cdn_debug("response field %s not accepted by the front end", f->name);
    }
}

/*
 * Representation metadata a 304 does not repeat (RFC 9110 §15.4.5: a sender SHOULD NOT generate
 * it beyond the listed fields; Last-Modified stays, as a validator for caches without an ETag).
 * A cache updating from the 304 keeps its stored values of these. Accept-Ranges describes a body
 * the 304 has none of. Appends them to skip at *ns.
 */
#define NOT_IN_304 4
static void
skip_not_in_304(struct skip_name *skip, size_t *ns)
{
    skip[(*ns)++] = SKIP("Content-Type");
    skip[(*ns)++] = SKIP("Content-Encoding");
    skip[(*ns)++] = SKIP("Content-Language");
    skip[(*ns)++] = SKIP("Accept-Ranges");
}

static ssize_t
gunzip_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct req *r = cls;
    ssize_t n = cdn_gunzip_read(r->gunzip, buf, max);
    if (n > 0) {
        r->bytes_sent += (uint64_t)n;
        atomic_fetch_add_explicit(&r->fe->n_bytes_out, (uint64_t)n, memory_order_relaxed);
        return n;
    }
    if (n == 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    cdn_warn("stored gzip body does not inflate: %s", cdn_strerror((int)n));
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

/* The body of a response libmicrohttpd sends without one (304, HEAD): never read. */
static ssize_t
no_body_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)cls;
    (void)pos;
    (void)buf;
    (void)max;
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

/* A stored gzip body that this client cannot take and the response allows us to inflate. */
static bool
needs_gunzip(struct req *r, const struct cdn_hdrs *h)
{
    if (cdn_content_coding(h) != CDN_CODING_GZIP || cdn_accepts_gzip(&r->hdrs))
        return false;
    struct cdn_cc cc;
    cdn_cc_from_hdrs(h, "Cache-Control", &cc);
    return !cc.no_transform;
}

/* The identity length stored with a gzip body, or -1. */
static int64_t
identity_length(const struct cdn_hdrs *h)
{
    const struct cdn_hdr *f = cdn_hdrs_get(h, CDN_IDENTITY_LENGTH_FIELD);
    int64_t v;
    if (f == NULL || cdn_delta_seconds_parse(f->value, f->vlen, &v) != 0 || v >= CDN_DELTA_MAX)
        return -1; /* absent, or beyond any body we store */
    return v;
}

/*
 * Whether a response with fields h, and the node's own (CDN_RESPONSE_HEAD_RESERVE), fits the
 * connection's memory beside the request's head: libmicrohttpd closes the connection without an
 * answer when its header block does not. Validation refuses heads that would leave too little
 * room for any origin header block within max_origin_headers; a stored block can be larger (a
 * 304 merged into it, or stored under a larger max_origin_headers).
 */
static bool
head_fits(const struct req *r, const struct cdn_hdrs *h)
{
    size_t need = r->info.head_memory + CDN_RESPONSE_HEAD_RESERVE;
    for (size_t i = 0; i < h->n; i++)
        need += h->v[i].nlen + 2 + h->v[i].vlen + 2;
    return need <= r->fe->cfg->connection_memory;
}

/*
 * Serves the stored response of r->hit with fields `h` (the stored ones, or freshened by a 304):
 * client conditionals, then Range, then the body straight from the lease. `cs` is our
 * Cache-Status member without the ttl, which is added here.
 */
static enum MHD_Result
queue_hit(struct req *r, const char *method, const struct cdn_hdrs *h, const char *cs,
          int64_t request_time, int64_t response_time, const struct cdn_decide_out *known)
{
    struct cdn_front *fe = r->fe;
    struct cdn_hit *hit = &r->hit;
    if (!head_fits(r, h))
        return queue_text(r, 502, "stored response header block too large for this request", false);
    struct cdn_stored st = hit->st;
    st.hdrs = h;
    st.request_time = request_time;
    st.response_time = response_time;
    /* A plain HIT reuses what cdn_decide() computed for this request a moment ago, a 304 what
     * its merge parsed; a stale copy served after an upstream wait is aged now. */
    int64_t current_age, lifetime;
    if (known) {
        current_age = known->age;
        lifetime = known->lifetime;
    } else {
        struct cdn_age age;
        struct cdn_freshness fr;
        cdn_age_compute(h, st.request_time, st.response_time, cdn_wall_s(), &age);
        cdn_freshness_lifetime(st.status, h, st.response_time, cdn_cache_policy(fe->cache), &fr);
        current_age = age.current_age;
        lifetime = fr.lifetime;
    }
    uint64_t size = hit->meta->body_size;
    int status = st.status;
    uint64_t first = 0, last = size ? size - 1 : 0;
    enum cdn_range_result rr = CDN_RANGE_FULL;
    enum cdn_cond_result cr = cdn_eval_conditionals(method, &r->hdrs, &st);
    /* A client without gzip gets the stored gzip body inflated; ranges of that representation
     * are not answered (the whole body is: never wrong bytes). */
    bool gunzip = needs_gunzip(r, h);
    if (cr == CDN_COND_PROCEED && !gunzip)
        rr = cdn_range_eval(method, &r->hdrs, &st, size, &first, &last);
    /* A 304 or a HEAD carries no body: the stored one is not looked up (only its length, which
     * the metadata or, for an inflated one, the stored identity length has, frames the
     * response). */
    bool bodiless = cr == CDN_COND_304 || strcmp(method, "HEAD") == 0;
    const struct iovec *iov = NULL;
    unsigned niov = 0;
    if (!bodiless && cr != CDN_COND_412 && rr != CDN_RANGE_UNSATISFIABLE &&
        cdn_store_lease_body(hit->lease, hit->idx, &iov, &niov) != 0)
        return queue_text(r, 503, "stored object became unreadable; retry", false);
    struct MHD_Response *resp;
    if (cr == CDN_COND_412 || rr == CDN_RANGE_UNSATISFIABLE) {
        status = cr == CDN_COND_412 ? 412 : 416;
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else if (gunzip) {
        if (cr == CDN_COND_304)
            status = 304;
        int64_t ilen = identity_length(h);
        uint64_t bound = ilen >= 0 ? (uint64_t)ilen : (uint64_t)fe->cfg->max_object_size * 64;
        /* Unknown length would make libmicrohttpd frame a 304 as chunked: 0 then. */
        uint64_t total = ilen >= 0 ? (uint64_t)ilen : status == 304 ? 0 : MHD_SIZE_UNKNOWN;
        if (bodiless) {
            resp = MHD_create_response_from_callback(total, 64, no_body_reader, NULL, NULL);
        } else {
            r->gunzip = cdn_gunzip_new(iov, niov, bound);
            /* libmicrohttpd allocates (and zeroes) the block with every response: no bigger
             * than the body needs. */
            size_t block = total < 4096 ? 4096 : total < 32 * 1024 ? (size_t)total : 32 * 1024;
            resp = MHD_create_response_from_callback(total, block, gunzip_reader, r, release_req);
            if (resp != NULL)
                atomic_fetch_add(&r->refs, 1); /* released with the response: it reads the lease */
        }
        if (resp == NULL)
            return queue_text(r, 500, "cannot create response", true);
        if (!bodiless)
            size_send_buffer(fe, r->conn, total);
    } else {
        /* A 304 is built like the 200 it stands for: libmicrohttpd sends no body for 304 and
         * its Content-Length then equals the stored length (RFC 9110 §8.6). */
        if (cr == CDN_COND_304)
            status = 304;
        uint64_t from = first, to = last + 1;
        if (rr == CDN_RANGE_FULL) {
            from = 0;
            to = size;
        }
        if (bodiless) {
            /* libmicrohttpd frames it with this length and never reads it. */
            resp = MHD_create_response_from_callback(to - from, 64, no_body_reader, NULL, NULL);
        } else {
            /* Zero-copy: the segments point into the LMDB map (or the lease's copy). */
            struct MHD_IoVec *mv = cdn_arena_alloc(r->arena, (niov ? niov : 1) * sizeof(*mv));
            unsigned k = 0;
            uint64_t off = 0;
            for (unsigned i = 0; i < niov; i++) {
                uint64_t s0 = off, s1 = off + iov[i].iov_len;
                off = s1;
                if (s1 <= from || s0 >= to)
                    continue;
                uint64_t a = from > s0 ? from : s0, b = to < s1 ? to : s1;
                mv[k].iov_base = (const char *)iov[i].iov_base + (a - s0);
                mv[k].iov_len = (size_t)(b - a);
                k++;
            }
            resp = MHD_create_response_from_iovec(mv, k, release_req, r);
            if (resp != NULL)
                atomic_fetch_add(&r->refs, 1); /* released with the response: it reads the lease */
        }
        if (resp == NULL)
            return queue_text(r, 500, "cannot create response", true);
        if (rr == CDN_RANGE_PARTIAL)
            status = 206;
        if (!bodiless) {
            atomic_fetch_add_explicit(&fe->n_bytes_out, to - from, memory_order_relaxed);
            r->bytes_sent = to - from;
            size_send_buffer(fe, r->conn, to - from);
        }
    }
    /* The stored Age is an input to the age we send; a stored Content-Range is only replaced
     * when we answer a range ourselves; purge tags stay here unless configured otherwise; an
     * inflated body has no Content-Encoding and only a weak validator. */
    struct skip_name skip[7 + NOT_IN_304];
    size_t ns = 0;
    skip[ns++] = SKIP("Age");
    skip[ns++] = SKIP(CDN_IDENTITY_LENGTH_FIELD);
    if (rr != CDN_RANGE_FULL)
        skip[ns++] = SKIP("Content-Range");
    if (fe->cfg->strip_cache_tags) {
        skip[ns++] = SKIP("Surrogate-Key");
        skip[ns++] = SKIP("Cache-Tag");
    }
    if (gunzip) {
        skip[ns++] = SKIP("Content-Encoding");
        skip[ns++] = SKIP("ETag");
        const struct cdn_hdr *et = cdn_hdrs_get(h, "ETag");
        const char *weak = et ? cdn_etag_weaken(et->value, et->vlen, r->arena) : NULL;
        if (weak)
            MHD_add_response_header(resp, "ETag", weak);
    }
    if (status == 304)
        skip_not_in_304(skip, &ns);
    add_fields(resp, h, skip, ns);
    if (rr != CDN_RANGE_FULL) {
        char cr_buf[64];
        MHD_add_response_header(resp, "Content-Range",
                                cdn_content_range(rr, first, last, size, cr_buf, sizeof(cr_buf)));
    }
    char agebuf[CDN_I64_CHARS];
    cdn_fmt_i64(agebuf, current_age);
    MHD_add_response_header(resp, "Age", agebuf);
    add_hop_fields(r, resp,
                   cdn_arena_cat_i64(r->arena, cs, "; ttl=", lifetime - current_age));
    r->status_sent = status;
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result
queue_forwarded(struct req *r, const char *method)
{
    struct cdn_front *fe = r->fe;
    struct cdn_fetch *f = r->fetch;
    int status = cdn_fetch_status(f);
    int64_t cl = cdn_fetch_content_length(f);
    bool head = strcmp(method, "HEAD") == 0;
    bool stored = cdn_fetch_storing(f);
    const struct cdn_hdrs *in = cdn_fetch_resp_headers(f);
    if (!head_fits(r, in))
        return queue_text(r, 502, "origin response header block too large for this request", false);
    if (stored)
        atomic_fetch_add(&fe->n_stored, 1);
    /* A cache fetch went up without the client's conditionals: answer them here. */
    int answer = status;
    if (r->key && strcmp(method, "GET") == 0 && status >= 200 && status < 300) {
        struct cdn_stored st = {.status = status, .hdrs = in, .request_time = cdn_wall_s(),
                                .response_time = cdn_wall_s()};
        enum cdn_cond_result cr = cdn_eval_conditionals(method, &r->hdrs, &st);
        if (cr == CDN_COND_304)
            answer = 304;
        else if (cr == CDN_COND_412)
            answer = 412;
    }
    struct MHD_Response *resp;
    char *whole;
    if (head || !status_has_body(answer) || answer == 412) {
        /* No body goes out. For HEAD and 304 MHD writes Content-Length from the size, which must
         * then be the length of the full representation (RFC 9110 §8.6), or absent. */
        uint64_t size = 0;
        if ((head || answer == 304) && cl >= 0)
            size = (uint64_t)cl;
        /* Never MHD_SIZE_UNKNOWN here: MHD would frame a 304 as chunked and send a body. */
        resp = MHD_create_response_from_callback(size, 4096, body_reader, r, release_req);
    } else if (cl > 0 && cl <= WHOLE_BODY_MAX &&
               cdn_fetch_read_all(f, &r->w, (whole = cdn_arena_alloc(r->arena, (size_t)cl)),
                                  (size_t)cl)) {
        /* The whole body is here (a small object, stored already): one buffer, which
         * libmicrohttpd sends with the header block in one call. */
        resp = MHD_create_response_from_buffer_with_free_callback_cls((size_t)cl, whole,
                                                                      release_req, r);
        atomic_fetch_add_explicit(&fe->n_bytes_out, (uint64_t)cl, memory_order_relaxed);
        r->bytes_sent += (uint64_t)cl;
    } else {
        /* libmicrohttpd allocates and zeroes a block of this size per response: no larger
         * than the body needs. */
        size_t block = 32 * 1024;
        if (cl >= 0 && (uint64_t)cl < block)
            block = cl < 4096 ? 4096 : (size_t)cl;
        resp = MHD_create_response_from_callback(cl >= 0 ? (uint64_t)cl : MHD_SIZE_UNKNOWN,
                                                 block, body_reader, r, release_req);
        size_send_buffer(fe, r->conn, cl >= 0 ? (uint64_t)cl : MHD_SIZE_UNKNOWN);
    }
    if (resp == NULL)
        return queue_text(r, 500, "cannot create response", true);
    atomic_fetch_add(&r->refs, 1); /* released by release_req */
    struct cdn_hdrs out;
    cdn_hdrs_init(&out, r->arena);
    cdn_hop_response_headers(in, &out, &fe->hop);
    /* Upstream Via lines go last, in order, so ours (added with Cache-Status) follows them. */
    cdn_hdrs_remove(&out, "Via");
    for (size_t i = 0; i < in->n; i++)
        if (cdn_name_eq(in->v[i].name, in->v[i].nlen, "Via"))
            cdn_hdrs_add(&out, in->v[i].name, in->v[i].nlen, in->v[i].value, in->v[i].vlen);
    /* The stored copy will be gzip and negotiated on Accept-Encoding: say so from the start. */
    if (cdn_fetch_stored_gzip(f) && !cdn_vary_lists(in, "Accept-Encoding"))
        cdn_hdrs_add_str(&out, "Vary", "Accept-Encoding");
    struct skip_name skip[3 + NOT_IN_304];
    size_t ns = 0;
    skip[ns++] = SKIP(CDN_IDENTITY_LENGTH_FIELD);
    if (fe->cfg->strip_cache_tags) {
        skip[ns++] = SKIP("Surrogate-Key");
        skip[ns++] = SKIP("Cache-Tag");
    }
    if (answer == 304)
        skip_not_in_304(skip, &ns);
    add_fields(resp, &out, skip, ns);
    char num[CDN_I64_CHARS];
    cdn_fmt_i64(num, status);
    add_hop_fields(r, resp,
                   cdn_arena_cat(r->arena, fe->cfg->cdn_id, "; fwd=", r->fwd ? r->fwd : "miss",
                                 "; fwd-status=", num, stored ? "; stored" : "", NULL));
    r->status_sent = answer;
    if (r->outcome == NULL)
        r->outcome = r->fwd == NULL                   ? "miss"
                     : strcmp(r->fwd, "method") == 0  ? "pass"
                     : strcmp(r->fwd, "bypass") == 0  ? "bypass"
                     : strcmp(r->fwd, "request") == 0 ? "reload"
                                                      : "miss";
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)answer, resp);
    MHD_destroy_response(resp);
    return ret;
}

static const char *
miss_kind(const struct cdn_decide_out *d, bool vary_miss)
{
    switch (d->reason) {
    case CDN_WHY_REQ_NO_STORE:
    case CDN_WHY_AUTHORIZATION:
        return "bypass";
    case CDN_WHY_REQ_NO_CACHE:
    case CDN_WHY_REQ_MAX_AGE:
    case CDN_WHY_MIN_FRESH:
        return "request";
    case CDN_WHY_NOT_STORED:
        return vary_miss ? "vary-miss" : "uri-miss";
    default:
        return "stale";
    }
}

/* First call, GET or HEAD: look the cache up and decide. */
static enum MHD_Result
route_cacheable(struct req *r, const char *method)
{
    struct cdn_front *fe = r->fe;
    if (cdn_cache_key(r->info.scheme, r->info.host, r->info.target, cdn_cache_key_opts(fe->cache),
                      r->arena, &r->key, &r->klen) != 0) {
        r->key = NULL;
        r->fwd = "bypass";
        r->phase = P_FORWARD;
        start_forward(r, method, false, false);
        return MHD_YES;
    }
    /* Hashed once: the lookup and, for a miss or a revalidation, the store's write use it. */
    cdn_store_key_hash(r->key, r->klen, r->key_hash);
    bool vary_miss = false;
    int64_t now = cdn_wall_s();
    bool found = cdn_cache_lookup(fe->cache, r->key, r->klen, r->key_hash, &r->hdrs, r->arena,
                                  &r->hit, &vary_miss) == 0;
    cdn_decide(&r->hdrs, found ? &r->hit.st : NULL, cdn_cache_policy(fe->cache), now, &r->dec);
    if (found && (r->hit.meta->flags & CDN_STORE_STALE) &&
        r->dec.decision != CDN_DECIDE_MISS && r->dec.decision != CDN_DECIDE_504) {
        r->dec.decision = CDN_DECIDE_REVALIDATE; /* soft-purged: only after revalidation */
        r->dec.reason = CDN_WHY_STALE;
    }
    switch (r->dec.decision) {
    case CDN_DECIDE_STALE_SWR:
        refresh_in_background(r);
        /* fall through */
    case CDN_DECIDE_FRESH:
    case CDN_DECIDE_STALE:
        r->phase = P_HIT;
        return MHD_YES;
    case CDN_DECIDE_504:
        cdn_cache_hit_release(&r->hit);
        r->phase = P_ERROR;
        r->err_status = 504;
        r->err_reason = "only-if-cached and no usable stored response";
        return MHD_YES;
    case CDN_DECIDE_REVALIDATE:
        r->fwd = miss_kind(&r->dec, false);
        break;
    case CDN_DECIDE_MISS:
    default:
        r->fwd = miss_kind(&r->dec, vary_miss);
        cdn_cache_hit_release(&r->hit);
        break;
    }
    r->phase = P_FORWARD;
    bool bypass = r->dec.reason == CDN_WHY_REQ_NO_STORE;
    if (bypass)
        cdn_cache_hit_release(&r->hit);
    start_forward(r, method, !bypass, true);
    atomic_fetch_add(&fe->n_misses, 1);
    return MHD_YES;
}

/* Writer thread: one invalidation settled; the last one resumes the parked request. */
static void
invalidated(void *arg, int result)
{
    struct req *r = arg;
    if (atomic_fetch_sub(&r->inval_pending, 1) == 1)
        MHD_resume_connection(r->conn);
}

/*
 * An unsafe method succeeded: stored responses for its targets are outdated (RFC 9111 §4.4).
 * The request is parked until the store has applied the deletes, so a client that sees this
 * response never gets the outdated copy afterwards. Returns false when there is nothing to do.
 */
static bool
invalidate_targets(struct req *r, const char *method)
{
    struct cdn_front *fe = r->fe;
    int status = cdn_fetch_status(r->fetch);
    if (fe->cache == NULL || r->key != NULL || status < 200 || status >= 400)
        return false;
    struct cdn_uri uris[3];
    size_t n = cdn_invalidation_targets(method, status, r->info.scheme, r->info.host,
                                        r->info.target, cdn_fetch_resp_headers(r->fetch),
                                        r->arena, uris);
    if (n == 0)
        return false;
    r->phase = P_INVALIDATE;
    atomic_store(&r->inval_pending, (int)n);
    MHD_suspend_connection(r->conn); /* before any callback can resume it */
    cdn_cache_invalidate(fe->cache, uris, n, r->arena, invalidated, r);
    return true;
}

/*
 * A follower may use the leader's response only when the store takes it (a response that is
 * not stored may be private to the leader) and, with Vary, when its own request selects the
 * same variant.
 */
static bool
may_share(struct req *r)
{
    struct cdn_fetch *f = r->fetch;
    if (cdn_fetch_status(f) == 304)
        return r->hit.lease != NULL; /* a collapsed revalidation of our own variant */
    if (!cdn_fetch_storing(f))
        return false;
    /* The follower may take it only as it would take it from the store: fresh for its request
     * (a response with no lifetime, or a client's no-cache, means going upstream itself). */
    int64_t now = cdn_wall_s();
    struct cdn_stored st = {.status = cdn_fetch_status(f),
                            .hdrs = cdn_fetch_resp_headers(f),
                            .request_time = now,
                            .response_time = now};
    struct cdn_decide_out d;
    cdn_decide(&r->hdrs, &st, cdn_cache_policy(r->fe->cache), now, &d);
    if (d.decision != CDN_DECIDE_FRESH)
        return false;
    size_t slen, a, b;
    const char *spec = cdn_vary_spec(cdn_fetch_resp_headers(f), r->arena, &slen);
    if (slen == 0)
        return true;
    const char *mine = cdn_vary_values(spec, slen, &r->hdrs, r->arena, &a);
    const char *theirs = cdn_vary_values(spec, slen, cdn_fetch_request_fields(f), r->arena, &b);
    return mine && theirs && a == b && memcmp(mine, theirs, a) == 0;
}

/* Last call of a forwarded request once the head (or a failure) is in. */
static enum MHD_Result
respond_forwarded(struct req *r, const char *method, enum cdn_fetch_state s)
{
    struct cdn_front *fe = r->fe;
    int status = cdn_fetch_status(r->fetch);
    bool failed = s == CDN_FETCH_FAILED && status == 0;
    r->origin_ms = (double)(cdn_now_us() - r->origin_start_us) / 1000.0;
    /*
     * A follower goes upstream again: once, by joining again, when the leader could not connect
     * (one of the followers then leads the retry, the others follow it; a timeout is not retried:
     * they have waited long enough); or alone, in parallel with the others, when the leader's
     * response may not be shared.
     */
    bool retry = r->follower && failed && !r->retried && cdn_fetch_error(r->fetch, NULL) == 502;
    bool alone = r->follower && !failed && !may_share(r);
    if (retry || alone) {
        if (retry)
            r->retried = true;
        else
            atomic_fetch_add(&fe->n_unshared, 1);
        cdn_fetch_detach(r->fetch, &r->w);
        cdn_fetch_unref(r->fetch);
        r->fetch = NULL;
        start_forward(r, method, true, retry);
        s = cdn_fetch_wait_headers(r->fetch, &r->w);
        if (s == CDN_FETCH_PENDING) {
            r->phase = P_FORWARD;
            return MHD_YES;
        }
        status = cdn_fetch_status(r->fetch);
        failed = s == CDN_FETCH_FAILED && status == 0;
        r->origin_ms = (double)(cdn_now_us() - r->origin_start_us) / 1000.0;
    }
    if (r->hit.lease) {
        const char *id = fe->cfg->cdn_id;
        if (!failed && status == 304) {
            /* Our revalidation came back 304: serve the stored body with freshened fields. */
            const struct cdn_policy_opts *po = cdn_cache_policy(fe->cache);
            /* The store's side merged our stored fields already when this fetch is ours; a
             * follower's stored copy may differ, so it merges its own. */
            const struct cdn_freshened *fz = r->follower ? NULL : cdn_cache_freshened(r->fetch);
            struct cdn_freshened own;
            if (fz == NULL) {
                cdn_hdrs_init(&own.hdrs, r->arena);
                own.targeted = cdn_merge_304(&r->hit.hdrs, cdn_fetch_resp_headers(r->fetch), po,
                                             &own.hdrs, &own.cc);
                fz = &own;
            }
            const struct cdn_hdrs *merged = &fz->hdrs;
            atomic_fetch_add(&fe->n_revalidated, 1);
            r->outcome = "revalidated";
            /* Aged here with the directives the merge parsed (queue_hit would parse them again). */
            int64_t now = cdn_wall_s();
            struct cdn_freshness fr;
            struct cdn_age age;
            cdn_freshness_lifetime_cc(r->hit.st.status, merged, now, po, &fz->cc, fz->targeted,
                                      &fr);
            cdn_age_compute(merged, r->origin_start_wall, now, now, &age);
            struct cdn_decide_out known = {.age = age.current_age, .lifetime = fr.lifetime};
            return queue_hit(
                r, method, merged,
                cdn_arena_cat(r->arena, id, "; fwd=", r->fwd, "; fwd-status=304", NULL),
                r->origin_start_wall, now, &known);
        }
        int64_t now = cdn_wall_s();
        if ((failed || cdn_status_is_stale_error(status)) &&
            cdn_may_serve_stale_on_error(&r->hdrs, &r->hit.st, cdn_cache_policy(fe->cache),
                                         now)) {
            atomic_fetch_add(&fe->n_stale, 1);
            r->outcome = "stale-if-error";
            const char *cs =
                failed ? cdn_arena_printf(r->arena, "%s; hit; fwd=%s; detail=stale-if-error", id,
                                          r->fwd)
                       : cdn_arena_printf(r->arena,
                                          "%s; hit; fwd=%s; fwd-status=%d; detail=stale-if-error",
                                          id, r->fwd, status);
            return queue_hit(r, method, &r->hit.hdrs, cs, r->hit.st.request_time,
                             r->hit.st.response_time, NULL);
        }
    }
    if (failed) {
        const char *why;
        int st = cdn_fetch_error(r->fetch, &why);
        return queue_text(r, st, why, false);
    }
    if (s == CDN_FETCH_FAILED)
        return queue_text(r, 502, "origin response failed before it could be relayed", true);
    if (invalidate_targets(r, method))
        return MHD_YES; /* parked until the store applied the invalidation */
    return queue_forwarded(r, method);
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
        if (!head_arrived(conn))
            return MHD_NO; /* refused at connection_limit, or past request_head_timeout */
        r->method = cdn_arena_strdup(r->arena, method);
        r->version = cdn_arena_strdup(r->arena, version);
        MHD_get_connection_values_n(conn, MHD_HEADER_KIND, collect_field, r);
        struct cdn_request_limits lim = {
            .max_body = fe->cfg->max_request_body,
            .max_target = 8192,
            .max_head = cdn_config_max_request_head(fe->cfg),
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
        if (fe->cache && (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0))
            return route_cacheable(r, method);
        r->phase = P_FORWARD;
        r->fwd = "method";
        start_forward(r, method, false, false);
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
    case P_HIT: {
        r->phase = P_DONE;
        bool stale = r->dec.decision != CDN_DECIDE_FRESH;
        atomic_fetch_add(stale ? &fe->n_stale : &fe->n_hits, 1);
        r->outcome = stale ? "stale" : "hit";
        const char *cs =
            r->dec.decision == CDN_DECIDE_STALE_SWR ? fe->cs_hit_swr : fe->cs_hit;
        return queue_hit(r, method, &r->hit.hdrs, cs, r->hit.st.request_time,
                         r->hit.st.response_time, &r->dec);
    }
    case P_INVALIDATE:
        r->phase = P_DONE;
        return queue_forwarded(r, method);
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
    if (s == CDN_FETCH_PENDING && r->w.timed_out) {
        r->phase = P_DONE;
        return queue_text(r, 504,
                          cdn_arena_printf(r->arena,
                                           "timeout: waited %u ms for the fetch of another "
                                           "request (collapse_wait)",
                                           fe->cfg->collapse_wait_ms),
                          false);
    }
    if (s == CDN_FETCH_PENDING)
        return MHD_YES; /* parked: called again when the head arrives */
    r->phase = P_DONE;
    return respond_forwarded(r, method, s);
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
    /* MHD_USE_TURBO: a new connection is read before it joins the epoll set (one epoll_ctl
     * fewer per connection, none when it closes before it would block), and a closed
     * connection is not shut down first. The second would drop TLS's close_notify, so TLS
     * listeners go without. nokeep-1k: +12 %, hit-1k: +6 % (interleaved 3 x 5 s). */
    if (l->tls)
        flags |= MHD_USE_TLS;
    else
        flags |= MHD_USE_TURBO;
    struct MHD_OptionItem ops[16];
    size_t k = 0;
#define OPT(o, v, p) (ops[k++] = (struct MHD_OptionItem){(o), (intptr_t)(v), (p)})
    OPT(MHD_OPTION_SOCK_ADDR, 0, &ss);
    /* Above connection_limit: MHD at its own limit leaves new connections in the listen queue,
     * ours answers them (on_connection). The margin covers refused connections not yet closed
     * and the uneven share of MHD's limit among the worker threads. */
    unsigned margin = 64 + cfg->connection_limit / 8;
    unsigned mhd_limit =
        cfg->connection_limit > UINT_MAX - margin ? UINT_MAX : cfg->connection_limit + margin;
    OPT(MHD_OPTION_CONNECTION_LIMIT, mhd_limit, NULL);
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
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, l, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        l, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
    if (d == NULL)
        cdn_error("cannot listen on %s%s: %s", hostport, l->tls ? " (TLS)" : "",
                  strerror(errno));
    return d;
}

/* loopback_congestion_control when the kernel takes it (a module not loaded, or one only
 * CAP_NET_ADMIN may pick, is refused): tried once on a socket of our own. */
static const char *
usable_congestion(const char *name)
{
    if (name == NULL || strcmp(name, "off") == 0)
        return NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return NULL;
    int rc = setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, (socklen_t)strlen(name));
    int e = errno;
    close(fd);
    if (rc == 0)
        return name;
    cdn_warn("loopback_congestion_control = %s: %s; loopback clients keep the kernel's", name,
             strerror(e));
    return NULL;
}

/* Whether Surrogate-Control is one of the targeted fields this node obeys: then it announces
 * itself to the upstream with Surrogate-Capability, so an origin can target it by its cdn_id. */
static bool
obeys_surrogate_control(const struct cdn_config *cfg)
{
    for (size_t i = 0; i < cfg->n_target_cache_control; i++)
        if (cdn_cc_is_surrogate_field(cfg->target_cache_control[i]))
            return true;
    return false;
}

struct cdn_front *
cdn_front_start(const struct cdn_config *cfg, struct cdn_upstream *up, struct cdn_cache *cache,
                struct cdn_collapse *collapse, struct cdn_accesslog *alog)
{
    struct cdn_front *fe = cdn_calloc(1, sizeof(*fe));
    fe->magic = FRONT_MAGIC;
    fe->cfg = cfg;
    snprintf(fe->via, sizeof(fe->via), "1.1 %s", cfg->cdn_id);
    snprintf(fe->cs_hit, sizeof(fe->cs_hit), "%s; hit", cfg->cdn_id);
    snprintf(fe->cs_hit_swr, sizeof(fe->cs_hit_swr), "%s; hit; detail=stale-while-revalidate",
             cfg->cdn_id);
    fe->loopback_cc = usable_congestion(cfg->loopback_congestion_control);
    fe->up = up;
    fe->cache = cache;
    fe->collapse = collapse;
    fe->alog = alog;
    fe->hop = (struct cdn_hop_opts){
        .cdn_id = cfg->cdn_id,
        .x_forwarded_for = cfg->x_forwarded_for,
        .forwarded = cfg->forwarded,
        .trusted_hops = cfg->trusted_hops,
        .surrogate_capability = obeys_surrogate_control(cfg),
    };
    fe->l_plain = (struct listener){fe, false};
    fe->l_tls = (struct listener){fe, true};
    pthread_mutex_init(&fe->conn_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&fe->reaper_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&fe->reaper, NULL, reaper_main, fe) != 0) {
        cdn_error("cannot start the connection reaper thread");
        goto fail;
    }
    fe->reaper_running = true;
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
    if (fe->reaper_running) {
        pthread_mutex_lock(&fe->conn_mu);
        fe->stopping = true;
        pthread_cond_signal(&fe->reaper_cv);
        pthread_mutex_unlock(&fe->conn_mu);
        pthread_join(fe->reaper, NULL);
    }
    CDN_ASSERT(fe->slots == NULL); /* MHD sent CLOSED for every connection it stopped */
    pthread_cond_destroy(&fe->reaper_cv);
    pthread_mutex_destroy(&fe->conn_mu);
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
    out->hits = atomic_load(&fe->n_hits);
    out->stale = atomic_load(&fe->n_stale);
    out->revalidated = atomic_load(&fe->n_revalidated);
    out->misses = atomic_load(&fe->n_misses);
    out->stored = atomic_load(&fe->n_stored);
    out->unshared = atomic_load(&fe->n_unshared);
    out->connections = atomic_load(&fe->n_conns);
    out->conn_refused = atomic_load(&fe->n_conn_refused);
    out->head_timeouts = atomic_load(&fe->n_head_timeouts);
    for (size_t i = 0; i <= CDN_LATENCY_BUCKETS; i++)
        out->latency[i] = atomic_load_explicit(&fe->latency[i], memory_order_relaxed);
    out->latency_sum_us = atomic_load_explicit(&fe->latency_sum_us, memory_order_relaxed);
}

unsigned
cdn_front_port(struct cdn_front *fe)
{
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(fe->plain, MHD_DAEMON_INFO_BIND_PORT);
    return di ? di->port : 0;
}

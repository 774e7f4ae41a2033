/*
 * upstream.c: one thread, one CURLM, many transfers (see upstream.h).
 *
 * Model: submitters push fetches on a locked queue and wake the loop through an eventfd (one write
 * per batch: wake_pending). DESIGN.md §2 names curl_multi_wakeup() for this; libcurl 7.88
 * implements it as one socketpair send per call, on the front end's thread, for every submitted
 * fetch, which the batched eventfd avoids (measured: the front end's sendto per miss 1.0 -> 0). The
 * loop adds queued fetches as easy handles, resumes transfers whose readers made room (the fetch
 * kicks us the same way), enforces timeouts, drives libcurl and finishes completed transfers.
 * Everything a transfer owns (struct xfer) is touched only by this thread.
 *
 * libcurl is driven with curl_multi_socket_action() over a pollfd set that its socket callback
 * keeps (no syscall to change it), so each round hands libcurl only the sockets that are ready,
 * with their readiness; its timers are read with curl_multi_timeout(). curl_multi_perform()
 * would visit every transfer each round and libcurl 7.88 then polls each one's socket on its
 * own: measured, three poll() calls per forwarded request with 64 in flight.
 *
 * Response validation happens in the header callback, before the fetch publishes anything:
 * obsolete line folding, bad field names, conflicting Content-Length, Content-Length with
 * Transfer-Encoding and oversized header blocks all fail the transfer with 502.
 *
 * Upstreams: a member set (struct members) holds the parents, then the origins, each group with
 * its own pool (pool.h): parents are always chosen by rendezvous hashing of the cache key, origins
 * by origin_balance, and origins are used only when no parent is left (all down, or all tried).
 * The set lives under pool_mu, taken by this thread to pick, count and score members and by the
 * admin thread to read them. It is reference counted: a reload installs a new set (members keep
 * their health when their URL stays) while transfers started on the old one finish on it. A
 * transfer holds one member (x->member of x->set) from xfer_start() until it ends or is started
 * again elsewhere; x->tried remembers every member it used, so a retry never goes back. Only a
 * connect failure retries, because only then is it certain that the upstream saw nothing: once
 * without parents, and down the parents (then to an origin) with them. Health checks are easy
 * handles of their own (struct probe, at most one per member of the current set) on the same
 * multi handle; they never count as transfers.
 *
 * n_inflight counts fetches from submit until their xfer is freed (queued or on the wire), and is
 * what max_inflight_misses bounds; submitters raise it under mu, so they cannot overshoot together.
 */
#include "cdnode/upstream.h"
#include "cdnode/arena.h"
#include "cdnode/common.h"
#include "cdnode/config.h"
#include "cdnode/fetch.h"
#include "cdnode/headers.h"
#include "cdnode/log.h"
#include "cdnode/pool.h"
#include "cdnode/request.h"

#include <curl/curl.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define UPSTREAM_MAGIC 0x0b5e7ea1u
/* Finished transfers' easy handles kept for the next ones: curl_easy_init() and the first
 * transfer's buffers cost more than setting every option again. */
#define EASY_POOL 64

_Static_assert(CDN_MAX_ORIGINS <= CDN_POOL_MAX, "every configured upstream needs a pool member");

/* The upstreams in force: parents (members 0..n_parents) then origins. Immutable but for the
 * pools' counters, which are under pool_mu like refs. */
struct members {
    unsigned refs;
    size_t n, n_parents;
    char *url[CDN_MAX_ORIGINS];
    struct cdn_pool parents; /* member i is parents.m[i] */
    struct cdn_pool origins; /* member n_parents + i is origins.m[i] */
};

struct xfer {
    struct xfer *next;
    struct cdn_upstream *up;
    struct cdn_fetch *f;
    CURL *easy;
    struct curl_slist *hdrs; /* one block: nodes point at the fetch's header lines */
    char *url;      /* origin + target of this attempt */
    struct members *set; /* the member set x->member belongs to (a reference), or NULL */
    int member;     /* member of this attempt, -1 when none is held */
    uint32_t tried; /* pool members this fetch was sent to (bit per member) */
    bool retried;
    struct cdn_hdrs resp;
    int status;
    size_t hdr_bytes;
    bool headers_done;
    bool failed;
    int fail_status;
    bool paused;
    bool sink_wait; /* paused because the store was behind: retried on a short timer */
    bool followers_released; /* collapse_wait passed without a head */
    bool touched;            /* handed the fetch something: flush its readers' wake-ups */
    unsigned sends;          /* times libcurl sent this attempt's request (on_prereq) */
    int64_t started_ms;
    int64_t last_ms;
    char reason[256];
    char errbuf[CURL_ERROR_SIZE];
};

/* A health check in flight: an HTTP GET of the health path, or a bare connect. */
struct probe {
    CURL *easy; /* NULL when none is running for this member */
    char *url;
    bool http;
};

struct cdn_upstream {
    uint32_t magic;
    const struct cdn_config *cfg;
    CURLM *multi;
    pthread_t thread;
    pthread_mutex_t mu;
    struct xfer *queue; /* under mu, in submission order */
    struct xfer **queue_end; /* under mu: where the next submission goes */
    bool stopping;      /* under mu */
    struct members *pending;              /* under mu: installed by the upstream thread */
    pthread_mutex_t pool_mu;
    struct members *set;                  /* under pool_mu; replaced only by the upstream thread */
    struct xfer *active;                  /* upstream thread only */
    CURL *idle[EASY_POOL];                /* upstream thread only: handles to reuse */
    unsigned n_idle;
    struct probe probes[CDN_MAX_ORIGINS]; /* upstream thread only, by member of up->set */
    int64_t next_check_ms;                /* upstream thread only */
    int wake_fd;                          /* eventfd: pfd[0] */
    atomic_bool wake_pending;             /* a wake-up is written and not yet acted on */
    /* Upstream thread only: the sockets libcurl waits on (pfd[0] is wake_fd), and where each fd
     * sits in pfd (slot[fd] - 1, 0 when absent). */
    struct pollfd *pfd;
    size_t n_pfd, cap_pfd;
    unsigned *slot;
    size_t cap_slot;
    int64_t next_sink_retry_ms;
    _Atomic uint64_t n_requests, n_errors, n_bytes, n_active, n_inflight;
    _Atomic uint64_t n_retries, n_shed, n_down, n_up, n_checks;
};

static void xfer_fail(struct xfer *x, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
xfer_fail(struct xfer *x, int status, const char *fmt, ...)
{
    if (x->failed)
        return;
    x->failed = true;
    x->fail_status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->reason, sizeof(x->reason), fmt, ap);
    va_end(ap);
}

static bool
all_digits(const char *s, size_t n)
{
    if (n == 0 || n > 18)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* Checks the framing fields of a complete header block; returns the body length or -1. */
static bool
check_framing(struct xfer *x, int64_t *content_length)
{
    int64_t cl = -1;
    bool have_cl = false;
    for (size_t i = 0; i < x->resp.n; i++) {
        const struct cdn_hdr *h = &x->resp.v[i];
        if (!cdn_name_eq(h->name, h->nlen, "Content-Length"))
            continue;
        const char *p = h->value, *end = h->value + h->vlen, *e;
        size_t el;
        bool any = false;
        while (cdn_list_next(&p, end, &e, &el)) {
            any = true;
            if (!all_digits(e, el)) {
                xfer_fail(x, 502, "invalid Content-Length from origin");
                return false;
            }
            int64_t v = strtoll(e, NULL, 10);
            if (have_cl && v != cl) {
                xfer_fail(x, 502, "conflicting Content-Length fields from origin");
                return false;
            }
            cl = v;
            have_cl = true;
        }
        if (!any) { /* "Content-Length:" with no value: no length, not "no field" */
            xfer_fail(x, 502, "invalid Content-Length from origin");
            return false;
        }
    }
    if (have_cl && cdn_hdrs_get(&x->resp, "Transfer-Encoding")) {
        xfer_fail(x, 502, "origin sent both Content-Length and Transfer-Encoding");
        return false;
    }
    *content_length = cdn_hdrs_get(&x->resp, "Transfer-Encoding") ? -1 : cl;
    return true;
}

static size_t
on_header(char *p, size_t size, size_t nmemb, void *arg)
{
    struct xfer *x = arg;
    size_t n = size * nmemb;
    if (x->headers_done || x->failed)
        return n; /* trailers, or already doomed */
    x->hdr_bytes += n;
    if (x->hdr_bytes > x->up->cfg->max_origin_headers) {
        xfer_fail(x, 502, "origin response header block exceeds %zu bytes",
                  x->up->cfg->max_origin_headers);
        return 0;
    }
    size_t len = n;
    while (len > 0 && (p[len - 1] == '\n' || p[len - 1] == '\r'))
        len--;
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        const char *sp = memchr(p, ' ', len);
        int st = sp ? atoi(sp + 1) : 0;
        if (st < 100 || st > 999) {
            xfer_fail(x, 502, "invalid status line from origin");
            return 0;
        }
        x->status = st;
        x->hdr_bytes = n;
        cdn_hdrs_init(&x->resp, cdn_fetch_arena(x->f));
        return n;
    }
    if (len == 0) {
        if (x->status < 200)
            return n; /* end of an interim (1xx) block: the final one follows */
        int64_t cl;
        if (!check_framing(x, &cl))
            return 0;
        if (strcmp(cdn_fetch_method(x->f), "HEAD") == 0 && cl < 0) {
            const struct cdn_hdr *h = cdn_hdrs_get(&x->resp, "Content-Length");
            if (h)
                cl = strtoll(h->value, NULL, 10);
        }
        x->headers_done = true;
        x->last_ms = cdn_now_ms();
        cdn_fetch_publish(x->f, x->status, &x->resp, cl);
        x->touched = true;
        return n;
    }
    if (p[0] == ' ' || p[0] == '\t') {
        xfer_fail(x, 502, "obsolete line folding in origin response");
        return 0;
    }
    const char *colon = memchr(p, ':', len);
    if (colon == NULL || !cdn_is_token(p, (size_t)(colon - p))) {
        xfer_fail(x, 502, "invalid header field in origin response");
        return 0;
    }
    const char *v = colon + 1, *vend = p + len;
    while (v < vend && (*v == ' ' || *v == '\t'))
        v++;
    while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
        vend--;
    for (const char *c = v; c < vend; c++) {
        if (*c == '\0' || *c == '\r' || *c == '\n') {
            xfer_fail(x, 502, "invalid header value in origin response");
            return 0;
        }
    }
    cdn_hdrs_add_copy(&x->resp, p, (size_t)(colon - p), v, (size_t)(vend - v));
    return n;
}

static size_t
on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    struct xfer *x = arg;
    size_t n = size * nmemb;
    if (!x->headers_done || x->failed)
        return 0;
    if (cdn_fetch_abandoned(x->f)) {
        xfer_fail(x, 502, "every client went away");
        return 0;
    }
    if (!cdn_fetch_append(x->f, p, n)) {
        x->paused = true;
        x->sink_wait = cdn_fetch_take_sink_blocked(x->f);
        return CURL_WRITEFUNC_PAUSE;
    }
    x->paused = false;
    x->touched = true;
    x->last_ms = cdn_now_ms();
    atomic_fetch_add_explicit(&x->up->n_bytes, n, memory_order_relaxed);
    return n;
}

/*
 * libcurl: the request is about to go out on a connection. When a reused connection dies
 * before any answer, libcurl sends the request again on another one, up to five times; a
 * request that kills its connection (or the origin process) would then be sent once per pooled
 * connection. One resend covers a keep-alive connection the origin closed meanwhile.
 */
static int
on_prereq(void *arg, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    (void)primary_ip, (void)local_ip, (void)primary_port, (void)local_port;
    struct xfer *x = arg;
    if (++x->sends <= 2)
        return CURL_PREREQFUNC_OK;
    xfer_fail(x, 502, "origin closed the connection without answering, twice");
    return CURL_PREREQFUNC_ABORT;
}

static size_t
on_read(char *buf, size_t size, size_t nmemb, void *arg)
{
    struct xfer *x = arg;
    ssize_t r = cdn_fetch_upload_pull(x->f, buf, size * nmemb);
    if (r < 0)
        return CURL_READFUNC_PAUSE;
    x->last_ms = cdn_now_ms();
    return (size_t)r;
}

/* Any thread: makes the loop go round; one write until the loop has looked. */
static void
wake(struct cdn_upstream *up)
{
    if (atomic_exchange(&up->wake_pending, true))
        return;
    uint64_t one = 1;
    while (write(up->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

static void
kick(void *arg)
{
    wake(arg);
}

/* ---- libcurl's sockets and timer ---- */

/* An array of `size`-byte entries with room for `need`, new entries zeroed. */
static void *
grow(void *p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return p;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    p = cdn_realloc(p, n * size);
    memset((char *)p + *cap * size, 0, (n - *cap) * size); /* slot[]: 0 is "absent" */
    *cap = n;
    return p;
}

/* CURLMOPT_SOCKETFUNCTION: what libcurl wants to wait for on s, kept in up->pfd. */
static int
on_socket(CURL *e, curl_socket_t s, int what, void *arg, void *socketp)
{
    (void)e, (void)socketp;
    struct cdn_upstream *up = arg;
    CDN_ASSERT(s >= 0);
    size_t fd = (size_t)s;
    up->slot = grow(up->slot, &up->cap_slot, fd + 1, sizeof(*up->slot));
    unsigned i = up->slot[fd];
    if (what == CURL_POLL_REMOVE) {
        if (i == 0)
            return 0;
        struct pollfd *last = &up->pfd[--up->n_pfd];
        up->pfd[i - 1] = *last; /* the last entry fills the hole */
        up->slot[last->fd] = i;
        up->slot[fd] = 0;
        return 0;
    }
    if (i == 0) {
        up->pfd = grow(up->pfd, &up->cap_pfd, up->n_pfd + 1, sizeof(*up->pfd));
        up->pfd[up->n_pfd] = (struct pollfd){.fd = s};
        i = up->slot[fd] = (unsigned)++up->n_pfd;
    }
    up->pfd[i - 1].events = (short)(((what & CURL_POLL_IN) ? POLLIN : 0) |
                                    ((what & CURL_POLL_OUT) ? POLLOUT : 0));
    return 0;
}

/* Milliseconds until libcurl wants curl_multi_socket_action(CURL_SOCKET_TIMEOUT), -1 for never.
 * Asked each round rather than kept from CURLMOPT_TIMERFUNCTION, which libcurl calls only when the
 * value changes: a round that woke a little early would lose the timer. */
static long
curl_wait_ms(struct cdn_upstream *up)
{
    long ms = -1;
    if (curl_multi_timeout(up->multi, &ms) != CURLM_OK)
        ms = 0;
    return ms;
}

/* ---- the member set ---- */

static struct cdn_pool_member *
member_of(struct members *set, size_t m)
{
    return m < set->n_parents ? &set->parents.m[m] : &set->origins.m[m - set->n_parents];
}

/*
 * A member set for cfg's parents and origins. Members whose URL was in `old` keep its health
 * (state and consecutive counts), so a reload neither forgets a dead origin nor condemns a live
 * one. Caller holds pool_mu when old is the current set.
 */
static struct members *
members_new(const struct cdn_config *cfg, const struct members *old)
{
    struct members *set = cdn_calloc(1, sizeof(*set));
    set->refs = 1;
    set->n_parents = cfg->n_parents;
    set->n = cfg->n_parents + cfg->n_origins;
    CDN_ASSERT(set->n >= 1 && set->n <= CDN_MAX_ORIGINS);
    for (size_t i = 0; i < cfg->n_parents; i++)
        set->url[i] = cdn_strdup(cfg->parents[i]);
    for (size_t i = 0; i < cfg->n_origins; i++)
        set->url[cfg->n_parents + i] = cdn_strdup(cfg->origins[i]);
    if (cfg->n_parents > 0)
        cdn_pool_init(&set->parents, CDN_BALANCE_HASH, cfg->origin_fall, cfg->origin_rise,
                      (const char *const *)set->url, cfg->n_parents);
    if (cfg->n_origins > 0)
        cdn_pool_init(&set->origins, cfg->origin_balance, cfg->origin_fall, cfg->origin_rise,
                      (const char *const *)set->url + cfg->n_parents, cfg->n_origins);
    for (size_t i = 0; old != NULL && i < set->n; i++) {
        for (size_t j = 0; j < old->n; j++) {
            if ((i < set->n_parents) != (j < old->n_parents) || strcmp(set->url[i], old->url[j]))
                continue;
            const struct cdn_pool_member *o =
                j < old->n_parents ? &old->parents.m[j] : &old->origins.m[j - old->n_parents];
            struct cdn_pool_member *nm = member_of(set, i);
            nm->healthy = o->healthy;
            nm->fails = o->fails;
            nm->oks = o->oks;
            nm->requests = o->requests;
            nm->failures = o->failures;
            break;
        }
    }
    return set;
}

/* Drops a reference; the caller holds pool_mu. */
static void
members_unref(struct members *set)
{
    if (set == NULL || --set->refs > 0)
        return;
    for (size_t i = 0; i < set->n; i++)
        free(set->url[i]);
    free(set);
}

/*
 * Picks a member not tried yet for x, counts the request on it and makes x hold it (and a
 * reference to its set); -1 if none is left. A parent first: the one the key hashes to, skipping
 * tried ones; an origin only when that parent is down (every untried parent is) or none is left.
 */
static int
member_take(struct cdn_upstream *up, struct xfer *x)
{
    pthread_mutex_lock(&up->pool_mu);
    struct members *set = x->set ? x->set : up->set;
    const char *key = cdn_fetch_key(x->f);
    size_t np = set->n_parents;
    uint32_t low = np > 0 ? (uint32_t)((1ull << np) - 1) : 0;
    int m = -1;
    if (np > 0)
        m = cdn_pool_pick(&set->parents, key, x->tried & low);
    if (set->n > np && (m < 0 || !set->parents.m[m].healthy)) {
        int o = cdn_pool_pick(&set->origins, key, x->tried >> np);
        if (o >= 0)
            m = (int)np + o;
    }
    if (m >= 0) {
        if (m < (int)np)
            cdn_pool_begin(&set->parents, (size_t)m);
        else
            cdn_pool_begin(&set->origins, (size_t)m - np);
        if (x->set == NULL) {
            set->refs++;
            x->set = set;
        }
    }
    pthread_mutex_unlock(&up->pool_mu);
    return m;
}

/* Ends x's request on its member. x keeps its set (a retry picks from the same one). */
static void
member_release(struct cdn_upstream *up, struct xfer *x)
{
    if (x->member < 0)
        return;
    pthread_mutex_lock(&up->pool_mu);
    struct members *set = x->set;
    size_t m = (size_t)x->member;
    if (m < set->n_parents)
        cdn_pool_end(&set->parents, m);
    else
        cdn_pool_end(&set->origins, m - set->n_parents);
    pthread_mutex_unlock(&up->pool_mu);
    x->member = -1;
}

/*
 * One observation of member m of `set`'s health. With HTTP health checks configured, a member
 * they marked down comes back only through them: a request that happened to get through proves
 * less than the health path does.
 */
static void
observe(struct cdn_upstream *up, struct members *set, int m, bool ok, bool from_check,
        const char *what)
{
    pthread_mutex_lock(&up->pool_mu);
    struct cdn_pool_member *pm = member_of(set, (size_t)m);
    if (ok && !from_check && !pm->healthy && up->cfg->origin_health_path) {
        pthread_mutex_unlock(&up->pool_mu);
        return;
    }
    bool parent = (size_t)m < set->n_parents;
    enum cdn_pool_change change =
        parent ? cdn_pool_report(&set->parents, (size_t)m, ok)
               : cdn_pool_report(&set->origins, (size_t)m - set->n_parents, ok);
    unsigned fails = pm->fails, oks = pm->oks;
    pthread_mutex_unlock(&up->pool_mu);
    const char *url = set->url[m], *role = parent ? "parent" : "origin";
    if (change == CDN_POOL_WENT_DOWN) {
        atomic_fetch_add_explicit(&up->n_down, 1, memory_order_relaxed);
        cdn_info("%s %s down (%u consecutive failures): %s", role, url, fails, what);
    } else if (change == CDN_POOL_WENT_UP) {
        atomic_fetch_add_explicit(&up->n_up, 1, memory_order_relaxed);
        cdn_info("%s %s up (%u consecutive successes)", role, url, oks);
    }
}

/* ---- transfers ---- */

/*
 * A handle for the next transfer: one from the pool, or a new one with the options that never
 * change from one transfer to the next (a reused handle keeps them: nothing resets it).
 * xfer_start() sets the rest every time.
 */
static CURL *
easy_take(struct cdn_upstream *up)
{
    if (up->n_idle > 0)
        return up->idle[--up->n_idle];
    const struct cdn_config *cfg = up->cfg;
    CURL *e = curl_easy_init();
    if (e == NULL)
        return NULL;
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    /* Relay bytes as the origin sent them: never decode Content-Encoding (chunked framing is
     * still removed, the front end frames the body itself). */
    curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_PROXY, ""); /* never a proxy from the environment */
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->origin_connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 64L * 1024);
    if (cfg->origin_ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, cfg->origin_ca_file);
    return e;
}

/* A handle taken out of the multi handle: kept for reuse, or cleaned up. */
static void
easy_give(struct cdn_upstream *up, CURL *e)
{
    if (up->n_idle < EASY_POOL)
        up->idle[up->n_idle++] = e;
    else
        curl_easy_cleanup(e);
}

static void
xfer_free(struct xfer *x)
{
    struct cdn_upstream *up = x->up;
    if (x->easy) {
        curl_multi_remove_handle(up->multi, x->easy);
        easy_give(up, x->easy);
    }
    member_release(up, x);
    if (x->set) {
        pthread_mutex_lock(&up->pool_mu);
        members_unref(x->set);
        pthread_mutex_unlock(&up->pool_mu);
    }
    free(x->hdrs);
    free(x->url);
    if (x->touched)
        cdn_fetch_flush_wakes(x->f);
    cdn_fetch_unref(x->f);
    free(x);
    atomic_fetch_sub_explicit(&up->n_inflight, 1, memory_order_relaxed);
}

/* Forgets the attempt that failed to connect, so x can be started again on another member. */
static void
xfer_reset(struct xfer *x)
{
    curl_multi_remove_handle(x->up->multi, x->easy);
    easy_give(x->up, x->easy);
    x->easy = NULL;
    member_release(x->up, x);
    free(x->hdrs);
    x->hdrs = NULL;
    x->status = 0;
    x->hdr_bytes = 0;
    x->paused = false;
    x->sink_wait = false;
    x->errbuf[0] = '\0';
}

/* Starts x on member m of x->set (taken with member_take, and now held by x). */
static bool
xfer_start(struct cdn_upstream *up, struct xfer *x, int m)
{
    struct cdn_fetch *f = x->f;
    x->member = m;
    x->tried |= 1u << m;
    x->sends = 0;
    CURL *e = easy_take(up);
    if (e == NULL) {
        cdn_fetch_fail(f, 502, "upstream client could not be initialized");
        return false;
    }
    x->easy = e;
    const char *method = cdn_fetch_method(f);
    /* libcurl only reads the list (curl_slist is public): one block, no copies of the lines,
     * which the fetch keeps until it is freed, after x. */
    const char *const *lines = cdn_fetch_req_headers(f);
    size_t nl = 0;
    while (lines[nl])
        nl++;
    x->hdrs = nl ? cdn_malloc(nl * sizeof(*x->hdrs)) : NULL;
    for (size_t i = 0; i < nl; i++)
        x->hdrs[i] = (struct curl_slist){.data = (char *)lines[i],
                                         .next = i + 1 < nl ? &x->hdrs[i + 1] : NULL};
    const char *target = cdn_fetch_target(f);
    const char *origin = x->set->url[m];
    free(x->url);
    x->url = cdn_malloc(strlen(origin) + strlen(target) + 1);
    strcpy(x->url, origin);
    if (strcmp(target, "*") != 0) /* OPTIONS * goes to the origin's root */
        strcat(x->url, target);
    curl_easy_setopt(e, CURLOPT_URL, x->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, x);
    /* A reused handle keeps what its last transfer set: back to a plain GET first. */
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, NULL);
    curl_easy_setopt(e, CURLOPT_READDATA, NULL);
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)-1);
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 0L);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (cdn_fetch_req_has_body(f)) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, x);
        if (cdn_fetch_req_body_len(f) >= 0)
            curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)cdn_fetch_req_body_len(f));
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        /* The body streams from the client and cannot be sent twice, so libcurl cannot retry it
         * when a pooled connection turns out closed by the origin (it answers with a reset):
         * such a request always gets a connection of its own. */
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    cdn_fetch_set_kick(f, kick, up);
    x->last_ms = cdn_now_ms();
    if (curl_multi_add_handle(up->multi, e) != CURLM_OK) {
        cdn_fetch_fail(f, 502, "upstream client could not start the transfer");
        return false;
    }
    atomic_fetch_add_explicit(&up->n_requests, 1, memory_order_relaxed);
    return true;
}

/*
 * True when the transfer never got a connection, so the origin saw nothing of it. Transfers set no
 * overall libcurl timeout, so a libcurl timeout is the connect timeout; our own first-byte and
 * idle timeouts mark the transfer failed first.
 */
static bool
connect_failed(const struct xfer *x, CURLcode rc)
{
    if (x->failed)
        return false;
    return rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
           rc == CURLE_OPERATION_TIMEDOUT;
}

static void
xfer_done(struct cdn_upstream *up, struct xfer *x, CURLcode rc)
{
    struct cdn_fetch *f = x->f;
    if (x->failed) {
        cdn_fetch_fail(f, x->fail_status, x->reason);
    } else if (rc == CURLE_OK && x->headers_done) {
        cdn_fetch_finish(f);
        x->touched = true;
        return;
    } else {
        char why[512];
        int status = 502;
        const char *detail = x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc);
        switch (rc) {
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
            snprintf(why, sizeof(why), "could not connect to origin: %s", detail);
            break;
        case CURLE_OPERATION_TIMEDOUT:
            status = 504;
            snprintf(why, sizeof(why), "timeout connecting to origin: %s", detail);
            break;
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CACERT_BADFILE:
            snprintf(why, sizeof(why), "TLS with origin failed: %s", detail);
            break;
        case CURLE_OK:
            snprintf(why, sizeof(why), "origin closed without a response");
            break;
        default:
            snprintf(why, sizeof(why), "origin error: %s", detail);
            break;
        }
        cdn_fetch_fail(f, status, why);
        cdn_warn("upstream %s %s: %s", cdn_fetch_method(f), x->url, why);
    }
    atomic_fetch_add_explicit(&up->n_errors, 1, memory_order_relaxed);
}

/*
 * A transfer libcurl finished: scores its member, then either starts it again on another member
 * (returns true: x is on the wire again) or settles the fetch (false: the caller frees x).
 */
static bool
xfer_end(struct cdn_upstream *up, struct xfer *x, CURLcode rc)
{
    bool no_connect = connect_failed(x, rc);
    if (no_connect || x->headers_done) {
        const char *detail = x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc);
        observe(up, x->set, x->member, !no_connect, false, detail);
    }
    struct cdn_fetch *f = x->f;
    /* Without parents one retry; with them, down the parents and then to an origin. */
    bool retries_left = !x->retried || x->set->n_parents > 0;
    if (!no_connect || !retries_left || cdn_fetch_req_has_body(f) ||
        !cdn_method_idempotent(cdn_fetch_method(f)) || cdn_fetch_abandoned(f)) {
        xfer_done(up, x, rc);
        return false;
    }
    int m = member_take(up, x);
    if (m < 0) {
        xfer_done(up, x, rc);
        return false;
    }
    cdn_info("upstream %s %s: %s; trying %s", cdn_fetch_method(f), x->url,
             x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc), x->set->url[m]);
    atomic_fetch_add_explicit(&up->n_errors, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&up->n_retries, 1, memory_order_relaxed);
    xfer_reset(x);
    x->retried = true;
    return xfer_start(up, x, m);
}

/* Enforces our own timers: first byte (no headers yet) and idle (no body progress). */
static int64_t
check_timeouts(struct cdn_upstream *up, int64_t now)
{
    const struct cdn_config *cfg = up->cfg;
    int64_t next = now + 1000;
    struct xfer **pp = &up->active;
    while (*pp) {
        struct xfer *x = *pp;
        int64_t limit =
            x->headers_done ? cfg->origin_idle_timeout_ms : cfg->origin_first_byte_timeout_ms;
        bool waiting_on_us = x->paused;
        int64_t deadline = x->last_ms + limit;
        if (!x->headers_done && !x->followers_released) {
            /* Requests that joined this fetch stop waiting for it after collapse_wait. */
            int64_t fw = x->started_ms + cfg->collapse_wait_ms;
            if (now >= fw) {
                x->followers_released = true;
                cdn_fetch_release_followers(x->f);
            } else if (fw < next) {
                next = fw;
            }
        }
        if (!waiting_on_us && now >= deadline) {
            if (x->headers_done)
                xfer_fail(x, 504, "origin idle for more than %lld ms", (long long)limit);
            else
                xfer_fail(x, 504, "timeout: origin sent no response headers within %lld ms",
                          (long long)limit);
            cdn_warn("upstream %s %s: %s", cdn_fetch_method(x->f), x->url, x->reason);
            xfer_done(up, x, CURLE_OPERATION_TIMEDOUT);
            *pp = x->next;
            xfer_free(x);
            atomic_fetch_sub_explicit(&up->n_active, 1, memory_order_relaxed);
            continue;
        }
        if (!waiting_on_us && deadline < next)
            next = deadline;
        pp = &x->next;
    }
    return next;
}

/* Resumes transfers whose readers made room, and retries those that waited for the store (at most
 * once a millisecond: rounds can follow each other without a wait). */
static void
resume_kicked(struct cdn_upstream *up, int64_t now)
{
    bool retry_sinks = now >= up->next_sink_retry_ms;
    if (retry_sinks)
        up->next_sink_retry_ms = now + 1;
    struct xfer **pp = &up->active;
    while (*pp) {
        struct xfer *x = *pp;
        if (x->sink_wait && retry_sinks) {
            x->sink_wait = false;
            x->paused = false;
            curl_easy_pause(x->easy, CURLPAUSE_CONT); /* may pause again at once */
        }
        if (cdn_fetch_take_resume(x->f)) {
            if (cdn_fetch_abandoned(x->f) && cdn_fetch_state(x->f) <= CDN_FETCH_HEADERS) {
                xfer_fail(x, 502, "every client went away");
                xfer_done(up, x, CURLE_ABORTED_BY_CALLBACK);
                *pp = x->next;
                xfer_free(x);
                atomic_fetch_sub_explicit(&up->n_active, 1, memory_order_relaxed);
                continue;
            }
            x->paused = false;
            x->last_ms = cdn_now_ms();
            curl_easy_pause(x->easy, CURLPAUSE_CONT);
        }
        pp = &x->next;
    }
}

/* ---- health checks ---- */

static size_t
discard(char *p, size_t size, size_t nmemb, void *arg)
{
    return size * nmemb;
}

static void
probe_start(struct cdn_upstream *up, int m, bool http)
{
    const struct cdn_config *cfg = up->cfg;
    struct probe *pr = &up->probes[m];
    CURL *e = curl_easy_init();
    if (e == NULL)
        return; /* checked again next interval */
    const char *origin = up->set->url[m];
    const char *path = http ? cfg->origin_health_path : "";
    pr->url = cdn_malloc(strlen(origin) + strlen(path) + 1);
    strcpy(pr->url, origin);
    strcat(pr->url, path);
    pr->http = http;
    /* A check slower than its interval (at least a second) failed; so did one slower than a
     * request would be allowed to be. */
    long limit = cfg->origin_health_interval_ms < 1000 ? 1000 : cfg->origin_health_interval_ms;
    long request_limit =
        (long)cfg->origin_connect_timeout_ms + (long)cfg->origin_first_byte_timeout_ms;
    if (request_limit < limit)
        limit = request_limit;
    curl_easy_setopt(e, CURLOPT_URL, pr->url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_PROXY, ""); /* never a proxy from the environment */
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->origin_connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, limit);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "cdnode/" CDNODE_VERSION " health-check");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    if (cfg->origin_ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, cfg->origin_ca_file);
    if (!http)
        curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L);
    if (curl_multi_add_handle(up->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        free(pr->url);
        pr->url = NULL;
        return;
    }
    pr->easy = e;
}

static void
probe_free(struct cdn_upstream *up, struct probe *pr)
{
    curl_multi_remove_handle(up->multi, pr->easy);
    curl_easy_cleanup(pr->easy);
    pr->easy = NULL;
    free(pr->url);
    pr->url = NULL;
}

/* Every member gets an HTTP check when a health path is set, else only members that are down get
 * a connect (nothing else would ever bring them back). One check per member at a time. */
static void
checks_start(struct cdn_upstream *up)
{
    bool http = up->cfg->origin_health_path != NULL;
    for (size_t m = 0; m < up->set->n; m++) {
        if (up->probes[m].easy)
            continue;
        pthread_mutex_lock(&up->pool_mu);
        bool healthy = member_of(up->set, m)->healthy;
        pthread_mutex_unlock(&up->pool_mu);
        if (http || !healthy)
            probe_start(up, (int)m, http);
    }
}

/* Returns true when easy was a health check (now scored and freed). */
static bool
probe_done(struct cdn_upstream *up, CURL *easy, CURLcode rc)
{
    for (size_t m = 0; m < up->set->n; m++) {
        struct probe *pr = &up->probes[m];
        if (pr->easy != easy)
            continue;
        char what[CURL_ERROR_SIZE + 64];
        bool ok = rc == CURLE_OK;
        if (!ok) {
            snprintf(what, sizeof(what), "health check %s: %s", pr->url, curl_easy_strerror(rc));
        } else if (pr->http) {
            long code = 0;
            curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
            ok = code >= 200 && code < 400;
            snprintf(what, sizeof(what), "health check %s answered %ld", pr->url, code);
        } else {
            snprintf(what, sizeof(what), "connect to %s", pr->url);
        }
        if (!ok)
            cdn_debug("upstream %s: %s", up->set->url[m], what);
        atomic_fetch_add_explicit(&up->n_checks, 1, memory_order_relaxed);
        probe_free(up, pr);
        observe(up, up->set, (int)m, ok, true, what);
        return true;
    }
    return false;
}

/* ---- the loop ---- */

/* Makes `fresh` the member set (upstream thread): checks of the old set's members are dropped
 * (their indices mean other URLs now) and run again at once for the new one. */
static void
install(struct cdn_upstream *up, struct members *fresh)
{
    for (size_t m = 0; m < up->set->n; m++)
        if (up->probes[m].easy)
            probe_free(up, &up->probes[m]);
    pthread_mutex_lock(&up->pool_mu);
    struct members *old = up->set;
    up->set = fresh;
    members_unref(old);
    pthread_mutex_unlock(&up->pool_mu);
    up->next_check_ms = cdn_now_ms();
}

static void
finished(struct cdn_upstream *up, CURL *easy, CURLcode rc)
{
    if (probe_done(up, easy, rc))
        return;
    struct xfer *x = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
    struct xfer **pp = &up->active;
    while (*pp != x) {
        CDN_ASSERT(*pp != NULL); /* libcurl only holds probes and active transfers */
        pp = &(*pp)->next;
    }
    if (xfer_end(up, x, rc))
        return; /* started again elsewhere: stays where it is on the list */
    *pp = x->next;
    xfer_free(x);
    atomic_fetch_sub_explicit(&up->n_active, 1, memory_order_relaxed);
}

static void *
run(void *arg)
{
    struct cdn_upstream *up = arg;
    pthread_setname_np(pthread_self(), "cdn-fetch"); /* visible in top -H and perf */
    const struct cdn_config *cfg = up->cfg;
    up->next_check_ms = cdn_now_ms();
    struct ready {
        curl_socket_t fd;
        int bits;
    } *ready = NULL;
    size_t n_ready = 0, cap_ready = 0;
    for (;;) {
        atomic_store(&up->wake_pending, false); /* before the queue is read: no lost wake-up */
        pthread_mutex_lock(&up->mu);
        struct xfer *q = up->queue;
        up->queue = NULL;
        up->queue_end = &up->queue;
        bool stopping = up->stopping;
        struct members *fresh = up->pending;
        up->pending = NULL;
        pthread_mutex_unlock(&up->mu);
        if (fresh)
            install(up, fresh);
        while (q) {
            struct xfer *x = q;
            q = q->next;
            if (stopping) {
                cdn_fetch_fail(x->f, 503, "node is shutting down");
                xfer_free(x);
                continue;
            }
            int m = member_take(up, x);
            CDN_ASSERT(m >= 0); /* nothing is excluded yet */
            if (!xfer_start(up, x, m)) {
                xfer_free(x);
                continue;
            }
            x->next = up->active;
            up->active = x;
            atomic_fetch_add_explicit(&up->n_active, 1, memory_order_relaxed);
        }
        if (stopping)
            break;
        int64_t now = cdn_now_ms();
        if (now >= up->next_check_ms) {
            checks_start(up);
            up->next_check_ms = now + cfg->origin_health_interval_ms;
        }
        resume_kicked(up, now);
        int running = 0;
        /* Sockets found ready by the last poll; callbacks may change up->pfd meanwhile. */
        for (size_t i = 0; i < n_ready; i++)
            curl_multi_socket_action(up->multi, ready[i].fd, ready[i].bits, &running);
        n_ready = 0;
        if (curl_wait_ms(up) == 0)
            curl_multi_socket_action(up->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(up->multi, &left))) {
            if (msg->msg == CURLMSG_DONE)
                finished(up, msg->easy_handle, msg->data.result);
        }
        /* One wake-up per reader for everything this round brought (cdn_fetch_defer_wakes). */
        for (struct xfer *x = up->active; x; x = x->next)
            if (x->touched) {
                x->touched = false;
                cdn_fetch_flush_wakes(x->f);
            }
        now = cdn_now_ms();
        int64_t next = check_timeouts(up, now);
        if (up->next_check_ms < next)
            next = up->next_check_ms;
        bool sink_waits = false;
        for (struct xfer *x = up->active; x; x = x->next)
            sink_waits |= x->sink_wait;
        long wait = (long)(next - now), curl_wait = curl_wait_ms(up);
        if (curl_wait >= 0 && curl_wait < wait)
            wait = curl_wait;
        if (sink_waits && wait > 5)
            wait = 5; /* the store drains on its own thread: look again shortly */
        if (wait < 0)
            wait = 0;
        if (poll(up->pfd, up->n_pfd, (int)wait) <= 0)
            continue;
        if (up->pfd[0].revents) {
            uint64_t n;
            if (read(up->wake_fd, &n, sizeof(n)) < 0 && errno != EAGAIN && errno != EINTR)
                cdn_warn("upstream wake-up: %s", strerror(errno));
        }
        for (size_t i = 1; i < up->n_pfd; i++) {
            short r = up->pfd[i].revents;
            if (r == 0)
                continue;
            ready = grow(ready, &cap_ready, n_ready + 1, sizeof(*ready));
            ready[n_ready++] = (struct ready){
                .fd = up->pfd[i].fd,
                .bits = ((r & (POLLIN | POLLHUP | POLLERR)) ? CURL_CSELECT_IN : 0) |
                        ((r & POLLOUT) ? CURL_CSELECT_OUT : 0) |
                        ((r & (POLLERR | POLLNVAL)) ? CURL_CSELECT_ERR : 0)};
        }
    }
    free(ready);
    while (up->active) {
        struct xfer *x = up->active;
        up->active = x->next;
        cdn_fetch_fail(x->f, 503, "node is shutting down");
        xfer_free(x);
    }
    for (size_t m = 0; m < up->set->n; m++)
        if (up->probes[m].easy)
            probe_free(up, &up->probes[m]);
    return NULL;
}

struct cdn_upstream *
cdn_upstream_start(const struct cdn_config *cfg)
{
    struct cdn_upstream *up = cdn_calloc(1, sizeof(*up));
    up->magic = UPSTREAM_MAGIC;
    up->cfg = cfg;
    CURLcode init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (init_rc != CURLE_OK) {
        cdn_error("libcurl initialization failed: %s", curl_easy_strerror(init_rc));
        free(up);
        return NULL;
    }
    up->queue_end = &up->queue;
    up->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (up->wake_fd < 0) {
        cdn_error("upstream: eventfd: %s", strerror(errno));
        free(up);
        curl_global_cleanup();
        return NULL;
    }
    up->pfd = grow(NULL, &up->cap_pfd, 1, sizeof(*up->pfd));
    up->pfd[0] = (struct pollfd){.fd = up->wake_fd, .events = POLLIN};
    up->n_pfd = 1;
    up->set = members_new(cfg, NULL);
    up->multi = curl_multi_init();
    curl_multi_setopt(up->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(up->multi, CURLMOPT_SOCKETDATA, up);
    /* Per origin host:port, as libcurl counts it; transfers beyond it wait inside libcurl (their
     * first-byte timer runs meanwhile). The idle cache may hold every origin's connections. */
    curl_multi_setopt(up->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)cfg->origin_max_connections);
    curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS,
                      (long)cfg->origin_max_connections * (long)CDN_MAX_ORIGINS);
    pthread_mutex_init(&up->mu, NULL);
    pthread_mutex_init(&up->pool_mu, NULL);
    if (pthread_create(&up->thread, NULL, run, up) != 0) {
        cdn_error("cannot start the upstream thread");
        curl_multi_cleanup(up->multi);
        close(up->wake_fd);
        free(up->pfd);
        pthread_mutex_destroy(&up->mu);
        pthread_mutex_destroy(&up->pool_mu);
        members_unref(up->set);
        free(up);
        curl_global_cleanup();
        return NULL;
    }
    return up;
}

void
cdn_upstream_submit(struct cdn_upstream *up, struct cdn_fetch *f)
{
    CDN_CHECK_MAGIC(up, UPSTREAM_MAGIC);
    cdn_fetch_defer_wakes(f); /* this thread's loop flushes them (run) */
    pthread_mutex_lock(&up->mu);
    if (up->stopping) {
        pthread_mutex_unlock(&up->mu);
        cdn_fetch_fail(f, 503, "node is shutting down");
        return;
    }
    uint64_t inflight = atomic_load(&up->n_inflight);
    if (inflight >= up->cfg->max_inflight_misses) {
        pthread_mutex_unlock(&up->mu);
        atomic_fetch_add_explicit(&up->n_shed, 1, memory_order_relaxed);
        char why[96];
        snprintf(why, sizeof(why), "node overloaded: %llu requests in flight upstream",
                 (unsigned long long)inflight);
        cdn_debug("upstream %s %s: %s", cdn_fetch_method(f), cdn_fetch_target(f), why);
        cdn_fetch_fail(f, 503, why);
        return;
    }
    atomic_fetch_add(&up->n_inflight, 1);
    struct xfer *x = cdn_calloc(1, sizeof(*x));
    x->started_ms = cdn_now_ms();
    x->up = up;
    x->f = f;
    x->member = -1;
    cdn_fetch_ref(f);
    *up->queue_end = x;
    up->queue_end = &x->next;
    pthread_mutex_unlock(&up->mu);
    wake(up);
}

void
cdn_upstream_stop(struct cdn_upstream *up)
{
    if (up == NULL)
        return;
    CDN_CHECK_MAGIC(up, UPSTREAM_MAGIC);
    pthread_mutex_lock(&up->mu);
    up->stopping = true;
    pthread_mutex_unlock(&up->mu);
    wake(up);
    pthread_join(up->thread, NULL);
    while (up->n_idle > 0)
        curl_easy_cleanup(up->idle[--up->n_idle]);
    curl_multi_cleanup(up->multi); /* may still tell on_socket about sockets it closes */
    close(up->wake_fd);
    free(up->pfd);
    free(up->slot);
    members_unref(up->pending);
    members_unref(up->set);
    pthread_mutex_destroy(&up->mu);
    pthread_mutex_destroy(&up->pool_mu);
    up->magic = 0;
    free(up);
    curl_global_cleanup();
}

void
cdn_upstream_stats(struct cdn_upstream *up, struct cdn_upstream_stats *out)
{
    CDN_CHECK_MAGIC(up, UPSTREAM_MAGIC);
    out->requests = atomic_load(&up->n_requests);
    out->errors = atomic_load(&up->n_errors);
    out->bytes_in = atomic_load(&up->n_bytes);
    out->active = atomic_load(&up->n_active);
    out->retries = atomic_load(&up->n_retries);
    out->shed = atomic_load(&up->n_shed);
    out->marked_down = atomic_load(&up->n_down);
    out->marked_up = atomic_load(&up->n_up);
    out->health_checks = atomic_load(&up->n_checks);
}

size_t
cdn_upstream_origins(struct cdn_upstream *up, struct cdn_origin_status *out, size_t max)
{
    CDN_CHECK_MAGIC(up, UPSTREAM_MAGIC);
    pthread_mutex_lock(&up->pool_mu);
    struct members *set = up->set;
    size_t n = set->n;
    for (size_t i = 0; i < n && i < max; i++) {
        const struct cdn_pool_member *m = member_of(set, i);
        out[i] = (struct cdn_origin_status){.parent = i < set->n_parents,
                                            .healthy = m->healthy,
                                            .outstanding = m->outstanding,
                                            .requests = m->requests,
                                            .failures = m->failures};
        snprintf(out[i].url, sizeof(out[i].url), "%s", set->url[i]);
    }
    pthread_mutex_unlock(&up->pool_mu);
    return n;
}

void
cdn_upstream_reconfigure(struct cdn_upstream *up, const struct cdn_config *cfg)
{
    CDN_CHECK_MAGIC(up, UPSTREAM_MAGIC);
    pthread_mutex_lock(&up->pool_mu);
    struct members *fresh = members_new(cfg, up->set);
    pthread_mutex_unlock(&up->pool_mu);
    pthread_mutex_lock(&up->mu);
    struct members *dropped = up->pending; /* two reloads before the thread looked: last wins */
    up->pending = fresh;
    pthread_mutex_unlock(&up->mu);
    if (dropped) {
        pthread_mutex_lock(&up->pool_mu);
        members_unref(dropped);
        pthread_mutex_unlock(&up->pool_mu);
    }
    wake(up);
}

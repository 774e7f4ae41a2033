/*
 * upstream.c: one thread, one CURLM, many transfers (see upstream.h).
 *
 * Model: submitters push fetches on a locked queue and call curl_multi_wakeup(). The loop adds
 * queued fetches as easy handles, resumes transfers whose readers made room (the fetch kicks us
 * through curl_multi_wakeup), enforces timeouts, runs curl_multi_perform and finishes completed
 * transfers. Everything a transfer owns (struct xfer) is touched only by this thread.
 *
 * Response validation happens in the header callback, before the fetch publishes anything:
 * obsolete line folding, bad field names, conflicting Content-Length, Content-Length with
 * Transfer-Encoding and oversized header blocks all fail the transfer with 502.
 */
#include "cdnode/upstream.h"
#include "cdnode/arena.h"
#include "cdnode/common.h"
#include "cdnode/config.h"
#include "cdnode/fetch.h"
#include "cdnode/headers.h"
#include "cdnode/log.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#define UPSTREAM_MAGIC 0x0b5e7ea1u

struct xfer {
    struct xfer *next;
    struct cdn_upstream *up;
    struct cdn_fetch *f;
    CURL *easy;
    struct curl_slist *hdrs;
    char *url; /* origin + target of this attempt */
    struct cdn_hdrs resp;
    int status;
    size_t hdr_bytes;
    bool headers_done;
    bool failed;
    int fail_status;
    bool paused;
    bool sink_wait; /* paused because the store was behind: retried on a short timer */
    int64_t last_ms;
    char reason[256];
    char errbuf[CURL_ERROR_SIZE];
};

struct cdn_upstream {
    uint32_t magic;
    const struct cdn_config *cfg;
    CURLM *multi;
    pthread_t thread;
    pthread_mutex_t mu;
    struct xfer *queue; /* under mu */
    bool stopping;      /* under mu */
    struct xfer *active; /* upstream thread only */
    _Atomic uint64_t n_requests, n_errors, n_bytes, n_active;
};

static void
xfer_fail(struct xfer *x, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

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
        while (cdn_list_next(&p, end, &e, &el)) {
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
    x->last_ms = cdn_now_ms();
    atomic_fetch_add_explicit(&x->up->n_bytes, n, memory_order_relaxed);
    return n;
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

static void
kick(void *arg)
{
    struct cdn_upstream *up = arg;
    curl_multi_wakeup(up->multi);
}

static void
xfer_free(struct xfer *x)
{
    if (x->easy) {
        curl_multi_remove_handle(x->up->multi, x->easy);
        curl_easy_cleanup(x->easy);
    }
    curl_slist_free_all(x->hdrs);
    free(x->url);
    cdn_fetch_unref(x->f);
    free(x);
}

static bool
xfer_start(struct cdn_upstream *up, struct xfer *x)
{
    const struct cdn_config *cfg = up->cfg;
    struct cdn_fetch *f = x->f;
    CURL *e = curl_easy_init();
    if (e == NULL) {
        cdn_fetch_fail(f, 502, "upstream client could not be initialized");
        return false;
    }
    x->easy = e;
    const char *method = cdn_fetch_method(f);
    for (const char *const *h = cdn_fetch_req_headers(f); *h; h++)
        x->hdrs = curl_slist_append(x->hdrs, *h);
    const char *target = cdn_fetch_target(f);
    free(x->url);
    x->url = cdn_malloc(strlen(cfg->origins[0]) + strlen(target) + 1);
    strcpy(x->url, cfg->origins[0]);
    if (strcmp(target, "*") != 0) /* OPTIONS * goes to the origin's root */
        strcat(x->url, target);
    curl_easy_setopt(e, CURLOPT_URL, x->url);
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    /* Relay bytes as the origin sent them: never decode Content-Encoding (chunked framing is
     * still removed, the front end frames the body itself). */
    curl_easy_setopt(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->origin_connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 64L * 1024);
    if (cfg->origin_ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, cfg->origin_ca_file);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (cdn_fetch_req_has_body(f)) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, x);
        if (cdn_fetch_req_body_len(f) >= 0)
            curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)cdn_fetch_req_body_len(f));
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
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

static void
xfer_done(struct cdn_upstream *up, struct xfer *x, CURLcode rc)
{
    struct cdn_fetch *f = x->f;
    if (x->failed) {
        cdn_fetch_fail(f, x->fail_status, x->reason);
    } else if (rc == CURLE_OK && x->headers_done) {
        cdn_fetch_finish(f);
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

/* Enforces our own timers: first byte (no headers yet) and idle (no body progress). */
static int64_t
check_timeouts(struct cdn_upstream *up, int64_t now)
{
    const struct cdn_config *cfg = up->cfg;
    int64_t next = now + 1000;
    struct xfer **pp = &up->active;
    while (*pp) {
        struct xfer *x = *pp;
        int64_t limit = x->headers_done ? cfg->origin_idle_timeout_ms
                                        : cfg->origin_first_byte_timeout_ms;
        bool waiting_on_us = x->paused;
        int64_t deadline = x->last_ms + limit;
        if (!waiting_on_us && now >= deadline) {
            if (x->headers_done)
                xfer_fail(x, 504, "origin idle for more than %lld ms", (long long)limit);
            else
                xfer_fail(x, 504, "timeout: origin sent no response headers within %lld ms",
                          (long long)limit);
            cdn_warn("upstream %s %s: %s", cdn_fetch_method(x->f), x->url,
                     x->reason);
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

/* Resumes transfers whose readers made room, and retries those that waited for the store. */
static void
resume_kicked(struct cdn_upstream *up)
{
    struct xfer **pp = &up->active;
    while (*pp) {
        struct xfer *x = *pp;
        if (x->sink_wait) {
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

static void *
run(void *arg)
{
    struct cdn_upstream *up = arg;
    for (;;) {
        pthread_mutex_lock(&up->mu);
        struct xfer *q = up->queue;
        up->queue = NULL;
        bool stopping = up->stopping;
        pthread_mutex_unlock(&up->mu);
        while (q) {
            struct xfer *x = q;
            q = q->next;
            if (stopping || !xfer_start(up, x)) {
                if (stopping)
                    cdn_fetch_fail(x->f, 503, "node is shutting down");
                xfer_free(x);
                continue;
            }
            x->next = up->active;
            up->active = x;
            atomic_fetch_add_explicit(&up->n_active, 1, memory_order_relaxed);
        }
        if (stopping)
            break;
        resume_kicked(up);
        int running = 0;
        curl_multi_perform(up->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(up->multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            struct xfer *x = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            CURLcode rc = m->data.result;
            for (struct xfer **pp = &up->active; *pp; pp = &(*pp)->next) {
                if (*pp == x) {
                    *pp = x->next;
                    break;
                }
            }
            xfer_done(up, x, rc);
            xfer_free(x);
            atomic_fetch_sub_explicit(&up->n_active, 1, memory_order_relaxed);
        }
        int64_t now = cdn_now_ms();
        int64_t next = check_timeouts(up, now);
        bool sink_waits = false;
        for (struct xfer *x = up->active; x; x = x->next)
            sink_waits |= x->sink_wait;
        long wait = (long)(next - now);
        if (sink_waits && wait > 5)
            wait = 5; /* the store drains on its own thread: look again shortly */
        if (wait < 1)
            wait = 1;
        curl_multi_poll(up->multi, NULL, 0, (int)wait, NULL);
    }
    while (up->active) {
        struct xfer *x = up->active;
        up->active = x->next;
        cdn_fetch_fail(x->f, 503, "node is shutting down");
        xfer_free(x);
    }
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
    up->multi = curl_multi_init();
    curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS, 256L);
    pthread_mutex_init(&up->mu, NULL);
    if (pthread_create(&up->thread, NULL, run, up) != 0) {
        cdn_error("cannot start the upstream thread");
        curl_multi_cleanup(up->multi);
        free(up);
        return NULL;
    }
    return up;
}

void
cdn_upstream_submit(struct cdn_upstream *up, struct cdn_fetch *f)
{
    CDN_CHECK_MAGIC(up, UPSTREAM_MAGIC);
    struct xfer *x = cdn_calloc(1, sizeof(*x));
    x->up = up;
    x->f = f;
    pthread_mutex_lock(&up->mu);
    if (up->stopping) {
        pthread_mutex_unlock(&up->mu);
        free(x);
        cdn_fetch_fail(f, 503, "node is shutting down");
        return;
    }
    cdn_fetch_ref(f);
    struct xfer **pp = &up->queue;
    while (*pp)
        pp = &(*pp)->next;
    *pp = x;
    pthread_mutex_unlock(&up->mu);
    curl_multi_wakeup(up->multi);
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
    curl_multi_wakeup(up->multi);
    pthread_join(up->thread, NULL);
    curl_multi_cleanup(up->multi);
    pthread_mutex_destroy(&up->mu);
    up->magic = 0;
    free(up);
    curl_global_cleanup();
}

void
cdn_upstream_stats(struct cdn_upstream *up, struct cdn_upstream_stats *out)
{
    out->requests = atomic_load(&up->n_requests);
    out->errors = atomic_load(&up->n_errors);
    out->bytes_in = atomic_load(&up->n_bytes);
    out->active = atomic_load(&up->n_active);
}

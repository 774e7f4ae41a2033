/*
 * peers.c: purge fan-out (see peers.h).
 *
 * Model: cdn_peers_forward() copies a job into a struct fan and pushes it on a locked queue, then
 * wakes the thread with curl_multi_wakeup(). The thread owns everything else: it moves queued
 * fans to its active list and starts their first stage (the parents, or the children when there
 * are none) as easy handles on its one multi handle, runs the transfers, and when the last
 * transfer of a stage ends starts the next stage or, after the children, calls done and frees
 * the fan. A fan is touched by the submitter only until it is queued, then only by the thread.
 *
 * Every transfer carries CURLOPT_TIMEOUT_MS = the job's timeout, so libcurl ends it (connect,
 * send or a peer that never answers) and a stage cannot outlive the timeout by more than a poll
 * interval. Answers are read up to ANSWER_MAX bytes; a peer's purge answer is a few dozen.
 */
#include "cdnode/peers.h"
#include "cdnode/arena.h"
#include "cdnode/common.h"
#include "cdnode/log.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#define PEERS_MAGIC 0x9ee250a1u
#define FAN_MAGIC 0x9ee250a2u
#define ANSWER_MAX 4096

struct fan;

/* One peer request. */
struct xfer {
    struct fan *fan;
    size_t i; /* index in fan->res */
    CURL *easy;
    char body[ANSWER_MAX];
    size_t len;
};

struct fan {
    uint32_t magic;
    struct fan *next;
    struct cdn_arena *arena; /* the copies of the job */
    struct cdn_peer_result *res;
    struct xfer *x; /* one per peer, same order as res */
    size_t n_parents, n;
    const char *query;
    struct curl_slist *hdrs;
    const char *ca_file; /* NULL: the system CA store */
    unsigned timeout_ms;
    unsigned running; /* transfers of the current stage still going */
    enum { STAGE_NONE, STAGE_PARENTS, STAGE_CHILDREN } stage; /* the one started last */
    cdn_peers_done_fn done;
    void *arg;
};

struct cdn_peers {
    uint32_t magic;
    CURLM *multi;
    pthread_t thread;
    bool thread_running;
    pthread_mutex_t mu; /* guards queue and stopping */
    struct fan *queue;  /* submitted, not yet seen by the thread (LIFO; order does not matter) */
    bool stopping;
    struct fan *active; /* thread only */
    _Atomic uint64_t forwarded, failures;
};

/* ---- pure functions ---- */

static bool
unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static char *
put_encoded(char *o, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (unreserved(*p)) {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    return o;
}

const char *
cdn_peers_query(const char *const *names, const char *const *values, size_t n, struct cdn_arena *a)
{
    size_t cap = 1;
    for (size_t i = 0; i < n; i++)
        cap += 3 * strlen(names[i]) + (values[i] ? 1 + 3 * strlen(values[i]) : 0) + 1;
    char *out = cdn_arena_alloc(a, cap), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            *o++ = '&';
        o = put_encoded(o, names[i]);
        if (values[i] != NULL) {
            *o++ = '=';
            o = put_encoded(o, values[i]);
        }
    }
    *o = '\0';
    return out;
}

const char *
cdn_peers_url_query(const char *host, const char *target, struct cdn_arena *a)
{
    if (target == NULL)
        return NULL;
    const char *url = target;
    if (target[0] == '/') {
        if (host == NULL || host[0] == '\0')
            return NULL;
        url = cdn_arena_printf(a, "http://%s%s", host, target);
    }
    const char *name = "url", *value = url;
    return cdn_peers_query(&name, &value, 1, a);
}

/* The string value of "key" in a flat JSON object, when it has no escapes and only printable
 * ASCII; copied into out (cut to outlen). Returns whether it was found. */
static bool
json_plain_string(const char *body, size_t len, const char *key, char *out, size_t outlen)
{
    char want[32];
    int wn = snprintf(want, sizeof(want), "\"%s\"", key);
    const char *end = body + len;
    const char *p = memmem(body, len, want, (size_t)wn);
    if (p == NULL)
        return false;
    p += wn;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    if (p == end || *p++ != ':')
        return false;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    if (p == end || *p++ != '"')
        return false;
    size_t k = 0;
    for (; p < end && *p != '"'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c >= 0x7f || c == '\\')
            return false;
        if (k + 1 < outlen)
            out[k++] = (char)c;
    }
    if (p == end)
        return false;
    out[k] = '\0';
    return true;
}

int
cdn_peers_read_answer(long status, const char *body, size_t len, struct cdn_peer_result *r)
{
    r->status = (int)status;
    r->purged = -1;
    r->error[0] = '\0';
    if (status == 200) {
        static const char key[] = "\"purged\"";
        const char *end = body + len;
        const char *p = len > 0 && body[0] == '{' ? memmem(body, len, key, sizeof(key) - 1) : NULL;
        if (p != NULL) {
            p += sizeof(key) - 1;
            while (p < end && (*p == ' ' || *p == '\t'))
                p++;
            if (p < end && *p == ':') {
                p++;
                while (p < end && (*p == ' ' || *p == '\t'))
                    p++;
                long v = 0;
                const char *d = p;
                while (p < end && *p >= '0' && *p <= '9' && v < 1000000000000L)
                    v = v * 10 + (*p++ - '0');
                if (p > d && p < end && (*p < '0' || *p > '9')) {
                    r->purged = v;
                    return 0;
                }
            }
        }
        snprintf(r->error, sizeof(r->error), "HTTP 200 without a purge count");
        return CDN_EPROTO;
    }
    char msg[96];
    if (json_plain_string(body, len, "error", msg, sizeof(msg)))
        snprintf(r->error, sizeof(r->error), "HTTP %ld: %s", status, msg);
    else
        snprintf(r->error, sizeof(r->error), "HTTP %ld", status);
    return CDN_EPROTO;
}

/* ---- the thread ---- */

static size_t
on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct xfer *x = arg;
    size_t n = size * nmemb, room = sizeof(x->body) - 1 - x->len;
    memcpy(x->body + x->len, data, n < room ? n : room);
    x->len += n < room ? n : room;
    return n;
}

static void
xfer_start(struct cdn_peers *p, struct fan *f, size_t i)
{
    struct xfer *x = &f->x[i];
    x->fan = f;
    x->i = i;
    CURL *e = curl_easy_init();
    if (e == NULL) {
        snprintf(f->res[i].error, sizeof(f->res[i].error), "cannot create a transfer");
        atomic_fetch_add(&p->forwarded, 1);
        atomic_fetch_add(&p->failures, 1);
        return;
    }
    const char *url = cdn_arena_printf(f->arena, "%s/purge?%s", f->res[i].url, f->query);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_PROXY, ""); /* peers are reached directly, whatever the env says */
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, f->hdrs);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "cdnode/" CDNODE_VERSION " purge");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)f->timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)f->timeout_ms);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    if (f->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, f->ca_file);
    if (curl_multi_add_handle(p->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        snprintf(f->res[i].error, sizeof(f->res[i].error), "cannot start a transfer");
        atomic_fetch_add(&p->forwarded, 1);
        atomic_fetch_add(&p->failures, 1);
        return;
    }
    x->easy = e;
    f->running++;
}

/* Records how the transfer of x ended (rc) and releases it. */
static void
xfer_end(struct cdn_peers *p, struct xfer *x, CURLcode rc, const char *stopping)
{
    struct fan *f = x->fan;
    struct cdn_peer_result *r = &f->res[x->i];
    bool ok = false;
    if (stopping != NULL) {
        snprintf(r->error, sizeof(r->error), "%s", stopping);
    } else if (rc == CURLE_OK) {
        long status = 0;
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        ok = cdn_peers_read_answer(status, x->body, x->len, r) == 0;
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        snprintf(r->error, sizeof(r->error), "timeout after %u ms", f->timeout_ms);
    } else if (rc == CURLE_COULDNT_CONNECT) {
        long err = 0;
        curl_easy_getinfo(x->easy, CURLINFO_OS_ERRNO, &err);
        if (err == ECONNREFUSED)
            snprintf(r->error, sizeof(r->error), "connection refused");
        else
            snprintf(r->error, sizeof(r->error), "cannot connect: %s",
                     err ? strerror((int)err) : curl_easy_strerror(rc));
    } else {
        snprintf(r->error, sizeof(r->error), "%s", curl_easy_strerror(rc));
    }
    atomic_fetch_add(&p->forwarded, 1);
    if (!ok) {
        atomic_fetch_add(&p->failures, 1);
        cdn_warn("purge peer %s: %s", r->url, r->error);
    }
    curl_multi_remove_handle(p->multi, x->easy);
    curl_easy_cleanup(x->easy);
    x->easy = NULL;
    f->running--;
}

static void
fan_free(struct fan *f)
{
    curl_slist_free_all(f->hdrs);
    f->magic = 0;
    cdn_arena_free(f->arena);
}

/* Starts stages until one has transfers running; returns false when the fan is finished. A
 * stage whose transfers all failed to start counts as done. */
static bool
fan_advance(struct cdn_peers *p, struct fan *f)
{
    while (f->running == 0) {
        size_t from, to;
        if (f->stage == STAGE_NONE) {
            f->stage = STAGE_PARENTS;
            from = 0;
            to = f->n_parents;
        } else if (f->stage == STAGE_PARENTS) {
            f->stage = STAGE_CHILDREN;
            from = f->n_parents;
            to = f->n;
        } else {
            return false;
        }
        for (size_t i = from; i < to; i++)
            xfer_start(p, f, i);
    }
    return true;
}

static void
fan_finish(struct fan *f)
{
    f->done(f->arg, f->res, f->n);
    fan_free(f);
}

static void
fan_unlink(struct cdn_peers *p, struct fan *f)
{
    struct fan **pp = &p->active;
    while (*pp != f)
        pp = &(*pp)->next;
    *pp = f->next;
}

static void *
run(void *arg)
{
    struct cdn_peers *p = arg;
    pthread_setname_np(pthread_self(), "cdn-peers"); /* visible in top -H and perf */
    for (;;) {
        pthread_mutex_lock(&p->mu);
        struct fan *q = p->queue;
        p->queue = NULL;
        bool stopping = p->stopping;
        pthread_mutex_unlock(&p->mu);
        while (q != NULL) {
            struct fan *f = q;
            q = q->next;
            CDN_CHECK_MAGIC(f, FAN_MAGIC);
            if (!fan_advance(p, f)) {
                fan_finish(f);
                continue;
            }
            f->next = p->active;
            p->active = f;
        }
        if (stopping)
            break;
        int running = 0;
        curl_multi_perform(p->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(p->multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            char *priv = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
            struct xfer *x = (struct xfer *)priv;
            CURLcode rc = msg->data.result;
            struct fan *f = x->fan;
            CDN_CHECK_MAGIC(f, FAN_MAGIC);
            xfer_end(p, x, rc, NULL);
            if (!fan_advance(p, f)) {
                fan_unlink(p, f);
                fan_finish(f);
            }
        }
        curl_multi_poll(p->multi, NULL, 0, 1000, NULL);
    }
    /* Stopping: whatever is still running fails now, including stages not started yet. */
    while (p->active != NULL) {
        struct fan *f = p->active;
        p->active = f->next;
        for (size_t i = 0; i < f->n; i++) {
            if (f->x[i].easy != NULL)
                xfer_end(p, &f->x[i], CURLE_OK, "node stopping");
            else if (f->x[i].fan == NULL)
                snprintf(f->res[i].error, sizeof(f->res[i].error), "node stopping");
        }
        fan_finish(f);
    }
    return NULL;
}

struct cdn_peers *
cdn_peers_start(void)
{
    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK) {
        cdn_error("libcurl initialization failed: %s", curl_easy_strerror(rc));
        return NULL;
    }
    struct cdn_peers *p = cdn_calloc(1, sizeof(*p));
    p->magic = PEERS_MAGIC;
    p->multi = curl_multi_init();
    pthread_mutex_init(&p->mu, NULL);
    if (p->multi == NULL || pthread_create(&p->thread, NULL, run, p) != 0) {
        cdn_error("cannot start the purge peers thread");
        if (p->multi)
            curl_multi_cleanup(p->multi);
        pthread_mutex_destroy(&p->mu);
        free(p);
        curl_global_cleanup();
        return NULL;
    }
    p->thread_running = true;
    return p;
}

void
cdn_peers_forward(struct cdn_peers *p, const struct cdn_peers_job *job, cdn_peers_done_fn done,
                  void *arg)
{
    CDN_CHECK_MAGIC(p, PEERS_MAGIC);
    size_t n = job->n_parents + job->n_children;
    struct cdn_arena *a = cdn_arena_new(1024);
    struct fan *f = cdn_arena_alloc(a, sizeof(*f));
    memset(f, 0, sizeof(*f));
    f->magic = FAN_MAGIC;
    f->arena = a;
    f->n = n;
    f->n_parents = job->n_parents;
    f->done = done;
    f->arg = arg;
    f->timeout_ms = job->timeout_ms;
    f->ca_file = job->ca_file ? cdn_arena_strdup(a, job->ca_file) : NULL;
    f->query = cdn_arena_strdup(a, job->query);
    f->res = cdn_arena_alloc(a, (n ? n : 1) * sizeof(*f->res));
    f->x = cdn_arena_alloc(a, (n ? n : 1) * sizeof(*f->x));
    memset(f->res, 0, (n ? n : 1) * sizeof(*f->res));
    memset(f->x, 0, (n ? n : 1) * sizeof(*f->x));
    for (size_t i = 0; i < n; i++) {
        bool parent = i < job->n_parents;
        f->res[i].url =
            cdn_arena_strdup(a, parent ? job->parents[i] : job->children[i - job->n_parents]);
        f->res[i].role = parent ? CDN_PEER_PARENT : CDN_PEER_CHILD;
        f->res[i].purged = -1;
    }
    f->hdrs = curl_slist_append(
        NULL, cdn_arena_printf(a, "Authorization: Bearer %s", job->token ? job->token : ""));
    f->hdrs = curl_slist_append(f->hdrs, cdn_arena_printf(a, CDN_PEERS_MARKER ": %s", job->origin));
    f->hdrs = curl_slist_append(f->hdrs, "Content-Type:"); /* nothing is posted */
    f->hdrs = curl_slist_append(f->hdrs, "Expect:");
    pthread_mutex_lock(&p->mu);
    bool stopping = p->stopping;
    if (!stopping && n > 0) {
        f->next = p->queue;
        p->queue = f;
    }
    pthread_mutex_unlock(&p->mu);
    if (n > 0 && !stopping) {
        curl_multi_wakeup(p->multi);
        return;
    }
    for (size_t i = 0; i < n; i++)
        snprintf(f->res[i].error, sizeof(f->res[i].error), "node stopping");
    fan_finish(f);
}

void
cdn_peers_stats(struct cdn_peers *p, struct cdn_peers_stats *out)
{
    CDN_CHECK_MAGIC(p, PEERS_MAGIC);
    out->forwarded = atomic_load(&p->forwarded);
    out->failures = atomic_load(&p->failures);
}

void
cdn_peers_stop(struct cdn_peers *p)
{
    if (p == NULL)
        return;
    CDN_CHECK_MAGIC(p, PEERS_MAGIC);
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_mutex_unlock(&p->mu);
    if (!p->thread_running)
        return;
    curl_multi_wakeup(p->multi);
    pthread_join(p->thread, NULL);
    p->thread_running = false;
}

void
cdn_peers_free(struct cdn_peers *p)
{
    if (p == NULL)
        return;
    cdn_peers_stop(p);
    curl_multi_cleanup(p->multi);
    pthread_mutex_destroy(&p->mu);
    p->magic = 0;
    free(p);
    curl_global_cleanup();
}

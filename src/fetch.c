/*
 * fetch.c: the shared upstream exchange (see fetch.h for the model).
 *
 * Invariants, all under f->mu:
 *  - state only moves forward: PENDING -> HEADERS -> DONE, or to FAILED from PENDING/HEADERS.
 *  - chunks hold body bytes [base, received); a chunk is freed once every attached waiter's
 *    offset is past its end; with no waiter attached nothing is kept.
 *  - a waiter is parked only by itself (through cdn_fetch_wait_headers/read/upload_push) and
 *    woken only by the producer side; both under the mutex, so no wake-up can be lost.
 *  - the upload pipe holds at most UPLOAD_CAP bytes.
 */
#include "cdnode/fetch.h"
#include "cdnode/arena.h"
#include "cdnode/common.h"

#include <pthread.h>
#include <string.h>

#define FETCH_MAGIC 0xfe7c4a11u
#define CHUNK_SIZE (64 * 1024) /* at most; a body of known length gets no more than it needs */
#define UPLOAD_CAP (64 * 1024)

struct chunk {
    struct chunk *next;
    size_t len, cap;
    char data[];
};

struct cdn_fetch {
    uint32_t magic;
    pthread_mutex_t mu;
    int refs;
    /* request (immutable) */
    char *method;
    char *target;
    char *key;
    char **req_headers;
    int64_t req_body_len;
    bool req_has_body;
    size_t window;
    /* response */
    enum cdn_fetch_state state;
    int status;
    struct cdn_hdrs resp;
    int64_t content_length;
    int err_status;
    char *err_reason;
    struct cdn_arena *arena;
    /* body window */
    struct chunk *head, *tail;
    uint64_t base;     /* offset of head's first byte */
    uint64_t received; /* total body bytes appended */
    bool body_error;
    bool body_complete; /* every byte arrived; DONE waits for the store when storing */
    bool head_held;     /* head recorded but not published until cdn_fetch_stored() */
    bool store_acked;   /* cdn_fetch_stored() came before the head was even recorded */
    bool followers_released; /* followers stop waiting for the head */
    /* sink (producer thread only, except `storing` and `stored_gzip`, published with the head) */
    struct cdn_fetch_sink sink;
    bool has_sink;
    bool storing;
    bool stored_gzip;
    const void *sink_note; /* set by head(), published with the head */
    bool sink_ended;
    bool sink_blocked;
    /* settle hook */
    void (*settle)(void *arg, struct cdn_fetch *f, enum cdn_settle how);
    void *settle_arg;
    bool settled;
    struct cdn_hdrs client_req;
    /* readers */
    struct cdn_waiter *waiters;
    unsigned n_waiters;
    bool ever_attached;
    /* readers' wake-ups from the producer: batched when it asked (cdn_fetch_defer_wakes) */
    bool defer_wakes;
    bool wake_pending;
    /* producer wake-up */
    void (*kick)(void *);
    void *kick_arg;
    bool want_resume;
    bool producer_paused;
    /* request body pipe */
    char *up_buf;
    size_t up_len;
    bool up_eof;
    bool up_waiting; /* producer asked for bytes that were not there */
    struct cdn_waiter *up_parked;
};

static void wake_all(struct cdn_fetch *f);

/* The lines and the array in one allocation: the array first, then the strings. */
static char **
copy_lines(const char *const *lines)
{
    size_t n = 0, bytes = 0;
    while (lines && lines[n])
        bytes += strlen(lines[n++]) + 1;
    char **out = cdn_malloc((n + 1) * sizeof(char *) + bytes);
    char *p = (char *)(out + n + 1);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(lines[i]) + 1;
        memcpy(p, lines[i], len);
        out[i] = p;
        p += len;
    }
    out[n] = NULL;
    return out;
}

struct cdn_fetch *
cdn_fetch_new(const struct cdn_fetch_req *req)
{
    struct cdn_fetch *f = cdn_calloc(1, sizeof(*f));
    f->magic = FETCH_MAGIC;
    pthread_mutex_init(&f->mu, NULL);
    f->refs = 1;
    f->method = cdn_strdup(req->method);
    f->target = cdn_strdup(req->target);
    f->key = req->key ? cdn_strdup(req->key) : NULL;
    f->req_headers = copy_lines(req->headers);
    f->req_body_len = req->body_len;
    f->req_has_body = req->has_body;
    f->window = req->window ? req->window : 1024 * 1024;
    f->state = CDN_FETCH_PENDING;
    f->content_length = -1;
    f->arena = cdn_arena_new(CDN_ARENA_POOLED);
    cdn_hdrs_init(&f->resp, f->arena);
    cdn_hdrs_init(&f->client_req, f->arena);
    if (req->has_body)
        f->up_buf = cdn_malloc(UPLOAD_CAP);
    return f;
}

void
cdn_fetch_set_sink(struct cdn_fetch *f, const struct cdn_fetch_sink *sink)
{
    CDN_CHECK_MAGIC(f, FETCH_MAGIC);
    f->sink = *sink;
    f->has_sink = true;
}

bool
cdn_fetch_storing(const struct cdn_fetch *f)
{
    return f->storing;
}

bool
cdn_fetch_stored_gzip(const struct cdn_fetch *f)
{
    return f->stored_gzip;
}

void
cdn_fetch_set_sink_note(struct cdn_fetch *f, const void *note)
{
    f->sink_note = note; /* producer thread, in head(): the head's publication carries it */
}

const void *
cdn_fetch_sink_note(const struct cdn_fetch *f)
{
    return f->sink_note;
}

/* Producer thread, without the mutex: the sink's end, exactly once. */
static void
end_sink(struct cdn_fetch *f, bool complete)
{
    if (f->has_sink && !f->sink_ended) {
        f->sink_ended = true;
        f->sink.end(f->sink.arg, f, complete);
    }
}

/* Calls the settle hook once; without the fetch mutex. */
static void
settle(struct cdn_fetch *f, enum cdn_settle how)
{
    pthread_mutex_lock(&f->mu);
    bool first = f->settle != NULL && !f->settled;
    f->settled = true;
    pthread_mutex_unlock(&f->mu);
    if (first)
        f->settle(f->settle_arg, f, how);
}

void
cdn_fetch_set_settle_hook(struct cdn_fetch *f,
                          void (*hook)(void *arg, struct cdn_fetch *f, enum cdn_settle how),
                          void *arg)
{
    f->settle = hook;
    f->settle_arg = arg;
}

void
cdn_fetch_keep_request(struct cdn_fetch *f, const struct cdn_hdrs *req)
{
    for (size_t i = 0; i < req->n; i++)
        cdn_hdrs_add_copy(&f->client_req, req->v[i].name, req->v[i].nlen, req->v[i].value,
                          req->v[i].vlen);
}

const struct cdn_hdrs *
cdn_fetch_request_fields(const struct cdn_fetch *f)
{
    return &f->client_req;
}

bool
cdn_fetch_try_attach(struct cdn_fetch *f, struct cdn_waiter *w)
{
    CDN_CHECK_MAGIC(f, FETCH_MAGIC);
    CDN_CHECK_MAGIC(w, CDN_WAITER_MAGIC);
    pthread_mutex_lock(&f->mu);
    /* A fetch whose body is complete answered an earlier request: joining it would reuse that
     * response without the freshness check a stored one gets. */
    bool ok = f->state == CDN_FETCH_PENDING ||
              (f->state == CDN_FETCH_HEADERS && !f->body_complete && f->base == 0 &&
               (f->head != NULL || f->received == 0));
    if (ok) {
        w->off = 0;
        w->parked = false;
        w->next = f->waiters;
        f->waiters = w;
        f->n_waiters++;
        f->ever_attached = true;
    }
    pthread_mutex_unlock(&f->mu);
    return ok;
}

void
cdn_fetch_stored(struct cdn_fetch *f)
{
    CDN_CHECK_MAGIC(f, FETCH_MAGIC);
    pthread_mutex_lock(&f->mu);
    if (f->state == CDN_FETCH_PENDING) {
        /* A held head (the sink's write came first): publish it now; or the write settled
         * before publish recorded the head: publish will not hold it. Settled as UNSTORED. */
        if (f->head_held) {
            f->head_held = false;
            f->state = f->body_complete ? CDN_FETCH_DONE : CDN_FETCH_HEADERS;
            wake_all(f);
        } else {
            f->store_acked = true;
        }
        pthread_mutex_unlock(&f->mu);
        return;
    }
    pthread_mutex_unlock(&f->mu);
    settle(f, CDN_SETTLE_DONE); /* before the readers see the end: see cdn_fetch_publish() */
    pthread_mutex_lock(&f->mu);
    if (f->state == CDN_FETCH_HEADERS && f->body_complete)
        f->state = CDN_FETCH_DONE;
    wake_all(f);
    pthread_mutex_unlock(&f->mu);
}

void
cdn_fetch_ref(struct cdn_fetch *f)
{
    CDN_CHECK_MAGIC(f, FETCH_MAGIC);
    pthread_mutex_lock(&f->mu);
    f->refs++;
    pthread_mutex_unlock(&f->mu);
}

static void
free_chunks(struct cdn_fetch *f)
{
    while (f->head) {
        struct chunk *c = f->head;
        f->head = c->next;
        free(c);
    }
    f->tail = NULL;
}

void
cdn_fetch_unref(struct cdn_fetch *f)
{
    CDN_CHECK_MAGIC(f, FETCH_MAGIC);
    pthread_mutex_lock(&f->mu);
    int left = --f->refs;
    pthread_mutex_unlock(&f->mu);
    if (left > 0)
        return;
    CDN_ASSERT(f->waiters == NULL);
    end_sink(f, false);
    free_chunks(f);
    free(f->req_headers); /* one block with its lines */
    free(f->method);
    free(f->target);
    free(f->key);
    free(f->err_reason);
    free(f->up_buf);
    cdn_arena_free(f->arena);
    pthread_mutex_destroy(&f->mu);
    f->magic = 0;
    free(f);
}

const char *
cdn_fetch_method(const struct cdn_fetch *f)
{
    return f->method;
}

const char *
cdn_fetch_target(const struct cdn_fetch *f)
{
    return f->target;
}

const char *
cdn_fetch_key(const struct cdn_fetch *f)
{
    return f->key;
}

const char *const *
cdn_fetch_req_headers(const struct cdn_fetch *f)
{
    return (const char *const *)f->req_headers;
}

int64_t
cdn_fetch_req_body_len(const struct cdn_fetch *f)
{
    return f->req_body_len;
}

bool
cdn_fetch_req_has_body(const struct cdn_fetch *f)
{
    return f->req_has_body;
}

/* Under mu. */
static void
wake_all(struct cdn_fetch *f)
{
    for (struct cdn_waiter *w = f->waiters; w; w = w->next) {
        if (w->parked) {
            w->parked = false;
            w->wake(w);
        }
    }
}

/*
 * Under mu: nothing a reader could do now but wait again. A stored body's last byte waits for
 * the commit, and a held head for the store's answer; cdn_fetch_stored() wakes them.
 */
static bool
only_the_store_can_advance(const struct cdn_fetch *f)
{
    if (f->head_held)
        return true;
    return f->storing && f->state == CDN_FETCH_HEADERS &&
           (f->body_complete ||
            (f->content_length >= 0 && f->received >= (uint64_t)f->content_length));
}

/* Under mu: the producer has something for the readers. */
static void
producer_wake(struct cdn_fetch *f)
{
    if (f->defer_wakes)
        f->wake_pending = true;
    else
        wake_all(f);
}

void
cdn_fetch_defer_wakes(struct cdn_fetch *f)
{
    pthread_mutex_lock(&f->mu);
    f->defer_wakes = true;
    pthread_mutex_unlock(&f->mu);
}

void
cdn_fetch_flush_wakes(struct cdn_fetch *f)
{
    pthread_mutex_lock(&f->mu);
    if (f->wake_pending) {
        f->wake_pending = false;
        if (!only_the_store_can_advance(f))
            wake_all(f);
    }
    pthread_mutex_unlock(&f->mu);
}

bool
cdn_fetch_read_all(struct cdn_fetch *f, struct cdn_waiter *w, char *buf, size_t len)
{
    pthread_mutex_lock(&f->mu);
    bool ok = f->state == CDN_FETCH_DONE && f->received == len && f->base == 0 && w->off == 0;
    if (ok) {
        size_t copied = 0;
        for (struct chunk *c = f->head; c && copied < len; c = c->next) {
            size_t take = c->len < len - copied ? c->len : len - copied;
            memcpy(buf + copied, c->data, take);
            copied += take;
        }
        ok = copied == len;
        if (ok)
            w->off = len;
    }
    pthread_mutex_unlock(&f->mu);
    return ok;
}

static void
park(struct cdn_waiter *w)
{
    CDN_ASSERT(!w->parked);
    w->parked = true;
    w->park(w);
}

/* Under mu: ask the producer to resume if it paused. */
static void
kick_producer(struct cdn_fetch *f)
{
    if (f->producer_paused && !f->want_resume) {
        f->want_resume = true;
        if (f->kick)
            f->kick(f->kick_arg);
    }
}

/* Under mu: free chunks every reader is done with and resume a paused producer. */
static void
trim(struct cdn_fetch *f)
{
    uint64_t min = f->received;
    for (struct cdn_waiter *w = f->waiters; w; w = w->next)
        if (w->off < min)
            min = w->off;
    while (f->head && f->base + f->head->len <= min && f->head->len == f->head->cap) {
        struct chunk *c = f->head;
        f->head = c->next;
        if (f->head == NULL)
            f->tail = NULL;
        f->base += c->len;
        free(c);
    }
    if (f->received - f->base < f->window)
        kick_producer(f);
}

void
cdn_fetch_attach(struct cdn_fetch *f, struct cdn_waiter *w)
{
    CDN_CHECK_MAGIC(f, FETCH_MAGIC);
    CDN_CHECK_MAGIC(w, CDN_WAITER_MAGIC);
    pthread_mutex_lock(&f->mu);
    w->off = 0;
    w->parked = false;
    w->next = f->waiters;
    f->waiters = w;
    f->n_waiters++;
    f->ever_attached = true;
    pthread_mutex_unlock(&f->mu);
}

void
cdn_fetch_detach(struct cdn_fetch *f, struct cdn_waiter *w)
{
    CDN_CHECK_MAGIC(f, FETCH_MAGIC);
    pthread_mutex_lock(&f->mu);
    for (struct cdn_waiter **pp = &f->waiters; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            f->n_waiters--;
            break;
        }
    }
    if (f->up_parked == w)
        f->up_parked = NULL;
    w->next = NULL;
    w->parked = false;
    trim(f);
    if (f->n_waiters == 0 && !f->storing && f->kick && f->state <= CDN_FETCH_HEADERS) {
        /* Let the producer notice it is abandoned. */
        f->want_resume = true;
        f->kick(f->kick_arg);
    }
    pthread_mutex_unlock(&f->mu);
}

enum cdn_fetch_state
cdn_fetch_wait_headers(struct cdn_fetch *f, struct cdn_waiter *w)
{
    pthread_mutex_lock(&f->mu);
    enum cdn_fetch_state s = f->state;
    if (s == CDN_FETCH_PENDING && w->follower && f->followers_released)
        w->timed_out = true;
    else if (s == CDN_FETCH_PENDING)
        park(w);
    pthread_mutex_unlock(&f->mu);
    return s;
}

int
cdn_fetch_status(const struct cdn_fetch *f)
{
    return f->status;
}

const struct cdn_hdrs *
cdn_fetch_resp_headers(const struct cdn_fetch *f)
{
    return &f->resp;
}

int64_t
cdn_fetch_content_length(const struct cdn_fetch *f)
{
    return f->content_length;
}

int
cdn_fetch_error(const struct cdn_fetch *f, const char **reason)
{
    if (reason)
        *reason = f->err_reason ? f->err_reason : "upstream failure";
    return f->err_status ? f->err_status : 502;
}

enum cdn_read_result
cdn_fetch_read(struct cdn_fetch *f, struct cdn_waiter *w, char *buf, size_t max, size_t *n)
{
    enum cdn_read_result r;
    *n = 0;
    pthread_mutex_lock(&f->mu);
    /* While the store takes the body, the last byte waits for its commit (cdn_fetch_stored). */
    uint64_t avail = f->received;
    if (f->storing && f->state == CDN_FETCH_HEADERS && avail > 0)
        avail--;
    if (w->off < avail) {
        CDN_ASSERT(w->off >= f->base);
        uint64_t want = avail - w->off;
        if (want < max)
            max = (size_t)want;
        uint64_t pos = f->base;
        size_t copied = 0;
        for (struct chunk *c = f->head; c && copied < max; c = c->next) {
            uint64_t end = pos + c->len;
            uint64_t at = w->off + copied;
            if (at < end) {
                size_t from = (size_t)(at - pos);
                size_t take = c->len - from;
                if (take > max - copied)
                    take = max - copied;
                memcpy(buf + copied, c->data + from, take);
                copied += take;
            }
            pos = end;
        }
        w->off += copied;
        *n = copied;
        trim(f);
        r = CDN_READ_DATA;
    } else if (f->state == CDN_FETCH_DONE) {
        r = CDN_READ_END;
    } else if (f->state == CDN_FETCH_FAILED || f->body_error) {
        r = CDN_READ_ERROR;
    } else {
        park(w);
        r = CDN_READ_PARKED;
    }
    pthread_mutex_unlock(&f->mu);
    return r;
}

ssize_t
cdn_fetch_upload_push(struct cdn_fetch *f, struct cdn_waiter *w, const char *data, size_t n)
{
    pthread_mutex_lock(&f->mu);
    if (f->state == CDN_FETCH_FAILED) {
        pthread_mutex_unlock(&f->mu);
        return -1;
    }
    size_t room = UPLOAD_CAP - f->up_len;
    size_t take = n < room ? n : room;
    memcpy(f->up_buf + f->up_len, data, take);
    f->up_len += take;
    if (take < n) {
        f->up_parked = w;
        park(w);
    }
    if (take > 0 && f->up_waiting) {
        f->up_waiting = false;
        f->producer_paused = true;
        kick_producer(f);
    }
    pthread_mutex_unlock(&f->mu);
    return (ssize_t)take;
}

void
cdn_fetch_upload_end(struct cdn_fetch *f)
{
    pthread_mutex_lock(&f->mu);
    f->up_eof = true;
    if (f->up_waiting) {
        f->up_waiting = false;
        f->producer_paused = true;
        kick_producer(f);
    }
    pthread_mutex_unlock(&f->mu);
}

void
cdn_fetch_set_kick(struct cdn_fetch *f, void (*kick)(void *arg), void *arg)
{
    pthread_mutex_lock(&f->mu);
    f->kick = kick;
    f->kick_arg = arg;
    pthread_mutex_unlock(&f->mu);
}

bool
cdn_fetch_take_resume(struct cdn_fetch *f)
{
    pthread_mutex_lock(&f->mu);
    bool r = f->want_resume;
    f->want_resume = false;
    if (r)
        f->producer_paused = false;
    pthread_mutex_unlock(&f->mu);
    return r;
}

void
cdn_fetch_release_followers(struct cdn_fetch *f)
{
    pthread_mutex_lock(&f->mu);
    f->followers_released = true;
    for (struct cdn_waiter *w = f->waiters; w; w = w->next) {
        if (w->parked && w->follower) {
            w->parked = false;
            w->wake(w);
        }
    }
    pthread_mutex_unlock(&f->mu);
}

bool
cdn_fetch_take_sink_blocked(struct cdn_fetch *f)
{
    pthread_mutex_lock(&f->mu);
    bool r = f->sink_blocked;
    f->sink_blocked = false;
    pthread_mutex_unlock(&f->mu);
    return r;
}

bool
cdn_fetch_abandoned(struct cdn_fetch *f)
{
    pthread_mutex_lock(&f->mu);
    bool r = f->ever_attached && f->n_waiters == 0 && !f->storing;
    pthread_mutex_unlock(&f->mu);
    return r;
}

struct cdn_arena *
cdn_fetch_arena(struct cdn_fetch *f)
{
    return f->arena;
}

void
cdn_fetch_publish(struct cdn_fetch *f, int status, const struct cdn_hdrs *hdrs,
                  int64_t content_length)
{
    enum cdn_sink_take take =
        f->has_sink ? f->sink.head(f->sink.arg, f, status, hdrs, content_length) : CDN_SINK_SKIP;
    bool storing = take == CDN_SINK_BODY || take == CDN_SINK_BODY_GZIP;
    pthread_mutex_lock(&f->mu);
    CDN_ASSERT(f->state == CDN_FETCH_PENDING);
    f->storing = storing;
    f->stored_gzip = take == CDN_SINK_BODY_GZIP;
    f->status = status;
    f->resp = *hdrs;
    f->content_length = content_length;
    pthread_mutex_unlock(&f->mu);
    /* Settle before any reader sees the head: a request that comes after this response must
     * not find the fetch still registered and join it (nor a woken follower that must go
     * upstream again find it and be refused). The hook reads the status set above. */
    if (!storing)
        settle(f, CDN_SETTLE_UNSTORED);
    pthread_mutex_lock(&f->mu);
    if (take == CDN_SINK_HOLD_HEAD && !f->store_acked)
        f->head_held = true; /* cdn_fetch_stored() publishes it */
    else
        f->state = CDN_FETCH_HEADERS;
    producer_wake(f);
    pthread_mutex_unlock(&f->mu);
}

bool
cdn_fetch_append(struct cdn_fetch *f, const char *data, size_t n)
{
    pthread_mutex_lock(&f->mu);
    uint64_t buffered = f->received - f->base;
    if (f->storing && f->sink.busy && f->sink.busy(f->sink.arg)) {
        f->sink_blocked = true;
        pthread_mutex_unlock(&f->mu);
        return false;
    }
    if (buffered > 0 && buffered + n > f->window) {
        f->producer_paused = true;
        pthread_mutex_unlock(&f->mu);
        return false;
    }
    const char *data_start = data;
    size_t taken = n;
    while (n > 0) {
        struct chunk *c = f->tail;
        if (c == NULL || c->len == c->cap) {
            /* A 64 KiB block per small response would cost the allocator a consolidation on
             * every miss (glibc consolidates on frees of 64 KiB and more). A body of known length
             * gets what it still needs; one of unknown length starts at 4 KiB and doubles. */
            size_t cap = CHUNK_SIZE;
            if (f->content_length >= 0) {
                if ((uint64_t)f->content_length > f->received &&
                    (uint64_t)f->content_length - f->received < cap)
                    cap = (size_t)((uint64_t)f->content_length - f->received);
            } else if (c == NULL || c->cap < CHUNK_SIZE / 2) {
                cap = c == NULL ? 4096 : 2 * c->cap;
            }
            if (cap < n)
                cap = n < CHUNK_SIZE ? n : CHUNK_SIZE;
            c = cdn_malloc(sizeof(*c) + cap);
            c->next = NULL;
            c->len = 0;
            c->cap = cap;
            if (f->tail)
                f->tail->next = c;
            else {
                f->head = c;
                f->base = f->received;
            }
            f->tail = c;
        }
        size_t take = c->cap - c->len;
        if (take > n)
            take = n;
        memcpy(c->data + c->len, data, take);
        c->len += take;
        data += take;
        n -= take;
        f->received += take;
    }
    if (f->n_waiters == 0 && (f->ever_attached || f->storing)) {
        /* Nobody reads: drop what we hold rather than grow. */
        free_chunks(f);
        f->base = f->received;
    }
    producer_wake(f);
    bool storing = f->storing;
    pthread_mutex_unlock(&f->mu);
    if (storing)
        f->sink.data(f->sink.arg, data_start, taken);
    return true;
}

void
cdn_fetch_finish(struct cdn_fetch *f)
{
    pthread_mutex_lock(&f->mu);
    bool storing = f->storing;
    pthread_mutex_unlock(&f->mu);
    if (!storing)
        settle(f, CDN_SETTLE_DONE); /* before the readers see the end (a no-op once settled) */
    pthread_mutex_lock(&f->mu);
    f->body_complete = true;
    if (f->state == CDN_FETCH_HEADERS && !storing && !f->head_held)
        f->state = CDN_FETCH_DONE;
    producer_wake(f);
    pthread_mutex_unlock(&f->mu);
    end_sink(f, true); /* a storing sink calls cdn_fetch_stored() when the commit settled */
}

void
cdn_fetch_fail(struct cdn_fetch *f, int status, const char *reason)
{
    /* Only fetches with a request body are failed by readers (413), and those carry no sink. */
    end_sink(f, false);
    settle(f, CDN_SETTLE_FAILED); /* before the readers wake: see cdn_fetch_publish() */
    pthread_mutex_lock(&f->mu);
    if (f->state == CDN_FETCH_PENDING) {
        f->err_status = status;
        free(f->err_reason);
        f->err_reason = cdn_strdup(reason);
        f->state = CDN_FETCH_FAILED;
    } else if (f->state == CDN_FETCH_HEADERS) {
        f->body_error = true;
        f->state = CDN_FETCH_FAILED;
    }
    wake_all(f);
    if (f->up_parked) {
        struct cdn_waiter *w = f->up_parked;
        f->up_parked = NULL;
        if (w->parked) {
            w->parked = false;
            w->wake(w);
        }
    }
    pthread_mutex_unlock(&f->mu);
}

enum cdn_fetch_state
cdn_fetch_state(struct cdn_fetch *f)
{
    pthread_mutex_lock(&f->mu);
    enum cdn_fetch_state s = f->state;
    pthread_mutex_unlock(&f->mu);
    return s;
}

ssize_t
cdn_fetch_upload_pull(struct cdn_fetch *f, char *buf, size_t max)
{
    pthread_mutex_lock(&f->mu);
    ssize_t r;
    if (f->up_len > 0) {
        size_t take = f->up_len < max ? f->up_len : max;
        memcpy(buf, f->up_buf, take);
        memmove(f->up_buf, f->up_buf + take, f->up_len - take);
        f->up_len -= take;
        r = (ssize_t)take;
        if (f->up_parked) {
            struct cdn_waiter *w = f->up_parked;
            f->up_parked = NULL;
            if (w->parked) {
                w->parked = false;
                w->wake(w);
            }
        }
    } else if (f->up_eof) {
        r = 0;
    } else {
        f->up_waiting = true;
        r = -1;
    }
    pthread_mutex_unlock(&f->mu);
    return r;
}

uint64_t
cdn_fetch_body_received(struct cdn_fetch *f)
{
    pthread_mutex_lock(&f->mu);
    uint64_t r = f->received;
    pthread_mutex_unlock(&f->mu);
    return r;
}

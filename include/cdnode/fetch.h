/*
 * fetch.h: one upstream exchange shared between the upstream thread (the producer) and the MHD
 * workers serving clients from it (the readers, "waiters").
 *
 * Life of a fetch: PENDING (request sent or queued) -> HEADERS (status and fields published,
 * body arriving) -> DONE, or -> FAILED at any point. The producer publishes; readers park when
 * nothing is there for them and are woken by the producer, never by polling. Parking and waking
 * both happen under the fetch mutex through the waiter's callbacks, so a wake can never be lost
 * between "nothing to read" and "parked".
 *
 * The body is a window of chunks: chunks every waiter has consumed are freed, and the producer is
 * told to pause when the window is full, so a slow client bounds memory instead of growing it.
 * A request body travels the other way through a bounded pipe with the same park/wake rules.
 *
 * Refcounted: each holder (the front-end request, the upstream thread) owns a reference.
 * Status and response fields are immutable once published; read them only after observing
 * HEADERS or later from cdn_fetch_wait_headers().
 */
#ifndef CDNODE_FETCH_H
#define CDNODE_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cdnode/headers.h"

struct cdn_fetch;
struct cdn_arena;

#define CDN_WAITER_MAGIC 0x57a17e55u

struct cdn_waiter {
    uint32_t magic;
    struct cdn_waiter *next;
    uint64_t off;     /* body bytes this waiter has consumed */
    bool parked;      /* true between park() and wake(); only touched under the fetch mutex */
    bool follower;    /* joined a fetch another request leads (set before waiting) */
    bool timed_out;   /* a follower released by cdn_fetch_release_followers() */
    /* Called under the fetch mutex: park suspends the owner's connection, wake resumes it. */
    void (*park)(struct cdn_waiter *w);
    void (*wake)(struct cdn_waiter *w);
    void *owner;
};

enum cdn_fetch_state {
    CDN_FETCH_PENDING = 0,
    CDN_FETCH_HEADERS,
    CDN_FETCH_DONE,
    CDN_FETCH_FAILED
};

struct cdn_fetch_req {
    const char *method;   /* copied */
    const char *target;   /* request-target for the upstream (path and query), copied; the
                             upstream picks the origin or parent it goes to */
    const char *key;      /* cache key (copied, may be NULL): parents are chosen by it */
    const char *const *headers; /* "Name: value" lines, NULL-terminated, copied */
    int64_t body_len;     /* -1: unknown (chunked) or no body; see has_body */
    bool has_body;
    size_t window;        /* body bytes buffered ahead of the slowest reader before pausing */
};

/*
 * A consumer that sees the response on the producer thread as it arrives (the store). head() is
 * called just before the head is published and returns true to be fed the body; data() gets each
 * body piece once; end() is called exactly once when the transfer is over (complete = the whole
 * body arrived) and must release arg. While a sink takes the body, the fetch is never abandoned:
 * clients leaving do not cancel what the store is taking.
 */
enum cdn_sink_take {
    CDN_SINK_SKIP,      /* the sink does not want the body */
    CDN_SINK_BODY,      /* feed the body to data() */
    CDN_SINK_BODY_GZIP, /* the same, and the stored copy is gzip: clients get it negotiated on
                           Accept-Encoding (cdn_fetch_stored_gzip) */
    CDN_SINK_HOLD_HEAD  /* no body, but publish the head only once cdn_fetch_stored() is called
                           (the sink wrote metadata the readers' next requests must see) */
};

struct cdn_fetch_sink {
    enum cdn_sink_take (*head)(void *arg, struct cdn_fetch *f, int status,
                               const struct cdn_hdrs *hdrs, int64_t content_length);
    void (*data)(void *arg, const char *p, size_t n);
    /* When the sink took the body and complete is true, the sink must call cdn_fetch_stored(f)
     * once the object is visible in the store (or storing failed): until then readers get every
     * byte but the last, so no client has the whole response before the cache does. */
    void (*end)(void *arg, struct cdn_fetch *f, bool complete);
    /* Optional: true while the sink cannot take more now; the producer pauses and retries. */
    bool (*busy)(void *arg);
    void *arg;
};

/* A new fetch in PENDING with one reference held by the caller. Never NULL. */
struct cdn_fetch *cdn_fetch_new(const struct cdn_fetch_req *req);
void cdn_fetch_ref(struct cdn_fetch *f);
/* Drops a reference; the last one frees the fetch (no waiter may still be attached). */
void cdn_fetch_unref(struct cdn_fetch *f);

enum cdn_settle { CDN_SETTLE_DONE, CDN_SETTLE_FAILED, CDN_SETTLE_UNSTORED };
/*
 * Sets a hook called exactly once, with no fetch lock held, when the fetch settles: its body is
 * complete (and stored, when storing), it failed, or its head was published without the sink
 * taking the body (UNSTORED). Only before the fetch is submitted; any thread may end up calling
 * it (upstream thread, store writer, the last reader).
 */
void cdn_fetch_set_settle_hook(struct cdn_fetch *f,
                               void (*hook)(void *arg, struct cdn_fetch *f, enum cdn_settle how),
                               void *arg);
/*
 * Attaches w only while the fetch is in flight (head pending, or body still arriving) and can
 * still be read from its first byte. Returns false (w untouched) otherwise.
 */
bool cdn_fetch_try_attach(struct cdn_fetch *f, struct cdn_waiter *w);
/* Keeps a copy of the client request fields the fetch was made for (before submit); followers
 * compare their Vary values against it. */
void cdn_fetch_keep_request(struct cdn_fetch *f, const struct cdn_hdrs *req);
const struct cdn_hdrs *cdn_fetch_request_fields(const struct cdn_fetch *f);

/* Sets the sink; only before the fetch is submitted. */
void cdn_fetch_set_sink(struct cdn_fetch *f, const struct cdn_fetch_sink *sink);
/* After HEADERS: true when the sink took the body (the response is being stored). */
bool cdn_fetch_storing(const struct cdn_fetch *f);
/* Storing, and the stored copy is gzip (compressed as stored, or by the origin). */
bool cdn_fetch_stored_gzip(const struct cdn_fetch *f);
/*
 * A result of the sink's own for the readers (e.g. the fields it merged a 304 into): set only from
 * head(), and published with the head, so readable after HEADERS; it must live as long as the
 * fetch (cdn_fetch_arena). NULL when none was set.
 */
void cdn_fetch_set_sink_note(struct cdn_fetch *f, const void *note);
const void *cdn_fetch_sink_note(const struct cdn_fetch *f);
/* The sink's store commit settled: the held-back last byte (or the held head) is released and
 * readers see it. Any thread. */
void cdn_fetch_stored(struct cdn_fetch *f);

/* Request description for the producer (immutable for the fetch's life). */
const char *cdn_fetch_method(const struct cdn_fetch *f);
const char *cdn_fetch_target(const struct cdn_fetch *f);
const char *cdn_fetch_key(const struct cdn_fetch *f); /* NULL when none was given */
const char *const *cdn_fetch_req_headers(const struct cdn_fetch *f);
int64_t cdn_fetch_req_body_len(const struct cdn_fetch *f);
bool cdn_fetch_req_has_body(const struct cdn_fetch *f);

/* ---- readers (MHD worker threads) ---- */

void cdn_fetch_attach(struct cdn_fetch *f, struct cdn_waiter *w);
/* Detaches; if it was the last reader and nobody else keeps the fetch, the producer is asked to
 * cancel the transfer. */
void cdn_fetch_detach(struct cdn_fetch *f, struct cdn_waiter *w);
/*
 * Returns the state; when PENDING, w has been parked (its park() was called) — unless w is a
 * follower and the followers were released: then w->timed_out is set and w is not parked.
 */
enum cdn_fetch_state cdn_fetch_wait_headers(struct cdn_fetch *f, struct cdn_waiter *w);
/* Producer: followers have waited long enough for the head; wake them so they give up (the
 * leader keeps waiting). */
void cdn_fetch_release_followers(struct cdn_fetch *f);

/* After HEADERS: the published response. The list and its strings live as long as the fetch. */
int cdn_fetch_status(const struct cdn_fetch *f);
const struct cdn_hdrs *cdn_fetch_resp_headers(const struct cdn_fetch *f);
int64_t cdn_fetch_content_length(const struct cdn_fetch *f); /* -1 if unknown */
/* After FAILED before HEADERS: the status to answer (502/504) and a one-line reason. */
int cdn_fetch_error(const struct cdn_fetch *f, const char **reason);

/*
 * Producer side: from now on publish, append and finish do not wake readers themselves; the
 * producer calls cdn_fetch_flush_wakes() once it has handed over what it had (one wake-up for a
 * head and body that arrived together). A flush wakes nobody when readers could only wait for the
 * store (the last byte of a stored body, a held head): the commit wakes them, once.
 */
void cdn_fetch_defer_wakes(struct cdn_fetch *f);
void cdn_fetch_flush_wakes(struct cdn_fetch *f);
/*
 * When the fetch is DONE, its whole body of len bytes is still buffered and w has read nothing:
 * copies it into buf, marks it read by w and returns true. Otherwise false, and nothing changed.
 */
bool cdn_fetch_read_all(struct cdn_fetch *f, struct cdn_waiter *w, char *buf, size_t len);
enum cdn_read_result { CDN_READ_DATA, CDN_READ_PARKED, CDN_READ_END, CDN_READ_ERROR };
/*
 * Copies up to max body bytes at w->off into buf and advances w->off (DATA, *n > 0); or parks w
 * (PARKED) when nothing new has arrived yet; END when the whole body was read; ERROR when the
 * transfer failed after headers (the client response must be aborted).
 */
enum cdn_read_result cdn_fetch_read(struct cdn_fetch *f, struct cdn_waiter *w, char *buf,
                                    size_t max, size_t *n);

/*
 * Request body from the client: copies what fits into the pipe and returns the byte count; when
 * not everything fit, w was parked and will be woken when the producer drained the pipe.
 * Returns -1 if the fetch already failed (the caller answers with the fetch's error).
 */
ssize_t cdn_fetch_upload_push(struct cdn_fetch *f, struct cdn_waiter *w, const char *data,
                              size_t n);
/* The client body is complete. */
void cdn_fetch_upload_end(struct cdn_fetch *f);

/* ---- producer (the upstream thread only) ---- */

/* Called under the fetch mutex when a reader makes room or the upload pipe gains bytes: the
 * producer should resume the transfer. Set once by the producer before the transfer starts. */
void cdn_fetch_set_kick(struct cdn_fetch *f, void (*kick)(void *arg), void *arg);
/* True once (and clears the flag) if a reader asked for the paused transfer to resume. */
bool cdn_fetch_take_resume(struct cdn_fetch *f);
/* True (once) when the last append was refused because the sink was busy: the producer retries
 * on its own, no kick will come. */
bool cdn_fetch_take_sink_blocked(struct cdn_fetch *f);
/* True when every reader left and nobody keeps the fetch: the producer may cancel. */
bool cdn_fetch_abandoned(struct cdn_fetch *f);
/* Producer-side arena for building the response header list before publishing. */
struct cdn_arena *cdn_fetch_arena(struct cdn_fetch *f);
/* Publishes status and fields (the list is copied by value; its strings must be in the fetch
 * arena); wakes every parked reader. */
void cdn_fetch_publish(struct cdn_fetch *f, int status, const struct cdn_hdrs *hdrs,
                       int64_t content_length);
/* Appends body bytes; returns false without taking them when the window is full (pause and
 * retry after cdn_fetch_take_resume()). Wakes parked readers. */
bool cdn_fetch_append(struct cdn_fetch *f, const char *data, size_t n);
/* The body is complete (DONE), or the transfer failed: before HEADERS the readers get
 * `status` (502/504) with `reason` (copied); after HEADERS they get a read ERROR. */
void cdn_fetch_finish(struct cdn_fetch *f);
void cdn_fetch_fail(struct cdn_fetch *f, int status, const char *reason);
enum cdn_fetch_state cdn_fetch_state(struct cdn_fetch *f);
/*
 * Request body for the upstream client: copies up to max bytes; returns the count, 0 at the end
 * of the body, or -1 when no bytes are available yet (pause; a kick follows when there are).
 */
ssize_t cdn_fetch_upload_pull(struct cdn_fetch *f, char *buf, size_t max);
/* Bytes of response body received so far (for logs and tests). */
uint64_t cdn_fetch_body_received(struct cdn_fetch *f);

#endif

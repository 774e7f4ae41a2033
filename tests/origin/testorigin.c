/*
 * testorigin.c: a scripted HTTP/1.1 origin for the integration tests and the demo.
 *
 * Model: one listening socket, one detached thread per accepted connection (at most MAX_CONNS at
 * once), keep-alive by default. What an ordinary path answers is chosen by its query parameters
 * (see usage()), several of which misbehave on purpose: lying or duplicated framing, resets,
 * hangs, oversized headers. Nothing here is a library; it must stay readable by someone debugging
 * a failing integration test.
 *
 * Request log: one global table under one mutex, one entry per distinct path (query stripped,
 * bounded at MAX_PATHS; later paths are counted only in the total) with its request count and the
 * raw head and first KEEP_BODY bytes of the body of its last request. Control requests under
 * /__origin/ are never logged, and a connection counts in /__origin/conns from its first
 * non-control request, so tests can query the origin without disturbing what they measure.
 *
 * Failure switch: /__origin/fail?path=P&status=N makes every later request to path P (any query)
 * answer a bare N (default 503: no validators, no Cache-Control, never a 304) until
 * /__origin/reset. At most MAX_FAILS paths; the request is still logged and counted.
 *
 * gzip bodies: gz=1 sends the body it would have sent (body=, size= or echo=1, at most MAX_GZ
 * bytes) as one gzip member (RFC 1952) made of stored deflate blocks: real gzip that any inflater
 * accepts, written without zlib and never smaller than the input. gzbad=1 does the same with a
 * wrong CRC-32 in the trailer; gzbad=2 cuts the member before its trailer (Content-Length tells
 * the cut length, so the framing stays right). Neither adds Content-Encoding: ask for it with
 * h=Content-Encoding:gzip.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IO_CHUNK 65536
#define MAX_HEAD (1u << 20)      /* request head bytes; more is answered 431 */
#define MAX_HEADERS 256          /* request header fields; more is answered 431 */
#define MAX_PATHS 4096           /* distinct paths remembered by the log */
#define KEEP_BODY (1u << 20)     /* body bytes remembered per path */
#define MAX_BODY_BUF (64u << 20) /* request body bytes held for echo=1; the rest is counted */
#define MAX_CONNS 1024
#define MAX_EXTRA 32           /* h= parameters */
#define MAX_BIGHDR (16u << 20) /* bighdr= cap */
#define MAX_FAILS 64           /* paths switched to failing by /__origin/fail */
#define MAX_GZ (64u << 20)     /* body bytes gz=1 wraps; more is cut */
#define GZ_BLOCK 65535u        /* the largest stored deflate block */

struct entry {
    char *path;
    uint64_t count;
    char *head;
    size_t head_len;
    char *body;
    size_t body_kept;
    uint64_t body_len;
    bool has_last;
};

static struct {
    pthread_mutex_t mu;
    struct entry e[MAX_PATHS];
    size_t n;
    uint64_t total;
    uint64_t conns;
    char *fail_path[MAX_FAILS];
    int fail_status[MAX_FAILS];
    size_t n_fail;
} g_log = {.mu = PTHREAD_MUTEX_INITIALIZER};

static atomic_int g_active;
static bool g_demo;
static char g_pattern[IO_CHUNK + 26];

/* Buffered reader over one connection. buf[off..len) is unread. */
struct conn {
    int fd;
    char *buf;
    size_t cap, len, off;
    bool counted; /* already counted in g_log.conns */
};

struct hdr {
    char *name;
    char *value;
};

struct req {
    char *head; /* raw request line + headers, as received, CRLFCRLF included */
    size_t head_len;
    char *method, *target, *version;
    struct hdr h[MAX_HEADERS];
    size_t n_h;
    char *body; /* first MAX_BODY_BUF bytes */
    size_t body_buf;
    uint64_t body_len; /* full length received */
    char *scratch;     /* parsed copy of head; method/target/headers point into it */
};

/* What the response should look like, from the query string (and demo presets). */
struct behave {
    int status;
    const char *body;
    size_t body_len;
    bool has_size;
    uint64_t size;
    const char *extra[MAX_EXTRA];
    int n_extra;
    const char *extra304[MAX_EXTRA]; /* h304=: fields only a 304 carries */
    int n_extra304;
    long delay_ms, body_delay_ms;
    bool has_cl;
    uint64_t cl;
    bool nocl, chunked, dupcl, clte, hang, close, echo, drop;
    int gz; /* 0: as is; 1: gzip; 2: gzip, wrong CRC; 3: gzip, no trailer */
    size_t bighdr;
    bool has_reset;
    uint64_t reset_after;
    const char *etag, *lm, *cc;
};

/* Growable string for response heads. Allocation failure aborts: this is a test tool. */
struct sbuf {
    char *p;
    size_t len, cap;
};

static void *
xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) {
        fprintf(stderr, "testorigin: out of memory\n");
        abort();
    }
    return q;
}

static void
sb_reserve(struct sbuf *s, size_t extra)
{
    if (s->len + extra + 1 <= s->cap)
        return;
    size_t cap = s->cap ? s->cap : 256;
    while (cap < s->len + extra + 1)
        cap *= 2;
    s->p = xrealloc(s->p, cap);
    s->cap = cap;
}

static void
sb_add(struct sbuf *s, const void *data, size_t n)
{
    sb_reserve(s, n);
    memcpy(s->p + s->len, data, n);
    s->len += n;
    s->p[s->len] = '\0';
}

static void sb_printf(struct sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
sb_printf(struct sbuf *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    sb_reserve(s, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(s->p + s->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s->len += (size_t)n;
}

static void
sleep_ms(long ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void
http_date(time_t t, char *out, size_t n)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static bool
parse_http_date(const char *s, time_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (end == NULL)
        return false;
    *out = timegm(&tm);
    return true;
}

static bool
send_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Reads more bytes into the buffer. Returns bytes read, 0 on EOF, -1 on error. */
static ssize_t
conn_fill(struct conn *c, size_t limit)
{
    if (c->off > 0 && c->off == c->len) {
        c->off = c->len = 0;
    } else if (c->off > 0 && c->len == c->cap) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    if (c->len == c->cap) {
        if (c->cap >= limit)
            return -1;
        size_t cap = c->cap ? c->cap * 2 : IO_CHUNK;
        if (cap > limit)
            cap = limit;
        c->buf = xrealloc(c->buf, cap);
        c->cap = cap;
    }
    for (;;) {
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r > 0)
            c->len += (size_t)r;
        return r;
    }
}

/* Finds "\r\n" in the unread bytes, reading more as needed (line at most max bytes). */
static char *
conn_line(struct conn *c, size_t max)
{
    for (;;) {
        char *s = c->buf + c->off;
        size_t n = c->len - c->off;
        for (size_t i = 0; i + 1 < n; i++) {
            if (s[i] == '\r' && s[i + 1] == '\n') {
                s[i] = '\0';
                c->off += i + 2;
                return s;
            }
        }
        if (n > max || conn_fill(c, MAX_HEAD + IO_CHUNK) <= 0)
            return NULL;
    }
}

static void
body_append(struct req *r, const char *data, size_t n)
{
    if (r->body_buf < MAX_BODY_BUF) {
        size_t take = n < MAX_BODY_BUF - r->body_buf ? n : MAX_BODY_BUF - r->body_buf;
        r->body = xrealloc(r->body, r->body_buf + take);
        memcpy(r->body + r->body_buf, data, take);
        r->body_buf += take;
    }
    r->body_len += n;
}

static bool
read_body_bytes(struct conn *c, struct req *r, uint64_t n)
{
    while (n > 0) {
        if (c->off == c->len && conn_fill(c, MAX_HEAD + IO_CHUNK) <= 0)
            return false;
        size_t avail = c->len - c->off;
        size_t take = (uint64_t)avail < n ? avail : (size_t)n;
        body_append(r, c->buf + c->off, take);
        c->off += take;
        n -= take;
    }
    return true;
}

static bool
read_chunked(struct conn *c, struct req *r)
{
    for (int guard = 0; guard < 10000000; guard++) {
        char *line = conn_line(c, 4096);
        if (line == NULL)
            return false;
        char *end;
        errno = 0;
        unsigned long long size = strtoull(line, &end, 16);
        if (end == line || errno != 0)
            return false;
        if (size == 0) {
            /* trailers until the empty line */
            for (int t = 0; t < MAX_HEADERS; t++) {
                char *tl = conn_line(c, 8192);
                if (tl == NULL)
                    return false;
                if (*tl == '\0')
                    return true;
            }
            return false;
        }
        if (!read_body_bytes(c, r, size))
            return false;
        char *crlf = conn_line(c, 2);
        if (crlf == NULL || *crlf != '\0')
            return false;
    }
    return false;
}

static const char *
req_header(const struct req *r, const char *name)
{
    for (size_t i = 0; i < r->n_h; i++)
        if (strcasecmp(r->h[i].name, name) == 0)
            return r->h[i].value;
    return NULL;
}

/* Whether a comma-separated field value holds token (case-insensitive). */
static bool
has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    const char *p = value;
    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *te = e;
        while (te > p && (te[-1] == ' ' || te[-1] == '\t'))
            te--;
        if ((size_t)(te - p) == tl && strncasecmp(p, token, tl) == 0)
            return true;
        p = e;
    }
    return false;
}

static void
req_free(struct req *r)
{
    free(r->head);
    free(r->body);
    free(r->scratch);
    memset(r, 0, sizeof(*r));
}

/*
 * Reads one request. Returns 0, 1 on a clean EOF before any byte, -1 on I/O error, or an HTTP
 * status (400, 431) for a request that cannot be read.
 */
static int
read_request(struct conn *c, struct req *r)
{
    memset(r, 0, sizeof(*r));
    size_t scanned = 0;
    size_t head_end = 0;
    for (;;) {
        const char *s = c->buf + c->off;
        size_t n = c->len - c->off;
        for (size_t i = scanned; i + 3 < n; i++) {
            if (s[i] == '\r' && s[i + 1] == '\n' && s[i + 2] == '\r' && s[i + 3] == '\n') {
                head_end = i + 4;
                break;
            }
        }
        if (head_end)
            break;
        scanned = n > 3 ? n - 3 : 0;
        if (n > MAX_HEAD)
            return 431;
        ssize_t got = conn_fill(c, MAX_HEAD + IO_CHUNK);
        if (got == 0)
            return c->len == c->off ? 1 : -1;
        if (got < 0)
            return n >= MAX_HEAD ? 431 : -1;
    }
    r->head_len = head_end;
    r->head = xrealloc(NULL, head_end + 1);
    memcpy(r->head, c->buf + c->off, head_end);
    r->head[head_end] = '\0';
    c->off += head_end;

    r->scratch = xrealloc(NULL, head_end + 1);
    memcpy(r->scratch, r->head, head_end + 1);
    char *save = NULL;
    char *line = strtok_r(r->scratch, "\r\n", &save);
    if (line == NULL)
        return 400;
    r->method = line;
    char *sp = strchr(line, ' ');
    if (sp == NULL)
        return 400;
    *sp = '\0';
    r->target = sp + 1;
    sp = strchr(r->target, ' ');
    if (sp == NULL)
        return 400;
    *sp = '\0';
    r->version = sp + 1;
    while ((line = strtok_r(NULL, "\r\n", &save)) != NULL) {
        if (r->n_h == MAX_HEADERS)
            return 431;
        char *colon = strchr(line, ':');
        if (colon == NULL)
            return 400;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        char *ve = v + strlen(v);
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            *--ve = '\0';
        r->h[r->n_h].name = line;
        r->h[r->n_h].value = v;
        r->n_h++;
    }
    const char *te = req_header(r, "Transfer-Encoding");
    const char *cl = req_header(r, "Content-Length");
    if (te && has_token(te, "chunked")) {
        if (!read_chunked(c, r))
            return -1;
    } else if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (end == cl || *end != '\0' || errno != 0)
            return 400;
        if (!read_body_bytes(c, r, n))
            return -1;
    }
    return 0;
}

/* Decodes %XX and '+' in place. */
static void
url_decode(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p == '+') {
            *o++ = ' ';
        } else if (*p == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            char hex[3] = {p[1], p[2], 0};
            *o++ = (char)strtol(hex, NULL, 16);
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
}

/* Splits a target into path and query (both point into a copy the caller frees). */
static char *
split_target(const char *target, char **path, char **query)
{
    const char *t = target;
    if (strncasecmp(t, "http://", 7) == 0 || strncasecmp(t, "https://", 8) == 0) {
        t = strstr(t, "://") + 3;
        t += strcspn(t, "/?");
    }
    char *copy = xrealloc(NULL, strlen(t) + 2);
    if (*t == '\0' || *t == '?') {
        copy[0] = '/';
        strcpy(copy + 1, t);
    } else {
        strcpy(copy, t);
    }
    char *q = strchr(copy, '?');
    if (q)
        *q++ = '\0';
    *path = copy;
    *query = q;
    return copy;
}

/* Calls fn for each decoded name=value of query (modified in place). */
static void
each_param(char *query, void (*fn)(void *, const char *, const char *), void *ctx)
{
    char *save = NULL;
    for (char *kv = query ? strtok_r(query, "&", &save) : NULL; kv;
         kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        char *v = (char *)"";
        if (eq) {
            *eq = '\0';
            v = eq + 1;
        }
        url_decode(kv);
        url_decode(v);
        fn(ctx, kv, v);
    }
}

static uint64_t
to_u64(const char *v)
{
    return strtoull(v, NULL, 10);
}

static void
behave_param(void *ctx, const char *k, const char *v)
{
    struct behave *b = ctx;
    if (strcmp(k, "status") == 0) {
        b->status = atoi(v);
    } else if (strcmp(k, "body") == 0) {
        b->body = v;
        b->body_len = strlen(v);
    } else if (strcmp(k, "size") == 0) {
        b->has_size = true;
        b->size = to_u64(v);
    } else if (strcmp(k, "h") == 0) {
        if (b->n_extra < MAX_EXTRA && strchr(v, ':'))
            b->extra[b->n_extra++] = v;
    } else if (strcmp(k, "h304") == 0) {
        if (b->n_extra304 < MAX_EXTRA && strchr(v, ':'))
            b->extra304[b->n_extra304++] = v;
    } else if (strcmp(k, "delay_ms") == 0) {
        b->delay_ms = atol(v);
    } else if (strcmp(k, "body_delay_ms") == 0) {
        b->body_delay_ms = atol(v);
    } else if (strcmp(k, "cl") == 0) {
        b->has_cl = true;
        b->cl = to_u64(v);
    } else if (strcmp(k, "nocl") == 0) {
        b->nocl = atoi(v) != 0;
    } else if (strcmp(k, "chunked") == 0) {
        b->chunked = atoi(v) != 0;
    } else if (strcmp(k, "dupcl") == 0) {
        b->dupcl = atoi(v) != 0;
    } else if (strcmp(k, "clte") == 0) {
        b->clte = atoi(v) != 0;
    } else if (strcmp(k, "bighdr") == 0) {
        uint64_t n = to_u64(v);
        b->bighdr = n > MAX_BIGHDR ? MAX_BIGHDR : (size_t)n;
    } else if (strcmp(k, "reset_after") == 0) {
        b->has_reset = true;
        b->reset_after = to_u64(v);
    } else if (strcmp(k, "drop") == 0) {
        b->drop = atoi(v) != 0;
    } else if (strcmp(k, "hang") == 0) {
        b->hang = atoi(v) != 0;
    } else if (strcmp(k, "close") == 0) {
        b->close = atoi(v) != 0;
    } else if (strcmp(k, "echo") == 0) {
        b->echo = atoi(v) != 0;
    } else if (strcmp(k, "etag") == 0) {
        b->etag = v;
    } else if (strcmp(k, "lm") == 0) {
        b->lm = v;
    } else if (strcmp(k, "cc") == 0) {
        b->cc = v;
    } else if (strcmp(k, "gz") == 0) {
        if (atoi(v) != 0 && b->gz == 0)
            b->gz = 1;
    } else if (strcmp(k, "gzbad") == 0) {
        int bad = atoi(v);
        if (bad == 1 || bad == 2)
            b->gz = 1 + bad;
    }
}

/* ---- request log ---- */

static struct entry *
log_find(const char *path, bool create)
{
    for (size_t i = 0; i < g_log.n; i++)
        if (strcmp(g_log.e[i].path, path) == 0)
            return &g_log.e[i];
    if (!create || g_log.n == MAX_PATHS)
        return NULL;
    struct entry *e = &g_log.e[g_log.n++];
    memset(e, 0, sizeof(*e));
    e->path = strdup(path);
    if (e->path == NULL)
        abort();
    return e;
}

static void
log_request(struct conn *c, const char *path, const struct req *r)
{
    pthread_mutex_lock(&g_log.mu);
    g_log.total++;
    if (!c->counted) {
        c->counted = true;
        g_log.conns++;
    }
    struct entry *e = log_find(path, true);
    if (e) {
        e->count++;
        e->has_last = true;
        e->head = xrealloc(e->head, r->head_len + 1);
        memcpy(e->head, r->head, r->head_len + 1);
        e->head_len = r->head_len;
        e->body_kept = r->body_buf < KEEP_BODY ? r->body_buf : KEEP_BODY;
        e->body = xrealloc(e->body, e->body_kept);
        if (e->body_kept)
            memcpy(e->body, r->body, e->body_kept);
        e->body_len = r->body_len;
    }
    pthread_mutex_unlock(&g_log.mu);
}

/* Status path was switched to by /__origin/fail, or 0. */
static int
fail_status(const char *path)
{
    int st = 0;
    pthread_mutex_lock(&g_log.mu);
    for (size_t i = 0; i < g_log.n_fail && st == 0; i++)
        if (strcmp(g_log.fail_path[i], path) == 0)
            st = g_log.fail_status[i];
    pthread_mutex_unlock(&g_log.mu);
    return st;
}

/* Switches path to answering status; false when the table is full. */
static bool
fail_set(const char *path, int status)
{
    bool ok = true;
    pthread_mutex_lock(&g_log.mu);
    size_t i = 0;
    while (i < g_log.n_fail && strcmp(g_log.fail_path[i], path) != 0)
        i++;
    if (i == g_log.n_fail) {
        if (i == MAX_FAILS) {
            ok = false;
        } else {
            g_log.fail_path[i] = strdup(path);
            if (g_log.fail_path[i] == NULL)
                abort();
            g_log.n_fail++;
        }
    }
    if (ok)
        g_log.fail_status[i] = status;
    pthread_mutex_unlock(&g_log.mu);
    return ok;
}

static void
log_reset(void)
{
    pthread_mutex_lock(&g_log.mu);
    for (size_t i = 0; i < g_log.n; i++) {
        free(g_log.e[i].path);
        free(g_log.e[i].head);
        free(g_log.e[i].body);
    }
    g_log.n = 0;
    g_log.total = 0;
    g_log.conns = 0;
    for (size_t i = 0; i < g_log.n_fail; i++)
        free(g_log.fail_path[i]);
    g_log.n_fail = 0;
    pthread_mutex_unlock(&g_log.mu);
}

/* ---- responses ---- */

static const char *
reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}

static void
head_start(struct sbuf *s, int status)
{
    char date[64];
    http_date(time(NULL), date, sizeof(date));
    sb_printf(s, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status, reason(status), date);
}

/* A small complete response for control endpoints and errors. */
static bool
send_simple(struct conn *c, int status, const char *ctype, const char *body, size_t len,
            const char *extra, bool keep)
{
    struct sbuf s = {0};
    head_start(&s, status);
    sb_printf(&s, "Content-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n", ctype, len,
              extra ? extra : "", keep ? "" : "Connection: close\r\n");
    sb_add(&s, body, len);
    bool ok = send_all(c->fd, s.p, s.len);
    free(s.p);
    return ok && keep;
}

struct ctl_args {
    const char *path;
    int status;
};

static void
ctl_param(void *ctx, const char *k, const char *v)
{
    struct ctl_args *a = ctx;
    if (strcmp(k, "path") == 0)
        a->path = v;
    else if (strcmp(k, "status") == 0)
        a->status = atoi(v);
}

static bool
handle_control(struct conn *c, const char *path, char *query, bool keep)
{
    struct ctl_args a = {0};
    each_param(query, ctl_param, &a);
    char num[64];
    const char *name = path + strlen("/__origin/");
    if (strcmp(name, "count") == 0 || strcmp(name, "total") == 0 || strcmp(name, "conns") == 0) {
        uint64_t v = 0;
        pthread_mutex_lock(&g_log.mu);
        if (strcmp(name, "total") == 0) {
            v = g_log.total;
        } else if (strcmp(name, "conns") == 0) {
            v = g_log.conns;
        } else if (a.path) {
            struct entry *e = log_find(a.path, false);
            v = e ? e->count : 0;
        }
        pthread_mutex_unlock(&g_log.mu);
        int n = snprintf(num, sizeof(num), "%" PRIu64, v);
        return send_simple(c, 200, "text/plain", num, (size_t)n, NULL, keep);
    }
    if (strcmp(name, "last") == 0 || strcmp(name, "lastbody") == 0) {
        bool want_body = strcmp(name, "lastbody") == 0;
        char *copy = NULL;
        size_t len = 0;
        uint64_t full = 0;
        bool found = false;
        pthread_mutex_lock(&g_log.mu);
        struct entry *e = a.path ? log_find(a.path, false) : NULL;
        if (e && e->has_last) {
            found = true;
            len = want_body ? e->body_kept : e->head_len;
            full = e->body_len;
            copy = xrealloc(NULL, len);
            if (len)
                memcpy(copy, want_body ? e->body : e->head, len);
        }
        pthread_mutex_unlock(&g_log.mu);
        if (!found)
            return send_simple(c, 404, "text/plain", "no request\n", 11, NULL, keep);
        char extra[64];
        snprintf(extra, sizeof(extra), "X-Body-Length: %" PRIu64 "\r\n", full);
        bool ok = send_simple(c, 200, "application/octet-stream", copy, len,
                              want_body ? extra : NULL, keep);
        free(copy);
        return ok;
    }
    if (strcmp(name, "fail") == 0) {
        int st = a.status >= 100 && a.status <= 599 ? a.status : 503;
        if (a.path == NULL || !fail_set(a.path, st))
            return send_simple(c, 400, "text/plain", "cannot fail that\n", 17, NULL, keep);
        return send_simple(c, 200, "text/plain", "failing\n", 8, NULL, keep);
    }
    if (strcmp(name, "reset") == 0) {
        log_reset();
        return send_simple(c, 200, "text/plain", "reset\n", 6, NULL, keep);
    }
    return send_simple(c, 404, "text/plain", "unknown control endpoint\n", 25, NULL, keep);
}

static const char demo_index[] =
    "<!doctype html>\n<html><head><title>cdnode demo origin</title></head><body>\n"
    "<h1>cdnode demo origin</h1>\n<ul>\n"
    "<li><a href=\"/hello.txt\">/hello.txt</a>: Cache-Control: max-age=60, with an ETag</li>\n"
    "<li><a href=\"/slow\">/slow</a>: answers after 1 s, max-age=30</li>\n"
    "<li><a href=\"/private\">/private</a>: Cache-Control: private</li>\n"
    "<li><a href=\"/big\">/big</a>: 1 MiB, max-age=300</li>\n"
    "<li><a href=\"/any?status=404&amp;body=gone\">/any?status=404&amp;body=gone</a>: any path "
    "takes query parameters (status, body, size, h, delay_ms, cc, etag, ...)</li>\n"
    "</ul>\n</body></html>\n";

/* Demo presets; query parameters applied afterwards override them. */
static void
demo_presets(const char *path, struct behave *b, bool *html)
{
    if (strcmp(path, "/") == 0) {
        b->body = demo_index;
        b->body_len = sizeof(demo_index) - 1;
        b->cc = "max-age=60";
        *html = true;
    } else if (strcmp(path, "/hello.txt") == 0) {
        b->body = "Hello from the cdnode demo origin.\n";
        b->body_len = strlen(b->body);
        b->cc = "max-age=60";
        b->etag = "hello-1";
    } else if (strcmp(path, "/slow") == 0) {
        b->body = "This answer took a second.\n";
        b->body_len = strlen(b->body);
        b->delay_ms = 1000;
        b->cc = "max-age=30";
    } else if (strcmp(path, "/private") == 0) {
        b->body = "Only for you.\n";
        b->body_len = strlen(b->body);
        b->cc = "private";
    } else if (strcmp(path, "/big") == 0) {
        b->has_size = true;
        b->size = 1u << 20;
        b->cc = "max-age=300";
    }
}

static bool
not_modified(const struct req *r, const struct behave *b)
{
    if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0)
        return false;
    const char *inm = req_header(r, "If-None-Match");
    if (b->etag && inm) {
        char quoted[512];
        snprintf(quoted, sizeof(quoted), "\"%s\"", b->etag);
        return strstr(inm, quoted) != NULL || strcmp(inm, "*") == 0;
    }
    const char *ims = req_header(r, "If-Modified-Since");
    time_t lm_t, ims_t;
    if (b->lm && ims && inm == NULL && parse_http_date(b->lm, &lm_t) &&
        parse_http_date(ims, &ims_t))
        return ims_t >= lm_t;
    return false;
}

/* Sends body bytes [0, len) from either a buffer or the pattern, chunk-framed if asked. */
static bool
send_body(int fd, const char *buf, uint64_t len, bool chunked)
{
    uint64_t off = 0;
    while (off < len) {
        size_t n = len - off < IO_CHUNK ? (size_t)(len - off) : IO_CHUNK;
        const char *p = buf ? buf + off : g_pattern + off % 26;
        if (chunked) {
            char sz[32];
            int k = snprintf(sz, sizeof(sz), "%zx\r\n", n);
            if (!send_all(fd, sz, (size_t)k))
                return false;
        }
        if (!send_all(fd, p, n))
            return false;
        if (chunked && !send_all(fd, "\r\n", 2))
            return false;
        off += n;
    }
    return !chunked || send_all(fd, "0\r\n\r\n", 5);
}

/* CRC-32 of RFC 1952 (reflected, polynomial 0xEDB88320), bit by bit: test sizes only. */
static uint32_t
crc32_of(const char *p, size_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= (unsigned char)p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void
put_le(char *p, uint32_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (char)(v >> (8 * i));
}

/*
 * One gzip member holding buf[0..len) (the size= pattern when buf is NULL) in stored deflate
 * blocks; how is 1, 2 (wrong CRC) or 3 (no trailer), as struct behave's gz. Returns a malloc'ed
 * buffer and its length in *out_len.
 */
static char *
gzip_stored(const char *buf, uint64_t len, int how, size_t *out_len)
{
    size_t n = len > MAX_GZ ? MAX_GZ : (size_t)len;
    char *in = xrealloc(NULL, n);
    for (size_t i = 0; i < n; i++)
        in[i] = buf ? buf[i] : (char)('a' + i % 26);
    size_t blocks = n / GZ_BLOCK + 1; /* the last one may be empty: it carries BFINAL */
    char *out = xrealloc(NULL, 10 + blocks * 5 + n + 8);
    static const char head[10] = {0x1f, (char)0x8b, 8, 0, 0, 0, 0, 0, 0, (char)0xff};
    memcpy(out, head, sizeof(head));
    size_t o = sizeof(head), off = 0;
    for (size_t b = 0; b < blocks; b++) {
        size_t k = n - off < GZ_BLOCK ? n - off : GZ_BLOCK;
        out[o] = b + 1 == blocks ? 1 : 0; /* BFINAL, BTYPE 00 (stored), padding */
        put_le(out + o + 1, (uint32_t)k, 2);
        put_le(out + o + 3, (uint32_t)~k & 0xFFFFu, 2);
        memcpy(out + o + 5, in + off, k);
        o += 5 + k;
        off += k;
    }
    if (how != 3) {
        uint32_t crc = crc32_of(in, n);
        put_le(out + o, how == 2 ? crc ^ 0xFFFFFFFFu : crc, 4);
        put_le(out + o + 4, (uint32_t)n, 4);
        o += 8;
    }
    free(in);
    *out_len = o;
    return out;
}

static bool
has_extra(const struct behave *b, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < b->n_extra; i++)
        if (strncasecmp(b->extra[i], name, n) == 0 && b->extra[i][n] == ':')
            return true;
    return false;
}

/* Returns whether the connection stays open for another request. */
static bool
handle(struct conn *c, struct req *r)
{
    char *path, *query;
    char *copy = split_target(r->target, &path, &query);
    const char *connection = req_header(r, "Connection");
    bool keep = strcmp(r->version, "HTTP/1.1") == 0
                    ? !(connection && has_token(connection, "close"))
                    : (connection && has_token(connection, "keep-alive"));
    if (strncmp(path, "/__origin/", 10) == 0) {
        bool k = handle_control(c, path, query, keep);
        free(copy);
        return k;
    }
    log_request(c, path, r);
    int failing = fail_status(path);
    if (failing) {
        bool head = strcmp(r->method, "HEAD") == 0; /* no body bytes after a HEAD answer */
        bool k = send_simple(c, failing, "text/plain", head ? "" : "failing on purpose\n",
                             head ? 0 : 19, NULL, keep);
        free(copy);
        return k;
    }

    struct behave b = {.status = 200, .body = "ok\n", .body_len = 3};
    bool html = false;
    if (g_demo)
        demo_presets(path, &b, &html);
    each_param(query, behave_param, &b);

    if (b.drop) {
        /* A request that kills its connection: closed at once, nothing answered. */
        free(copy);
        return false;
    }
    if (b.hang) {
        /* Never answer; hold the socket until the peer gives up. */
        char sink[4096];
        while (recv(c->fd, sink, sizeof(sink), 0) > 0)
            ;
        free(copy);
        return false;
    }
    sleep_ms(b.delay_ms);

    char *echo = NULL;
    const char *body = b.has_size ? NULL : b.body;
    uint64_t body_len = b.has_size ? b.size : b.body_len;
    if (b.echo) {
        echo = xrealloc(NULL, r->head_len + r->body_buf);
        memcpy(echo, r->head, r->head_len);
        if (r->body_buf)
            memcpy(echo + r->head_len, r->body, r->body_buf);
        body = echo;
        body_len = r->head_len + r->body_buf;
    }
    char *gz = NULL;
    if (b.gz) {
        size_t n;
        gz = gzip_stored(body, body_len, b.gz, &n);
        body = gz;
        body_len = n;
    }
    int status = b.status;
    if (not_modified(r, &b))
        status = 304;
    bool bodyless = status < 200 || status == 204 || status == 304;
    bool is_head = strcmp(r->method, "HEAD") == 0;
    bool chunked = (b.chunked || b.clte) && !bodyless;
    bool lie = b.has_cl && b.cl != body_len;
    if (b.close || b.nocl || b.dupcl || b.clte || lie || b.has_reset)
        keep = false;

    struct sbuf s = {0};
    head_start(&s, status);
    if (status != 304 && !has_extra(&b, "Content-Type"))
        sb_printf(&s, "Content-Type: %s\r\n", html ? "text/html; charset=utf-8" : "text/plain");
    if (b.etag)
        sb_printf(&s, "ETag: \"%s\"\r\n", b.etag);
    if (b.lm)
        sb_printf(&s, "Last-Modified: %s\r\n", b.lm);
    if (b.cc)
        sb_printf(&s, "Cache-Control: %s\r\n", b.cc);
    for (int i = 0; i < b.n_extra + (status == 304 ? b.n_extra304 : 0); i++) {
        const char *x = i < b.n_extra ? b.extra[i] : b.extra304[i - b.n_extra];
        const char *colon = strchr(x, ':');
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        sb_printf(&s, "%.*s: %s\r\n", (int)(colon - x), x, v);
    }
    if (b.bighdr) {
        sb_add(&s, "X-Big: ", 7);
        sb_reserve(&s, b.bighdr);
        memset(s.p + s.len, 'x', b.bighdr);
        s.len += b.bighdr;
        sb_add(&s, "\r\n", 2);
    }
    if (b.has_cl) {
        sb_printf(&s, "Content-Length: %" PRIu64 "\r\n", b.cl);
    } else if (b.dupcl) {
        sb_printf(&s, "Content-Length: %" PRIu64 "\r\nContent-Length: %" PRIu64 "\r\n", body_len,
                  body_len + 1);
    } else if (b.clte) {
        sb_printf(&s, "Content-Length: %" PRIu64 "\r\n", body_len);
    } else if (!bodyless && !b.nocl && !chunked) {
        sb_printf(&s, "Content-Length: %" PRIu64 "\r\n", body_len);
    }
    if (chunked)
        sb_add(&s, "Transfer-Encoding: chunked\r\n", 28);
    if (!keep)
        sb_add(&s, "Connection: close\r\n", 19);
    sb_add(&s, "\r\n", 2);

    bool ok = send_all(c->fd, s.p, s.len);
    free(s.p);
    if (ok && !bodyless && !is_head) {
        sleep_ms(b.body_delay_ms);
        if (b.has_reset) {
            uint64_t n = b.reset_after < body_len ? b.reset_after : body_len;
            send_body(c->fd, body, n, false);
            /* Abortive close: RST instead of FIN. */
            struct linger lg = {1, 0};
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            ok = false;
        } else {
            ok = send_body(c->fd, body, body_len, chunked);
        }
    }
    free(gz);
    free(echo);
    free(copy);
    return ok && keep;
}

static void *
conn_main(void *arg)
{
    struct conn c = {.fd = (int)(intptr_t)arg};
    for (;;) {
        struct req r;
        int rc = read_request(&c, &r);
        if (rc >= 400) {
            send_simple(&c, rc, "text/plain", "bad request\n", 12, NULL, false);
            req_free(&r);
            break;
        }
        if (rc != 0) {
            req_free(&r);
            break;
        }
        bool keep = handle(&c, &r);
        req_free(&r);
        if (!keep)
            break;
    }
    close(c.fd);
    free(c.buf);
    atomic_fetch_sub(&g_active, 1);
    return NULL;
}

static void
usage(FILE *out)
{
    fprintf(
        out,
        "usage: testorigin --port P [--addr 127.0.0.1] [--demo]\n"
        "Query parameters of any path: status=N body=TEXT size=N h=Name:Value delay_ms=N\n"
        "  body_delay_ms=N cl=N nocl=1 chunked=1 dupcl=1 clte=1 bighdr=N reset_after=N\n"
        "  hang=1 drop=1 close=1 echo=1 etag=X lm=HTTPDATE cc=VALUE h304=Name:Value (304s only)\n"
        "  gz=1 (body as stored-block gzip) gzbad=1 (wrong CRC) gzbad=2 (no trailer)\n"
        "Control: /__origin/count?path=P /__origin/total /__origin/conns\n"
        "  /__origin/last?path=P /__origin/lastbody?path=P /__origin/reset\n"
        "  /__origin/fail?path=P&status=N (P answers a bare N until reset)\n");
}

int
main(int argc, char **argv)
{
    const char *addr = "127.0.0.1";
    long port = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port = strtol(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--addr") == 0 && i + 1 < argc) {
            addr = argv[++i];
        } else if (strcmp(argv[i], "--demo") == 0) {
            g_demo = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (port < 0 || port > 65535) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < sizeof(g_pattern); i++)
        g_pattern[i] = (char)('a' + i % 26);

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        fprintf(stderr, "testorigin: bad address %s\n", addr);
        return 2;
    }
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(ls, 512) != 0) {
        fprintf(stderr, "testorigin: cannot listen on %s:%ld: %s\n", addr, port, strerror(errno));
        return 1;
    }
    printf("ready\n");
    fflush(stdout);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (;;) {
        int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                sleep_ms(10);
                continue;
            }
            fprintf(stderr, "testorigin: accept: %s\n", strerror(errno));
            return 1;
        }
        if (atomic_load(&g_active) >= MAX_CONNS) {
            close(fd);
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        atomic_fetch_add(&g_active, 1);
        pthread_t t;
        if (pthread_create(&t, &attr, conn_main, (void *)(intptr_t)fd) != 0) {
            atomic_fetch_sub(&g_active, 1);
            close(fd);
        }
    }
}

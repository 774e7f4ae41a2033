/*
 * loadgen.c: a small HTTP/1.1 load generator for bench/compare.sh.
 *
 * Model: one thread, one epoll set, N connections, each with at most one request in flight (no
 * pipelining). A connection is a state machine: CONNECTING -> WRITING -> READING -> (next request
 * on the same socket, or close and reconnect). Every read goes into one shared 256 KiB buffer, so a
 * 4 MiB body costs ~16 read() calls instead of the ~512 an 8 KiB reader needs; body bytes are
 * counted and dropped, never copied. Responses are framed by Content-Length, by chunked coding
 * (sizes, extensions and trailers parsed, data skipped) or by the end of the connection; 1xx
 * interim responses are skipped; 304, 204 and HEAD answers have no body.
 *
 * Latency runs from the moment a request starts (the connect(), for a new connection) to the
 * last byte of its response, in a log-bucketed histogram (16 sub-buckets per power of two of
 * microseconds, under 6.25% error). Only responses completed before the deadline count. Every loop
 * is bounded: the run ends at the deadline (or after --count requests) whatever the server does.
 *
 * Output: one line of key=value pairs on stdout (see usage()).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_BUF (256 * 1024)
#define HEAD_MAX (16 * 1024) /* response head (status line and fields) */
#define REQ_MAX 4096
#define MAX_CONNS 4096
#define MAX_HEADERS 16
#define HIST_SUB 16 /* sub-buckets per power of two */
#define HIST_BUCKETS (64 * HIST_SUB)

enum conn_state { C_IDLE, C_CONNECTING, C_WRITING, C_HEAD, C_BODY_LEN, C_BODY_EOF, C_CHUNK };

/* Sub-states of chunked decoding. */
enum chunk_state { K_SIZE, K_EXT, K_SIZE_LF, K_DATA, K_DATA_CR, K_DATA_LF, K_TRAILER };

struct conn {
    int fd;
    enum conn_state st;
    bool keep;        /* the server allows another request on this connection */
    bool head_method; /* the request in flight is a HEAD */
    uint64_t t_start; /* ns */
    char req[REQ_MAX];
    size_t req_len, req_off;
    char head[HEAD_MAX];
    size_t head_len;
    int status;
    uint64_t remaining; /* body bytes (C_BODY_LEN) or chunk bytes (K_DATA) left */
    enum chunk_state kst;
    unsigned ksize_digits;
    size_t trailer_line; /* bytes on the current trailer line, CR excluded */
};

struct opts {
    struct sockaddr_in addr;
    char host[64];       /* Host header value */
    char path_pat[1024]; /* path, possibly with one %d */
    int conns;
    double duration;
    uint64_t count; /* stop after this many requests were started (0: no limit) */
    bool close_each;
    bool head_method;
    uint64_t start, mod;
    const char *headers[MAX_HEADERS];
    int n_headers;
};

struct stats {
    uint64_t done, bytes, errors, connects;
    uint64_t st_2xx, st_304, st_other;
    uint64_t hist[HIST_BUCKETS];
};

static struct opts opt;
static struct stats stats;
static struct conn *conns;
static uint64_t counter;  /* requests started */
static uint64_t deadline; /* ns */
static int ep;
static bool stopping;

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- Latency histogram ----------------------------------------------------------------------- */

static unsigned
hist_index(uint64_t us)
{
    if (us < HIST_SUB)
        return (unsigned)us;
    unsigned msb = 63u - (unsigned)__builtin_clzll(us);
    /* the HIST_SUB values right below the top bit select the sub-bucket */
    unsigned sub = (unsigned)(us >> (msb - 4)) & (HIST_SUB - 1);
    unsigned idx = (msb - 3) * HIST_SUB + sub;
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* Midpoint of a bucket, in microseconds. */
static double
hist_value(unsigned idx)
{
    if (idx < HIST_SUB)
        return idx;
    unsigned msb = idx / HIST_SUB + 3, sub = idx % HIST_SUB;
    double lo = (double)((uint64_t)(HIST_SUB + sub) << (msb - 4));
    double width = (double)(1ull << (msb - 4));
    return lo + width / 2;
}

static double
hist_percentile(double p)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        total += stats.hist[i];
    if (total == 0)
        return 0;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)total + 0.5);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += stats.hist[i];
        if (seen >= rank)
            return hist_value(i);
    }
    return hist_value(HIST_BUCKETS - 1);
}

/* ---- Connections ----------------------------------------------------------------------------- */

static void conn_start(struct conn *c);

static void
conn_close(struct conn *c)
{
    if (c->fd >= 0) {
        close(c->fd); /* also removes it from the epoll set */
        c->fd = -1;
    }
    c->st = C_IDLE;
}

static void
conn_fail(struct conn *c)
{
    stats.errors++;
    conn_close(c);
}

static void
build_request(struct conn *c)
{
    char path[1200];
    uint64_t k = counter++;
    uint64_t n = opt.start + (opt.mod ? k % opt.mod : k);
    const char *pct = strstr(opt.path_pat, "%d");
    if (pct)
        snprintf(path, sizeof(path), "%.*s%" PRIu64 "%s", (int)(pct - opt.path_pat), opt.path_pat,
                 n, pct + 2);
    else
        snprintf(path, sizeof(path), "%s", opt.path_pat);
    int len = snprintf(c->req, sizeof(c->req), "%s %s HTTP/1.1\r\nHost: %s\r\n%s",
                       opt.head_method ? "HEAD" : "GET", path, opt.host,
                       opt.close_each ? "Connection: close\r\n" : "");
    for (int i = 0; i < opt.n_headers && len > 0 && (size_t)len < sizeof(c->req); i++)
        len += snprintf(c->req + len, sizeof(c->req) - (size_t)len, "%s\r\n", opt.headers[i]);
    if (len > 0 && (size_t)len < sizeof(c->req))
        len += snprintf(c->req + len, sizeof(c->req) - (size_t)len, "\r\n");
    if (len <= 0 || (size_t)len >= sizeof(c->req)) {
        fprintf(stderr, "loadgen: request too long\n");
        exit(2);
    }
    c->req_len = (size_t)len;
    c->req_off = 0;
    c->head_len = 0;
    c->head_method = opt.head_method;
}

static bool
may_start(void)
{
    return !stopping && (opt.count == 0 || counter < opt.count);
}

static void
conn_write(struct conn *c)
{
    while (c->req_off < c->req_len) {
        ssize_t w = write(c->fd, c->req + c->req_off, c->req_len - c->req_off);
        if (w < 0) {
            if (errno == EAGAIN)
                return; /* EPOLLOUT (edge-triggered) resumes */
            if (errno == EINTR)
                continue;
            conn_fail(c);
            return;
        }
        c->req_off += (size_t)w;
    }
    c->st = C_HEAD;
}

/* Starts the next request: on this connection when it is still open and reusable. */
static void
conn_next(struct conn *c)
{
    if (!may_start()) {
        conn_close(c);
        return;
    }
    if (c->fd >= 0 && c->keep && !opt.close_each) {
        build_request(c);
        c->t_start = now_ns();
        c->st = C_WRITING;
        conn_write(c);
        return;
    }
    conn_close(c);
    conn_start(c);
}

static void
conn_start(struct conn *c)
{
    if (!may_start())
        return;
    c->t_start = now_ns();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        perror("loadgen: socket");
        exit(2);
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        perror("loadgen: epoll_ctl");
        exit(2);
    }
    stats.connects++;
    build_request(c);
    c->keep = true;
    if (connect(c->fd, (struct sockaddr *)&opt.addr, sizeof(opt.addr)) == 0) {
        c->st = C_WRITING;
        conn_write(c);
    } else if (errno == EINPROGRESS) {
        c->st = C_CONNECTING;
    } else {
        conn_fail(c);
    }
}

static void
response_done(struct conn *c)
{
    uint64_t t = now_ns();
    if (t > deadline) { /* finished after the end of the run: not counted */
        stopping = true;
        conn_close(c);
        return;
    }
    stats.done++;
    stats.hist[hist_index((t - c->t_start) / 1000)]++;
    if (c->status >= 200 && c->status < 300)
        stats.st_2xx++;
    else if (c->status == 304)
        stats.st_304++;
    else
        stats.st_other++;
    conn_next(c);
}

static bool
name_is(const char *line, size_t len, const char *name, const char **value, size_t *vlen)
{
    size_t n = strlen(name);
    if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0)
        return false;
    const char *v = line + n + 1, *e = line + len;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *value = v;
    *vlen = (size_t)(e - v);
    return true;
}

static bool
list_has(const char *v, size_t n, const char *token)
{
    size_t t = strlen(token);
    for (size_t i = 0; i + t <= n; i++)
        if (strncasecmp(v + i, token, t) == 0 && (i == 0 || v[i - 1] == ',' || v[i - 1] == ' ') &&
            (i + t == n || v[i + t] == ',' || v[i + t] == ' '))
            return true;
    return false;
}

/*
 * Parses a complete head (c->head, ending with CRLFCRLF) and chooses how the body is framed.
 * Returns false on a malformed head.
 */
static bool
parse_head(struct conn *c)
{
    const char *p = c->head, *end = c->head + c->head_len;
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol || end - p < 12 || strncmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ')
        return false;
    int minor = p[7] - '0';
    c->status = atoi(p + 9);
    if (c->status < 100 || c->status > 999)
        return false;
    c->keep = minor >= 1;
    bool chunked = false, have_len = false;
    uint64_t len = 0;
    for (p = eol + 1; p < end;) {
        eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            return false;
        size_t ll = (size_t)(eol - p);
        if (ll > 0 && p[ll - 1] == '\r')
            ll--;
        const char *v;
        size_t vl;
        if (name_is(p, ll, "content-length", &v, &vl)) {
            if (vl == 0 || vl > 19)
                return false;
            len = 0;
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return false;
                len = len * 10 + (uint64_t)(v[i] - '0');
            }
            have_len = true;
        } else if (name_is(p, ll, "transfer-encoding", &v, &vl)) {
            chunked = list_has(v, vl, "chunked");
        } else if (name_is(p, ll, "connection", &v, &vl)) {
            if (list_has(v, vl, "close"))
                c->keep = false;
            else if (list_has(v, vl, "keep-alive"))
                c->keep = true;
        }
        p = eol + 1;
    }
    if (c->status < 200 || c->status == 204 || c->status == 304 || c->head_method) {
        c->remaining = 0;
        c->st = C_BODY_LEN;
    } else if (chunked) {
        c->st = C_CHUNK;
        c->kst = K_SIZE;
        c->remaining = 0;
        c->ksize_digits = 0;
    } else if (have_len) {
        c->st = C_BODY_LEN;
        c->remaining = len;
    } else {
        c->st = C_BODY_EOF;
        c->keep = false;
    }
    return true;
}

static int
hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/*
 * Consumes chunked body bytes. Returns the number used, and sets *finished when the last chunk
 * and the trailer section are complete; -1 on a framing error.
 */
static ssize_t
chunk_consume(struct conn *c, const char *b, size_t n, bool *finished)
{
    size_t i = 0;
    *finished = false;
    while (i < n) {
        char ch = b[i];
        switch (c->kst) {
        case K_SIZE:
            if (hexval(ch) >= 0) {
                if (++c->ksize_digits > 15)
                    return -1;
                c->remaining = c->remaining * 16 + (uint64_t)hexval(ch);
                i++;
            } else if (c->ksize_digits == 0) {
                return -1;
            } else if (ch == ';' || ch == ' ' || ch == '\t') {
                c->kst = K_EXT;
            } else if (ch == '\r') {
                c->kst = K_SIZE_LF;
                i++;
            } else if (ch == '\n') {
                c->kst = K_SIZE_LF;
            } else {
                return -1;
            }
            break;
        case K_EXT: /* chunk extensions are skipped up to the end of the line */
            if (ch == '\r' || ch == '\n')
                c->kst = K_SIZE_LF;
            if (ch != '\n')
                i++;
            break;
        case K_SIZE_LF:
            if (ch != '\n')
                return -1;
            i++;
            if (c->remaining == 0) {
                c->kst = K_TRAILER;
                c->trailer_line = 0;
            } else {
                c->kst = K_DATA;
            }
            break;
        case K_DATA: {
            size_t take = n - i < c->remaining ? n - i : (size_t)c->remaining;
            c->remaining -= take;
            i += take;
            if (c->remaining == 0)
                c->kst = K_DATA_CR;
            break;
        }
        case K_DATA_CR:
            if (ch == '\r') {
                c->kst = K_DATA_LF;
                i++;
            } else if (ch == '\n') {
                c->kst = K_DATA_LF;
            } else {
                return -1;
            }
            break;
        case K_DATA_LF:
            if (ch != '\n')
                return -1;
            i++;
            c->kst = K_SIZE;
            c->ksize_digits = 0;
            c->remaining = 0;
            break;
        case K_TRAILER:
            i++;
            if (ch == '\n') {
                if (c->trailer_line == 0) {
                    *finished = true;
                    return (ssize_t)i;
                }
                c->trailer_line = 0;
            } else if (ch != '\r') {
                if (++c->trailer_line > HEAD_MAX)
                    return -1;
            }
            break;
        }
    }
    return (ssize_t)i;
}

/* Feeds received bytes through the response parser. Returns false when the connection is gone. */
static bool
conn_feed(struct conn *c, const char *b, size_t n)
{
    while (n > 0) {
        switch (c->st) {
        case C_HEAD: {
            /* copy at most up to the end of the head; the rest is body */
            size_t used = 0;
            bool complete = false;
            while (used < n) {
                if (c->head_len >= HEAD_MAX) {
                    conn_fail(c);
                    return false;
                }
                char ch = b[used++];
                c->head[c->head_len++] = ch;
                if (ch == '\n' && c->head_len >= 2 &&
                    (c->head[c->head_len - 2] == '\n' ||
                     (c->head_len >= 4 && memcmp(c->head + c->head_len - 4, "\r\n\r\n", 4) == 0))) {
                    complete = true;
                    break;
                }
            }
            b += used;
            n -= used;
            if (!complete)
                return true;
            if (!parse_head(c)) {
                conn_fail(c);
                return false;
            }
            if (c->status < 200) { /* interim response: the real one follows */
                c->head_len = 0;
                c->st = C_HEAD;
                continue;
            }
            if (c->st == C_BODY_LEN && c->remaining == 0) {
                if (n > 0) { /* bytes after a complete response: we never pipeline */
                    conn_fail(c);
                    return false;
                }
                response_done(c);
                return c->fd >= 0;
            }
            break;
        }
        case C_BODY_LEN: {
            size_t take = n < c->remaining ? n : (size_t)c->remaining;
            c->remaining -= take;
            b += take;
            n -= take;
            if (c->remaining == 0) {
                if (n > 0) {
                    conn_fail(c);
                    return false;
                }
                response_done(c);
                return c->fd >= 0;
            }
            break;
        }
        case C_BODY_EOF:
            return true; /* everything until the end of the connection is body */
        case C_CHUNK: {
            bool finished;
            ssize_t used = chunk_consume(c, b, n, &finished);
            if (used < 0) {
                conn_fail(c);
                return false;
            }
            b += used;
            n -= (size_t)used;
            if (finished) {
                if (n > 0) {
                    conn_fail(c);
                    return false;
                }
                response_done(c);
                return c->fd >= 0;
            }
            break;
        }
        default: /* bytes while connecting or writing: the server answered early */
            conn_fail(c);
            return false;
        }
    }
    return true;
}

static void
conn_read(struct conn *c, char *buf)
{
    /* at most 64 reads per wakeup, then back to the main loop (and its deadline check) */
    for (int rounds = 0; rounds < 64 && c->fd >= 0; rounds++) {
        ssize_t r = read(c->fd, buf, READ_BUF);
        if (r < 0) {
            if (errno == EAGAIN)
                return;
            if (errno == EINTR)
                continue;
            conn_fail(c);
            return;
        }
        if (r == 0) {
            if (c->st == C_BODY_EOF) {
                response_done(c); /* closes or reconnects: keep is false */
            } else if (c->st == C_HEAD && c->head_len == 0 && c->req_off == c->req_len && c->keep &&
                       !opt.close_each) {
                /* the server closed an idle keep-alive connection as we reused it: retry on a
                 * new one without counting an error */
                c->keep = false;
                conn_close(c);
                conn_start(c);
            } else {
                conn_fail(c);
            }
            return;
        }
        stats.bytes += (uint64_t)r;
        if (!conn_feed(c, buf, (size_t)r))
            return;
    }
    /* more may be waiting: with edge-triggered epoll there is no new event for it, so re-arm */
    if (c->fd >= 0) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

static void
conn_event(struct conn *c, uint32_t events, char *buf)
{
    if (c->st == C_CONNECTING) {
        if (events & (EPOLLERR | EPOLLHUP)) {
            conn_fail(c);
            if (may_start())
                conn_start(c);
            return;
        }
        if (events & EPOLLOUT) {
            int err = 0;
            socklen_t len = sizeof(err);
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err != 0) {
                conn_fail(c);
                if (may_start())
                    conn_start(c);
                return;
            }
            c->st = C_WRITING;
        }
    }
    if (c->st == C_WRITING && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        conn_write(c);
    if (c->fd >= 0 && (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)))
        conn_read(c, buf);
    if (c->fd < 0 && c->st == C_IDLE && may_start())
        conn_start(c); /* after an error: keep N connections busy */
}

/* ---- Command line ---------------------------------------------------------------------------- */

static void
usage(void)
{
    fprintf(stderr,
            "usage: loadgen [options] http://IPv4:PORT/path\n"
            "  -c N           connections (default 64)\n"
            "  -d SECONDS     duration (default 10)\n"
            "  -n COUNT       stop after COUNT requests (with -d as an upper bound)\n"
            "  -k             a new connection per request (Connection: close)\n"
            "  -H 'Name: v'   add a request header (repeatable)\n"
            "  -I             HEAD instead of GET\n"
            "  -s START       first value of %%d in the path (default 0)\n"
            "  -m MOD         %%d cycles through START .. START+MOD-1 (default: never repeats)\n"
            "Path may contain one %%d, replaced by a per-request counter.\n"
            "Prints: requests= seconds= rps= bytes= mbps= (10^6 B/s, heads included) p50_ms= "
            "p99_ms= p999_ms= s2xx= s304= sother= errors= connects=\n");
    exit(2);
}

static void
parse_url(const char *url)
{
    if (strncmp(url, "http://", 7) != 0)
        usage();
    const char *h = url + 7, *slash = strchr(h, '/'), *colon = strchr(h, ':');
    if (!slash || !colon || colon > slash || (size_t)(slash - h) >= sizeof(opt.host))
        usage();
    memcpy(opt.host, h, (size_t)(slash - h));
    opt.host[slash - h] = '\0';
    char ip[64];
    memcpy(ip, h, (size_t)(colon - h));
    ip[colon - h] = '\0';
    opt.addr.sin_family = AF_INET;
    opt.addr.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, ip, &opt.addr.sin_addr) != 1)
        usage();
    if (strlen(slash) >= sizeof(opt.path_pat))
        usage();
    strcpy(opt.path_pat, slash);
}

int
main(int argc, char **argv)
{
    opt.conns = 64;
    opt.duration = 10;
    int ch;
    while ((ch = getopt(argc, argv, "c:d:n:kH:Is:m:")) != -1) {
        switch (ch) {
        case 'c':
            opt.conns = atoi(optarg);
            break;
        case 'd':
            opt.duration = atof(optarg);
            break;
        case 'n':
            opt.count = strtoull(optarg, NULL, 10);
            break;
        case 'k':
            opt.close_each = true;
            break;
        case 'H':
            if (opt.n_headers == MAX_HEADERS)
                usage();
            opt.headers[opt.n_headers++] = optarg;
            break;
        case 'I':
            opt.head_method = true;
            break;
        case 's':
            opt.start = strtoull(optarg, NULL, 10);
            break;
        case 'm':
            opt.mod = strtoull(optarg, NULL, 10);
            break;
        default:
            usage();
        }
    }
    if (optind != argc - 1 || opt.conns < 1 || opt.conns > MAX_CONNS || opt.duration <= 0)
        usage();
    parse_url(argv[optind]);

    static char buf[READ_BUF];
    conns = calloc((size_t)opt.conns, sizeof(*conns));
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || ep < 0) {
        perror("loadgen");
        return 2;
    }
    uint64_t t0 = now_ns();
    deadline = t0 + (uint64_t)(opt.duration * 1e9);
    for (int i = 0; i < opt.conns; i++) {
        conns[i].fd = -1;
        conn_start(&conns[i]);
    }
    struct epoll_event evs[256];
    uint64_t t_end = t0;
    for (;;) {
        uint64_t t = now_ns();
        if (t >= deadline) {
            t_end = deadline;
            break;
        }
        bool active = false;
        for (int i = 0; i < opt.conns && !active; i++)
            active = conns[i].fd >= 0;
        if (!active) { /* -n reached and every response is in */
            t_end = t;
            break;
        }
        int ms = (int)((deadline - t) / 1000000) + 1;
        int n = epoll_wait(ep, evs, 256, ms > 100 ? 100 : ms);
        if (n < 0 && errno != EINTR) {
            perror("loadgen: epoll_wait");
            return 2;
        }
        for (int i = 0; i < n; i++)
            conn_event(evs[i].data.ptr, evs[i].events, buf);
    }
    stopping = true;
    for (int i = 0; i < opt.conns; i++)
        conn_close(&conns[i]);
    double secs = (double)(t_end - t0) / 1e9;
    printf("requests=%" PRIu64 " seconds=%.3f rps=%.1f bytes=%" PRIu64 " mbps=%.2f p50_ms=%.3f "
           "p99_ms=%.3f p999_ms=%.3f s2xx=%" PRIu64 " s304=%" PRIu64 " sother=%" PRIu64
           " errors=%" PRIu64 " connects=%" PRIu64 "\n",
           stats.done, secs, (double)stats.done / secs, stats.bytes,
           (double)stats.bytes / secs / 1e6, hist_percentile(50) / 1000, hist_percentile(99) / 1000,
           hist_percentile(99.9) / 1000, stats.st_2xx, stats.st_304, stats.st_other, stats.errors,
           stats.connects);
    free(conns);
    return 0;
}

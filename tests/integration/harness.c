/*
 * harness.c: processes, files, a raw HTTP/1.1 client and testorigin control for the integration
 * tests. See harness.h for the model; the invariants kept here are that every process started is
 * remembered by PID until it is reaped, and that every loop has a deadline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_RESP_HEAD (1u << 20)
#define MAX_BODY_BUF (256u << 20)

int64_t
h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
h_nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void *
xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        abort();
    return p;
}

static void *
xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        abort();
    return q;
}

static char *
xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* ---- processes ---- */

/* Starts argv with stdout to out_path and stderr to err_path (the same file when equal). */
static int
spawn_split(struct h_proc *p, const char *name, char *const argv[], const char *out_path,
            const char *err_path, const char *cwd)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s", name);
    snprintf(p->log, sizeof(p->log), "%s", out_path);
    int out = open(out_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int err = strcmp(out_path, err_path) == 0
                  ? dup(out)
                  : open(err_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t parent = getpid();
    pid_t pid = -1;
    if (out >= 0 && err >= 0 && in >= 0)
        pid = fork();
    if (pid == 0) {
        /* Only async-signal-safe calls between fork and exec. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        if (cwd && chdir(cwd) != 0)
            _exit(127);
        execvp(argv[0], argv);
        _exit(127);
    }
    if (out >= 0)
        close(out);
    if (err >= 0)
        close(err);
    if (in >= 0)
        close(in);
    if (pid < 0)
        return -1;
    p->pid = pid;
    return 0;
}

int
h_spawn(struct h_proc *p, const char *name, char *const argv[], const char *log_path,
        const char *cwd)
{
    return spawn_split(p, name, argv, log_path, log_path, cwd);
}

bool
h_proc_wait(struct h_proc *p, int timeout_ms, int *status)
{
    if (p->pid <= 0)
        return false;
    int64_t deadline = h_now_ms() + timeout_ms;
    for (;;) {
        int st = 0;
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid || (r < 0 && errno == ECHILD)) {
            p->pid = 0;
            if (status)
                *status = st;
            return true;
        }
        if (h_now_ms() >= deadline)
            return false;
        h_nap_ms(5);
    }
}

int
h_proc_stop(struct h_proc *p, int sig, int wait_ms)
{
    if (p->pid <= 0)
        return -1;
    int st = 0;
    kill(p->pid, sig);
    if (h_proc_wait(p, wait_ms, &st))
        return st;
    fprintf(stderr, "harness: %s (pid %d) did not exit in %d ms after signal %d: SIGKILL\n",
            p->name, (int)p->pid, wait_ms, sig);
    kill(p->pid, SIGKILL);
    while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR)
        ;
    p->pid = 0;
    return st;
}

int
h_run_split(char *const argv[], const char *out_path, const char *err_path, const char *cwd,
            int timeout_ms)
{
    struct h_proc p;
    if (spawn_split(&p, argv[0], argv, out_path, err_path, cwd) != 0)
        return -1;
    int st = 0;
    if (!h_proc_wait(&p, timeout_ms, &st)) {
        h_proc_stop(&p, SIGKILL, 1000);
        return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int
h_run(char *const argv[], const char *log_path, const char *cwd, int timeout_ms)
{
    return h_run_split(argv, log_path, log_path, cwd, timeout_ms);
}

long
h_rss_kb(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

/* ---- files and ports ---- */

static int
kernel_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/*
 * A port nobody listens on now and that this process has not handed out before: a test often
 * takes several ports before starting what binds them, and the kernel may offer a port again
 * once the probing socket is closed (seen: a node's listener got the port just taken for
 * another node's admin endpoint).
 */
int
h_free_port(void)
{
    static int given[1024];
    static size_t n_given;
    for (int attempt = 0; attempt < 100; attempt++) {
        int port = kernel_port();
        if (port < 0)
            return -1;
        bool seen = false;
        for (size_t i = 0; i < n_given && !seen; i++)
            seen = given[i] == port;
        if (seen)
            continue;
        if (n_given < sizeof(given) / sizeof(given[0])) /* far more than any test takes */
            given[n_given++] = port;
        return port;
    }
    return -1;
}

bool
h_wait_port(int port, int timeout_ms)
{
    int64_t deadline = h_now_ms() + timeout_ms;
    for (;;) {
        struct h_conn c;
        if (h_conn_open(&c, port) == 0) {
            h_conn_close(&c);
            return true;
        }
        if (h_now_ms() >= deadline)
            return false;
        h_nap_ms(10);
    }
}

int
h_make_cert(const struct h_test *t, const char *name, char *cert, char *key, size_t n)
{
    char file[128], log[512];
    snprintf(file, sizeof(file), "%s.crt", name);
    h_path(t, file, cert, n);
    snprintf(file, sizeof(file), "%s.key", name);
    h_path(t, file, key, n);
    h_path(t, "openssl.log", log, sizeof(log));
    char *argv[] = {"openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    key,
                    "-out",
                    cert,
                    "-days",
                    "2",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                    NULL};
    int rc = h_run(argv, log, NULL, 30000);
    if (rc != 0) {
        char *s = h_read_file(log, NULL);
        fprintf(stderr, "harness: openssl req failed (%d): %s\n", rc, s ? s : "");
        free(s);
        return -1;
    }
    return 0;
}

int
h_write_file(const char *path, const char *fmt, ...)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    return fclose(f) == 0 ? 0 : -1;
}

char *
h_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = xmalloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n - 1 == 0) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* ---- per-test context ---- */

void
h_path(const struct h_test *t, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", t->dir, name);
}

void
h_track(struct h_test *t, struct h_proc *p)
{
    for (int i = 0; i < t->n_procs; i++)
        if (t->procs[i] == p)
            return;
    assert_true(t->n_procs < H_MAX_PROCS);
    t->procs[t->n_procs++] = p;
}

static void
dump_log(const struct h_proc *p)
{
    size_t len = 0;
    char *s = h_read_file(p->log, &len);
    fprintf(stderr, "---- %s log (%s) ----\n", p->name, p->log);
    if (s) {
        const size_t tail = 16384;
        if (len > tail)
            fprintf(stderr, "[... %zu bytes before ...]\n", len - tail);
        fputs(len > tail ? s + len - tail : s, stderr);
        if (len && s[len - 1] != '\n')
            fputc('\n', stderr);
    }
    fprintf(stderr, "---- end of %s log ----\n", p->name);
    free(s);
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static int
origin_start(struct h_test *t)
{
    const char *bin = getenv("TESTORIGIN_BIN");
    if (bin == NULL) {
        fprintf(stderr, "harness: TESTORIGIN_BIN is not set\n");
        return -1;
    }
    char log[512], port[16];
    h_path(t, "origin.log", log, sizeof(log));
    /* Retry with another port if the one picked was taken meanwhile. */
    for (int attempt = 0; attempt < 3; attempt++) {
        t->origin_port = h_free_port();
        snprintf(port, sizeof(port), "%d", t->origin_port);
        char *argv[] = {(char *)bin, "--port", port, "--addr", "127.0.0.1", NULL};
        if (h_spawn(&t->origin, "testorigin", argv, log, NULL) != 0)
            return -1;
        h_track(t, &t->origin);
        int64_t deadline = h_now_ms() + 5000;
        while (h_now_ms() < deadline) {
            char *s = h_read_file(log, NULL);
            bool ready = s && strstr(s, "ready\n");
            free(s);
            if (ready) {
                snprintf(t->origin_url, sizeof(t->origin_url), "http://127.0.0.1:%d",
                         t->origin_port);
                return 0;
            }
            int st;
            if (h_proc_wait(&t->origin, 0, &st))
                break;
            h_nap_ms(10);
        }
        h_proc_stop(&t->origin, SIGKILL, 1000);
    }
    dump_log(&t->origin);
    return -1;
}

/*
 * AddressSanitizer keeps freed memory in a quarantine of 256 MB by default, which shows up in a
 * sanitized node's RSS as if it were buffering. A small quarantine keeps RSS measurements about
 * the node's live memory; it is set once, before any child starts, and inherited by them.
 */
static void
bound_asan_quarantine(void)
{
    const char *cur = getenv("ASAN_OPTIONS");
    if (cur && strstr(cur, "quarantine_size_mb"))
        return;
    char *v = NULL;
    if (asprintf(&v, "%s%squarantine_size_mb=8", cur && *cur ? cur : "", cur && *cur ? ":" : "") <
        0)
        return;
    setenv("ASAN_OPTIONS", v, 1);
    free(v);
}

int
h_setup(void **state)
{
    bound_asan_quarantine();
    struct h_test *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(t->dir, sizeof(t->dir), "%s/cdnode-integ-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(t->dir) == NULL) {
        free(t);
        return -1;
    }
    if (origin_start(t) != 0) {
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

int
h_teardown(void **state)
{
    struct h_test *t = *state;
    if (t == NULL)
        return 0;
    for (int i = t->n_procs - 1; i >= 0; i--)
        h_proc_stop(t->procs[i], SIGTERM, 5000);
    /* A sanitizer report in any process fails the test even if every assertion held. */
    int rc = 0;
    for (int i = 0; i < t->n_procs; i++) {
        char *s = h_read_file(t->procs[i]->log, NULL);
        if (s && (strstr(s, "ERROR: AddressSanitizer") || strstr(s, "ERROR: LeakSanitizer") ||
                  strstr(s, "runtime error:") || strstr(s, "ThreadSanitizer"))) {
            fprintf(stderr, "harness: sanitizer report in the log of %s\n", t->procs[i]->name);
            t->passed = false;
            rc = -1;
        }
        free(s);
    }
    if (t->passed) {
        nftw(t->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    } else {
        fprintf(stderr, "harness: test failed; files kept in %s\n", t->dir);
        for (int i = 0; i < t->n_procs; i++)
            dump_log(t->procs[i]);
    }
    free(t);
    *state = NULL;
    return rc;
}

static bool
node_healthy(int admin_port)
{
    struct h_resp r;
    if (h_get(admin_port, "/healthz", NULL, &r) != 0)
        return false;
    bool ok = r.status == 200;
    h_resp_free(&r);
    return ok;
}

int
h_node_start(struct h_test *t, struct h_node *n, const char *cdn_id, const char *origin_url,
             const char *const *extra)
{
    const char *bin = getenv("CDNODE_BIN");
    if (bin == NULL) {
        fprintf(stderr, "harness: CDNODE_BIN is not set\n");
        return -1;
    }
    if (n->port == 0)
        n->port = h_free_port();
    if (n->admin_port == 0)
        n->admin_port = h_free_port();
    char listen[64], admin[64], log[512], name[128];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", n->port);
    snprintf(admin, sizeof(admin), "127.0.0.1:%d", n->admin_port);
    snprintf(name, sizeof(name), "cache-%s", cdn_id);
    h_path(t, name, n->cache_dir, sizeof(n->cache_dir));
    snprintf(name, sizeof(name), "node-%s.log", cdn_id);
    h_path(t, name, log, sizeof(log));

    const char *argv[64];
    size_t k = 0;
    const char *fixed[] = {bin,        "--listen",    listen,       "--origin",
                           origin_url, "--admin",     admin,        "--admin-token",
                           H_TOKEN,    "--cache-dir", n->cache_dir, "--workers",
                           "2",        "--cdn-id",    cdn_id};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        argv[k++] = fixed[i];
    for (size_t i = 0; extra && extra[i] && k < 63; i++)
        argv[k++] = extra[i];
    argv[k] = NULL;

    snprintf(name, sizeof(name), "cdnode %s", cdn_id);
    if (h_spawn(&n->proc, name, (char *const *)argv, log, NULL) != 0)
        return -1;
    h_track(t, &n->proc);
    int64_t deadline = h_now_ms() + 10000;
    while (h_now_ms() < deadline) {
        if (node_healthy(n->admin_port))
            return 0;
        int st;
        if (h_proc_wait(&n->proc, 0, &st)) {
            fprintf(stderr, "harness: cdnode %s exited before becoming healthy (status 0x%x)\n",
                    cdn_id, st);
            dump_log(&n->proc);
            return -1;
        }
        h_nap_ms(15);
    }
    fprintf(stderr, "harness: cdnode %s not healthy on %s after 10 s\n", cdn_id, admin);
    dump_log(&n->proc);
    return -1;
}

void
h_node_start_conf(struct h_test *t, const char *cdn_id, const char *name, const char *text)
{
    char conf[512];
    h_path(t, name, conf, sizeof(conf));
    if (h_write_file(conf, "%s", text) != 0)
        fail_msg("cannot write %s", conf);
    if (h_node_start(t, &t->node, cdn_id, t->origin_url, H_ARGS("-c", conf)) != 0)
        fail_msg("the node did not start with %s:\n%s", name, text);
}

/* ---- raw HTTP/1.1 client ---- */

int
h_conn_open(struct h_conn *c, int port)
{
    memset(c, 0, sizeof(*c));
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return 0;
}

void
h_conn_close(struct h_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->cap = c->len = c->off = 0;
}

int
h_conn_send(struct h_conn *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = send(c->fd, p, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int
h_conn_sendf(struct h_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    int rc = h_conn_send(c, s, (size_t)n);
    free(s);
    return rc;
}

/* Reads more bytes before deadline. Returns >0 bytes, 0 on EOF or reset, -1 on timeout. */
static ssize_t
conn_fill(struct h_conn *c, int64_t deadline)
{
    if (c->eof)
        return 0;
    if (c->off == c->len) {
        c->off = c->len = 0;
    } else if (c->off > 0 && c->len == c->cap) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    if (c->len == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 65536;
        c->buf = xrealloc(c->buf, c->cap);
    }
    for (;;) {
        int64_t left = deadline - h_now_ms();
        if (left < 0)
            return -1;
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr == 0)
            return -1;
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0) {
            c->eof = true;
            return 0;
        }
        c->len += (size_t)r;
        return r;
    }
}

/* Finds CRLF in unread bytes, reading more as needed. Returns the line (NUL-terminated) or NULL. */
static char *
conn_line(struct h_conn *c, int64_t deadline)
{
    for (int guard = 0; guard < 1000000; guard++) {
        char *s = c->buf ? c->buf + c->off : NULL;
        size_t n = c->len - c->off;
        for (size_t i = 0; i + 1 < n; i++) {
            if (s[i] == '\r' && s[i + 1] == '\n') {
                s[i] = '\0';
                c->off += i + 2;
                return s;
            }
        }
        if (n > 65536 || conn_fill(c, deadline) <= 0)
            return NULL;
    }
    return NULL;
}

struct body_out {
    struct h_resp *r;
    h_sink_fn sink;
    void *ctx;
    size_t cap;
};

static void
body_put(struct body_out *o, const char *data, size_t n)
{
    struct h_resp *r = o->r;
    r->body_total += n;
    if (o->sink) {
        o->sink(o->ctx, data, n);
        return;
    }
    if (r->body_len + n > MAX_BODY_BUF)
        return;
    if (r->body_len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < r->body_len + n + 1)
            cap *= 2;
        r->body = xrealloc(r->body, cap);
        o->cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
}

/* Passes up to n body bytes (all that arrive when n is UINT64_MAX). Returns whether n arrived. */
static bool
body_bytes(struct h_conn *c, struct body_out *o, uint64_t n, int64_t deadline)
{
    while (n > 0) {
        if (c->off == c->len) {
            ssize_t r = conn_fill(c, deadline);
            if (r <= 0)
                return false;
        }
        size_t avail = c->len - c->off;
        size_t take = (uint64_t)avail < n ? avail : (size_t)n;
        body_put(o, c->buf + c->off, take);
        c->off += take;
        if (n != UINT64_MAX)
            n -= take;
    }
    return true;
}

static bool
body_chunked(struct h_conn *c, struct body_out *o, int64_t deadline)
{
    for (int guard = 0; guard < 10000000; guard++) {
        char *line = conn_line(c, deadline);
        if (line == NULL)
            return false;
        char *end;
        errno = 0;
        unsigned long long size = strtoull(line, &end, 16);
        if (end == line || errno != 0)
            return false;
        if (size == 0) {
            for (int i = 0; i < 256; i++) {
                char *tl = conn_line(c, deadline);
                if (tl == NULL)
                    return false;
                if (*tl == '\0')
                    return true;
            }
            return false;
        }
        if (!body_bytes(c, o, size, deadline))
            return false;
        char *crlf = conn_line(c, deadline);
        if (crlf == NULL || *crlf != '\0')
            return false;
    }
    return false;
}

static bool
peer_closed_now(struct h_conn *c)
{
    if (c->eof)
        return true;
    if (c->off < c->len)
        return false;
    char b;
    ssize_t r = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        c->eof = true;
        return true;
    }
    return false;
}

static bool
value_has_token(const char *value, const char *token)
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

/* Reads and parses one head. Returns 0 or -1. */
static int
read_head(struct h_conn *c, struct h_resp *r, int64_t deadline)
{
    size_t scanned = 0, end = 0;
    for (;;) {
        const char *s = c->buf ? c->buf + c->off : NULL;
        size_t n = c->len - c->off;
        for (size_t i = scanned; i + 3 < n; i++) {
            if (s[i] == '\r' && s[i + 1] == '\n' && s[i + 2] == '\r' && s[i + 3] == '\n') {
                end = i + 4;
                break;
            }
        }
        if (end)
            break;
        scanned = n > 3 ? n - 3 : 0;
        if (n > MAX_RESP_HEAD || conn_fill(c, deadline) <= 0)
            return -1;
    }
    r->head = xstrndup(c->buf + c->off, end - 2);
    r->head_len = end - 2;
    c->off += end;

    char *copy = xstrndup(r->head, r->head_len);
    char *save = NULL;
    char *line = strtok_r(copy, "\r\n", &save);
    if (line == NULL || strncmp(line, "HTTP/1.", 7) != 0 || strlen(line) < 12) {
        free(copy);
        return -1;
    }
    r->status = atoi(line + 9);
    size_t cap = 0;
    while ((line = strtok_r(NULL, "\r\n", &save)) != NULL) {
        char *colon = strchr(line, ':');
        if (colon == NULL)
            continue;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        char *ve = v + strlen(v);
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (r->n_h == cap) {
            cap = cap ? cap * 2 : 16;
            r->h = xrealloc(r->h, cap * sizeof(*r->h));
        }
        r->h[r->n_h].name = xstrndup(line, (size_t)(colon - line));
        r->h[r->n_h].value = xstrndup(v, (size_t)(ve - v));
        r->n_h++;
    }
    free(copy);
    return 0;
}

int
h_read_response_sink(struct h_conn *c, struct h_resp *r, bool head_request, int timeout_ms,
                     h_sink_fn sink, void *ctx)
{
    memset(r, 0, sizeof(*r));
    int64_t deadline = h_now_ms() + timeout_ms;
    for (int interim = 0;; interim++) {
        if (read_head(c, r, deadline) != 0) {
            r->closed = c->eof;
            return -1;
        }
        if (r->status >= 200 || r->status == 101 || interim >= 16)
            break;
        h_resp_free(r);
        memset(r, 0, sizeof(*r));
    }
    struct body_out o = {.r = r, .sink = sink, .ctx = ctx};
    if (!sink) {
        r->body = xmalloc(1);
        r->body[0] = '\0';
        o.cap = 1;
    }
    const char *te = h_header(r, "Transfer-Encoding");
    const char *cl = h_header(r, "Content-Length");
    if (head_request || r->status < 200 || r->status == 204 || r->status == 304) {
        r->complete = true;
    } else if (te && value_has_token(te, "chunked")) {
        r->complete = body_chunked(c, &o, deadline);
    } else if (cl) {
        r->complete = body_bytes(c, &o, strtoull(cl, NULL, 10), deadline);
    } else {
        body_bytes(c, &o, UINT64_MAX, deadline);
        r->complete = c->eof;
    }
    r->closed = peer_closed_now(c);
    return 0;
}

void
h_pattern_sink(void *ctx, const char *data, size_t len)
{
    struct h_pattern *p = ctx;
    for (size_t i = 0; i < len && p->bad == 0; i++)
        if (data[i] != (char)('a' + (p->off + i) % 26))
            p->bad = p->off + i + 1;
    p->off += len;
}

int
h_read_response(struct h_conn *c, struct h_resp *r, bool head_request, int timeout_ms)
{
    return h_read_response_sink(c, r, head_request, timeout_ms, NULL, NULL);
}

bool
h_conn_wait_closed(struct h_conn *c, int timeout_ms)
{
    if (c->eof)
        return true;
    if (c->off < c->len)
        return false;
    int64_t deadline = h_now_ms() + timeout_ms;
    ssize_t r = conn_fill(c, deadline);
    return r == 0;
}

const char *
h_header(const struct h_resp *r, const char *name)
{
    for (size_t i = 0; i < r->n_h; i++)
        if (strcasecmp(r->h[i].name, name) == 0)
            return r->h[i].value;
    return NULL;
}

size_t
h_header_count(const struct h_resp *r, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n_h; i++)
        if (strcasecmp(r->h[i].name, name) == 0)
            n++;
    return n;
}

void
h_resp_free(struct h_resp *r)
{
    for (size_t i = 0; i < r->n_h; i++) {
        free(r->h[i].name);
        free(r->h[i].value);
    }
    free(r->h);
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

int
h_request(int port, const void *raw, size_t len, bool head_request, int close_wait_ms,
          struct h_resp *r)
{
    struct h_conn c;
    memset(r, 0, sizeof(*r));
    if (h_conn_open(&c, port) != 0)
        return -1;
    /* A server refusing early may close before taking every byte: read the answer anyway. */
    h_conn_send(&c, raw, len);
    int rc = h_read_response(&c, r, head_request, H_TIMEOUT_MS);
    if (rc == 0 && !r->closed && close_wait_ms > 0)
        r->closed = h_conn_wait_closed(&c, close_wait_ms);
    h_conn_close(&c);
    return rc;
}

int
h_get(int port, const char *path, const char *extra_headers, struct h_resp *r)
{
    char *req = NULL;
    int n = asprintf(&req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n", path, port,
                     extra_headers ? extra_headers : "");
    if (n < 0)
        return -1;
    int rc = h_request(port, req, (size_t)n, false, 0, r);
    free(req);
    return rc;
}

/* ---- testorigin control ---- */

static char *
path_param(const char *path)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(path);
    char *out = xmalloc(3 * n + 1), *o = out;
    for (const char *p = path; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '%' || ch == '&' || ch == '+' || ch == '?' || ch == '#' || ch <= ' ' ||
            ch >= 0x7f) {
            *o++ = '%';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        } else {
            *o++ = (char)ch;
        }
    }
    *o = '\0';
    return out;
}

static int
origin_ctl(const struct h_test *t, const char *endpoint, const char *path, struct h_resp *r)
{
    char *target = NULL;
    char *enc = path ? path_param(path) : NULL;
    int n = asprintf(&target, "/__origin/%s%s%s", endpoint, enc ? "?path=" : "", enc ? enc : "");
    free(enc);
    if (n < 0)
        return -1;
    int rc = h_get(t->origin_port, target, NULL, r);
    free(target);
    return rc;
}

static long
origin_number(const struct h_test *t, const char *endpoint, const char *path)
{
    struct h_resp r;
    if (origin_ctl(t, endpoint, path, &r) != 0)
        return -1;
    long v = r.status == 200 && r.body ? strtol(r.body, NULL, 10) : -1;
    h_resp_free(&r);
    return v;
}

long
h_origin_count(const struct h_test *t, const char *path)
{
    return origin_number(t, "count", path);
}

long
h_origin_wait_count(const struct h_test *t, const char *path, long want, int timeout_ms)
{
    int64_t deadline = h_now_ms() + timeout_ms;
    long n = h_origin_count(t, path);
    for (int i = 0; i < 10000 && n < want && h_now_ms() < deadline; i++) {
        h_nap_ms(10);
        n = h_origin_count(t, path);
    }
    return n;
}

long
h_origin_total(const struct h_test *t)
{
    return origin_number(t, "total", NULL);
}

long
h_origin_conns(const struct h_test *t)
{
    return origin_number(t, "conns", NULL);
}

char *
h_origin_last(const struct h_test *t, const char *path)
{
    struct h_resp r;
    if (origin_ctl(t, "last", path, &r) != 0)
        return NULL;
    char *head = NULL;
    if (r.status == 200) {
        head = r.body;
        r.body = NULL;
    }
    h_resp_free(&r);
    return head;
}

char *
h_origin_lastbody(const struct h_test *t, const char *path, size_t *len, uint64_t *full)
{
    struct h_resp r;
    if (origin_ctl(t, "lastbody", path, &r) != 0)
        return NULL;
    char *body = NULL;
    if (r.status == 200) {
        const char *bl = h_header(&r, "X-Body-Length");
        if (len)
            *len = r.body_len;
        if (full)
            *full = bl ? strtoull(bl, NULL, 10) : 0;
        body = r.body;
        r.body = NULL;
    }
    h_resp_free(&r);
    return body;
}

void
h_origin_reset(const struct h_test *t)
{
    struct h_resp r;
    if (origin_ctl(t, "reset", NULL, &r) == 0)
        h_resp_free(&r);
}

bool
h_head_has_line(const char *head, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = head; p && *p;) {
        const char *e = strstr(p, "\r\n");
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && memcmp(p, line, n) == 0)
            return true;
        p = e ? e + 2 : NULL;
    }
    return false;
}

char *
h_head_field(const char *head, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = head; p && *p;) {
        const char *e = strstr(p, "\r\n");
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > n && strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            const char *ve = p + len;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            return xstrndup(v, (size_t)(ve - v));
        }
        p = e ? e + 2 : NULL;
    }
    return NULL;
}

char *
h_head_join(const char *head, const char *name)
{
    size_t n = strlen(name);
    char *out = NULL;
    size_t out_len = 0;
    for (const char *p = head; p && *p;) {
        const char *e = strstr(p, "\r\n");
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > n && strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            const char *ve = p + len;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            size_t vl = (size_t)(ve - v);
            out = xrealloc(out, out_len + vl + 3);
            if (out_len) {
                memcpy(out + out_len, ", ", 2);
                out_len += 2;
            }
            memcpy(out + out_len, v, vl);
            out_len += vl;
            out[out_len] = '\0';
        }
        p = e ? e + 2 : NULL;
    }
    return out;
}

long long
h_metric(int admin_port, const char *name)
{
    struct h_resp r;
    if (h_get(admin_port, "/metrics", "Authorization: Bearer " H_TOKEN "\r\n", &r) != 0)
        return -1;
    long long v = -1;
    size_t n = strlen(name);
    for (const char *p = r.status == 200 ? r.body : NULL; p && *p;) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ') {
            v = strtoll(p + n + 1, NULL, 10);
            break;
        }
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    h_resp_free(&r);
    return v;
}

const char *
h_cache_status(const struct h_resp *r)
{
    const char *v = h_header(r, "Cache-Status");
    return v ? v : "(none)";
}

bool
h_cache_status_has(const struct h_resp *r, const char *s)
{
    return strstr(h_cache_status(r), s) != NULL;
}

char *
h_origin_field(const struct h_test *t, const char *path, const char *name)
{
    char *head = h_origin_last(t, path);
    if (head == NULL)
        fail_msg("the origin has no request for %s", path);
    char *v = h_head_join(head, name);
    free(head);
    return v ? v : strdup("");
}

/*
 * harness.h: what integration tests need to drive a real cdnode against the scripted testorigin,
 * everything on 127.0.0.1.
 *
 * A test gets a struct h_test from h_setup() (cmocka setup): a private temporary directory and a
 * running testorigin. It starts nodes with h_node_start(), talks to them with the raw HTTP/1.1
 * client below, and ends with H_PASS(t). h_teardown() stops every process the test started (by
 * PID: SIGTERM, a bounded wait, then SIGKILL) and removes the directory when the test passed;
 * when it did not (cmocka jumps out of the test before H_PASS), it prints every process log to
 * stderr and keeps the directory. A sanitizer report in any process log fails the teardown.
 *
 * Every wait here is bounded by a deadline; nothing sleeps for a fixed time hoping for readiness.
 * Binaries come from the environment: CDNODE_BIN and TESTORIGIN_BIN.
 *
 * Not thread-safe unless stated: a test calls these from its main thread, except the HTTP client
 * (h_conn_*, h_get, h_request), which may be used from any thread on distinct connections.
 * Returned strings are malloc'ed and owned by the caller unless stated.
 */
#ifndef CDNODE_TEST_HARNESS_H
#define CDNODE_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define H_TOKEN "integration-admin-token-0123456789"
#define H_MAX_PROCS 8
#define H_TIMEOUT_MS 5000

struct h_test;

/* ---- processes ---- */

struct h_proc {
    pid_t pid; /* 0 when not running */
    char name[64];
    char log[512]; /* stdout and stderr of the process */
};

/*
 * Starts argv[0] (searched in PATH when it has no slash) with argv, stdin from /dev/null, stdout
 * and stderr appended to log_path, in cwd (NULL: the current directory). The child is killed if
 * the test process dies. Returns 0 or -1.
 */
int h_spawn(struct h_proc *p, const char *name, char *const argv[], const char *log_path,
            const char *cwd);
/* Waits at most timeout_ms for p to exit. Returns true and its waitpid() status if it did. */
bool h_proc_wait(struct h_proc *p, int timeout_ms, int *status);
/*
 * Sends sig, waits at most wait_ms, then SIGKILLs and reaps. Returns the waitpid() status, or -1
 * if p was not running.
 */
int h_proc_stop(struct h_proc *p, int sig, int wait_ms);
/*
 * Runs argv to completion (bounded by timeout_ms; killed beyond it) with output in log_path.
 * Returns the exit code, or -1 if it timed out, was killed by a signal or could not start.
 */
int h_run(char *const argv[], const char *log_path, const char *cwd, int timeout_ms);
/* The same with stdout and stderr in separate files. */
int h_run_split(char *const argv[], const char *out_path, const char *err_path, const char *cwd,
                int timeout_ms);
/* VmRSS of pid in KiB, or -1. */
long h_rss_kb(pid_t pid);

/* ---- files and ports ---- */

/* Waits at most timeout_ms until something accepts TCP connections on 127.0.0.1:port. */
bool h_wait_port(int port, int timeout_ms);
/*
 * Makes a self-signed certificate for IP 127.0.0.1 with `openssl req` as <dir>/<name>.crt and
 * <dir>/<name>.key; their paths are written to cert and key (n bytes each). Returns 0 or -1.
 */
int h_make_cert(const struct h_test *t, const char *name, char *cert, char *key, size_t n);

/* A port on 127.0.0.1 that was free a moment ago (bind to 0, read it back, close). */
int h_free_port(void);
/* Writes (truncating) a file from a printf format. Returns 0 or -1. */
int h_write_file(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whole file, NUL-terminated, length in *len if len is not NULL; NULL if unreadable. */
char *h_read_file(const char *path, size_t *len);

/* ---- per-test context ---- */

struct h_node {
    struct h_proc proc;
    int port;       /* set before h_node_start() to choose it; 0 picks a free one */
    int admin_port; /* same */
    char cache_dir[600];
};

struct h_test {
    char dir[256];
    struct h_proc origin;
    int origin_port;
    char origin_url[64]; /* http://127.0.0.1:origin_port */
    struct h_node node;  /* the usual single node; tests may declare more */
    struct h_proc *procs[H_MAX_PROCS];
    int n_procs;
    bool passed;
};

/* cmocka setup/teardown: temp dir + testorigin; stop everything, clean up or dump logs. */
int h_setup(void **state);
int h_teardown(void **state);
#define H_PASS(t) ((t)->passed = true)

/* "<t->dir>/<name>" into out. */
void h_path(const struct h_test *t, const char *name, char *out, size_t n);
/* Registers a process so h_teardown() stops it and dumps its log on failure. */
void h_track(struct h_test *t, struct h_proc *p);

/*
 * Starts cdnode: --listen 127.0.0.1:port --origin origin_url --admin 127.0.0.1:admin_port
 * --admin-token H_TOKEN --cache-dir DIR/cache-<cdn_id> --workers 2 --cdn-id cdn_id, then extra
 * (NULL-terminated, may be NULL; e.g. "-c", file). Waits up to 10 s for GET /healthz on the admin
 * port to answer 200. Returns 0, or -1 (the node's log is printed) if it exited or never became
 * healthy.
 */
int h_node_start(struct h_test *t, struct h_node *n, const char *cdn_id, const char *origin_url,
                 const char *const *extra);
#define H_ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
/* Writes `text` to <dir>/<name> and starts t->node (cdn_id, the test origin) with -c on it; fails
 * the test when the node does not start. */
void h_node_start_conf(struct h_test *t, const char *cdn_id, const char *name, const char *text);

/* ---- raw HTTP/1.1 client ---- */

struct h_conn {
    int fd;
    char *buf;
    size_t cap, len, off; /* buf[off..len) is received, unread */
    bool eof;             /* the peer closed (or reset) */
};

struct h_hdr {
    char *name;
    char *value;
};

struct h_resp {
    int status;
    char *head; /* status line + fields, NUL-terminated */
    size_t head_len;
    struct h_hdr *h;
    size_t n_h;
    char *body; /* NUL-terminated; NULL when a sink took the body */
    size_t body_len;
    uint64_t body_total; /* bytes of body received, buffered or not */
    bool complete;       /* the body ended as its framing said it would */
    bool closed;         /* the server closed the connection after (or during) the response */
};

typedef void (*h_sink_fn)(void *ctx, const char *data, size_t len);

/* Connects to 127.0.0.1:port. Returns 0 or -1. */
int h_conn_open(struct h_conn *c, int port);
void h_conn_close(struct h_conn *c);
/* Sends all bytes. Returns 0, or -1 if the peer is gone. */
int h_conn_send(struct h_conn *c, const void *data, size_t len);
int h_conn_sendf(struct h_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * Reads one response (skipping 1xx other than 101) within timeout_ms. The body is framed by
 * chunked / Content-Length / close; none for HEAD (head_request), 1xx, 204 and 304. With a sink
 * the body goes to it instead of r->body. r->closed is set when the body was close-delimited or
 * EOF is already visible; use h_conn_wait_closed() to wait for it. Returns 0 when a response head
 * was read (r->complete tells whether the body was whole), -1 when none arrived.
 */
int h_read_response(struct h_conn *c, struct h_resp *r, bool head_request, int timeout_ms);
/* A sink checking that a body is testorigin's size= pattern ('a' + offset % 26). */
struct h_pattern {
    uint64_t off;
    uint64_t bad; /* first wrong offset + 1, 0 if none */
};
void h_pattern_sink(void *ctx, const char *data, size_t len);
int h_read_response_sink(struct h_conn *c, struct h_resp *r, bool head_request, int timeout_ms,
                         h_sink_fn sink, void *ctx);
/* Whether the peer closes the connection within timeout_ms (bytes arriving meanwhile: false). */
bool h_conn_wait_closed(struct h_conn *c, int timeout_ms);
/* First value of a field (case-insensitive name), or NULL. Points into r. */
const char *h_header(const struct h_resp *r, const char *name);
size_t h_header_count(const struct h_resp *r, const char *name);
void h_resp_free(struct h_resp *r);

/*
 * One exchange on a new connection: send raw bytes, read one response, then wait up to
 * close_wait_ms to see whether the server closes (0: only what is already visible). Returns 0 or
 * -1 as h_read_response().
 */
int h_request(int port, const void *raw, size_t len, bool head_request, int close_wait_ms,
              struct h_resp *r);
/* GET path on a new connection with Host: 127.0.0.1:port and extra_headers ("A: b\r\n..."). */
int h_get(int port, const char *path, const char *extra_headers, struct h_resp *r);

/* ---- testorigin control (never counted by the origin) ---- */

long h_origin_count(const struct h_test *t, const char *path);
/* Polls h_origin_count(path) until it reaches want or timeout_ms passes; returns the last count. */
long h_origin_wait_count(const struct h_test *t, const char *path, long want, int timeout_ms);
long h_origin_total(const struct h_test *t);
long h_origin_conns(const struct h_test *t);
/* Raw head of the last request to path, or NULL if none. */
char *h_origin_last(const struct h_test *t, const char *path);
/* Body of that request (first 1 MiB) and its full length in *full; NULL if none. */
char *h_origin_lastbody(const struct h_test *t, const char *path, size_t *len, uint64_t *full);
void h_origin_reset(const struct h_test *t);

/* Whether head (a raw request or response head) has a line equal to line (case-sensitive). */
bool h_head_has_line(const char *head, const char *line);
/* Value of the first field named name in a raw head (case-insensitive), malloc'ed, or NULL. */
char *h_head_field(const char *head, const char *name);

/* All values of fields named name in a raw head joined with ", ", malloc'ed, or NULL if none. */
char *h_head_join(const char *head, const char *name);
/* h_head_join() of the origin's last request to path, malloc'ed, "" when the field is absent;
 * fails the test when the origin has no request for path. */
char *h_origin_field(const struct h_test *t, const char *path, const char *name);

/* Milliseconds from a monotonic clock. */
int64_t h_now_ms(void);
/* Sleeps ms milliseconds: the pause between two looks of a bounded polling loop. */
void h_nap_ms(long ms);

/* The response's Cache-Status field, or "(none)". Points into r. */
const char *h_cache_status(const struct h_resp *r);
/* Whether the Cache-Status field contains s. */
bool h_cache_status_has(const struct h_resp *r, const char *s);

/* Value of the unlabelled metric `name` in the /metrics of the node whose admin listener is on
 * admin_port, or -1 when it is absent or /metrics did not answer. */
long long h_metric(int admin_port, const char *name);

#endif

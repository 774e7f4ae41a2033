/*
 * main.c: command line, start-up order and signal handling.
 *
 * Configuration is built as defaults, then the -c file, then flags (each flag is the setter of
 * the config key of the same meaning). Signals are blocked in every thread and taken by the main
 * thread with sigwait(): SIGTERM/SIGINT stop accepting, let requests in flight finish (bounded),
 * then fail whatever is left and exit.
 */
#include "cdnode/accesslog.h"
#include "cdnode/admin.h"
#include "cdnode/arena.h"
#include "cdnode/cache.h"
#include "cdnode/collapse.h"
#include "cdnode/common.h"
#include "cdnode/config.h"
#include "cdnode/front.h"
#include "cdnode/log.h"
#include "cdnode/tcache.h"
#include "cdnode/upstream.h"

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DRAIN_MS 4000

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: cdnode [-c FILE] [-t] [options]\n"
            "  -c, --config FILE       read configuration from FILE (see conf/cdnode.conf)\n"
            "  -t, --test              check the configuration and exit\n"
            "      --listen ADDR:PORT  client listener (listen)\n"
            "      --origin URL        origin or parent, repeatable (origin)\n"
            "      --cache-dir DIR     store directory (cache_dir)\n"
            "      --cache-size SIZE   store size, e.g. 1g (cache_size)\n"
            "      --admin ADDR:PORT   admin listener (admin_listen)\n"
            "      --admin-token TOKEN bearer token for the admin listener (admin_token)\n"
            "      --cdn-id NAME       Via pseudonym, CDN-Loop id, Cache-Status name (cdn_id)\n"
            "      --workers N         front-end worker threads (workers)\n"
            "  -h, --help              this text\n"
            "  -V, --version           print the version\n");
}

struct flag {
    const char *key;
    const char *value;
};

/*
 * Defaults, then the file, then the flags, then the cross-key checks: how the configuration is
 * built at start and again on SIGHUP. Returns 0, or non-zero with the reason in err (a file error
 * starts with "FILE:LINE:") and cfg released.
 */
static int
build_config(struct cdn_config *cfg, const char *config_file, const struct flag *flags,
             size_t n_flags, char *err, size_t errlen)
{
    char why[512];
    cdn_config_defaults(cfg);
    if (config_file && cdn_config_load(cfg, config_file, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s", why);
        cdn_config_free(cfg);
        return 1;
    }
    bool origins_cleared = false;
    for (size_t i = 0; i < n_flags; i++) {
        if (strcmp(flags[i].key, "origin") == 0 && !origins_cleared) {
            /* Flags replace the file's origins rather than add to them. */
            for (size_t k = 0; k < cfg->n_origins; k++)
                free(cfg->origins[k]);
            cfg->n_origins = 0;
            origins_cleared = true;
        }
        if (cdn_config_set(cfg, flags[i].key, flags[i].value, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "--%s: %s", flags[i].key, why);
            cdn_config_free(cfg);
            return 1;
        }
    }
    if (cdn_config_check(cfg, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s%s%s", config_file ? config_file : "", config_file ? ": " : "",
                 why);
        cdn_config_free(cfg);
        return 1;
    }
    return 0;
}

static bool
differ(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a != NULL && strcmp(a, b) != 0);
}

/*
 * SIGHUP: builds the configuration again from the same file and flags. A broken one is refused
 * whole (the running one stays). Otherwise origins, parents, the admin token, purge peers and the
 * logging settings take effect; keys that only a restart can apply are named in a warning.
 */
static void
reload(const struct cdn_config *running, const char *config_file, const struct flag *flags,
       size_t n_flags, struct cdn_upstream *up, struct cdn_admin *admin,
       struct cdn_accesslog *alog)
{
    struct cdn_config next;
    char err[600];
    if (build_config(&next, config_file, flags, n_flags, err, sizeof(err)) != 0) {
        cdn_error("SIGHUP: configuration refused, the running one stays: %s", err);
        return;
    }
    if (cdn_accesslog_reconfigure(alog, next.access_log,
                                  (enum cdn_accesslog_format)next.access_log_format) != 0) {
        cdn_error("SIGHUP: cannot open access_log %s: %s; configuration refused, the running one "
                  "stays",
                  next.access_log, strerror(errno));
        cdn_config_free(&next);
        return;
    }
    cdn_log_set_level((enum cdn_log_level)next.log_level);
    cdn_upstream_reconfigure(up, &next);
    cdn_admin_reconfigure(admin, &next);
    const struct {
        const char *key;
        bool changed;
    } restart[] = {
        {"listen", differ(running->listen, next.listen)},
        {"listen_tls", differ(running->listen_tls, next.listen_tls)},
        {"tls_cert", differ(running->tls_cert, next.tls_cert)},
        {"tls_key", differ(running->tls_key, next.tls_key)},
        {"admin_listen", differ(running->admin_listen, next.admin_listen)},
        {"cache_dir", differ(running->cache_dir, next.cache_dir)},
        {"cache_size", running->cache_size != next.cache_size},
        {"cache_writemap", running->cache_writemap != next.cache_writemap},
        {"workers", running->workers != next.workers},
        {"cdn_id", differ(running->cdn_id, next.cdn_id)},
        {"connection_limit", running->connection_limit != next.connection_limit},
        {"send_buffer", running->send_buffer != next.send_buffer},
        {"loopback_send_buffer", running->loopback_send_buffer != next.loopback_send_buffer},
        {"loopback_congestion_control",
         differ(running->loopback_congestion_control, next.loopback_congestion_control)},
    };
    char pending[256] = "";
    for (size_t i = 0; i < CDN_ARRAY_LEN(restart); i++) {
        if (!restart[i].changed)
            continue;
        size_t used = strlen(pending);
        snprintf(pending + used, sizeof(pending) - used, "%s%s", used ? ", " : "",
                 restart[i].key);
    }
    cdn_info("SIGHUP: configuration reloaded: %zu parent(s), %zu origin(s), access_log %s",
             next.n_parents, next.n_origins, next.access_log);
    if (pending[0] != '\0')
        cdn_warn("SIGHUP: changed keys that take a restart to apply: %s", pending);
    cdn_config_free(&next);
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"listen", required_argument, NULL, 1},
        {"origin", required_argument, NULL, 2},
        {"cache-dir", required_argument, NULL, 3},
        {"cache-size", required_argument, NULL, 4},
        {"admin", required_argument, NULL, 5},
        {"admin-token", required_argument, NULL, 6},
        {"cdn-id", required_argument, NULL, 7},
        {"workers", required_argument, NULL, 8},
        {NULL, 0, NULL, 0},
    };
    static const char *keys[] = {NULL,         "listen",      "origin", "cache_dir", "cache_size",
                                 "admin_listen", "admin_token", "cdn_id", "workers"};
    const char *config_file = NULL;
    bool test_only = false;
    struct flag *flags = cdn_calloc((size_t)argc, sizeof(*flags));
    size_t n_flags = 0;
    int c;
    while ((c = getopt_long(argc, argv, "c:thV", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_file = optarg; break;
        case 't': test_only = true; break;
        case 'h': usage(stdout); free(flags); return 0;
        case 'V': printf("cdnode %s\n", CDNODE_VERSION); free(flags); return 0;
        case '?': usage(stderr); free(flags); return 2;
        default:
            flags[n_flags].key = keys[c];
            flags[n_flags].value = optarg;
            n_flags++;
            break;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cdnode: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        free(flags);
        return 2;
    }

    struct cdn_config cfg;
    char err[512];
    if (build_config(&cfg, config_file, flags, n_flags, err, sizeof(err)) != 0) {
        fprintf(stderr, "cdnode: %s\n", err);
        free(flags);
        return 1;
    }
    if (test_only) {
        printf("cdnode: configuration %s is valid\n", config_file ? config_file : "(flags)");
        cdn_config_free(&cfg);
        free(flags);
        return 0;
    }
    cdn_log_set_level((enum cdn_log_level)cfg.log_level);
    /* Per-request buffers come and go at the top of the heap: without this glibc gives those
     * pages back on every free and faults them in again on the next request (measured: a third
     * of the forwarding path). 8 MiB of slack is kept at most. */
    mallopt(M_TRIM_THRESHOLD, 8 * 1024 * 1024);
    mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
    /* Grow a heap 16 MiB beyond what was asked for at a time: the worker and upstream threads
     * have heaps of their own, which otherwise grow page by page and shrink again under a
     * stream of misses (measured: growing them was a fifth of a miss's CPU time). Pages never
     * touched are not resident. */
    mallopt(M_TOP_PAD, 16 * 1024 * 1024);

    /* Every thread inherits this mask; only sigwait() below takes these signals. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = 1;
    struct cdn_cache *cache = NULL;
    /* Hit-for-miss markers last 10 s: long enough to stop serializing, short enough to notice
     * when an object becomes cacheable again. */
    struct cdn_collapse *collapse = cdn_collapse_new(10 * 1000);
    struct cdn_upstream *up = NULL;
    struct cdn_front *fe = NULL;
    struct cdn_accesslog *alog = NULL;
    if (cdn_accesslog_open(cfg.access_log, (enum cdn_accesslog_format)cfg.access_log_format,
                           &alog) != 0)
        cdn_error("cannot open access_log %s: %s", cfg.access_log, strerror(errno));
    else if (cdn_cache_open(&cfg, &cache) == 0)
        up = cdn_upstream_start(&cfg);
    fe = up ? cdn_front_start(&cfg, up, cache, collapse, alog) : NULL;
    struct cdn_admin *admin = fe ? cdn_admin_start(&cfg, fe, up, cache, collapse) : NULL;
    if (admin == NULL)
        goto out;
    cdn_info("cdnode %s: listening on %s%s%s, admin on %s, origin %s, id %s, %u workers, store "
             "%s",
             CDNODE_VERSION, cfg.listen, cfg.listen_tls ? " and TLS " : "",
             cfg.listen_tls ? cfg.listen_tls : "", cfg.admin_listen,
             cfg.n_parents ? cfg.parents[0] : cfg.origins[0], cfg.cdn_id,
             cfg.workers, cfg.cache_dir);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGUSR1) {
            if (cdn_accesslog_reopen(alog) != 0)
                cdn_error("SIGUSR1: cannot reopen access_log %s: %s", cfg.access_log,
                          strerror(errno));
            else
                cdn_info("SIGUSR1: access log reopened");
            continue;
        }
        if (sig == SIGHUP) {
            reload(&cfg, config_file, flags, n_flags, up, admin, alog);
            continue;
        }
        cdn_info("signal %d: draining", sig);
        break;
    }
    cdn_front_quiesce(fe);
    int64_t deadline = cdn_now_ms() + DRAIN_MS;
    while (cdn_front_active(fe) > 0 && cdn_now_ms() < deadline) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (cdn_front_active(fe) > 0)
        cdn_warn("%llu requests still in progress after %d ms: closing them",
                 (unsigned long long)cdn_front_active(fe), DRAIN_MS);
    rc = 0;
out:
    cdn_admin_stop(admin);
    cdn_upstream_stop(up); /* fails remaining fetches, which wakes their suspended clients */
    cdn_front_stop(fe);    /* releases the store leases responses still held */
    cdn_cache_close(cache); /* applies queued writes; their commits settle collapsed fetches */
    cdn_collapse_free(collapse);
    cdn_accesslog_close(alog);
    cdn_config_free(&cfg);
    free(flags);
    cdn_tcache_flush(); /* what this thread recycled: other threads' went when they ended */
    cdn_arena_drain();
    if (rc == 0)
        cdn_info("stopped");
    return rc;
}

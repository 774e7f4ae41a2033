/*
 * Fuzz target for the configuration parser (config.h): the input is loaded as a config file with
 * cdn_config_load; its first line, split at the first '=', also goes through cdn_config_set, and
 * the value parsers shared with other modules get the whole input as a string. Leaks count: the
 * config owns its strings and cdn_config_free must release every one, whatever was loaded.
 */
#include "fuzz.h"

#include "cdnode/common.h"
#include "cdnode/config.h"

#include <unistd.h>

static char path[64];
static int fd = -1;

static void
cleanup(void)
{
    unlink(path);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    snprintf(path, sizeof(path), "%s/cdnode-fuzz-XXXXXX.conf",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    fd = mkstemps(path, 5);
    CDN_ASSERT(fd >= 0);
    atexit(cleanup);
    return 0;
}

static void
check_err(int rc, const char *err)
{
    FUZZ_CHECK(rc == 0 || rc == CDN_EINVAL || rc == CDN_EIO);
    FUZZ_CHECK(memchr(err, '\0', 256) != NULL);
    if (rc != 0)
        FUZZ_CHECK(err[0] != '\0');
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    struct cdn_config c;

    CDN_ASSERT(ftruncate(fd, 0) == 0 && pwrite(fd, data, size, 0) == (ssize_t)size);
    cdn_config_defaults(&c);
    memset(err, 0, sizeof(err));
    int rc = cdn_config_load(&c, path, err, sizeof(err));
    check_err(rc, err);
    if (rc == 0) {
        memset(err, 0, sizeof(err));
        check_err(cdn_config_check(&c, err, sizeof(err)), err);
        FUZZ_CHECK(c.n_origins <= CDN_MAX_ORIGINS);
        FUZZ_CHECK(c.n_cache_key_drop_params <= CDN_MAX_LIST);
        FUZZ_CHECK(c.n_target_cache_control <= CDN_MAX_LIST);
    }
    cdn_config_free(&c);

    char *s = cdn_strndup((const char *)data, size);
    char *nl = strchr(s, '\n');
    if (nl)
        *nl = '\0';
    char *eq = strchr(s, '=');
    cdn_config_defaults(&c);
    if (eq)
        *eq = '\0';
    memset(err, 0, sizeof(err));
    check_err(cdn_config_set(&c, s, eq ? eq + 1 : "", err, sizeof(err)), err);
    if (eq)
        *eq = '=';
    cdn_config_free(&c);

    uint64_t u;
    bool b;
    char host[256];
    unsigned port;
    (void)cdn_parse_size(s, &u);
    (void)cdn_parse_duration_ms(s, &u);
    (void)cdn_parse_bool(s, &b);
    if (cdn_parse_hostport(s, host, sizeof(host), &port) == 0)
        FUZZ_CHECK(port <= 65535 && memchr(host, '\0', sizeof(host)) != NULL);
    free(s);
    return 0;
}

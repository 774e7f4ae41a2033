/*
 * admin.h: the admin listener, a second libmicrohttpd daemon on its own address (default
 * 127.0.0.1:9090). GET /healthz answers 200 without credentials; every other path requires
 * `Authorization: Bearer <admin_token>`, compared in constant time, else 401. With no token
 * configured, only /healthz is reachable. Serves GET /metrics (Prometheus text) from the
 * counters of the front end and the upstream.
 *
 * Started and stopped by the main thread only.
 */
#ifndef CDNODE_ADMIN_H
#define CDNODE_ADMIN_H

struct cdn_config;
struct cdn_front;
struct cdn_upstream;
struct cdn_admin;

/* Returns NULL after logging why the listener could not start. */
struct cdn_admin *cdn_admin_start(const struct cdn_config *cfg, struct cdn_front *fe,
                                  struct cdn_upstream *up);
void cdn_admin_stop(struct cdn_admin *a);

#endif

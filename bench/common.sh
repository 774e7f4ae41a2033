# Sourced by compare.sh and ab.sh: small helpers and the benchmark's origin.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # url: up to 20 s for any HTTP answer
    for _ in $(seq 1 200); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}

# The first lines of every nginx.conf here (origin and the nginx proxy), prefix DIR: one worker,
# files under DIR, no access log, up to the open http block.
nginx_head() {
    cat <<CONF
worker_processes 1;
user root;
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
events { worker_connections 8192; }
http {
    types {}
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
CONF
    for t in client_body proxy fastcgi uwsgi scgi; do echo "    ${t}_temp_path $1/tmp;"; done
}

# work_dir PREFIX: a new private directory for caches and logs, on tmpfs when /dev/shm has room
# (8 GiB free: each cdnode reserves its 2 GB store there, cache_writemap), else under /tmp, so no
# proxy waits on a disk and the comparison is of CPU work on one core.
work_dir() {
    local root=/tmp
    [ "$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 {print $4}')" -gt $((8 * 1024 * 1024)) ] \
        2>/dev/null && root=/dev/shm
    local d
    d=$(mktemp -d "$root/$1.XXXXXX")
    chmod 755 "$d"
    echo "$d"
}

# cdnode_conf PORT ORIGIN DIR ADMIN_PORT: the node's configuration in both scripts (bench/README.md,
# "cdnode"): one worker, a 2 GB store under DIR written through the writable map, no access log.
cdnode_conf() {
    cat <<CONF
listen = 127.0.0.1:$1
origin = $2
cache_dir = $3/cache
cache_size = 2g
cache_writemap = on
workers = 1
cdn_id = cdnode
admin_listen = 127.0.0.1:$4
access_log = off
log_level = warn
CONF
}

# The origin: one nginx worker on CPU 1 serving
#   /obj/{1k,256k,4m}.bin   static files, ETag, Cache-Control: max-age=3600
#   /reval/<anything>       one 1 KiB file, ETag, max-age=0, must-revalidate (logged)
#   /u/<anything>           the 1 KiB file, max-age=3600 (logged)
# bench/README.md ("The origin") explains the choices.

# origin_start DIR PORT: writes the files and nginx.conf under DIR and starts nginx in the
# background. Sets origin_pid, origin (its URL) and origin_log (one status per /reval/ or /u/
# request).
origin_start() {
    local o=$1 origin_port=$2
    mkdir -p "$o/www/obj" "$o/www/r" "$o/logs" "$o/tmp"
    head -c 1024 /dev/urandom >"$o/www/obj/1k.bin"
    head -c $((256 * 1024)) /dev/urandom >"$o/www/obj/256k.bin"
    head -c $((4 * 1024 * 1024)) /dev/urandom >"$o/www/obj/4m.bin"
    head -c 1024 /dev/urandom >"$o/www/r/1k.bin"
    cat >"$o/nginx.conf" <<CONF
$(nginx_head "$o")
    log_format st '\$status';
    open_file_cache max=100;
    server {
        listen 127.0.0.1:$origin_port;
        root $o/www;
        location /obj/ { add_header Cache-Control "max-age=3600"; }
        location /reval/ {
            access_log $o/logs/upstream.log st;
            try_files /r/1k.bin =404;
            add_header Cache-Control "max-age=0, must-revalidate";
        }
        location /u/ {
            access_log $o/logs/upstream.log st;
            try_files /obj/1k.bin =404;
            add_header Cache-Control "max-age=3600";
        }
    }
}
CONF
    : >"$o/logs/upstream.log"
    taskset -c 1 nginx -p "$o" -c "$o/nginx.conf" -e "$o/logs/error.log" -g 'daemon off;' &
    origin_pid=$!
    origin=http://127.0.0.1:$origin_port
    origin_log=$o/logs/upstream.log
}

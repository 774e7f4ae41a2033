#!/usr/bin/env bash
# Same-run benchmark of cdnode against nginx, Varnish and Apache Traffic Server, each in front of
# one nginx origin on loopback. bench/README.md explains every setting and scenario.
#
#   bench/compare.sh [--quick] [--reps N] [--duration S] [--proxies "cdnode nginx varnish ats"]
#                    [--scenarios "hit-1k hit-256k hit-4m nokeep-1k reval miss"] [--client loadgen]
#
# Installs what is missing (Debian packages; needs root or sudo), builds cdnode Release into
# build-bench, runs every scenario for every proxy (proxy on CPU 0, origin and client on CPU 1,
# 64 connections, proxies interleaved within each repetition), and writes
# bench/results/<timestamp>/{results.md,results.csv,ratios.png,raw.txt,logs/}. Prints results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

reps=3
dur=10
warm=2
conns=64
client=auto
reval_urls=10000
proxies="cdnode nginx varnish ats"
scenarios="hit-1k hit-256k hit-4m nokeep-1k reval miss"
while [ $# -gt 0 ]; do
    case $1 in
    --quick) reps=1 dur=3 warm=1 reval_urls=2000 ;;
    --reps) reps=$2; shift ;;
    --duration) dur=$2; shift ;;
    --proxies) proxies=$2; shift ;;
    --scenarios) scenarios=$2; shift ;;
    --client) client=$2; shift ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ "$client" = auto ] || [ "$client" = loadgen ] || { echo "--client: auto or loadgen" >&2; exit 2; }

# ---- packages ------------------------------------------------------------------------------------
pkgs=(build-essential cmake pkg-config libmicrohttpd-dev liblmdb-dev libcurl4-openssl-dev
      libssl-dev zlib1g-dev curl python3 util-linux procps wrk nginx varnish trafficserver
      gnuplot-nox)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

# ---- build ---------------------------------------------------------------------------------------
build=build-bench
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCDNODE_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target cdnode loadgen >/dev/null
cdnode_bin=$root/$build/cdnode
loadgen=$root/$build/bench/loadgen

# ---- work area, ports, cleanup -------------------------------------------------------------------
stamp=$(date +%Y%m%d-%H%M%S)
out=$root/bench/results/$stamp
mkdir -p "$out/logs"
raw=$out/raw.txt
: >"$raw"
# shellcheck source=bench/common.sh
. bench/common.sh
# Everything the proxies write (caches, Varnish's shared memory log, logs) goes there.
tmp=$(work_dir cdnode-bench)
origin_port=$(free_port)
declare -A port pid
for p in cdnode nginx varnish ats; do port[$p]=$(free_port); done
admin_port=$(free_port)
started=()
cleanup() {
    for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${started[@]}"; do wait "$p" 2>/dev/null || true; done
    local f d
    for f in "$tmp"/*/logs/*; do
        d=$(basename "$(dirname "$(dirname "$f")")")
        [ -f "$f" ] && [ "$(basename "$f")" != upstream.log ] && cp "$f" "$out/logs/$d-$(basename "$f")"
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

# ---- origin: nginx on CPU 1 ----------------------------------------------------------------------
o=$tmp/origin
origin_start "$o" "$origin_port"
started+=($origin_pid)
wait_http "$origin/obj/1k.bin"
etag=$(curl -s -D - -o /dev/null "$origin/reval/0" | awk 'tolower($1)=="etag:" {print $2}' | tr -d '\r')

# ---- proxies, each on CPU 0 ----------------------------------------------------------------------
start_cdnode() {
    local d=$tmp/cdnode
    mkdir -p "$d/logs"
    cdnode_conf "${port[cdnode]}" "$origin" "$d" "$admin_port" >"$d/cdnode.conf"
    taskset -c 0 "$cdnode_bin" -c "$d/cdnode.conf" >"$d/logs/cdnode.log" 2>&1 &
    pid[cdnode]=$!
}
start_nginx() {
    local d=$tmp/nginx
    mkdir -p "$d/logs" "$d/tmp" "$d/cache"
    cat >"$d/nginx.conf" <<CONF
$(nginx_head "$d")
    proxy_cache_path $d/cache levels=1:2 keys_zone=bench:64m max_size=2g inactive=1d
                     use_temp_path=off;
    upstream origin {
        server 127.0.0.1:$origin_port;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:${port[nginx]};
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_lock on;
            proxy_cache_revalidate on;
            add_header X-Cache-Status \$upstream_cache_status always;
        }
    }
}
CONF
    taskset -c 0 nginx -p "$d" -c "$d/nginx.conf" -e "$d/logs/error.log" -g 'daemon off;' &
    pid[nginx]=$!
}
start_varnish() {
    local d=$tmp/varnish
    mkdir -p "$d/logs"
    cat >"$d/default.vcl" <<CONF
vcl 4.1;
backend origin {
    .host = "127.0.0.1";
    .port = "$origin_port";
}
sub vcl_backend_response {
    # Store /reval/ but revalidate it on every request: Varnish skips objects whose TTL is 0 when
    # it looks for a stale copy to revalidate, hence 1 ms; keep holds the copy for If-None-Match.
    if (bereq.url ~ "^/reval/") {
        set beresp.ttl = 0.001s;
        set beresp.grace = 0s;
        set beresp.keep = 1h;
        return (deliver);
    }
}
sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
CONF
    taskset -c 0 varnishd -F -j none -n "$d/work" -a "127.0.0.1:${port[varnish]}" -T none \
        -f "$d/default.vcl" -s malloc,1G -p thread_pools=1 -p thread_pool_min=100 \
        -p thread_pool_max=1000 >"$d/logs/varnishd.log" 2>&1 &
    pid[varnish]=$!
}
start_ats() {
    local d=$tmp/ats
    mkdir -p "$d/etc" "$d/run" "$d/logs" "$d/cache"
    cp -r /etc/trafficserver/. "$d/etc/"
    cat >"$d/runroot.yaml" <<CONF
prefix: /usr
exec_prefix: /usr
bindir: /usr/bin
sbindir: /usr/sbin
sysconfdir: $d/etc
datadir: $d/cache
includedir: /usr/include
libdir: /usr/lib/trafficserver
libexecdir: /usr/lib/trafficserver/modules
localstatedir: $d
runtimedir: $d/run
logdir: $d/logs
cachedir: $d/cache
CONF
    cat >"$d/etc/records.config" <<CONF
CONFIG proxy.config.admin.user_id STRING #-1
CONFIG proxy.config.http.server_ports STRING ${port[ats]}:ip-in=127.0.0.1
CONFIG proxy.config.exec_thread.autoconfig INT 0
CONFIG proxy.config.exec_thread.limit INT 1
CONFIG proxy.config.accept_threads INT 0
CONFIG proxy.config.task_threads INT 1
CONFIG proxy.config.cache.threads_per_disk INT 4
CONFIG proxy.config.cache.ram_cache.size INT 1073741824
CONFIG proxy.config.cache.ram_cache_cutoff INT 16777216
CONFIG proxy.config.http.cache.http INT 1
CONFIG proxy.config.reverse_proxy.enabled INT 1
CONFIG proxy.config.url_remap.remap_required INT 1
CONFIG proxy.config.http.insert_response_via_str INT 2
CONFIG proxy.config.log.logging_enabled INT 0
CONFIG proxy.config.http.server_session_sharing.match STRING both
CONFIG proxy.config.http.keep_alive_no_activity_timeout_in INT 300
CONFIG proxy.config.http.cache.max_open_read_retries INT 5
CONFIG proxy.config.http.cache.open_read_retry_time INT 10
CONFIG proxy.config.net.connections_throttle INT 10000
CONFIG proxy.config.http.wait_for_cache INT 1
CONF
    echo "map http://127.0.0.1:${port[ats]}/ $origin/" >"$d/etc/remap.config"
    echo "$d/cache 1G" >"$d/etc/storage.config"
    : >"$d/etc/plugin.config"
    taskset -c 0 traffic_server --run-root="$d" >"$d/logs/traffic_server.log" 2>&1 &
    pid[ats]=$!
}

for p in $proxies; do
    "start_$p"
    started+=("${pid[$p]}")
done
for p in $proxies; do wait_http "http://127.0.0.1:${port[$p]}/obj/1k.bin"; done

tree_pids() { # a process and its descendants
    echo "$1"
    local c
    for c in $(pgrep -P "$1" || true); do tree_pids "$c"; done
}
pin_proxy() { # proxy: every thread of its process tree back on CPU 0; prints how many had left it
    local p t moved=0
    for p in $(tree_pids "${pid[$1]}"); do
        for t in /proc/"$p"/task/*; do
            grep -q '^Cpus_allowed_list:[[:space:]]*0$' "$t/status" 2>/dev/null && continue
            [ -e "$t/status" ] || continue
            taskset -pc 0 "${t##*/}" >/dev/null && moved=$((moved + 1))
        done
    done
    echo "$moved"
}

# ---- HIT evidence --------------------------------------------------------------------------------
declare -A evidence_re=([cdnode]='^cache-status:.*; hit' [nginx]='^x-cache-status: hit'
                        [varnish]='^x-cache: hit' [ats]='^via:.*\[c[hr]')
declare -A evidence_hdr=([cdnode]=cache-status [nginx]=x-cache-status [varnish]=x-cache [ats]=via)
evidence=$out/evidence.txt
: >"$evidence"
nohit=""
for p in $proxies; do
    for f in 1k 256k 4m; do
        url=http://127.0.0.1:${port[$p]}/obj/$f.bin
        for _ in 1 2 3; do curl -s -o /dev/null "$url"; done
        line=$(curl -s -D - -o /dev/null "$url" | tr -d '\r' |
            grep -i "^${evidence_hdr[$p]}:" | tail -1)
        ok=HIT
        echo "$line" | grep -qiE "${evidence_re[$p]}" || { ok="NO HIT"; nohit="$nohit $p/$f"; }
        printf '%-8s /obj/%-9s %-7s %s\n' "$p" "$f.bin" "$ok" "$line" | tee -a "$evidence"
    done
    # what a stale /reval/ object gets: the second request of a URL goes to the origin
    url=http://127.0.0.1:${port[$p]}/reval/check
    curl -s -o /dev/null "$url"
    line=$(curl -s -D - -o /dev/null "$url" | tr -d '\r' | grep -i "^${evidence_hdr[$p]}:" | tail -1)
    printf '%-8s /reval/ 2nd %-7s %s\n' "$p" "" "$line" | tee -a "$evidence"
done

# A proxy may set its own threads' CPU affinity after start (Traffic Server binds its event threads
# to the NUMA node, so they would run on both CPUs): every thread goes back to CPU 0 here and again
# before each run, and the evidence file says which proxy needed it.
for p in $proxies; do
    printf '%-8s threads that had left CPU 0 and were put back: %s\n' "$p" "$(pin_proxy "$p")" |
        tee -a "$evidence"
done

# ---- measuring -----------------------------------------------------------------------------------
sample_mem() { # pid outfile: peak RssAnon, RssFile, RssShmem (kB) of the process tree while it runs
    taskset -pc 1 $BASHPID >/dev/null
    local peak="0 0 0" p
    while [ ! -e "$2.stop" ]; do
        peak=$(for p in $(tree_pids "$1"); do cat "/proc/$p/status" 2>/dev/null || true; done |
            awk -v peak="$peak" 'BEGIN {split(peak, m, " ")}
                /^RssAnon:/ {a += $2} /^RssFile:/ {f += $2} /^RssShmem:/ {s += $2}
                END {print (a > m[1] ? a : m[1]), (f > m[2] ? f : m[2]), (s > m[3] ? s : m[3])}')
        sleep 0.2
    done
    echo "$peak" >"$2"
}
client_for() { # scenario -> wrk | loadgen
    case $1 in
    hit-1k | nokeep-1k) [ "$client" = loadgen ] && echo loadgen || echo wrk ;;
    *) echo loadgen ;;
    esac
}
measure() { # proxy scenario seconds rep -> one key=value line
    local p=$1 s=$2 d=$3 rep=$4 base=http://127.0.0.1:${port[$1]} c
    c=$(client_for "$s")
    local wrkc=(taskset -c 1 wrk -t1 -c"$conns" -d"${d}s" --timeout 10s -s bench/wrk-report.lua)
    local lg=(taskset -c 1 "$loadgen" -c "$conns" -d "$d")
    case $s:$c in
    hit-1k:wrk) "${wrkc[@]}" "$base/obj/1k.bin" | tail -1 ;;
    nokeep-1k:wrk) "${wrkc[@]}" -H 'Connection: close' "$base/obj/1k.bin" | tail -1 ;;
    hit-1k:loadgen) "${lg[@]}" "$base/obj/1k.bin" ;;
    nokeep-1k:loadgen) "${lg[@]}" -k "$base/obj/1k.bin" ;;
    hit-256k:*) "${lg[@]}" "$base/obj/256k.bin" ;;
    hit-4m:*) "${lg[@]}" "$base/obj/4m.bin" ;;
    reval:*) "${lg[@]}" -H "If-None-Match: $etag" -m "$reval_urls" "$base/reval/%d" ;;
    miss:*) "${lg[@]}" -s $(((rep + 1) * 100000000)) "$base/u/%d" ;;
    esac
}
tree_ticks() { # CPU time (clock ticks) used so far by a process tree
    local p t=0
    for p in $(tree_pids "$1"); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
cpu_busy() { # "busy total" jiffies of CPU $1
    awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8}' /proc/stat
}
origin_counts() { # lines of the origin's /reval/ + /u/ log from line $1 on: "n200 n304 nother"
    tail -n +"$1" "$o/logs/upstream.log" |
        awk '{c[$1]++; n++} END {print c["200"]+0, c["304"]+0, n - c["200"] - c["304"]}'
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo
echo "proxies: $proxies; scenarios: $scenarios; $reps repetition(s) of ${dur} s; load average $load_before"
for p in $proxies; do # every /reval/ URL stored once before any measurement
    taskset -c 1 "$loadgen" -c 16 -d 120 -n "$reval_urls" -m "$reval_urls" \
        "http://127.0.0.1:${port[$p]}/reval/%d" >/dev/null
done
read -r -a plist <<<"$proxies"
for rep in $(seq 1 "$reps"); do
    for s in $scenarios; do
        # rotate the proxy order each repetition so none always runs first
        n=${#plist[@]}
        for i in $(seq 0 $((n - 1))); do
            p=${plist[$(((i + rep - 1) % n))]}
            case $s in hit-*) measure "$p" "$s" "$warm" "$rep" >/dev/null ;; esac
            before=$(($(wc -l <"$o/logs/upstream.log") + 1))
            memf=$tmp/mem.$p.$s.$rep
            [ "$s" = hit-4m ] && { sample_mem "${pid[$p]}" "$memf" & memjob=$!; }
            pin_proxy "$p" >/dev/null # threads started since the last check
            t0=$(tree_ticks "${pid[$p]}")
            read -r b0 a0 < <(cpu_busy 0)
            read -r b1 a1 < <(cpu_busy 1)
            line=$(measure "$p" "$s" "$dur" "$rep")
            read -r b0e a0e < <(cpu_busy 0)
            read -r b1e a1e < <(cpu_busy 1)
            t1=$(tree_ticks "${pid[$p]}")
            # the proxy's own CPU use, and how busy each CPU was (others' processes included)
            extra=$(awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v d="$dur" \
                -v b0="$((b0e - b0))" -v a0="$((a0e - a0))" -v b1="$((b1e - b1))" \
                -v a1="$((a1e - a1))" 'BEGIN {printf " proxy_cpu=%.0f cpu0_busy=%.0f cpu1_busy=%.0f",
                    100 * t / hz / d, a0 ? 100 * b0 / a0 : 0, a1 ? 100 * b1 / a1 : 0}')
            if [ "$s" = hit-4m ]; then
                touch "$memf.stop"
                wait "$memjob"
                read -r anon file shmem <"$memf"
                extra="$extra rss_anon_kb=$anon rss_file_kb=$file rss_shmem_kb=$shmem"
            fi
            case $s in reval | miss)
                read -r n200 n304 nother < <(origin_counts "$before")
                extra="$extra origin_200=$n200 origin_304=$n304 origin_other=$nother" ;;
            esac
            echo "scenario=$s proxy=$p rep=$rep client=$(client_for "$s") $line$extra" >>"$raw"
            printf '%-10s %-8s rep %d: %s%s\n' "$s" "$p" "$rep" "$line" "$extra"
        done
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- report --------------------------------------------------------------------------------------
{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo) x$(nproc)"
    echo "kernel=$(uname -r)"
    echo "cdnode=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src include || echo +dirty)"
    echo "nginx=$(nginx -v 2>&1 | sed 's/.*\///')"
    echo "varnish=$(varnishd -V 2>&1 | head -1 | sed 's/.*(varnish-\([^ ]*\).*/\1/')"
    echo "ats=$(traffic_server --version 2>&1 | awk -F' - ' '/^Apache Traffic Server/ {print $3; exit}')"
    echo "wrk=$(wrk -v 2>&1 | head -1 | awk '{print $2}')"
    echo "workdir=$(dirname "$tmp")"
    echo "reps=$reps"
    echo "duration_s=$dur"
    echo "connections=$conns"
    echo "reval_urls=$reval_urls"
    echo "load_before=$load_before"
    echo "load_after=$load_after"
    echo "fuzz_or_other_load=$(pgrep -fc fuzz_ || true) fuzz processes running at the end"
    [ -z "$nohit" ] || echo "no_hit_evidence=$nohit"
} >"$out/meta.txt"
python3 bench/report.py "$out"
cat "$out/results.md"
echo
echo "written to ${out#"$root"/}/"

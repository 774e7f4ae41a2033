#!/usr/bin/env bash
# Same-run benchmark of cdnode against the origin itself (wrk, 64 connections, 5 s, median of 3):
#   forward-1k   uncacheable 1 KiB response, every request forwarded
#   hit-1k       cacheable 1 KiB response served from the store
#   gzip-hit     100 KB text stored gzip-compressed: a gzip client gets the stored bytes, a client
#                without gzip gets them inflated on the fly (the line shows the compression ratio)
# The node is pinned to CPU 0, wrk and the origin to CPU 1; one front-end worker. Figures are
# ratios to the origin measured in the same run (the origin is tests/origin/testorigin.c, a
# thread-per-connection test server: a reference point, not a peer).
# Usage: bench/forward.sh [build-dir]   (prints a markdown table)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
[ -x "$build/cdnode" ] || { cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null;
                            cmake --build "$build" -j"$(nproc)"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
op=$(free_port); np=$(free_port); ap=$(free_port)
tmp=$(mktemp -d)
taskset -c 1 "$build/tests/testorigin" --addr 127.0.0.1 --port "$op" >"$tmp/origin.log" 2>&1 &
origin=$!
cat >"$tmp/node.conf" <<CONF
access_log = off
CONF
taskset -c 0 "$build/cdnode" -c "$tmp/node.conf" --listen "127.0.0.1:$np" \
    --origin "http://127.0.0.1:$op" --admin "127.0.0.1:$ap" --cache-dir "$tmp/cache" \
    --workers 1 >"$tmp/node.log" 2>&1 &
node=$!
trap 'kill $node $origin 2>/dev/null; wait $node $origin 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$ap/healthz" 2>/dev/null && break; sleep 0.1; done
run() { # url [header] -> "req/s p99" (median run by req/s)
    for _ in 1 2 3; do
        taskset -c 1 wrk -t1 -c64 -d5s --latency ${2:+-H "$2"} "$1" |
            awk '/Requests\/sec/ {r=$2} / 99%/ {p=$2} END {print r, p}'
    done | sort -n | sed -n 2p
}
row() { # name direct proxied
    awk -v n="$1" -v d="$2" -v p="$3" 'BEGIN {
        split(d, a, " "); split(p, b, " ");
        printf "| %s | %.0f | %s | %.0f | %s | %.2f |\n", n, a[1], a[2], b[1], b[2], b[1]/a[1] }'
}
echo "| scenario | origin req/s | origin p99 | cdnode req/s | cdnode p99 | ratio |"
echo "|---|---|---|---|---|---|"
f="/bench/fwd?size=1024&cc=no-store"
row forward-1k "$(run "http://127.0.0.1:$op$f")" "$(run "http://127.0.0.1:$np$f")"
h="/bench/hit?size=1024&cc=max-age=3600"
curl -s -o /dev/null "http://127.0.0.1:$np$h"
row hit-1k "$(run "http://127.0.0.1:$op$h")" "$(run "http://127.0.0.1:$np$h")"
g="/bench/text?size=100000&cc=max-age=3600&h=Content-Type:text/plain"
curl -s -o /dev/null "http://127.0.0.1:$np$g"
gz=$(curl -s -H 'Accept-Encoding: gzip' "http://127.0.0.1:$np$g" | wc -c)
row "gzip-hit (gzip client)" "$(run "http://127.0.0.1:$op$g")" \
    "$(run "http://127.0.0.1:$np$g" 'Accept-Encoding: gzip')"
row "gzip-hit (gunzip client)" "$(run "http://127.0.0.1:$op$g")" "$(run "http://127.0.0.1:$np$g")"
echo
echo "gzip: 100000 identity bytes stored as $gz bytes (ratio $(awk -v g="$gz" 'BEGIN {printf "%.4f", g/100000}'))"

#!/usr/bin/env bash
# Forwarding benchmark: wrk against the test origin directly, then through cdnode, same run.
# The node is pinned to CPU 0, wrk and the origin to CPU 1; 64 connections; medians of 3 runs.
# Usage: bench/forward.sh [build-dir]   (prints a markdown table; figures as ratio to direct)
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
taskset -c 0 "$build/cdnode" --listen "127.0.0.1:$np" --origin "http://127.0.0.1:$op" \
    --admin "127.0.0.1:$ap" --cache-dir "$tmp/cache" --workers 1 >"$tmp/node.log" 2>&1 &
node=$!
trap 'kill $node $origin 2>/dev/null; wait $node $origin 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$ap/healthz" 2>/dev/null && break; sleep 0.1; done
path="/bench/1k?size=1024&cc=no-store"
run() { # url -> req/s (median of 3)
    for _ in 1 2 3; do
        taskset -c 1 wrk -t1 -c64 -d5s --latency "$1" | awk '/Requests\/sec/ {print $2}'
    done | sort -n | sed -n 2p
}
direct=$(run "http://127.0.0.1:$op$path")
proxied=$(run "http://127.0.0.1:$np$path")
echo "| scenario | direct to origin (req/s) | through cdnode (req/s) | ratio |"
echo "|---|---|---|---|"
awk -v d="$direct" -v p="$proxied" 'BEGIN { printf "| forward-1k | %.0f | %.0f | %.2f |\n", d, p, p/d }'

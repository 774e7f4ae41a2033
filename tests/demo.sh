#!/usr/bin/env bash
# Builds cdnode and runs a demo: the bundled sample origin on 127.0.0.1:8081 and a cdnode in
# front of it on 127.0.0.1:8080 (admin on 127.0.0.1:9090, store under cache/). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target cdnode testorigin
token=demo-admin-token-0123456789
build/tests/testorigin --addr 127.0.0.1 --port 8081 --demo >/dev/null &
origin=$!
build/cdnode --listen 127.0.0.1:8080 --origin http://127.0.0.1:8081 --admin 127.0.0.1:9090 \
    --admin-token "$token" --cache-dir cache --cdn-id demo-node &
node=$!
trap 'kill "$node" "$origin" 2>/dev/null; wait "$node" "$origin" 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null http://127.0.0.1:9090/healthz 2>/dev/null && break
    sleep 0.1
done
cat <<MSG

cdnode is running in front of the demo origin. Try:
  curl -i http://127.0.0.1:8080/hello.txt
  curl -i http://127.0.0.1:8080/slow
  curl -i -X POST --data 'hi' 'http://127.0.0.1:8080/echo?echo=1'
  curl -i http://127.0.0.1:9090/healthz
  curl -s -H 'Authorization: Bearer $token' http://127.0.0.1:9090/metrics
Ctrl-C stops the node and the origin.
MSG
wait "$node"

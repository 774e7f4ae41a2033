#!/usr/bin/env bash
# Runs the shared-cache tests of the http-cache-tests suite against a cdnode binary and checks the
# required failures against baseline.txt.
#
#   tests/conformance/run.sh <path-to-cdnode> [TEST_ID]
#
# Starts the suite's origin and a cdnode in front of it, both on 127.0.0.1 with free ports, runs
# the suite's client through the node, summarizes (summarize.mjs) and stops everything it
# started. Exit status: 0 when every required failure is listed in baseline.txt, 1 when one is
# not, 2 when the run itself could not be done. With TEST_ID only that test runs, with its
# requests and responses dumped, and nothing is compared.
#
# Environment: CONFORMANCE_RESULTS (directory for results.json and the logs; default
# conformance-results/ beside the binary), CONFORMANCE_BASELINE (default baseline.txt here),
# CONFORMANCE_VERBOSE=1 (also list tests that were not judged), CONFORMANCE_CLIENT_TIMEOUT
# (seconds for the client, default 240), CONFORMANCE_UPDATE_BASELINE=1 (rewrite the baseline
# from this run's required failures).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
usage() { echo "usage: $0 <path-to-cdnode> [TEST_ID]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
bin="$1"
only="${2:-}"
[ -x "$bin" ] || { echo "conformance: ERROR: $bin is not an executable"; echo "conformance: 0 passed, 0 failed"; exit 2; }
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

outdir="${CONFORMANCE_RESULTS:-$(dirname "$bin")/conformance-results}"
baseline="${CONFORMANCE_BASELINE:-$here/baseline.txt}"
client_timeout="${CONFORMANCE_CLIENT_TIMEOUT:-240}"
token="conformance-token-0123456789"

fail() { # message: a failure of the run itself, not of a test
    echo "conformance: ERROR: $*"
    echo "conformance: 0 passed, 0 failed"
    exit 2
}

for tool in node npm curl timeout; do
    command -v "$tool" >/dev/null || fail "$tool not found (Debian: apt-get install nodejs npm curl coreutils)"
done

# --- node dependencies, installed from package-lock.json when missing or out of date ----------
install_deps() {
    local want have
    want="$(node -e 'console.log(require(process.argv[1]).packages["node_modules/http-cache-tests"].version)' \
            "$here/package-lock.json")"
    have="$(node -e 'try { console.log(require(process.argv[1]).version) } catch { console.log("") }' \
            "$here/node_modules/http-cache-tests/package.json")"
    [ "$want" = "$have" ] && return 0
    echo "conformance: installing http-cache-tests $want (npm ci)"
    (cd "$here" && timeout 180 npm ci --no-audit --no-fund --prefer-offline --loglevel=error) ||
        fail "npm ci failed in $here"
}
if command -v flock >/dev/null; then
    # Two runs at once (e.g. two build trees under ctest -j) must not both run npm ci.
    exec 9>"$here/.install.lock"
    timeout 360 flock 9 || fail "timed out waiting for $here/.install.lock"
    install_deps
    flock -u 9
    exec 9>&-
else
    install_deps
fi

# --- processes we start, stopped on every exit -------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/cdnode-conformance.XXXXXX")"
origin_pid=""
node_pid=""
stopped_status=0
stop_pid() { # pid: TERM, up to 6 s to exit, then KILL; the exit status is left in stopped_status
    local pid="$1" i
    stopped_status=0
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || stopped_status=$?
}
cleanup() {
    stop_pid "$node_pid"
    stop_pid "$origin_pid"
    if [ -d "$outdir" ]; then
        cp -f "$work/origin.log" "$work/cdnode.log" "$outdir/" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 2' INT TERM HUP

mkdir -p "$outdir"
rm -f "$outdir/results.json"

# --- the suite's origin on a free port ----------------------------------------------------------
node "$here/origin.mjs" 0 >"$work/origin.log" 2>&1 &
origin_pid=$!
origin_port=""
for _ in $(seq 100); do
    origin_port="$(sed -n 's/^listening 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/origin.log")"
    [ -n "$origin_port" ] && break
    kill -0 "$origin_pid" 2>/dev/null || break
    sleep 0.1
done
[ -n "$origin_port" ] || { cat "$work/origin.log"; fail "the origin did not start"; }

# --- cdnode in front of it ----------------------------------------------------------------------
free_ports() { # prints two free 127.0.0.1 ports
    node -e '
        const net = require("net"); const ports = []; const servers = [];
        for (let i = 0; i < 2; i++) {
          const s = net.createServer(); servers.push(s)
          s.listen(0, "127.0.0.1", () => {
            ports.push(s.address().port)
            if (ports.length === 2) { console.log(ports.join(" ")); servers.forEach(x => x.close()) }
          })
        }'
}
started=""
for attempt in 1 2 3; do # a port picked here may be taken before cdnode binds it: try again
    read -r listen_port admin_port < <(free_ports)
    rm -rf "$work/cache"
    mkdir -p "$work/cache"
    "$bin" --listen "127.0.0.1:$listen_port" --origin "http://127.0.0.1:$origin_port" \
        --admin "127.0.0.1:$admin_port" --admin-token "$token" --cache-dir "$work/cache" \
        --cdn-id conformance --workers 2 >>"$work/cdnode.log" 2>&1 &
    node_pid=$!
    for _ in $(seq 200); do # up to ~20 s (sanitizer builds start slowly)
        if curl -fsS --max-time 2 "http://127.0.0.1:$admin_port/healthz" >/dev/null 2>&1; then
            started=yes
            break
        fi
        kill -0 "$node_pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$started" ] && break
    echo "conformance: cdnode did not come up (attempt $attempt); log:"
    tail -n 20 "$work/cdnode.log" | sed 's/^/  /'
    stop_pid "$node_pid"
    node_pid=""
done
[ -n "$started" ] || fail "cdnode did not answer /healthz on 127.0.0.1:$admin_port"
echo "conformance: origin 127.0.0.1:$origin_port, cdnode 127.0.0.1:$listen_port (admin $admin_port)"

# --- the suite's client through the node --------------------------------------------------------
base="http://127.0.0.1:$listen_port"
if [ -n "$only" ]; then
    timeout "$client_timeout" node --no-warnings "$here/client.mjs" "$base" "$outdir/results.json" "$only" ||
        fail "the client failed (exit $?)"
    echo "== origin log"
    cat "$work/origin.log"
    exit 0
fi
rc=0
timeout "$client_timeout" node --no-warnings "$here/client.mjs" "$base" "$outdir/results.json" || rc=$?
if [ "$rc" -ne 0 ]; then
    [ "$rc" -eq 124 ] && echo "conformance: the client did not finish within ${client_timeout}s"
    echo "conformance: cdnode log (last 30 lines):"
    tail -n 30 "$work/cdnode.log" | sed 's/^/  /'
    fail "the client failed (exit $rc)"
fi
alive=yes
kill -0 "$node_pid" 2>/dev/null || alive=""
stop_pid "$node_pid"
node_pid=""
if [ -z "$alive" ]; then
    echo "conformance: WARNING: cdnode exited during the run, status $stopped_status (see $outdir/cdnode.log)"
elif [ "$stopped_status" -ne 0 ]; then
    echo "conformance: WARNING: cdnode exited with status $stopped_status on SIGTERM (see $outdir/cdnode.log)"
fi
echo "conformance: results in $outdir/results.json"

update=()
[ "${CONFORMANCE_UPDATE_BASELINE:-0}" = 1 ] && update=(--write-baseline)
rc=0
node "$here/summarize.mjs" "$outdir/results.json" "$baseline" "${update[@]}" || rc=$?
exit "$rc"

#!/usr/bin/env bash
# Paired A/B of two cdnode builds (or two configurations of one) on the benchmark's origin.
#
#   bench/ab.sh [--scenario S] [--pairs N] [--duration S] [--a-conf LINE] [--b-conf LINE]
#               BIN_A [BIN_B]
#
# Both nodes run at once on CPU 0, each with its own store; the origin (bench/common.sh) and the
# load generator run on CPU 1. The load alternates between the two in short runs, A first in odd
# pairs and B first in even ones, so both see the same phase of a machine whose speed drifts.
# Prints each pair's req/s, then the mean of the per-pair ratios B/A, in how many pairs B was
# faster, and the two-sided sign-test p-value of that count. BIN_B defaults to BIN_A: with
# --b-conf that compares configurations, without it it is an A/A run that shows the noise floor.
# --a-conf / --b-conf append a line to that node's configuration (repeatable).
# Scenarios (as in compare.sh, loadgen only): hit-1k hit-256k hit-4m nokeep-1k reval miss.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scenario=miss
pairs=16
dur=2
conns=64
reval_urls=10000
aconf=()
bconf=()
while [ $# -gt 0 ]; do
    case $1 in
    --scenario) scenario=$2; shift ;;
    --pairs) pairs=$2; shift ;;
    --duration) dur=$2; shift ;;
    --a-conf) aconf+=("$2"); shift ;;
    --b-conf) bconf+=("$2"); shift ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
    esac
    shift
done
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: bench/ab.sh [options] BIN_A [BIN_B]" >&2; exit 2; }
bin_a=$(realpath "$1")
bin_b=$(realpath "${2:-$1}")
case $scenario in
hit-1k | hit-256k | hit-4m | nokeep-1k | reval | miss) ;;
*) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
for t in nginx taskset curl python3; do
    command -v "$t" >/dev/null || { echo "$t is missing: bench/compare.sh installs it" >&2; exit 2; }
done

build=build-bench
[ -x "$build/bench/loadgen" ] || {
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCDNODE_TESTS=OFF >/dev/null
    cmake --build "$build" -j"$(nproc)" --target loadgen >/dev/null
}
loadgen=$root/$build/bench/loadgen

# shellcheck source=bench/common.sh
. bench/common.sh
tmp=$(work_dir cdnode-ab)
started=()
cleanup() {
    for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${started[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
origin_start "$tmp/origin" "$(free_port)"
started+=($origin_pid)
wait_http "$origin/obj/1k.bin"
etag=$(curl -s -D - -o /dev/null "$origin/reval/0" | awk 'tolower($1)=="etag:" {print $2}' | tr -d '\r')

declare -A url
start_node() { # name binary extra-lines...
    local n=$1 bin=$2 d=$tmp/$1 port
    shift 2
    port=$(free_port)
    mkdir -p "$d"
    {
        cdnode_conf "$port" "$origin" "$d" "$(free_port)"
        for l in "$@"; do echo "$l"; done
    } >"$d/cdnode.conf"
    taskset -c 0 "$bin" -c "$d/cdnode.conf" >"$d/cdnode.log" 2>&1 &
    started+=($!)
    url[$n]=http://127.0.0.1:$port
    wait_http "${url[$n]}/obj/1k.bin"
}
start_node a "$bin_a" ${aconf[@]+"${aconf[@]}"}
start_node b "$bin_b" ${bconf[@]+"${bconf[@]}"}

for n in a b; do # stored before any measurement, as in compare.sh
    case $scenario in
    reval) taskset -c 1 "$loadgen" -c 16 -d 120 -n "$reval_urls" -m "$reval_urls" \
        "${url[$n]}/reval/%d" >/dev/null ;;
    hit-*) f=${scenario#hit-}
        taskset -c 1 "$loadgen" -c "$conns" -d 1 "${url[$n]}/obj/$f.bin" >/dev/null ;;
    nokeep-1k) curl -s -o /dev/null "${url[$n]}/obj/1k.bin" ;;
    miss) taskset -c 1 "$loadgen" -c "$conns" -d 1 -s 900000000 "${url[$n]}/u/%d" >/dev/null ;;
    esac
done

one() { # node run-number -> req/s of one run
    local lg=(taskset -c 1 "$loadgen" -c "$conns" -d "$dur") base=${url[$1]} line
    case $scenario in
    hit-1k) line=$("${lg[@]}" "$base/obj/1k.bin") ;;
    hit-256k) line=$("${lg[@]}" "$base/obj/256k.bin") ;;
    hit-4m) line=$("${lg[@]}" "$base/obj/4m.bin") ;;
    nokeep-1k) line=$("${lg[@]}" -k "$base/obj/1k.bin") ;;
    reval) line=$("${lg[@]}" -H "If-None-Match: $etag" -m "$reval_urls" "$base/reval/%d") ;;
    miss) line=$("${lg[@]}" -s $((($2 + 1) * 10000000)) "$base/u/%d") ;; # new URLs every run
    esac
    echo "$line" | tr ' ' '\n' | awk -F= '$1 == "errors" && $2 != 0 {bad = 1}
        $1 == "rps" {r = $2} END {if (bad) print "errors"; else print r}'
}

echo "scenario $scenario, $pairs pairs of $dur s; A: $bin_a ${aconf[*]-}; B: $bin_b ${bconf[*]-}"
for i in $(seq 1 "$pairs"); do
    if [ $((i % 2)) -eq 1 ]; then
        a=$(one a "$i"); b=$(one b "$i")
    else
        b=$(one b "$i"); a=$(one a "$i")
    fi
    [ "$a" != errors ] && [ "$b" != errors ] || { echo "pair $i: a run had errors" >&2; exit 1; }
    echo "$a $b"
done | awk '
    { r = $2 / $1; s += r; n++; if (r > 1) w++; sa += $1; sb += $2
      printf "pair %2d  A %9.0f  B %9.0f  B/A %.3f\n", n, $1, $2, r }
    END {
        # two-sided sign test: P(at least this far from n/2 | no difference)
        k = w < n - w ? w : n - w; p = 0; c = 1
        for (i = 0; i <= n; i++) { if (i <= k || i >= n - k) p += c; c = c * (n - i) / (i + 1) }
        p = p / 2 ^ n; if (p > 1) p = 1
        printf "mean req/s A %.0f, B %.0f; mean of B/A %.3f; B faster in %d of %d pairs (sign test p = %.3f)\n",
            sa / n, sb / n, s / n, w, n, p
    }'

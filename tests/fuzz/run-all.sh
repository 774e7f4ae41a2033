#!/usr/bin/env bash
# Builds the libFuzzer targets in build-fuzz (clang, ASan + UBSan) and runs each one for a bounded
# time on its seed corpus, one after the other.
#
#   tests/fuzz/run-all.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 20 s, every target)
#
# Prints one line per target: executions, coverage (libFuzzer's cov:), ok or CRASH. Exits 1 when
# any target crashed; the reproducer and the log are under build-fuzz/fuzz-out/<target>/.
# Inputs the fuzzer found interesting go to build-fuzz/fuzz-out/<target>/corpus, never into the
# committed seeds.
set -euo pipefail
secs=${1:-20}
shift || true
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$root/build-fuzz

CC=clang cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCDNODE_FUZZ=ON \
    -DCDNODE_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target fuzz -j"$(nproc)" >/dev/null

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for d in "$here"/corpus/*/; do
        targets+=("$(basename "$d")")
    done
fi

failed=0
for t in "${targets[@]}"; do
    out=$build/fuzz-out/$t
    mkdir -p "$out/corpus"
    set +e
    # Reproducers of crashes found earlier (crashes/<target>/) run first, as regression inputs.
    dirs=("$out/corpus" "$here/corpus/$t")
    [ -d "$here/crashes/$t" ] && dirs+=("$here/crashes/$t")
    "$build/tests/fuzz/fuzz_$t" "${dirs[@]}" -max_total_time="$secs" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/" \
        >"$out/log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log" | tail -1 || true)
    cov=$(grep -oE 'cov: [0-9]+' "$out/log" | tail -1 | cut -d' ' -f2 || true)
    if [ "$rc" -eq 0 ]; then
        verdict=ok
    else
        verdict=CRASH
        failed=1
    fi
    printf '%-16s execs=%-10s cov=%-6s %s\n' "$t" "${execs:-?}" "${cov:-?}" "$verdict"
    if [ "$verdict" = CRASH ]; then
        grep -E 'ERROR|SUMMARY|contract violated|Test unit written' "$out/log" | head -5 | sed 's/^/    /'
    fi
done
exit $failed

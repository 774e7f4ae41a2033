#!/usr/bin/env bash
# Runs every unit test (tests/unit/test_*.c, built in the build directory given as the argument)
# under valgrind's memcheck: any memory error, or any definitely lost block, fails it. One line
# per test; the full valgrind output of a failing test follows its line. Exits non-zero if any
# test fails or is missing. Nothing is suppressed.
set -uo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 BUILD_DIR (a configured and built cmake build directory)" >&2
    exit 2
fi
src=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "$1" && pwd)/tests
command -v valgrind >/dev/null || { echo "valgrind is not installed (tests/deps.sh)" >&2; exit 2; }
# A failing run keeps its log here; the directory is removed when every test passed.
logs=$(mktemp -d "${TMPDIR:-/tmp}/cdnode-valgrind.XXXXXX")
failed=0
total=0
for c in "$src"/unit/test_*.c; do
    name=$(basename "$c" .c)
    total=$((total + 1))
    if [ ! -x "$bin/$name" ]; then
        echo "valgrind: $name: FAIL (no executable at $bin/$name)"
        failed=$((failed + 1))
        continue
    fi
    log="$logs/$name.log"
    start=$(date +%s)
    # As ctest runs it: from the tests build directory. 99 tells a valgrind finding apart from
    # a failed assertion.
    (cd "$bin" && valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
        --track-origins=yes --quiet "./$name") >"$log" 2>&1
    rc=$?
    secs=$(($(date +%s) - start))
    if [ $rc -eq 0 ]; then
        echo "valgrind: $name: ok (${secs} s)"
        continue
    fi
    failed=$((failed + 1))
    if [ $rc -eq 99 ]; then
        echo "valgrind: $name: FAIL (memory errors or definite leaks, ${secs} s)"
    else
        echo "valgrind: $name: FAIL (exit $rc, ${secs} s)"
    fi
    sed 's/^/    /' "$log"
done
if [ $failed -ne 0 ]; then
    echo "valgrind: $failed of $total unit tests failed (logs in $logs)"
    exit 1
fi
rm -rf "$logs"
echo "valgrind: all $total unit tests clean"

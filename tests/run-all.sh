#!/usr/bin/env bash
# The whole test suite: dependencies, a Release build and its tests, its unit tests again under
# valgrind, each fuzz target for a short bounded time, then an ASan+UBSan build and the same tests
# again. Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/deps.sh
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
echo "== tests (Release)"
ctest --test-dir build --output-on-failure -j"$jobs"
echo "== unit tests under valgrind"
tests/valgrind.sh build
echo "== fuzz targets (10 s each)"
tests/fuzz/run-all.sh 10
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCDNODE_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
echo "== tests (ASan+UBSan)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs"

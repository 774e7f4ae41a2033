#!/usr/bin/env bash
# Micro-benchmarks of the pure request-path functions (bench/micro.c): builds the Release target
# into build-bench and prints ns/op per function as a markdown table, pinned to one CPU.
# Usage: bench/micro.sh [name-substring]   e.g. bench/micro.sh cache_key
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DCDNODE_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target micro >/dev/null
exec taskset -c "$(($(nproc) - 1))" build-bench/bench/micro "$@"

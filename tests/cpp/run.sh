#!/usr/bin/env bash
# Builds and runs the C++ core tests.
#   tests/cpp/run.sh [build-dir]          default build/cpp-tests
# Environment: SANITIZE=address,undefined | thread   CXX=clang++   CRASH_ITERS=N (default 20)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../build/cpp-tests${SANITIZE:+-${SANITIZE//,/-}}}
flags=""
if [[ -n "${SANITIZE:-}" ]]; then
  flags="-fsanitize=$SANITIZE -fno-omit-frame-pointer -fno-sanitize-recover=all"
fi
cmake -S "$here" -B "$build" -DCMAKE_CXX_FLAGS="$flags" >/dev/null
cmake --build "$build" -j"$(nproc)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
"$build/pccheck_tests" "${CRASH_ITERS:-20}" ${FILTER:+"$FILTER"}

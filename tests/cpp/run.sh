#!/usr/bin/env bash
# Builds and runs the C++ core tests (-Wall -Wextra -Werror on the tests and the core).
#   tests/cpp/run.sh [build-dir]     default build/cpp-tests[-<sanitizers>][-<compiler>|-aarch64]
# Environment:
#   SANITIZE=address,undefined | thread   build with those sanitizers (x86_64)
#   CXX=clang++                           compiler (a build dir per compiler unless one is given)
#   CROSS=aarch64                         cross-compile with aarch64-linux-gnu-g++ (or, with
#                                         CXX=clang++, clang --target=aarch64-linux-gnu) and run under
#                                         qemu-aarch64-static -L /usr/aarch64-linux-gnu
#   CRASH_ITERS=N                         kill -9 iterations of the crash test (default 20)
#   POWERLOSS_ITERS=N                     simulated power losses of test_powerloss.cc (default 10000: four
#                                         fifths with one store, one fifth multi-rank) and N/10 rounds of
#                                         test_fault_errors.cc; e.g. 100000 for a slow run.
#                                         POWERLOSS_SEED=S repeats a run's random draws
#   FILTER=substring                      run only the tests whose name contains it
#   PCCHECK_EXPECT_CRC32C=armv8-crc|sse4.2|portable   fail unless crc32c() uses that path
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cross=${CROSS:-}
suffix=${SANITIZE:+-${SANITIZE//,/-}}
cmake_args=()
run=()
case "$cross" in
  "") if [[ -n "${CXX:-}" ]]; then suffix+=-$(basename "$CXX"); fi ;;
  aarch64)
    [[ -z "${SANITIZE:-}" ]] || { echo "run.sh: SANITIZE is not supported with CROSS=aarch64" >&2; exit 2; }
    sysroot=${PCCHECK_SYSROOT:-/usr/aarch64-linux-gnu}
    cross_cxx=aarch64-linux-gnu-g++
    suffix+=-aarch64
    if [[ "${CXX:-}" == *clang* ]]; then cross_cxx=$CXX; suffix+=-$(basename "$CXX"); fi
    cmake_args+=(-DCMAKE_TOOLCHAIN_FILE="$here/aarch64-linux-gnu.cmake" -DPCCHECK_SYSROOT="$sysroot"
                 -DPCCHECK_CROSS_CXX="$cross_cxx")
    run=(qemu-aarch64-static -L "$sysroot")
    unset CXX  # the toolchain file names the cross compiler
    ;;
  *) echo "run.sh: unknown CROSS=$cross (expected aarch64)" >&2; exit 2 ;;
esac
build=${1:-$here/../../build/cpp-tests$suffix}
flags=""
if [[ -n "${SANITIZE:-}" ]]; then
  flags="-fsanitize=$SANITIZE -fno-omit-frame-pointer -fno-sanitize-recover=all"
fi
cmake -S "$here" -B "$build" -DCMAKE_CXX_FLAGS="$flags" "${cmake_args[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
"${run[@]}" "$build/pccheck_tests" "${CRASH_ITERS:-20}" ${FILTER:+"$FILTER"}

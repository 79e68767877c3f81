#!/usr/bin/env bash
# Checks the C++ core (csrc/) beyond the Python tests; fails on any failure.
#   scripts/check-core.sh [warnings|sanitizers|aarch64|portable|all]    default: all
#     warnings    the C++ tests and the core built with -Wall -Wextra -Werror by g++ and by clang, and
#                 run; csrc/bindings.cc compiled with -Werror by both (pybind11/Python headers as
#                 system headers, so only our own code's warnings count)
#     sanitizers  the C++ tests built and run with ASan+UBSan, then with TSan (g++, x86_64)
#     aarch64     the core and the C++ tests cross-compiled (aarch64-linux-gnu-g++, then clang
#                 --target=aarch64-linux-gnu) and run under qemu-aarch64-static -L /usr/aarch64-linux-gnu;
#                 the run must use the armv8-crc CRC32C path (the portable path is tested beside it)
#     portable    no -march=native / x86-only flags in the build configuration (setup.py,
#                 pyproject.toml, tests/cpp CMake files, csrc); also runs as part of aarch64
# Installs what it needs with apt-get when run as root (or with sudo) on Debian 12: g++, clang,
# cmake, make, g++-aarch64-linux-gnu, qemu-user-static (python3-dev/-venv only if needed).
# Environment: CRASH_ITERS (kill -9 iterations of the crash test under sanitizers/qemu, default 10;
# the plain g++/clang runs use twice as many), POWERLOSS_ITERS (simulated power losses of the
# power-loss tests in the g++ run, default 10000; clang runs a fifth, ASan+UBSan a tenth, qemu a
# twentieth, TSan a fiftieth), PCCHECK_VENV (venv with pybind11, default .venv; without one, pybind11
# is pip-installed into build/check-core/pyvenv).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
part=${1:-all}
case "$part" in
  warnings | sanitizers | aarch64 | portable | all) ;;
  -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [warnings|sanitizers|aarch64|portable|all]" >&2; exit 2 ;;
esac
iters=${CRASH_ITERS:-10}
power=${POWERLOSS_ITERS:-10000}
# Each step sets its own compiler/sanitizer/expected CRC path; none leaks in from the caller.
unset CXX SANITIZE CROSS FILTER PCCHECK_EXPECT_CRC32C POWERLOSS_ITERS
work=$root/build/check-core
mkdir -p "$work"

# --- timing: each step's wall time, and a summary at the end (also when a step fails) ---
summary=()
current=""
t_start=$EPOCHREALTIME
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
step() {  # step "name" command...
  current=$1
  shift
  local t0=$EPOCHREALTIME
  echo
  echo "=== check-core: $current"
  "$@"
  local s
  s=$(elapsed "$t0")
  echo "=== check-core: $current: ok (${s}s)"
  summary+=("$(printf '  %-58s %7ss' "$current" "$s")")
  current=""
}
report() {
  local rc=$?
  echo
  echo "=== check-core ($part) summary:"
  local line
  for line in "${summary[@]}"; do echo "$line"; done
  if [[ $rc -ne 0 ]]; then
    echo "  FAILED${current:+ in: $current} (exit $rc)"
  fi
  printf '  %-58s %7ss\n' "total" "$(elapsed "$t_start")"
}
trap report EXIT

# --- packages ---
# shellcheck source=scripts/apt-install.sh
. "$root/scripts/apt-install.sh"
packages() {
  local pkgs=(cmake make g++ binutils)
  case "$part" in
    warnings) pkgs+=(clang) ;;
    aarch64) pkgs+=(clang g++-aarch64-linux-gnu qemu-user-static) ;;
    all) pkgs+=(clang g++-aarch64-linux-gnu qemu-user-static) ;;
  esac
  apt_install check-core "${pkgs[@]}"
}

clangxx() { if command -v clang++ >/dev/null; then echo clang++; else echo clang++-14; fi; }

# --- warnings ---
run_tests() {  # run_tests build-dir [env...]: tests/cpp/run.sh in a fresh build dir
  local dir=$1
  shift
  rm -rf "$dir"
  env "$@" "$root/tests/cpp/run.sh" "$dir"
}

pybind11_includes() {  # prints the -isystem flags for Python and pybind11
  local py=${PCCHECK_VENV:-.venv}/bin/python inc
  if ! { [[ -x $py ]] && inc=$("$py" -m pybind11 --includes 2>/dev/null); }; then
    py=$work/pyvenv/bin/python
    if ! inc=$("$py" -m pybind11 --includes 2>/dev/null); then
      if ! python3 -m venv "$work/pyvenv" >/dev/null 2>&1; then
        rm -rf "$work/pyvenv"
        apt_install check-core python3-venv >&2
        python3 -m venv "$work/pyvenv" >&2
      fi
      "$py" -m pip install -q --disable-pip-version-check "pybind11>=2.12" >&2
      inc=$("$py" -m pybind11 --includes)
    fi
  fi
  local pyinc
  pyinc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  if [[ ! -f $pyinc/Python.h ]]; then
    apt_install check-core python3-dev >&2
    [[ -f $pyinc/Python.h ]] || { echo "check-core: no Python.h in $pyinc" >&2; return 1; }
  fi
  echo "${inc//-I/-isystem }"
}

bindings_werror() {  # bindings.cc (the one file the CMake build leaves out) with -Werror
  local inc cxx
  inc=$(pybind11_includes)
  echo "pybind11/Python headers: $inc"
  for cxx in g++ "$(clangxx)"; do
    echo "+ $cxx -Wall -Wextra -Werror -c csrc/bindings.cc"
    # shellcheck disable=SC2086  # $inc is a list of flags
    "$cxx" -std=c++17 -O2 -fPIC -fvisibility=hidden -pthread -Wall -Wextra -Werror -Icsrc $inc \
      -c csrc/bindings.cc -o "$work/bindings-$cxx.o"
  done
}

# --- aarch64 ---
run_aarch64() {  # run_aarch64 build-dir [env...]
  local dir=$1 log=$work/$(basename "$1").log
  shift
  rm -rf "$dir"
  env CROSS=aarch64 CRASH_ITERS="$iters" POWERLOSS_ITERS=$((power / 20)) PCCHECK_EXPECT_CRC32C=armv8-crc "$@" \
    "$root/tests/cpp/run.sh" "$dir" 2>&1 | tee "$log"
  # The binary really is aarch64, and it ran on the armv8 CRC path with the portable path tested too.
  readelf -h "$dir/pccheck_tests" | grep -q 'Machine:.*AArch64' || { echo "check-core: $dir/pccheck_tests is not an aarch64 binary" >&2; return 1; }
  grep -q 'crc32c_impl=armv8-crc hardware_path=tested portable_path=tested' "$log" \
    || { echo "check-core: the aarch64 run did not test both CRC32C paths (armv8-crc and portable)" >&2; return 1; }
}

# --- portable ---
portable_flags() {
  local bad='(-m(arch|cpu|tune)=native|-m(sse|avx|crc32|pclmul|popcnt|bmi))'
  local fail=0
  # setup.py: every string constant except docstrings (whose prose may mention the flag).
  python3 - "$bad" <<'EOF' || fail=1
import ast, re, sys
bad = re.compile(sys.argv[1])
tree = ast.parse(open("setup.py").read(), "setup.py")
docs = set()
for node in ast.walk(tree):
    body = getattr(node, "body", None)
    if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        docs.add(id(body[0].value))
hits = [(n.lineno, n.value) for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs and bad.search(n.value)]
for line, s in hits:
    print(f"setup.py:{line}: non-portable flag in {s!r}")
sys.exit(1 if hits else 0)
EOF
  # pyproject.toml and CMake files, with comments stripped.
  local f
  for f in pyproject.toml tests/cpp/CMakeLists.txt tests/cpp/*.cmake; do
    if sed 's/#.*//' "$f" | grep -nE -- "$bad"; then
      echo "$f: non-portable flag (above)"
      fail=1
    fi
  done
  # csrc: no native/x86 target pragmas; x86 intrinsics only behind __x86_64__ (the aarch64 build checks).
  if grep -nE 'pragma GCC target|target\("?arch=native' csrc/*; then
    echo "csrc: target pragma / native target (above)"
    fail=1
  fi
  [[ $fail -eq 0 ]] && echo "no -march=native or x86-only flags in setup.py, pyproject.toml, tests/cpp/*.cmake/CMakeLists.txt, csrc"
  return "$fail"
}

# --- main ---
step "packages (apt-get as needed)" packages
if [[ $part == portable || $part == aarch64 || $part == all ]]; then
  step "portable: no -march=native / x86-only flags" portable_flags
fi
if [[ $part == warnings || $part == all ]]; then
  step "warnings: g++ -Werror build + run" run_tests "$root/build/cpp-tests-gcc" CXX=g++ CRASH_ITERS=$((2 * iters)) \
    POWERLOSS_ITERS="$power"
  step "warnings: clang -Werror build + run" run_tests "$root/build/cpp-tests-clang" CXX="$(clangxx)" \
    CRASH_ITERS=$((2 * iters)) POWERLOSS_ITERS=$((power / 5))
  step "warnings: bindings.cc -Werror (g++, clang)" bindings_werror
fi
if [[ $part == sanitizers || $part == all ]]; then
  step "sanitizers: ASan+UBSan build + run" run_tests "$root/build/cpp-tests-address-undefined" SANITIZE=address,undefined CXX=g++ CRASH_ITERS="$iters" \
    POWERLOSS_ITERS=$((power / 10))
  step "sanitizers: TSan build + run" run_tests "$root/build/cpp-tests-thread" SANITIZE=thread CXX=g++ CRASH_ITERS="$iters" \
    POWERLOSS_ITERS=$((power / 50))
fi
if [[ $part == aarch64 || $part == all ]]; then
  step "aarch64: g++ cross build + qemu run" run_aarch64 "$root/build/cpp-tests-aarch64"
  step "aarch64: clang cross build + qemu run" run_aarch64 "$root/build/cpp-tests-aarch64-clang" CXX="$(clangxx)"
fi

# Cross-compiles the C++ core tests for aarch64 (see run.sh, CROSS=aarch64): with Debian's
# g++-aarch64-linux-gnu by default, or with clang (PCCHECK_CROSS_CXX=clang++) targeting
# aarch64-linux-gnu against the same cross libstdc++. The binary runs under
# qemu-aarch64-static with the sysroot's libraries.
#   cmake -S tests/cpp -B build/cpp-tests-aarch64 -DCMAKE_TOOLCHAIN_FILE=tests/cpp/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(PCCHECK_CROSS_CXX aarch64-linux-gnu-g++ CACHE STRING "aarch64 C++ compiler (or clang++)")
set(PCCHECK_SYSROOT /usr/aarch64-linux-gnu CACHE PATH "aarch64 libraries for qemu -L")
if(PCCHECK_CROSS_CXX MATCHES "clang")
  set(CMAKE_CXX_COMPILER ${PCCHECK_CROSS_CXX})
  set(CMAKE_CXX_COMPILER_TARGET aarch64-linux-gnu)
else()
  set(CMAKE_CXX_COMPILER ${PCCHECK_CROSS_CXX})
endif()
set(CMAKE_FIND_ROOT_PATH ${PCCHECK_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static -L ${PCCHECK_SYSROOT})

#!/usr/bin/env bash
# Builds peft4j's native layer (src/main/cpp) on its own, for C++ iteration.
#
#   ./cppbuild.sh          the JNI library, through the JavaCPP Maven plugin (same flags as `mvn package`):
#                          target/classes/dev/peft4j/kernels/<platform>/libjniNativeKernels.so
#   ./cppbuild.sh --native-test   the kernels' native test (src/test/cpp) built with AddressSanitizer + UBSan
#                          and run (Maven's test phase runs this too)
#   ./cppbuild.sh --asan   the native test, then the JNI library rebuilt with the same sanitizers (Maven
#                          profile `asan`), then the Java test suite run on that library
#   ./cppbuild.sh --cross-aarch64   the kernels (src/main/cpp) and their native test cross-compiled for aarch64
#                          with g++-aarch64-linux-gnu, warnings as errors, proving the scalar paths build where
#                          the x86 intrinsics do not exist; the test is also run when qemu-aarch64 is present.
#                          Skipped with a notice when the cross compiler is absent (Maven's test phase runs this)
#   ./cppbuild.sh --cuda   the CUDA variant (needs nvcc)
set -euo pipefail
cd "$(dirname "$0")"

mode="${1:-}"
case "$mode" in
  "")
    mvn -q -B -DskipTests process-classes
    find target/classes -name 'libjni*.so' -newer pom.xml -print
    ;;
  --native-test)
    mkdir -p target/native-asan
    g++ -std=c++17 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
        -Wall -Wextra -Werror -I src/main/cpp src/test/cpp/*.cpp -o target/native-asan/kernels_test
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 target/native-asan/kernels_test
    ;;
  --cross-aarch64)
    cxx="${CXX_AARCH64:-aarch64-linux-gnu-g++}"
    if ! command -v "$cxx" >/dev/null 2>&1; then
      echo "cppbuild.sh --cross-aarch64: $cxx not found (apt-get install g++-aarch64-linux-gnu); aarch64 build not checked" >&2
      exit 0
    fi
    out=target/native-aarch64
    mkdir -p "$out"
    # the JNI library's translation unit without its JNI glue, with the library's warning flags
    echo '#include "peft4j_kernels.h"' | "$cxx" -std=c++17 -O3 -fPIC -Wall -Wextra -Wno-unused-parameter -Werror \
        -I src/main/cpp -x c++ -c - -o "$out/peft4j_kernels.o"
    echo '#include "peft4j_fs.h"' | "$cxx" -std=c++17 -O3 -fPIC -Wall -Wextra -Wno-unused-parameter -Werror \
        -I src/main/cpp -x c++ -c - -o "$out/peft4j_fs.o"
    "$cxx" -std=c++17 -O1 -Wall -Wextra -Wno-unused-parameter -Werror -I src/main/cpp src/test/cpp/*.cpp \
        -o "$out/kernels_test" -pthread -ldl
    echo "cppbuild.sh --cross-aarch64: kernels and native test built for aarch64 ($out)" >&2
    if command -v qemu-aarch64 >/dev/null 2>&1; then
      QEMU_LD_PREFIX=/usr/aarch64-linux-gnu qemu-aarch64 "$out/kernels_test"
    fi
    ;;
  --asan)
    "$0" --native-test
    mvn -q -B -ntp -DskipTests -Pasan process-classes
    # The JVM is not built with ASan: the runtime is preloaded, and the JVM's own use of SIGSEGV and
    # its allocator tricks are let through (handle_segv=0, no leak check of the JVM's heap).
    asan_rt="$(g++ -print-file-name=libasan.so)"
    ubsan_rt="$(g++ -print-file-name=libubsan.so)"
    LD_PRELOAD="$asan_rt:$ubsan_rt" \
    ASAN_OPTIONS=detect_leaks=0:handle_segv=0:allow_user_segv_handler=1:use_sigaltstack=0:detect_odr_violation=0 \
      mvn -B -ntp -Pasan surefire:test "${@:2}"
    ;;
  --cuda)
    if ! command -v nvcc >/dev/null 2>&1; then
      echo "cppbuild.sh --cuda: nvcc not found; install the CUDA toolkit to build the CUDA variant" >&2
      exit 1
    fi
    echo "cppbuild.sh --cuda: peft4j has no CUDA kernels yet; on a CUDA libtorch the adapters run on" >&2
    echo "libtorch's own CUDA ops (the composed path). Nothing to build." >&2
    exit 2
    ;;
  *)
    echo "usage: ./cppbuild.sh [--native-test | --cross-aarch64 | --asan | --cuda]" >&2
    exit 2
    ;;
esac

#!/bin/sh
# The quantized kernels' panel layout against the canonical layout (quant_kernel_bench.cpp), TinyLlama's MLP shapes,
# M = 1 (decode) and 128 (prefill), alternating in one process. Usage: benchmarks/quant/run.sh [threads] [rounds] [stream]
# `decode [q4|q8]` as the third argument runs decode_bench.cpp instead: a whole model's quantized decode pass
# (22 TinyLlama layers' Linears, weights from DRAM), the thread split and prefetches compared.
set -e
cd "$(dirname "$0")/../.."
mkdir -p target/quant-bench
if [ "${3:-}" = decode ]; then
  g++ -std=c++17 -O3 -I src/main/cpp benchmarks/quant/decode_bench.cpp -o target/quant-bench/decode_bench -lpthread
  exec target/quant-bench/decode_bench "${1:-2}" "${2:-9}" "${4:-q4}"
fi
g++ -std=c++17 -O3 -I src/main/cpp benchmarks/quant/quant_kernel_bench.cpp -o target/quant-bench/quant_kernel_bench -lpthread
exec target/quant-bench/quant_kernel_bench "$@"

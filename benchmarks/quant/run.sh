#!/bin/sh
# The quantized kernels' panel layout against the canonical layout (quant_kernel_bench.cpp), TinyLlama's MLP shapes,
# M = 1 (decode) and 128 (prefill), alternating in one process. Usage: benchmarks/quant/run.sh [threads] [rounds] [stream]
set -e
cd "$(dirname "$0")/../.."
mkdir -p target/quant-bench
g++ -std=c++17 -O3 -I src/main/cpp benchmarks/quant/quant_kernel_bench.cpp -o target/quant-bench/quant_kernel_bench -lpthread
exec target/quant-bench/quant_kernel_bench "$@"

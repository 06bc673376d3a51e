#!/usr/bin/env bash
# A long run of the adapter-file fuzzer (AdapterFilesFuzzTest): N mutated safetensors, torch.save and
# adapter_config.json inputs (default 1,000,000), seed S (default the suite's). Prints a progress line every 5%
# and a summary: inputs, time, rate, refusals by exception type, slowest input.
# An input that fails is kept under target/fuzz-findings/.
#   benchmarks/fuzz-adapters.sh [N] [S]
set -euo pipefail
cd "$(dirname "$0")/.."
inputs="${1:-1000000}"
seed="${2:-20261207}"
exec mvn -B -ntp test -Dtest=AdapterFilesFuzzTest -Dsurefire.failIfNoSpecifiedTests=false \
  -Dpeft4j.fuzz.inputs="$inputs" -Dpeft4j.fuzz.seed="$seed"

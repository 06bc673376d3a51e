#!/usr/bin/env bash
# The peer benchmark: peft4j against llama.cpp on the same random TinyLlama-1.1B-shaped weights (hidden 2048,
# 22 layers, 32 / 4 heads, MLP 5632, vocab 32000) and the same LoRA (r = 16 on q, k, v, o), 2 threads, a 128-token
# prompt then 64 greedy tokens; medians of ROUNDS rounds in which the two systems alternate. One command:
#
#   benchmarks/peers/run.sh [--rounds N] [--hog | --contention] [--configs f32,bf16,q8,q4] [--gen N] [--prompt N]
#
# Configurations (comma- or space-separated): f32, bf16 (both systems on the same float weights), q8 / q8_0 (peft4j's
# int8 against llama.cpp's Q8_0), q4 / q4_0 (peft4j's int4 against llama.cpp's Q4_0). llama.cpp quantizes the float32
# GGUF with llama_model_quantize, as llama-quantize does: its output tensor in Q8_0 for Q8_0, in Q6_K for Q4_0. peft4j
# loads the model in bfloat16 and quantizes its blocks' Linears at load, and lm_head to int8 in both (it has no 6-bit
# format): PEFT4J_Q8_DTYPE / PEFT4J_Q4_DTYPE override that (DTYPE+BLOCKS[+HEAD], e.g. float32+int8, bfloat16+int4
# for a bfloat16 head; "-" runs llama.cpp alone).
#
# --hog runs both beside a CPU hog (another process spinning on one core) for the whole measurement. --contention runs
# every round twice, as is and beside a busy loop pinned to the last core (taskset), the order alternating by round,
# and prints rows for both conditions.
# It builds what it needs: llama.cpp's harness (build.sh: npm + cc), the peft4j CLI jar (./peft4j's build), the random
# weights (PeerBench gen), their GGUF files (peft4j export-gguf; Q8_0 / Q4_0 by llama.cpp's own quantizer), all kept in
# $PEERS_WORK (default benchmarks/peers/work, about 13 GB) and reused. The steps that hold the model in memory (writing
# the random weights, each format's measurement) run under flock $PEERS_LOCK (default /work/notes/bench.lock, when its
# folder exists), so runs on a shared machine take turns; the exports and quantizations stream tensor by tensor.
# Output: a Markdown table, ms per token (decode) and ms per prompt (prefill), base / LoRA, and peft4j / llama.cpp.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=${PEERS_WORK:-$here/work}
lock=${PEERS_LOCK:-/work/notes/bench.lock}
rounds=5 hog=0 contention=0 threads=2 prompt=128 gen=64 configs="f32 bf16 q8_0 q4_0"
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --hog) hog=1; shift ;;
        --contention) contention=1; shift ;;
        --configs) configs=${2//,/ }; shift 2 ;;
        --gen) gen=$2; shift 2 ;;
        --prompt) prompt=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        *) echo "run.sh: unknown argument $1 (see the comment at the top)" >&2; exit 2 ;;
    esac
done

locked() { # runs "$@" holding the benchmark lock (when there is one)
    if [ -d "$(dirname "$lock")" ]; then ( flock 9; "$@" ) 9>>"$lock"; else "$@"; fi
}

export $("$here/build.sh")
"$repo/peft4j" --version >/dev/null # builds cli/target/peft4j-cli.jar when missing or stale
# as ./peft4j runs Java: OpenMP and OpenBLAS threads wait passively (see the launcher)
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-10000} \
    OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}
peer_java() {
    java -Xmx2g -Dorg.bytedeco.javacpp.maxPhysicalBytes=0 -Dslf4j.internal.verbosity=ERROR \
        -cp "$repo/cli/target/peft4j-cli.jar:$repo/cli/target/lib/*" "$here/PeerBench.java" "$@"
}

mkdir -p "$work"
if [ ! -f "$work/lora/adapter_model.safetensors" ]; then
    echo "run.sh: writing the random weights to $work ..." >&2
    locked peer_java gen "$work"
fi
for t in f32 bf16; do
    if [ ! -f "$work/model-$t.gguf" ] || [ ! -f "$work/lora-$t.gguf" ]; then
        echo "run.sh: peft4j export-gguf --outtype $t ..." >&2
        "$repo/peft4j" export-gguf --model "$work/model" --out "$work/model-$t.gguf" --adapter "$work/lora" \
            --adapter-out "$work/lora-$t.gguf" --outtype "$t" >&2
    fi
done
configs=$(for c in $configs; do case $c in q8) echo q8_0 ;; q4) echo q4_0 ;; *) echo "$c" ;; esac; done | tr "\n" " ")
for q in q8_0 q4_0; do
    case " $configs " in *" $q "*) ;; *) continue ;; esac
    if [ ! -f "$work/model-$q.gguf" ]; then
        echo "run.sh: llama.cpp quantize $q ..." >&2
        "$PEFT4J_LLAMA_PEER" quantize "$work/model-f32.gguf" "$work/model-$q.gguf" "$q" "$threads"
    fi
done

bench_one() { # label peft4j-dtype|- gguf
    local hogpid=
    if [ "$hog" = 1 ]; then
        ( while :; do :; done ) &
        hogpid=$!
    fi
    peer_java bench "$1" "$2" "$work/model" "$work/lora" "$3" "$work/lora-f32.gguf" "$rounds" "$threads" "$prompt" "$gen" \
        || { [ -n "$hogpid" ] && kill "$hogpid"; return 1; }
    if [ -n "$hogpid" ]; then kill "$hogpid"; fi
}

echo "peer benchmark: $(date -u +%FT%TZ), $(nproc) cores, $threads threads, prompt $prompt, $gen greedy tokens," \
    "medians of $rounds alternating rounds$([ "$hog" = 1 ] && echo ', beside a CPU hog on one core')$(
    [ "$contention" = 1 ] && echo ', each round as is and beside a busy loop pinned to the last core')"
echo "llama.cpp: @node-llama-cpp/linux-x64 $(node -p "require('$here/node_modules/@node-llama-cpp/linux-x64/package.json').version")" \
    "(llama.cpp $(node -p "require('$here/node_modules/node-llama-cpp/llama/llama.cpp.info.json').tag")), LoRA as float32 GGUF"
echo
echo "| weights | phase | peft4j base / LoRA | llama.cpp base / LoRA | peft4j / llama.cpp, base / LoRA | LoRA / base, peft4j / llama.cpp |"
echo "| --- | --- | --- | --- | --- | --- |"
export PEERS_CONTENTION=$contention
for c in $configs; do
    case $c in
        f32) locked bench_one float32 float32 "$work/model-f32.gguf" ;;
        bf16) locked bench_one bfloat16 bfloat16 "$work/model-bf16.gguf" ;;
        q8_0) locked bench_one "int8 / Q8_0" "${PEFT4J_Q8_DTYPE:-bfloat16+int8+int8}" "$work/model-q8_0.gguf" ;;
        q4_0) locked bench_one "int4 / Q4_0" "${PEFT4J_Q4_DTYPE:-bfloat16+int4+int8}" "$work/model-q4_0.gguf" ;;
        *) echo "run.sh: unknown config $c (f32, bf16, q8, q4)" >&2; exit 2 ;;
    esac
done

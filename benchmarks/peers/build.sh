#!/usr/bin/env bash
# Builds llama.cpp's side of the peer benchmark: installs the pinned npm packages (package.json) into node_modules/,
# takes the headers of the exact llama.cpp release they were built from out of node-llama-cpp's bundled source, and
# compiles llama_peer.c against the prebuilt libllama into build/llama_peer. Prints the two variables the peft4j test
# (GgufLlamaCppTest) and run.sh read. Needs npm (registry access) and a C compiler; idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
bins=node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
if [ ! -f "$bins/libllama.v0.5.0.so" ] || [ ! -f node_modules/node-llama-cpp/llama/gitRelease.bundle ]; then
    # --ignore-scripts: node-llama-cpp's postinstall would fetch or build binaries; only its files are used here.
    # --omit=optional: the CUDA / Vulkan / other-OS binaries (about 600 MB) are not needed.
    npm install --ignore-scripts --omit=optional --no-audit --no-fund --no-package-lock >&2
fi
mkdir -p build
if [ ! -f build/headers/include/llama.h ]; then
    rm -rf build/src build/headers
    git clone -q --no-checkout node_modules/node-llama-cpp/llama/gitRelease.bundle build/src
    mkdir -p build/headers
    git -C build/src archive HEAD include ggml/include | tar -x -C build/headers
    rm -rf build/src
fi
if [ ! -x build/llama_peer ] || [ llama_peer.c -nt build/llama_peer ]; then
    ${CC:-cc} -O2 -std=c11 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L llama_peer.c \
        -Ibuild/headers/include -Ibuild/headers/ggml/include \
        "$bins/libllama.v0.5.0.so" "$bins/libggml.v0.5.0.so" "$bins/libggml-base.so" \
        -Wl,-rpath,"$here/$bins" -o build/llama_peer
fi
echo "PEFT4J_LLAMA_PEER=$here/build/llama_peer"
echo "LLAMA_PEER_BACKENDS=$here/$bins"

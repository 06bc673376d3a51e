#!/usr/bin/env bash
# A/B of the native kernels between two git revisions, in one process (calls alternate, so the machine's drift hits
# both sides): ab.sh delta|delta-f32|decode|small REV_A REV_B [rounds] (small: the base product at 1-16 rows, float32
# and bf16, ab_small.cpp). FLUSH=1 (delta) evicts the caches before each call;
# MS=1,3,4 (decode) picks the row counts; ABFLAGS adds compiler flags to both sides (-D macros a variant reads).
# REV_B may be "work" for the working tree's src/main/cpp. Needs g++ with -fopenmp; run with the launcher's
# environment (OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=10000).
set -euo pipefail
kind=${1:?delta, delta-f32 or decode}; rev_a=${2:?revision A}; rev_b=${3:?revision B}; rounds=${4:-100}
here=$(cd "$(dirname "$0")" && pwd); repo=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for side in A B; do
    rev=$rev_a; [ $side = B ] && rev=$rev_b
    mkdir -p "$tmp/$side"
    if [ "$rev" = work ]; then cp "$repo"/src/main/cpp/*.h "$tmp/$side/"
    else git -C "$repo" archive "$rev" src/main/cpp | tar -x -C "$tmp/$side" --strip-components=3; fi
    # distinct contents: GCC's #pragma once takes identical files for one
    for f in "$tmp/$side"/*.h; do echo "// side $side" >> "$f"; done
done
case $kind in
    delta) src=ab_delta.cpp; def= ;;
    delta-f32) src=ab_delta.cpp; def=-DAB_FLOAT ;;
    decode) src=ab_decode.cpp; def= ;;
    small) src=ab_small.cpp; def= ;;
    *) echo "unknown kind $kind" >&2; exit 2 ;;
esac
cp "$here/$src" "$tmp/"
g++ -O3 -std=c++17 $def ${ABFLAGS:-} -fopenmp "$tmp/$src" -o "$tmp/ab"
"$tmp/ab" "$rounds"

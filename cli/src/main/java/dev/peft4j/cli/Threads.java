package dev.peft4j.cli;

import org.bytedeco.pytorch.global.torch;

/** Thread settings of the timed commands. */
final class Threads {
    private Threads() {}

    /**
     * Sets libtorch's intra-op threads and OpenBLAS's (fp32 GEMM and GEMV) to {@code n} together: unpinned, each pool
     * takes every core and the two oversubscribe them.
     */
    static void pin(int n) {
        torch.set_num_threads(n);
        org.bytedeco.openblas.presets.openblas_nolapack.blas_set_num_threads(n);
    }
}

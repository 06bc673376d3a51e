package dev.peft4j.cli;

import org.bytedeco.pytorch.global.torch;

/** Thread settings of the timed commands. */
final class Threads {
    private Threads() {}

    /**
     * Gives OpenBLAS (fp32 GEMM and GEMV) as many threads as libtorch's intra-op pool: unpinned, each pool takes
     * every core and the two oversubscribe them.
     */
    static void pinBlasToTorch() {
        pin(torch.get_num_threads());
    }

    static void pin(int n) {
        torch.set_num_threads(n);
        org.bytedeco.openblas.presets.openblas_nolapack.blas_set_num_threads(n);
    }
}

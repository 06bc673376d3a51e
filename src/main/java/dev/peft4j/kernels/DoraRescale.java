package dev.peft4j.kernels;

import java.util.Arrays;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * DoRA's magnitude scale on a finished adapted output, in place: {@code y ← scale ⊙ (y − b) + b} per output feature
 * (PEFT's DoRA scales the base and LoRA terms but not the base layer's bias). For outputs the fused decode kernel
 * does not produce ({@link LoraDelta}'s GEMM path), one native pass, float32 math, rounded once into y.
 */
public final class DoraRescale {
    private DoraRescale() {}

    /**
     * @param y {@code [..., out]}, float32 or bfloat16, contiguous, on the CPU; updated in place
     * @param bias {@code [out]} of y's dtype, or null
     * @param scale {@code out} float32 entries
     * @throws IllegalArgumentException for a dtype, shape or layout the kernel does not take, naming the argument
     */
    public static void apply(Tensor y, Tensor bias, float[] scale) {
        int dt = Kernels.dtypeCode("y", y);
        Kernels.checkCpuContiguous("y", y);
        long n = y.dim() == 0 ? 0 : y.size(y.dim() - 1);
        if (scale.length != n) {
            throw new IllegalArgumentException("scale: " + scale.length + " entries, y has " + n + " features (shape "
                    + Arrays.toString(y.shape()) + ")");
        }
        if (bias != null) {
            Kernels.checkCpuContiguous("bias", bias);
            Kernels.checkSameDtype("bias", bias, "y", y);
            if (bias.numel() != n) {
                throw new IllegalArgumentException("bias: shape " + Arrays.toString(bias.shape()) + ", expected [" + n
                        + "]");
            }
        }
        long m = n == 0 ? 0 : y.numel() / n;
        if (m > 0) {
            NativeKernels.peft4j_dora_rescale(dt, y.data_ptr().address(),
                    bias == null ? 0L : bias.data_ptr().address(), scale, m, n, torch.get_num_threads());
        }
        java.lang.ref.Reference.reachabilityFence(y);
        java.lang.ref.Reference.reachabilityFence(bias);
    }
}

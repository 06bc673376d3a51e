package dev.peft4j.kernels;

import java.util.Arrays;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Merging adapters into a base weight in place, at memory bandwidth: one read and one write of {@code W}, no
 * temporary the size of {@code W} (the composed {@code W.add_(B.mm(A).mul(s))} allocates two). The weight is
 * float32 or bfloat16; the small factors may be any floating dtype (they are widened to float32 once, a
 * temporary of {@code r·(in + out)} floats). Sums are accumulated in float32 and rounded once into {@code W}.
 * Not recorded by autograd.
 */
public final class MergeKernels {
    private MergeKernels() {}

    /**
     * {@code W += sign·scale·B·A} (LoRA merge for {@code sign = +1}, unmerge for {@code -1}); with
     * {@code fanInFanOut} (transformers' Conv1D) {@code W} is {@code [in, out]} and gets the transpose.
     *
     * @param weight {@code [out, in]} ({@code [in, out]} with fanInFanOut), contiguous CPU, float32 or bfloat16
     * @param a {@code [r, in]}
     * @param b {@code [out, r]}
     */
    public static void mergeLora(Tensor weight, Tensor a, Tensor b, double scale, boolean fanInFanOut, int sign) {
        Kernels.checkCpuContiguous("weight", weight);
        int dt = Kernels.dtypeCode("weight", weight);
        Kernels.checkNoGrad("weight", weight);
        checkFloating("a", a);
        checkFloating("b", b);
        if (sign != 1 && sign != -1) {
            throw new IllegalArgumentException("sign: " + sign + ", expected +1 (merge) or -1 (unmerge)");
        }
        if (a.dim() != 2 || b.dim() != 2 || a.size(0) != b.size(1) || a.size(0) < 1) {
            throw new IllegalArgumentException("b: shape " + Arrays.toString(b.shape()) + " and a's "
                    + Arrays.toString(a.shape()) + " are not [out, r] and [r, in] with r >= 1");
        }
        long in = a.size(1);
        long out = b.size(0);
        int r = (int) a.size(0);
        long rows = fanInFanOut ? in : out;
        long cols = fanInFanOut ? out : in;
        if (weight.dim() != 2 || weight.size(0) != rows || weight.size(1) != cols) {
            throw new IllegalArgumentException("weight: shape " + Arrays.toString(weight.shape()) + ", the adapter needs ["
                    + rows + ", " + cols + "]" + (fanInFanOut ? " (fan_in_fan_out)" : ""));
        }
        if (rows == 0 || cols == 0) {
            return;
        }
        Scalar s = new Scalar(sign * scale);
        // row i of W gets Σ_j coef[i, j]·v[j, :]
        Tensor coef = (fanInFanOut ? a.t() : b).to(ScalarType.Float).mul(s).contiguous();
        Tensor v = (fanInFanOut ? b.t() : a).to(ScalarType.Float).contiguous();
        NativeKernels.peft4j_merge_lowrank(dt, weight.data_ptr().address(), rows, cols, coef.data_ptr().address(),
                v.data_ptr().address(), r, torch.get_num_threads());
        java.lang.ref.Reference.reachabilityFence(weight);
        coef.close();
        v.close();
        s.close();
    }

    /** {@code W[i, :] *= l[i]} in place ({@code l}: {@code rows} entries, any shape, any floating dtype). */
    public static void scaleRows(Tensor weight, Tensor l) {
        scale(weight, l, true, false);
    }

    /** {@code W[:, j] *= l[j]} in place. */
    public static void scaleCols(Tensor weight, Tensor l) {
        scale(weight, l, false, false);
    }

    /** {@code W[i, :] /= d[i]} in place. */
    public static void divideRows(Tensor weight, Tensor d) {
        scale(weight, d, true, true);
    }

    /** {@code W[:, j] /= d[j]} in place. */
    public static void divideCols(Tensor weight, Tensor d) {
        scale(weight, d, false, true);
    }

    /**
     * IA3 merge ({@code W ← W ⊙ transpose(l, fan_in_fan_out)}): rows (outputs) for an {@code (out, 1)} vector, columns
     * (inputs) for a feed-forward {@code (1, in)} one, the other way round for Conv1D's {@code [in, out]} weight. The
     * base bias (output scaling) is the caller's: {@code b ⊙ l} is a vector op.
     */
    public static void mergeIa3(Tensor weight, Tensor l, boolean feedForward, boolean fanInFanOut) {
        scale(weight, l, feedForward == fanInFanOut, false);
    }

    /** Undoes {@link #mergeIa3}: divides by {@code l + 1e-8}, computed in l's dtype as PEFT does. */
    public static void unmergeIa3(Tensor weight, Tensor l, boolean feedForward, boolean fanInFanOut) {
        checkFloating("l", l);
        Tensor d = l.add(new Scalar(1e-8));
        scale(weight, d, feedForward == fanInFanOut, true);
        d.close();
    }

    static void scale(Tensor weight, Tensor l, boolean byRows, boolean divide) {
        Kernels.checkCpuContiguous("weight", weight);
        int dt = Kernels.dtypeCode("weight", weight);
        Kernels.checkNoGrad("weight", weight);
        checkFloating("l", l);
        if (weight.dim() != 2) {
            throw new IllegalArgumentException("weight: expected 2 dimensions, got shape "
                    + Arrays.toString(weight.shape()));
        }
        long rows = weight.size(0);
        long cols = weight.size(1);
        long want = byRows ? rows : cols;
        if (l.numel() != want) {
            throw new IllegalArgumentException("l: " + l.numel() + " entries (shape " + Arrays.toString(l.shape())
                    + "), the weight's " + (byRows ? "rows" : "columns") + " need " + want);
        }
        if (rows == 0 || cols == 0) {
            return;
        }
        Tensor lf = l.to(ScalarType.Float).contiguous();
        long w = weight.data_ptr().address();
        NativeKernels.peft4j_scale_matrix(dt, w, w, rows, cols, lf.data_ptr().address(), byRows ? 1 : 0,
                divide ? 1 : 0, torch.get_num_threads());
        java.lang.ref.Reference.reachabilityFence(weight);
        if (lf != l) {
            lf.close();
        }
    }

    static void checkFloating(String name, Tensor t) {
        if (t == null || t.isNull() || !t.defined()) {
            throw new IllegalArgumentException(name + ": tensor is null or undefined");
        }
        if (!t.is_cpu()) {
            throw new IllegalArgumentException(name + ": tensor is on " + t.device().str().getString()
                    + ", the CPU kernels need a CPU tensor");
        }
        if (!torch.isFloatingType(t.scalar_type().intern())) {
            throw new IllegalArgumentException(name + ": dtype " + t.scalar_type().intern() + " is not a floating type");
        }
    }
}

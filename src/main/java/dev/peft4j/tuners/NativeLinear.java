package dev.peft4j.tuners;

import dev.peft4j.kernels.DecodeKernels;
import dev.peft4j.kernels.DecodeLinear;
import dev.peft4j.kernels.DoraRescale;
import dev.peft4j.kernels.FusedLoraLinear;
import dev.peft4j.kernels.LoraDelta;
import dev.peft4j.nn.QuantizedLinear;
import java.util.List;
import java.util.function.UnaryOperator;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * The native inference state of one adapted Linear / Conv1D layer with LoRA-shaped slots (LoRA adapters, AdaLoRA's
 * effective {@code A⊙E}): the base weight, the slots, and for an {@code nn.Linear} base the decode kernel's handle.
 *
 * <p>Up to {@value FusedLoraLinear#MAX_ROWS} rows on a Linear base: {@link FusedLoraLinear}, one native call for the
 * base GEMV and every slot's delta. More rows, and every Conv1D ({@code fan_in_fan_out}, weight {@code [in, out]},
 * which the decode kernel cannot stream as {@code [out, in]}): the layer's own libtorch base forward, then
 * {@link LoraDelta} adds the deltas into that output in place (A and B have PEFT's layout for Conv1D too).
 *
 * <p>Holds raw pointers to the tensors it was given: in-place value updates (a training step, a load's
 * {@code copy_}, a merge) are read by the next forward; tensors replaced through {@link dev.peft4j.nn.Module}
 * ({@code to(dtype)}, {@code loadStateDict}, {@code setParameter}) move {@link dev.peft4j.nn.Module#tensorEpoch()},
 * on which the owner rebuilds it. A storage reallocated under the same tensor object ({@code set_}, {@code resize_})
 * would not be seen: nothing in peft4j does that to a module's tensors. The owner {@link #close()}s it when the layer
 * or the adapter goes. Internal to the tuner layers; public only because they live in several
 * packages.
 */
public final class NativeLinear implements AutoCloseable {
    // held for the Conv1D path too: the Java handles must outlive the state built on them
    private final Tensor weight;
    private final Tensor bias;
    private final ScalarType dtype;
    private final long in;
    private final long out;
    private final FusedLoraLinear fused; // null for Conv1D
    private final QuantizedLinear quantized; // the base of a quantized state, else null
    private LoraDelta.Slots slots; // checked once, for the GEMM path; its adapters() are the fused kernel's too
    private float[] doraScale; // DoRA's m / ‖W + s·B·A‖ per output feature, or null

    private NativeLinear(Tensor weight, Tensor bias, ScalarType dtype, boolean fanInFanOut) {
        this.weight = weight;
        this.bias = bias;
        this.dtype = dtype;
        this.in = fanInFanOut ? weight.size(0) : weight.size(1);
        this.out = fanInFanOut ? weight.size(1) : weight.size(0);
        this.slots = LoraDelta.Slots.of(List.of(), in, out, dtype);
        this.fused = fanInFanOut ? null : new FusedLoraLinear(weight, bias);
        this.quantized = null;
    }

    private NativeLinear(QuantizedLinear base, Tensor key, ScalarType dtype) {
        this.weight = key;
        this.bias = null;
        this.dtype = dtype;
        this.in = base.inFeatures();
        this.out = base.outFeatures();
        this.slots = LoraDelta.Slots.of(List.of(), in, out, dtype);
        this.fused = null;
        this.quantized = base;
    }

    /**
     * The state for a {@link QuantizedLinear} base running in its {@link QuantizedLinear#dtype()} (float32 /
     * bfloat16; null when another): up to {@value FusedLoraLinear#MAX_ROWS} rows the quantized product with the
     * delta fused into it ({@link DecodeKernels#linear}, mixed batches too), the very state the decode step groups;
     * more rows (or {@link DecodeKernels#quantizedLoraFused()} off) the base layer's own forward and then
     * {@link LoraDelta} in place. {@code key} (the quantized values) identifies the base for {@link #sameBase}.
     */
    public static NativeLinear createForQuantized(QuantizedLinear base, Tensor key) {
        ScalarType dt = base.dtype().intern();
        if (dt != ScalarType.Float && dt != ScalarType.BFloat16) {
            return null;
        }
        return new NativeLinear(base, key, dt);
    }

    /**
     * The state for a base layer, or null when the kernels cannot serve it (dtype other than float32 / bfloat16, a
     * tensor not on the CPU or not contiguous, a bias of another dtype): the layer then runs the composed ops.
     */
    public static NativeLinear create(Tensor weight, Tensor bias, boolean fanInFanOut) {
        if (!usable(weight) || weight.dim() != 2 || weight.size(0) == 0 || weight.size(1) == 0) {
            return null;
        }
        ScalarType dt = weight.scalar_type().intern();
        if (dt != ScalarType.Float && dt != ScalarType.BFloat16) {
            return null;
        }
        if (bias != null && (!usable(bias) || bias.scalar_type().intern() != dt)) {
            return null;
        }
        return new NativeLinear(weight, bias, dt, fanInFanOut);
    }

    /** Whether a slot tensor can be handed to the kernels with this base: CPU, contiguous, the weight's dtype. */
    public boolean accepts(Tensor t) {
        return usable(t) && t.scalar_type().intern() == dtype;
    }

    /** Whether x has the dtype the kernels run in (the weight's); the caller has checked it is on the CPU. */
    public boolean acceptsInput(Tensor x) {
        return x.scalar_type().intern() == dtype && x.dim() >= 1 && x.size(x.dim() - 1) == in;
    }

    /** The slots in use (a mixed batch's row slot indexes this list). */
    public List<FusedLoraLinear.Adapter> slots() {
        return slots.adapters();
    }

    /** Whether this state was built on exactly these base tensors (so that a stale layer can keep it). */
    public boolean sameBase(Tensor w, Tensor b) {
        return w == weight && b == bias;
    }

    /**
     * Replaces the slots: a checked list of pointers handed to the native state, skipped when the same tensors with
     * the same scales are in place already (re-enabling adapters, switching back).
     */
    public void setSlots(List<FusedLoraLinear.Adapter> newSlots) {
        List<FusedLoraLinear.Adapter> current = slots.adapters();
        if (newSlots.size() == current.size()) {
            boolean same = true;
            for (int i = 0; i < current.size() && same; i++) {
                FusedLoraLinear.Adapter o = current.get(i);
                FusedLoraLinear.Adapter n = newSlots.get(i);
                same = o.a() == n.a() && o.b() == n.b() && o.scale() == n.scale();
            }
            if (same) {
                return;
            }
        }
        slots = LoraDelta.Slots.of(newSlots, in, out, dtype);
        if (fused != null) {
            fused.setAdapters(slots); // checked once, above
        }
    }

    /**
     * DoRA's factor ({@code out} float32 entries) applied to every output before the bias, or null for none:
     * {@code y = f ⊙ (x·Wᵀ + Σ s·(x·Aᵀ)·Bᵀ) + b}. The array is not copied; pass a new one when the values change.
     *
     * @throws IllegalArgumentException if the length is not {@code out}
     */
    public void setDoraScale(float[] scale) {
        if (scale == doraScale) {
            return;
        }
        if (scale != null && scale.length != out) {
            throw new IllegalArgumentException("DoRA scale: " + scale.length + " entries, expected " + out);
        }
        doraScale = scale;
        if (fused != null) {
            fused.setDoraScale(scale);
        }
    }

    /**
     * The adapted output for {@code x} ({@code [..., in]}, the weight's dtype, CPU).
     *
     * @param base the layer's own base forward, for the GEMM path
     * @param rowSlot null (every slot on every row) or one slot index or -1 per row, see {@link LoraDelta#apply}
     */
    public Tensor forward(Tensor x, UnaryOperator<Tensor> base, int[] rowSlot) {
        if (rowSlot != null && doraScale != null) {
            throw new IllegalStateException("a mixed batch cannot run on a state with a DoRA scale");
        }
        Tensor xc = x.is_contiguous() ? x : x.contiguous();
        try {
            long rows = xc.numel() / in;
            if (fused != null && rows <= FusedLoraLinear.MAX_ROWS) {
                return fused.forward(xc, rowSlot);
            }
            if (quantized != null && doraScale == null && DecodeKernels.quantizedLoraFused()) {
                DecodeLinear d = quantized.decodeLinear(xc, slots); // null past the decode sizes, or with autograd
                if (d != null) {
                    return DecodeKernels.linear(xc, d, rowSlot);
                }
            }
            Tensor y = base.apply(xc);
            if (!y.is_contiguous()) {
                Tensor c = y.contiguous();
                y.close();
                y = c;
            }
            LoraDelta.apply(y, xc, slots, rowSlot);
            if (doraScale != null) {
                DoraRescale.apply(y, bias, doraScale);
            }
            return y;
        } finally {
            if (xc != x) {
                xc.close();
            }
        }
    }

    /** The slots as {@link LoraDelta#apply} takes them: what {@link #forward} adds after the base's own product. */
    public LoraDelta.Slots deltaSlots() {
        return slots;
    }

    /**
     * The fused decode kernel that {@link #forward} runs for {@code x} without a row slot ({@code [..., in]}, at most
     * {@value FusedLoraLinear#MAX_ROWS} rows, on a Linear base), or null when x takes another path.
     */
    public FusedLoraLinear decodeLinear(Tensor x) {
        return fused != null && acceptsInput(x) && x.numel() / in <= FusedLoraLinear.MAX_ROWS ? fused : null;
    }

    @Override
    public void close() {
        if (fused != null) {
            fused.close();
        }
        slots = LoraDelta.Slots.of(List.of(), in, out, dtype);
        doraScale = null;
    }

    private static boolean usable(Tensor t) {
        return t != null && !t.isNull() && t.defined() && t.is_cpu() && t.is_contiguous();
    }
}

package dev.peft4j.kernels;

import java.util.Arrays;
import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Native kernels for the small per-layer ops of a Llama-family decode step (one new token per row): RMSNorm (alone
 * or fused with the residual add before it), RoPE, and attention over a slot KV cache written in place. float32 or
 * bfloat16 tensors on the CPU, contiguous; float32 arithmetic, results rounded to the tensors' dtype in the order
 * transformers' separate ops round them. Inference only: nothing is recorded for autograd, and the in-place ones
 * refuse a tensor that requires grad.
 *
 * <p>Whether the models use them (and the native GEMV for every small Linear) is {@link #enabled()}: on by
 * default, off with {@code -Dpeft4j.decode=libtorch} or {@link #setEnabled}, which restores the libtorch path
 * (benchmarks compare the two with it).
 */
public final class DecodeKernels {
    private static final java.util.concurrent.atomic.LongAdder ATTENTION_CALLS =
            new java.util.concurrent.atomic.LongAdder();

    private static final java.util.concurrent.atomic.LongAdder GROUP_CALLS =
            new java.util.concurrent.atomic.LongAdder();

    private DecodeKernels() {}

    /**
     * How many {@link #linearGroup} and {@link #gatedLinear} calls this process has run: lets a test prove that a
     * model's step ran its projections grouped.
     */
    public static long groupCalls() {
        return GROUP_CALLS.sum();
    }

    /**
     * How many {@link #attention} calls (one per layer of a native decode step) this process has run: lets a test
     * prove that a model's step took the native path.
     */
    public static long attentionCalls() {
        return ATTENTION_CALLS.sum();
    }

    /**
     * Whether inference forwards at decode sizes take the native decode path: Linears of at most
     * {@value FusedLoraLinear#MAX_ROWS} rows on the native GEMV, and the Llama family's one-token steps over a
     * slot cache on these kernels. {@code -Dpeft4j.decode=libtorch} turns it off for the process.
     */
    public static boolean enabled() {
        return Switch.ENABLED.on();
    }

    /**
     * Whether the native decode step runs a layer's projections that share an input together ({@link #linearGroup},
     * {@link #gatedLinear}): on by default, off with {@code -Dpeft4j.decode.group=false} or {@link #setGrouped},
     * which runs each projection on its own call and the gated MLP's activation and product on libtorch (benchmarks
     * compare the two with it). Same results either way.
     */
    public static boolean grouped() {
        return Switch.GROUPED.on();
    }

    /** Process-wide switch of the grouped projections; see {@link #grouped()}. */
    public static void setGrouped(boolean on) {
        Switch.GROUPED.set(on);
    }

    /**
     * Whether LoRA on a quantized Linear runs fused into the quantized product at decode sizes (the adapters' shrink
     * in the same parallel region, their expand added to each output panel before the bias, one rounding): on by
     * default, off with {@code -Dpeft4j.decode.qlora=separate} or {@link #setQuantizedLoraFused}, which runs the
     * delta as its own call after the quantized product ({@link LoraDelta#apply}; benchmarks compare the two with
     * it). The results differ by float rounding only: one rounding of the sum instead of two in bfloat16.
     */
    public static boolean quantizedLoraFused() {
        return Switch.QUANTIZED_LORA_FUSED.on();
    }

    /** Process-wide switch of the fused LoRA on quantized Linears; see {@link #quantizedLoraFused()}. */
    public static void setQuantizedLoraFused(boolean on) {
        Switch.QUANTIZED_LORA_FUSED.set(on);
    }

    /** Process-wide switch of the native decode path; see {@link #enabled()}. */
    public static void setEnabled(boolean on) {
        Switch.ENABLED.set(on);
    }

    /**
     * The process-wide switches of the decode path, each read from its system property once (when this class loads)
     * and settable at run time (tests and benchmarks compare both settings). Reads and writes are volatile: a step
     * started before a {@link #set} may still run with the old setting.
     */
    public enum Switch {
        /** {@link #enabled()}: {@code -Dpeft4j.decode=libtorch} turns it off. */
        ENABLED("peft4j.decode", "libtorch"),
        /** {@link #grouped()}: {@code -Dpeft4j.decode.group=false} turns it off. */
        GROUPED("peft4j.decode.group", "false"),
        /** {@link #quantizedLoraFused()}: {@code -Dpeft4j.decode.qlora=separate} turns it off. */
        QUANTIZED_LORA_FUSED("peft4j.decode.qlora", "separate"),
        /**
         * Whether a LoRA layer serving a mixed batch (per-row adapters) hands out its decode state, so its layers join
         * the grouped projections: {@code -Dpeft4j.decode.mixedGroup=false} turns it off (each layer then runs its
         * own mixed forward, with the same result; the benchmarks' baseline).
         */
        MIXED_GROUP("peft4j.decode.mixedGroup", "false");

        private final String property;
        private volatile boolean on;

        Switch(String property, String offValue) {
            this.property = property;
            String v = System.getProperty(property);
            this.on = v == null || !offValue.equalsIgnoreCase(v.trim());
        }

        /** Whether the switch is on (the default unless its system property gave its off value). */
        public boolean on() {
            return on;
        }

        /** Sets the switch for the whole process. */
        public void set(boolean value) {
            on = value;
        }

        /** The system property read at start-up. */
        public String property() {
            return property;
        }
    }

    /**
     * transformers' {@code LlamaRMSNorm} of {@code x} ({@code [..., dim]}): {@code w · T(x · rsqrt(mean(x²) + eps))},
     * the mean in float32. Returns a new tensor of x's shape and dtype.
     */
    public static Tensor rmsNorm(Tensor x, Tensor weight, double eps) {
        return rmsNorm(x, weight, eps, false);
    }

    /**
     * {@link #rmsNorm(Tensor, Tensor, double)}, or with {@code unitOffset} Gemma's {@code GemmaRMSNorm}: {@code T(x ·
     * rsqrt(mean(x²) + eps) · (1 + w))}, every step in float32 and rounded to x's dtype once at the end.
     */
    public static Tensor rmsNorm(Tensor x, Tensor weight, double eps, boolean unitOffset) {
        int dt = checkNormArgs(x, weight);
        long dim = weight.numel();
        Tensor y = torch.empty_like(x);
        NativeKernels.peft4j_rms_norm(dt, y.data_ptr().address(), x.data_ptr().address(),
                weight.data_ptr().address(), x.numel() / dim, dim, (float) eps, unitOffset ? 1 : 0);
        java.lang.ref.Reference.reachabilityFence(x);
        java.lang.ref.Reference.reachabilityFence(weight);
        return y;
    }

    /**
     * The residual add fused with the norm after it: {@code residual = T(residual + a)} in place, then returns
     * {@link #rmsNorm}{@code (residual)} as a new tensor. {@code a} has residual's shape and dtype.
     */
    public static Tensor addRmsNorm(Tensor residual, Tensor a, Tensor weight, double eps) {
        return addRmsNorm(residual, a, weight, eps, false);
    }

    /**
     * {@link #addRmsNorm(Tensor, Tensor, Tensor, double)} with the norm of {@link #rmsNorm(Tensor, Tensor, double,
     * boolean)}: Gemma's {@code (1 + w)} one when {@code unitOffset}.
     */
    public static Tensor addRmsNorm(Tensor residual, Tensor a, Tensor weight, double eps, boolean unitOffset) {
        int dt = checkNormArgs(residual, weight);
        Kernels.checkNoGrad("residual", residual);
        Kernels.checkCpuContiguous("a", a);
        Kernels.checkSameDtype("a", a, "residual", residual);
        if (a.numel() != residual.numel()) {
            throw new IllegalArgumentException("a: shape " + Arrays.toString(a.shape()) + " does not match residual's "
                    + Arrays.toString(residual.shape()));
        }
        Kernels.checkNoOverlap("a", a, "residual", residual);
        long dim = weight.numel();
        Tensor y = torch.empty_like(residual);
        NativeKernels.peft4j_add_rms_norm(dt, residual.data_ptr().address(), a.data_ptr().address(),
                y.data_ptr().address(), weight.data_ptr().address(), residual.numel() / dim, dim, (float) eps,
                unitOffset ? 1 : 0);
        java.lang.ref.Reference.reachabilityFence(residual);
        java.lang.ref.Reference.reachabilityFence(a);
        java.lang.ref.Reference.reachabilityFence(weight);
        return y;
    }

    private static int checkNormArgs(Tensor x, Tensor weight) {
        Kernels.checkCpuContiguous("x", x);
        Kernels.checkCpuContiguous("weight", weight);
        int dt = Kernels.dtypeCode("x", x);
        Kernels.checkSameDtype("weight", weight, "x", x);
        long dim = weight.numel();
        if (weight.dim() != 1 || x.dim() < 1 || x.size(x.dim() - 1) != dim) {
            throw new IllegalArgumentException("weight: shape " + Arrays.toString(weight.shape())
                    + " does not match x's last dimension, x has shape " + Arrays.toString(x.shape()));
        }
        return dt;
    }

    /**
     * Llama's rotary embedding in place on {@code x} ({@code rows · heads} vectors of {@code headDim}: {@code [rows,
     * heads, headDim]}, or {@code [rows, 1, heads · headDim]} as a projection gives them), rotate_half layout: row {@code i}'s vectors are at position {@code positions[i]}.
     * {@code invFreq}: float32 {@code [headDim / 2]}; the tables are built from it in float32 and rounded to x's
     * dtype, as transformers builds them.
     */
    public static void rope(Tensor x, long heads, long[] positions, Tensor invFreq) {
        rope(x, heads, positions, invFreq, 0, 1.0);
    }

    /**
     * {@link #rope(Tensor, long, long[], Tensor)} on the leading {@code 2 · invFreq.numel()} dims of each head of
     * {@code headDim} values (the rest pass through, as transformers' partial rotary factor), with cos and sin
     * multiplied by {@code attentionScaling} in float32 before the rounding to x's dtype (Phi-3's long-RoPE factor).
     *
     * @param headDim the head width, or 0 for {@code 2 · invFreq.numel()} (every dim rotates)
     */
    public static void rope(Tensor x, long heads, long[] positions, Tensor invFreq, long headDim,
            double attentionScaling) {
        Kernels.checkCpuContiguous("x", x);
        Kernels.checkCpuContiguous("invFreq", invFreq);
        Kernels.checkNoGrad("x", x);
        int dt = Kernels.dtypeCode("x", x);
        if (invFreq.scalar_type().intern() != ScalarType.Float) {
            throw new IllegalArgumentException("invFreq: dtype " + invFreq.scalar_type().intern()
                    + " not supported, expected Float");
        }
        long rot = invFreq.numel() * 2;
        long dim = headDim == 0 ? rot : headDim;
        long rows = positions.length;
        if (rot == 0 || rot > dim || heads < 1 || x.numel() != rows * heads * dim || x.size(x.dim() - 1) % dim != 0) {
            throw new IllegalArgumentException("x: shape " + Arrays.toString(x.shape()) + " is not " + rows
                    + " rows of " + heads + " heads of " + dim + " (invFreq has " + invFreq.numel() + " entries)");
        }
        NativeKernels.peft4j_rope(dt, x.data_ptr().address(), rows, heads, dim, positions,
                invFreq.data_ptr().address(), rot, (float) attentionScaling);
        java.lang.ref.Reference.reachabilityFence(x);
        java.lang.ref.Reference.reachabilityFence(invFreq);
    }

    /**
     * Attention of one new token per row over a slot KV cache. {@code q}: {@code rows · heads · headDim} values
     * ({@code [rows, 1, heads · headDim]} as the projections give them), {@code k}, {@code v}: {@code rows ·
     * kvHeads · headDim}, RoPE applied; {@code keys}, {@code values}: the cache's {@code [slots, kvHeads, maxLength,
     * headDim]} tensors of one layer. Row {@code i}'s k and v are written at position {@code past[i]} of slot
     * {@code slotOf[i]}; its heads (query head {@code j} on kv head {@code j / (heads / kvHeads)}) then attend to
     * that slot's positions {@code 0 .. past[i]}, the last {@code window} of them when {@code window > 0}. Returns
     * {@code softmax(q·kᵀ·scale)·v} of q's shape.
     *
     * @throws IllegalArgumentException for a slot out of range or used by two rows, a length past the cache, or
     *     tensors that do not match
     */
    public static Tensor attention(Tensor q, Tensor k, Tensor v, Tensor keys, Tensor values, int[] slotOf, long[] past,
            long window, double scale) {
        return attention(q, k, v, keys, values, slotOf, past, window, scale, 0);
    }

    /**
     * {@link #attention(Tensor, Tensor, Tensor, Tensor, Tensor, int[], long[], long, double)} with Gemma 2's
     * soft-capped scores when {@code softcap > 0}: {@code cap · tanh(q·kᵀ·scale / cap)} before the softmax.
     */
    public static Tensor attention(Tensor q, Tensor k, Tensor v, Tensor keys, Tensor values, int[] slotOf, long[] past,
            long window, double scale, double softcap) {
        int dt = Kernels.dtypeCode("q", q);
        long heads = checkAttentionArgs(q, k, v, keys, values, slotOf, past);
        long[] cs = keys.shape();
        Tensor out = torch.empty_like(q);
        NativeKernels.peft4j_decode_attention(dt, q.data_ptr().address(), k.data_ptr().address(),
                v.data_ptr().address(), keys.data_ptr().address(), values.data_ptr().address(), cs[2], slotOf,
                past, slotOf.length, heads, cs[1], cs[3], Math.max(0, window), (float) scale, out.data_ptr().address(),
                torch.get_num_threads(), (float) Math.max(0, softcap));
        ATTENTION_CALLS.increment();
        java.lang.ref.Reference.reachabilityFence(q);
        java.lang.ref.Reference.reachabilityFence(k);
        java.lang.ref.Reference.reachabilityFence(v);
        java.lang.ref.Reference.reachabilityFence(keys);
        java.lang.ref.Reference.reachabilityFence(values);
        return out;
    }

    /**
     * {@link #rope(Tensor, long, long[], Tensor, long, double)} of {@code q} and of {@code k} at the positions
     * {@code past} (in place on both), then {@link #attention(Tensor, Tensor, Tensor, Tensor, Tensor, int[], long[],
     * long, double, double)}: a layer's attention core in one native call, the same values bit for bit. The cos / sin
     * tables are built once per step and thread, not once per layer and tensor. The head width is the cache's.
     *
     * @throws IllegalArgumentException as the two do
     */
    public static Tensor ropeAttention(Tensor q, Tensor k, Tensor v, Tensor keys, Tensor values, int[] slotOf,
            long[] past, long window, double scale, double softcap, Tensor invFreq, double attentionScaling) {
        int dt = Kernels.dtypeCode("q", q);
        long heads = checkAttentionArgs(q, k, v, keys, values, slotOf, past);
        Kernels.checkNoGrad("q", q);
        Kernels.checkNoGrad("k", k);
        Kernels.checkNoOverlap("q", q, "k", k);
        long[] cs = keys.shape();
        long dim = cs[3];
        long rot = checkInvFreq(invFreq, dim);
        Tensor out = torch.empty_like(q);
        NativeKernels.peft4j_decode_rope_attention(dt, q.data_ptr().address(), k.data_ptr().address(),
                v.data_ptr().address(), keys.data_ptr().address(), values.data_ptr().address(), cs[2], slotOf,
                past, slotOf.length, heads, cs[1], dim, Math.max(0, window), (float) scale, out.data_ptr().address(),
                torch.get_num_threads(), (float) Math.max(0, softcap), invFreq.data_ptr().address(), rot,
                (float) attentionScaling);
        ATTENTION_CALLS.increment();
        java.lang.ref.Reference.reachabilityFence(q);
        java.lang.ref.Reference.reachabilityFence(k);
        java.lang.ref.Reference.reachabilityFence(v);
        java.lang.ref.Reference.reachabilityFence(keys);
        java.lang.ref.Reference.reachabilityFence(values);
        java.lang.ref.Reference.reachabilityFence(invFreq);
        return out;
    }

    /** The rotary dims ({@code 2 · invFreq.numel()}) after checking invFreq: float32, contiguous, at most dim / 2. */
    private static long checkInvFreq(Tensor invFreq, long dim) {
        Kernels.checkCpuContiguous("invFreq", invFreq);
        if (invFreq.scalar_type().intern() != ScalarType.Float) {
            throw new IllegalArgumentException("invFreq: dtype " + invFreq.scalar_type().intern()
                    + " not supported, expected Float");
        }
        long rot = invFreq.numel() * 2;
        if (rot == 0 || rot > dim) {
            throw new IllegalArgumentException("invFreq: " + invFreq.numel() + " entries do not fit heads of " + dim);
        }
        return rot;
    }

    /** The query heads after checking the attention's arguments (see {@link #attention}). */
    private static long checkAttentionArgs(Tensor q, Tensor k, Tensor v, Tensor keys, Tensor values, int[] slotOf,
            long[] past) {
        for (Object[] t : new Object[][] {{"q", q}, {"k", k}, {"v", v}, {"keys", keys}, {"values", values}}) {
            Kernels.checkCpuContiguous((String) t[0], (Tensor) t[1]);
        }
        Kernels.checkSameDtype("k", k, "q", q);
        Kernels.checkSameDtype("v", v, "q", q);
        Kernels.checkSameDtype("keys", keys, "q", q);
        Kernels.checkSameDtype("values", values, "q", q);
        Kernels.checkNoGrad("keys", keys);
        Kernels.checkNoGrad("values", values);
        long[] cs = keys.shape();
        if (cs.length != 4 || !Arrays.equals(cs, values.shape())) {
            throw new IllegalArgumentException("keys / values: expected two [slots, kv_heads, max_length, head_dim] "
                    + "tensors, got " + Arrays.toString(cs) + " and " + Arrays.toString(values.shape()));
        }
        long slots = cs[0];
        long kvHeads = cs[1];
        long maxLength = cs[2];
        long dim = cs[3];
        int rows = slotOf.length;
        if (past.length != rows) {
            throw new IllegalArgumentException("past: " + past.length + " entries, slotOf has " + rows);
        }
        if (q.numel() % (rows * dim) != 0 || q.numel() / (rows * dim) % kvHeads != 0) {
            throw new IllegalArgumentException("q: " + q.numel() + " values are not " + rows + " rows of a multiple of "
                    + kvHeads + " heads of " + dim);
        }
        long heads = q.numel() / (rows * dim);
        if (k.numel() != rows * kvHeads * dim || v.numel() != rows * kvHeads * dim) {
            throw new IllegalArgumentException("k / v: expected " + rows + " rows of " + kvHeads + " heads of " + dim
                    + " values, got shapes " + Arrays.toString(k.shape()) + " and " + Arrays.toString(v.shape()));
        }
        boolean[] used = new boolean[Math.toIntExact(slots)];
        for (int i = 0; i < rows; i++) {
            if (slotOf[i] < 0 || slotOf[i] >= slots) {
                throw new IllegalArgumentException("row " + i + ": slot " + slotOf[i] + " out of range [0, " + slots
                        + ")");
            }
            if (used[slotOf[i]]) {
                throw new IllegalArgumentException("row " + i + ": slot " + slotOf[i] + " is used by an earlier row");
            }
            used[slotOf[i]] = true;
            if (past[i] < 0 || past[i] >= maxLength) {
                throw new IllegalArgumentException("row " + i + " (slot " + slotOf[i] + "): " + past[i]
                        + " cached + 1 new positions exceed the slot cache's max length " + maxLength);
            }
        }
        return heads;
    }

    /**
     * Several decode Linears over the same {@code x} ({@code [..., in]}, at most {@value FusedLoraLinear#MAX_ROWS}
     * rows, contiguous, the layers' dtype), in one parallel region: a layer's q, k and v projections fork and join
     * the thread team once instead of three times, and a thread done with one layer's blocks takes the next layer's.
     * Returns one new tensor per layer, {@code [..., out]}, equal to each layer's own forward bit for bit. Quantized
     * members quantize x once for all of them and run their panels in one region, then add their LoRA deltas.
     *
     * @throws IllegalArgumentException if x does not fit every layer
     */
    public static Tensor[] linearGroup(Tensor x, DecodeLinear... layers) {
        long rows = checkDecodeInput(x, layers);
        if (anyPerRow(layers)) {
            Tensor[] out = perRowGroup(x, rows, layers);
            GROUP_CALLS.increment();
            return out;
        }
        if (anyQuantized(layers)) {
            Tensor[] out = quantizedGroup(x, rows, layers, null);
            GROUP_CALLS.increment();
            return out;
        }
        Tensor[] out = new Tensor[layers.length];
        long[] handles = new long[layers.length];
        long[] ys = new long[layers.length];
        for (int g = 0; g < layers.length; g++) {
            out[g] = torch.empty(outShape(x, layers[g].outFeatures()), options(layers[g].dtype()), NO_FORMAT);
            handles[g] = layers[g].handle();
            ys[g] = out[g].data_ptr().address();
        }
        if (rows > 0) {
            NativeKernels.peft4j_adapted_linear_forward_group(layers.length, handles, ys, x.data_ptr().address(), rows,
                    torch.get_num_threads());
        }
        countLayerCalls(layers);
        GROUP_CALLS.increment();
        java.lang.ref.Reference.reachabilityFence(x);
        java.lang.ref.Reference.reachabilityFence(layers);
        return out;
    }

    /** The activation of a gated MLP ({@link #gatedLinear}), as transformers' {@code hidden_act} names it. */
    public enum GateActivation {
        /** {@code silu} / {@code swish}: {@code x / (1 + exp(-x))}. */
        SILU,
        /** {@code gelu}: {@code 0.5·x·(1 + erf(x / √2))}. */
        GELU,
        /** {@code gelu_pytorch_tanh} / {@code gelu_new}: {@code 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))}. */
        GELU_TANH,
        /** {@code relu}. */
        RELU
    }

    /**
     * A gated MLP's input half, {@code act(gate(x)) · up(x)}, rounded to x's dtype as libtorch's separate activation
     * and multiplication round: gate and up in one parallel region, the activation and product fused after it, one
     * native call. {@code up == null}: {@code gate} is a fused {@code gate_up} projection of {@code 2·I} outputs, the
     * first {@code I} the gate's (Phi-3). Returns {@code [..., I]}. x as for {@link #linearGroup}.
     *
     * @throws IllegalArgumentException if x does not fit, or gate and up differ in output width
     */
    public static Tensor gatedLinear(Tensor x, DecodeLinear gate, DecodeLinear up, GateActivation act) {
        long rows = up == null ? checkDecodeInput(x, gate) : checkDecodeInput(x, gate, up);
        long inter;
        if (up != null) {
            if (gate.outFeatures() != up.outFeatures()) {
                throw new IllegalArgumentException("gate has " + gate.outFeatures() + " outputs, up "
                        + up.outFeatures());
            }
            inter = gate.outFeatures();
        } else {
            if (gate.outFeatures() % 2 != 0) {
                throw new IllegalArgumentException("a fused gate_up projection needs an even output width, got "
                        + gate.outFeatures());
            }
            inter = gate.outFeatures() / 2;
        }
        if (up == null ? gate instanceof PerRowDecodeLinear : anyPerRow(gate, up)) {
            Tensor y = perRowGated(x, rows, inter, gate, up, act);
            GROUP_CALLS.increment();
            return y;
        }
        if (up == null ? gate instanceof QuantizedDecodeLinear : anyQuantized(gate, up)) {
            Tensor y = quantizedGated(x, rows, inter, gate, up, act);
            GROUP_CALLS.increment();
            return y;
        }
        Tensor y = torch.empty(outShape(x, inter), options(gate.dtype()), NO_FORMAT);
        if (rows > 0) {
            NativeKernels.peft4j_gated_linear(gate.handle(), up == null ? 0L : up.handle(), y.data_ptr().address(),
                    x.data_ptr().address(), rows, act.ordinal(), torch.get_num_threads());
        }
        countLayerCalls(up == null ? new DecodeLinear[] {gate} : new DecodeLinear[] {gate, up});
        GROUP_CALLS.increment();
        java.lang.ref.Reference.reachabilityFence(x);
        java.lang.ref.Reference.reachabilityFence(gate);
        java.lang.ref.Reference.reachabilityFence(up);
        return y;
    }

    /**
     * {@code act(g) · u} elementwise (g, u of one shape and dtype, contiguous, on the CPU), each step rounded to their
     * dtype as libtorch's activation and multiplication round: the epilogue of {@link #gatedLinear}, on its own.
     */
    public static Tensor actMul(Tensor g, Tensor u, GateActivation act) {
        Kernels.checkCpuContiguous("g", g);
        Kernels.checkCpuContiguous("u", u);
        int dt = Kernels.dtypeCode("g", g);
        Kernels.checkSameDtype("u", u, "g", g);
        if (!Arrays.equals(g.shape(), u.shape())) {
            throw new IllegalArgumentException("u: shape " + Arrays.toString(u.shape()) + " does not match g's "
                    + Arrays.toString(g.shape()));
        }
        Tensor y = torch.empty_like(g);
        NativeKernels.peft4j_act_mul(dt, act.ordinal(), y.data_ptr().address(), g.data_ptr().address(),
                u.data_ptr().address(), g.numel());
        java.lang.ref.Reference.reachabilityFence(g);
        java.lang.ref.Reference.reachabilityFence(u);
        return y;
    }

    private static boolean anyQuantized(DecodeLinear... layers) {
        for (DecodeLinear l : layers) {
            if (l instanceof QuantizedDecodeLinear) {
                return true;
            }
        }
        return false;
    }

    /**
     * {@link #linearGroup} with quantized members: x quantized once and every quantized member's panels in one
     * region, their LoRA deltas fused into it ({@link #quantizedLoraFused()}) or added after it one member at a time;
     * dense members (a group that mixes both) in their own region. {@code rowSlot}: null, or a mixed batch's adapter
     * per row (checked) for a group of one quantized member.
     */
    private static Tensor[] quantizedGroup(Tensor x, long rows, DecodeLinear[] layers, int[] rowSlot) {
        Tensor[] out = new Tensor[layers.length];
        int nq = 0;
        int nd = 0;
        for (DecodeLinear l : layers) {
            if (l instanceof QuantizedDecodeLinear) {
                nq++;
            } else {
                nd++;
            }
        }
        boolean fuse = quantizedLoraFused();
        QuantizedDecodeLinear[] qs = new QuantizedDecodeLinear[nq];
        long[] qys = new long[nq];
        long[] handles = new long[nd];
        long[] dys = new long[nd];
        for (int g = 0, iq = 0, id = 0; g < layers.length; g++) {
            out[g] = torch.empty(outShape(x, layers[g].outFeatures()), options(layers[g].dtype()), NO_FORMAT);
            if (layers[g] instanceof QuantizedDecodeLinear q) {
                qs[iq] = q;
                qys[iq++] = out[g].data_ptr().address();
            } else {
                handles[id] = layers[g].handle();
                dys[id++] = out[g].data_ptr().address();
            }
        }
        if (rows > 0) {
            QuantArgs qa = new QuantArgs(qs, fuse);
            if (fuse) {
                NativeKernels.peft4j_quant_lora_group(Kernels.dtypeCode("x", x), nq, qa.fmts, qa.pqs, qa.pds,
                        qa.biases, qys, qa.ns, qa.nls, qa.as, qa.bs, qa.rs, qa.ss, rowSlot, x.data_ptr().address(),
                        rows, x.size(x.dim() - 1), torch.get_num_threads());
            } else {
                NativeKernels.peft4j_quant_linear_group(Kernels.dtypeCode("x", x), nq, qa.fmts, qa.pqs, qa.pds,
                        qa.biases, qys, qa.ns, x.data_ptr().address(), rows, x.size(x.dim() - 1),
                        torch.get_num_threads());
            }
            if (nd > 0) {
                NativeKernels.peft4j_adapted_linear_forward_group(nd, handles, dys, x.data_ptr().address(), rows,
                        torch.get_num_threads());
            }
        }
        for (int g = 0; g < layers.length; g++) {
            if (layers[g] instanceof QuantizedDecodeLinear q) {
                if (q.delta != null && !fuse) {
                    LoraDelta.apply(out[g], x, q.delta, rowSlot);
                } else if (q.delta != null && rows > 0 && q.delta.a.length > 0) {
                    Kernels.countLayerCall(); // as LoraDelta#apply counts the delta it adds
                }
            } else if (layers[g].countsLayerCall()) {
                Kernels.countLayerCall();
            }
        }
        java.lang.ref.Reference.reachabilityFence(x);
        java.lang.ref.Reference.reachabilityFence(layers);
        return out;
    }

    /**
     * One decode Linear on {@code x} ({@code [..., in]}, at most {@value FusedLoraLinear#MAX_ROWS} rows, contiguous,
     * the layer's dtype): {@link #linearGroup}{@code (x, layer)[0]}, bit for bit, without counting a group call.
     * {@code rowSlot} (a mixed batch: row {@code i} gets only adapter {@code rowSlot[i]} of the layer's LoRA delta, or
     * none for {@code -1}; see {@link LoraDelta#apply}) is taken by a quantized layer's state only, with the delta
     * fused or not ({@link #quantizedLoraFused()}); null: every adapter on every row.
     *
     * @throws IllegalArgumentException if x does not fit the layer, or {@code rowSlot} is given for another state or
     *     does not fit the rows and adapters
     */
    public static Tensor linear(Tensor x, DecodeLinear layer, int[] rowSlot) {
        long rows = checkDecodeInput(x, layer);
        if (layer instanceof PerRowDecodeLinear) {
            if (rowSlot != null) {
                throw new IllegalArgumentException("rowSlot: the state already carries a per-row adapter index");
            }
            return perRowGroup(x, rows, new DecodeLinear[] {layer})[0];
        }
        if (!(layer instanceof QuantizedDecodeLinear q)) {
            if (rowSlot != null) {
                throw new IllegalArgumentException("rowSlot: a per-row adapter index needs a quantized layer's state");
            }
            Tensor y = torch.empty(outShape(x, layer.outFeatures()), options(layer.dtype()), NO_FORMAT);
            if (rows > 0) {
                NativeKernels.peft4j_adapted_linear_forward_group(1, new long[] {layer.handle()},
                        new long[] {y.data_ptr().address()}, x.data_ptr().address(), rows, torch.get_num_threads());
            }
            countLayerCalls(new DecodeLinear[] {layer});
            java.lang.ref.Reference.reachabilityFence(x);
            java.lang.ref.Reference.reachabilityFence(layer);
            return y;
        }
        if (rowSlot != null) {
            LoraDelta.checkRowSlot(rowSlot, rows, q.delta == null ? 0 : q.delta.a.length);
        }
        return quantizedGroup(x, rows, new DecodeLinear[] {layer}, rowSlot)[0];
    }

    /** The native arguments of quantized members: panels, biases, widths, and (with {@code lora}) their adapters. */
    private static final class QuantArgs {
        final int[] fmts;
        final long[] pqs;
        final long[] pds;
        final long[] biases;
        final long[] ns;
        final int[] nls;
        final long[] as;
        final long[] bs;
        final int[] rs;
        final float[] ss;

        QuantArgs(QuantizedDecodeLinear[] qs, boolean lora) {
            int n = qs.length;
            fmts = new int[n];
            pqs = new long[n];
            pds = new long[n];
            biases = new long[n];
            ns = new long[n];
            nls = new int[n];
            int total = 0;
            for (int g = 0; g < n; g++) {
                QuantizedDecodeLinear q = qs[g];
                fmts[g] = q.weight.format().ordinal();
                pqs[g] = q.weight.panels().data_ptr().address();
                pds[g] = q.weight.panelScales().data_ptr().address();
                biases[g] = q.bias == null ? 0L : q.bias.data_ptr().address();
                ns[g] = q.outFeatures();
                nls[g] = lora && q.delta != null ? q.delta.a.length : 0;
                total += nls[g];
            }
            as = new long[total];
            bs = new long[total];
            rs = new int[total];
            ss = new float[total];
            for (int g = 0, at = 0; g < n; at += nls[g], g++) {
                if (nls[g] > 0) {
                    LoraDelta.Slots d = qs[g].delta;
                    System.arraycopy(d.a, 0, as, at, nls[g]);
                    System.arraycopy(d.b, 0, bs, at, nls[g]);
                    System.arraycopy(d.r, 0, rs, at, nls[g]);
                    System.arraycopy(d.s, 0, ss, at, nls[g]);
                }
            }
        }
    }

    /**
     * {@link #gatedLinear} with a quantized member: when every member is quantized, one native call (the projections
     * in one region with their LoRA deltas fused, then the activation and product); with a dense member, or deltas
     * that run separately ({@link #quantizedLoraFused()}), the group, the deltas in place, then the activation and
     * product row by row.
     */
    private static Tensor quantizedGated(Tensor x, long rows, long inter, DecodeLinear gate, DecodeLinear up,
            GateActivation act) {
        DecodeLinear[] members = up == null ? new DecodeLinear[] {gate} : new DecodeLinear[] {gate, up};
        boolean direct = true;
        boolean lora = false;
        for (DecodeLinear l : members) {
            direct &= l instanceof QuantizedDecodeLinear q && (q.delta == null || quantizedLoraFused());
            lora |= l instanceof QuantizedDecodeLinear q && q.delta != null && q.delta.a.length > 0;
        }
        if (!direct || rows == 0) {
            Tensor[] gu = quantizedGroup(x, rows, members, null);
            Tensor y = torch.empty(outShape(x, inter), options(gate.dtype()), NO_FORMAT);
            actMulRows(y, gu, up != null, Kernels.dtypeCode("x", x), rows, inter, act);
            return y;
        }
        int n = members.length;
        QuantizedDecodeLinear[] qs = new QuantizedDecodeLinear[n];
        for (int g = 0; g < n; g++) {
            qs[g] = (QuantizedDecodeLinear) members[g];
        }
        QuantArgs qa = new QuantArgs(qs, lora);
        Tensor y = torch.empty(outShape(x, inter), options(gate.dtype()), NO_FORMAT);
        if (lora) {
            NativeKernels.peft4j_quant_lora_gated_linear(Kernels.dtypeCode("x", x), n, qa.fmts, qa.pqs, qa.pds,
                    qa.biases, qa.ns, qa.nls, qa.as, qa.bs, qa.rs, qa.ss, y.data_ptr().address(),
                    x.data_ptr().address(), rows, x.size(x.dim() - 1), act.ordinal(), torch.get_num_threads());
            for (QuantizedDecodeLinear q : qs) {
                if (q.delta != null && q.delta.a.length > 0) {
                    Kernels.countLayerCall(); // as LoraDelta#apply counts the delta it adds
                }
            }
        } else {
            NativeKernels.peft4j_quant_gated_linear(Kernels.dtypeCode("x", x), n, qa.fmts, qa.pqs, qa.pds, qa.biases,
                    qa.ns, y.data_ptr().address(), x.data_ptr().address(), rows, x.size(x.dim() - 1), act.ordinal(),
                    torch.get_num_threads());
        }
        java.lang.ref.Reference.reachabilityFence(x);
        java.lang.ref.Reference.reachabilityFence(members);
        return y;
    }

    private static long checkDecodeInput(Tensor x, DecodeLinear... layers) {
        if (layers.length == 0) {
            throw new IllegalArgumentException("no layers");
        }
        Kernels.checkCpuContiguous("x", x);
        ScalarType dt = x.scalar_type().intern();
        long in = x.dim() == 0 ? -1 : x.size(x.dim() - 1);
        for (DecodeLinear l : layers) {
            if (l.dtype() != dt || l.inFeatures() != in) {
                throw new IllegalArgumentException("x: shape " + Arrays.toString(x.shape()) + " of " + dt
                        + " does not fit a [" + l.outFeatures() + ", " + l.inFeatures() + "] " + l.dtype() + " layer");
            }
        }
        long rows = x.numel() / in;
        if (rows > FusedLoraLinear.MAX_ROWS) {
            throw new IllegalArgumentException("x: " + rows + " rows, the decode kernel takes at most "
                    + FusedLoraLinear.MAX_ROWS);
        }
        return rows;
    }

    // process-wide, never closed: a TensorOptions per output would be a native allocation on the hot path
    private static final TensorOptions F32 = Kernels.own(new TensorOptions(ScalarType.Float));
    private static final TensorOptions BF16 = Kernels.own(new TensorOptions(ScalarType.BFloat16));
    private static final MemoryFormatOptional NO_FORMAT = Kernels.own(new MemoryFormatOptional());

    private static TensorOptions options(ScalarType dt) {
        return dt == ScalarType.Float ? F32 : BF16;
    }

    private static long[] outShape(Tensor x, long out) {
        long[] s = x.shape();
        s[s.length - 1] = out;
        return s;
    }

    private static void countLayerCalls(DecodeLinear[] layers) {
        for (DecodeLinear l : layers) {
            if (l.countsLayerCall()) {
                Kernels.countLayerCall();
            }
        }
    }

    private static boolean anyPerRow(DecodeLinear... layers) {
        for (DecodeLinear l : layers) {
            if (l instanceof PerRowDecodeLinear) {
                return true;
            }
        }
        return false;
    }

    /**
     * {@link #linearGroup} for a mixed batch: members with a per-row adapter index ({@link DecodeLinear#perRow})
     * beside members without one. Dense members run in one region, each with its own index; quantized members run in
     * one region when they share one index (a member without adapters takes any), else one member at a time.
     */
    private static Tensor[] perRowGroup(Tensor x, long rows, DecodeLinear[] layers) {
        int n = layers.length;
        DecodeLinear[] states = new DecodeLinear[n];
        int[][] slots = new int[n][];
        for (int g = 0; g < n; g++) {
            if (layers[g] instanceof PerRowDecodeLinear p) {
                LoraDelta.checkRowSlot(p.rowSlot, rows, p.slotCount());
                states[g] = p.state;
                slots[g] = p.rowSlot;
            } else {
                states[g] = layers[g];
            }
        }
        if (!anyQuantized(states)) {
            return densePerRow(x, rows, states, slots);
        }
        int[] shared = null;
        boolean together = true;
        for (int g = 0; g < n; g++) {
            boolean adapted = states[g].slotCount() > 0;
            if (states[g] instanceof QuantizedDecodeLinear) {
                if (adapted && slots[g] == null) {
                    together = false; // every adapter on every row: not the shared index
                } else if (adapted) {
                    together &= shared == null || Arrays.equals(shared, slots[g]);
                    shared = shared == null ? slots[g] : shared;
                }
            } else if (slots[g] != null && adapted) {
                together = false; // quantizedGroup runs its dense members without an index
            }
        }
        if (together) {
            return quantizedGroup(x, rows, states, shared);
        }
        Tensor[] out = new Tensor[n];
        for (int g = 0; g < n; g++) {
            out[g] = states[g] instanceof QuantizedDecodeLinear
                    ? quantizedGroup(x, rows, new DecodeLinear[] {states[g]}, slots[g])[0]
                    : densePerRow(x, rows, new DecodeLinear[] {states[g]}, new int[][] {slots[g]})[0];
        }
        return out;
    }

    /** Dense members in one region, member g with row slots {@code slots[g]} (null: every adapter on every row). */
    private static Tensor[] densePerRow(Tensor x, long rows, DecodeLinear[] states, int[][] slots) {
        int n = states.length;
        Tensor[] out = new Tensor[n];
        long[] handles = new long[n];
        long[] ys = new long[n];
        int[] flat = new int[Math.toIntExact(n * rows)];
        int[] has = new int[n];
        for (int g = 0; g < n; g++) {
            out[g] = torch.empty(outShape(x, states[g].outFeatures()), options(states[g].dtype()), NO_FORMAT);
            handles[g] = states[g].handle();
            ys[g] = out[g].data_ptr().address();
            if (slots[g] != null) {
                has[g] = 1;
                System.arraycopy(slots[g], 0, flat, Math.toIntExact(g * rows), Math.toIntExact(rows));
            }
        }
        if (rows > 0) {
            NativeKernels.peft4j_adapted_linear_forward_group_mixed(n, handles, ys, x.data_ptr().address(), rows,
                    flat, has, torch.get_num_threads());
        }
        countLayerCalls(states);
        java.lang.ref.Reference.reachabilityFence(x);
        java.lang.ref.Reference.reachabilityFence(states);
        return out;
    }

    /** {@link #gatedLinear} for a mixed batch (see {@link #perRowGroup}): one native call when gate and up are dense. */
    private static Tensor perRowGated(Tensor x, long rows, long inter, DecodeLinear gate, DecodeLinear up,
            GateActivation act) {
        DecodeLinear[] members = up == null ? new DecodeLinear[] {gate} : new DecodeLinear[] {gate, up};
        Tensor y = torch.empty(outShape(x, inter), options(gate.dtype()), NO_FORMAT);
        int dt = Kernels.dtypeCode("x", x);
        DecodeLinear[] states = new DecodeLinear[members.length];
        int[] flat = new int[Math.toIntExact(members.length * rows)];
        int[] has = new int[members.length];
        for (int g = 0; g < members.length; g++) {
            states[g] = members[g];
            if (members[g] instanceof PerRowDecodeLinear p) {
                LoraDelta.checkRowSlot(p.rowSlot, rows, p.slotCount());
                states[g] = p.state;
                has[g] = 1;
                System.arraycopy(p.rowSlot, 0, flat, Math.toIntExact(g * rows), Math.toIntExact(rows));
            }
        }
        if (!anyQuantized(states)) {
            if (rows > 0) {
                NativeKernels.peft4j_gated_linear_mixed(states[0].handle(), up == null ? 0L : states[1].handle(),
                        y.data_ptr().address(), x.data_ptr().address(), rows, act.ordinal(), flat, has,
                        torch.get_num_threads());
            }
            countLayerCalls(states);
            java.lang.ref.Reference.reachabilityFence(x);
            java.lang.ref.Reference.reachabilityFence(states);
            return y;
        }
        Tensor[] gu = perRowGroup(x, rows, members);
        actMulRows(y, gu, up != null, dt, rows, inter, act);
        return y;
    }

    /**
     * {@code y[m] = act(gate[m])·up[m]} row by row, as the native gated call runs its activation and product, from
     * the group outputs {@code gu} (gate and up, or one fused {@code [rows, 2·inter]} output when {@code !hasUp}),
     * which it closes.
     */
    private static void actMulRows(Tensor y, Tensor[] gu, boolean hasUp, int dt, long rows, long inter,
            GateActivation act) {
        long elem = dt == 0 ? 4 : 2;
        long g0 = gu[0].data_ptr().address();
        long u0 = hasUp ? gu[1].data_ptr().address() : g0 + inter * elem;
        long stride = (hasUp ? inter : 2 * inter) * elem;
        for (long m = 0; m < rows; m++) {
            NativeKernels.peft4j_act_mul(dt, act.ordinal(), y.data_ptr().address() + m * inter * elem,
                    g0 + m * stride, u0 + m * stride, inter);
        }
        for (Tensor t : gu) {
            t.close();
        }
    }
}

package dev.peft4j.kernels;

import java.util.Arrays;
import org.bytedeco.pytorch.MemoryFormatOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A weight {@code [out, in]} stored in a {@link Quantization} format, and the native kernels over it: quantize,
 * dequantize, and {@code y = x·Wᵀ + b}.
 *
 * <p>Storage: llama.cpp's blocks (same values, same half-precision scales) in a row-interleaved panel layout that
 * the kernels read without rearranging: {@link #panels()} ({@code uint8 [⌈out/16⌉, in/32, 512]} for
 * {@link Quantization#INT8}, {@code [.., 256]} for {@link Quantization#INT4}: per panel of 16 output rows and block
 * of 32 inputs, the 16 rows' values interleaved four inputs at a time) and {@link #panelScales()} ({@code int16
 * [⌈out/16⌉, in/32, 16]}, IEEE half-precision bits; integer tensors, so a model's {@code to(dtype)} leaves them
 * alone). The last panel is padded with zero-scale rows. {@link #values()} and {@link #scales()} give the canonical
 * layout (llama.cpp's byte order) as new tensors, computed from the panels; docs/QUANTIZATION.md has the byte order.
 *
 * <p>The product quantizes each row of x per block of 32 to int8 (llama.cpp's {@code Q8_0} activations), sums
 * every block in int32 and scales in float32; AVX-512 VNNI, AVX2 and scalar paths chosen at run time
 * ({@link #activePath()}), all with the same quantized activations. float32 or bfloat16 activations; threads:
 * libtorch's {@code get_num_threads()}. Not recorded by autograd.
 */
public final class QuantizedWeight {
    /** Weights per block along the input dimension (one scale each). */
    public static final int BLOCK = 32;
    /** Output rows per panel of the storage layout. */
    public static final int PANEL_ROWS = 16;

    private final Tensor panels;
    private final Tensor panelScales;
    private final Quantization format;
    private final long in;
    private final long out;

    private QuantizedWeight(Tensor panels, Tensor panelScales, Quantization format, long out, long in) {
        this.panels = panels;
        this.panelScales = panelScales;
        this.format = format;
        this.out = out;
        this.in = in;
    }

    /**
     * The weight held by canonical tensors (llama.cpp's byte order), packed into new panel tensors; the arguments
     * are only read. Checked: CPU, contiguous, {@code values} int8 {@code [out, in]} (INT8) or uint8
     * {@code [out, in / 2]} (INT4), {@code scales} int16 {@code [out, in / 32]}, {@code in} a positive multiple of
     * 32.
     *
     * @throws IllegalArgumentException naming the tensor and what is wrong with it
     */
    public QuantizedWeight(Tensor values, Tensor scales, Quantization format) {
        Kernels.checkCpuContiguous("values", values);
        Kernels.checkCpuContiguous("scales", scales);
        if (values.dim() != 2 || scales.dim() != 2) {
            throw new IllegalArgumentException("values " + Arrays.toString(values.shape()) + " and scales "
                    + Arrays.toString(scales.shape()) + " must both be 2-D");
        }
        this.format = format;
        this.out = values.size(0);
        this.in = format == Quantization.INT8 ? values.size(1) : values.size(1) * 2;
        ScalarType want = format == Quantization.INT8 ? ScalarType.Char : ScalarType.Byte;
        if (values.scalar_type().intern() != want) {
            throw new IllegalArgumentException("values: dtype " + values.scalar_type().intern() + ", " + format
                    + " needs " + want);
        }
        if (scales.scalar_type().intern() != ScalarType.Short || scales.size(0) != out || scales.size(1) * BLOCK != in
                || in == 0) {
            throw new IllegalArgumentException("scales: " + scales.scalar_type().intern() + " "
                    + Arrays.toString(scales.shape()) + ", expected Short [" + out + ", " + in / BLOCK + "] for "
                    + format + " values " + Arrays.toString(values.shape()));
        }
        this.panels = empty(panelShape(format, out, in), ScalarType.Byte);
        this.panelScales = empty(new long[] {panelCount(out), in / BLOCK, PANEL_ROWS}, ScalarType.Short);
        NativeKernels.peft4j_quant_pack(format.ordinal(), values.data_ptr().address(), scales.data_ptr().address(),
                out, in, panels.data_ptr().address(), panelScales.data_ptr().address(), torch.get_num_threads());
        java.lang.ref.Reference.reachabilityFence(values);
        java.lang.ref.Reference.reachabilityFence(scales);
    }

    /**
     * Wraps existing panel tensors (those of {@link #panels()} and {@link #panelScales()}) of a weight {@code [out,
     * in]}, checked: CPU, contiguous, the dtypes and shapes of the class comment.
     *
     * @throws IllegalArgumentException naming the tensor and what is wrong with it
     */
    public static QuantizedWeight ofPanels(Tensor panels, Tensor panelScales, Quantization format, long out, long in) {
        Kernels.checkCpuContiguous("panels", panels);
        Kernels.checkCpuContiguous("panelScales", panelScales);
        if (out <= 0 || in <= 0 || in % BLOCK != 0) {
            throw new IllegalArgumentException("shape [" + out + ", " + in + "]: " + format
                    + " needs positive sizes and an input width that is a multiple of " + BLOCK);
        }
        long[] want = panelShape(format, out, in);
        if (panels.scalar_type().intern() != ScalarType.Byte || !Arrays.equals(panels.shape(), want)) {
            throw new IllegalArgumentException("panels: " + panels.scalar_type().intern() + " "
                    + Arrays.toString(panels.shape()) + ", expected Byte " + Arrays.toString(want) + " for " + format
                    + " [" + out + ", " + in + "]");
        }
        long[] wantScales = {panelCount(out), in / BLOCK, PANEL_ROWS};
        if (panelScales.scalar_type().intern() != ScalarType.Short || !Arrays.equals(panelScales.shape(), wantScales)) {
            throw new IllegalArgumentException("panelScales: " + panelScales.scalar_type().intern() + " "
                    + Arrays.toString(panelScales.shape()) + ", expected Short " + Arrays.toString(wantScales)
                    + " for [" + out + ", " + in + "]");
        }
        return new QuantizedWeight(panels, panelScales, format, out, in);
    }

    private static long panelCount(long out) {
        return (out + PANEL_ROWS - 1) / PANEL_ROWS;
    }

    private static long[] panelShape(Quantization format, long out, long in) {
        return new long[] {panelCount(out), in / BLOCK, format == Quantization.INT8 ? 512 : 256};
    }

    /**
     * Quantizes {@code weight} ({@code [out, in]}, float32 or bfloat16, CPU; {@code in} a multiple of 32) into new
     * tensors, rounding as llama.cpp's reference quantizer does.
     *
     * @throws IllegalArgumentException when the weight is not 2-D float32 / bfloat16 on the CPU, its input width is
     *         not a multiple of 32, or it holds a NaN or an infinity
     */
    public static QuantizedWeight quantize(Tensor weight, Quantization format) {
        Kernels.checkCpuContiguous("weight", weight);
        int dt = Kernels.dtypeCode("weight", weight);
        if (weight.dim() != 2) {
            throw new IllegalArgumentException("weight: shape " + Arrays.toString(weight.shape()) + " is not 2-D");
        }
        long out = weight.size(0);
        long in = weight.size(1);
        if (in % BLOCK != 0 || in == 0 || out == 0) {
            throw new IllegalArgumentException("weight: shape " + Arrays.toString(weight.shape()) + ": " + format
                    + " needs an input width that is a positive multiple of " + BLOCK + ", got " + in
                    + (out == 0 ? ", and at least one output row" : ""));
        }
        try (Tensor finite = torch.isfinite(weight); Tensor all = finite.all()) {
            if (!all.item_bool()) {
                throw new IllegalArgumentException("weight: shape " + Arrays.toString(weight.shape())
                        + " holds NaN or infinite values, which cannot be quantized");
            }
        }
        Tensor panels = empty(panelShape(format, out, in), ScalarType.Byte);
        Tensor scales = empty(new long[] {panelCount(out), in / BLOCK, PANEL_ROWS}, ScalarType.Short);
        NativeKernels.peft4j_quantize_panels(format.ordinal(), dt, weight.data_ptr().address(), out, in,
                panels.data_ptr().address(), scales.data_ptr().address(), torch.get_num_threads());
        java.lang.ref.Reference.reachabilityFence(weight);
        return new QuantizedWeight(panels, scales, format, out, in);
    }

    /** The panel layout's values (see the class comment), held by this weight: do not close. */
    public Tensor panels() {
        return panels;
    }

    /** The panel layout's scales (see the class comment), held by this weight: do not close. */
    public Tensor panelScales() {
        return panelScales;
    }

    /**
     * The quantized values in llama.cpp's byte order as a new tensor: {@code int8 [out, in]} ({@link
     * Quantization#INT8}) or {@code uint8 [out, in / 2]} ({@link Quantization#INT4}: within each block of 32, byte
     * {@code j} holds weight {@code j} in its low nibble and weight {@code j + 16} in its high one).
     */
    public Tensor values() {
        return canonical(true);
    }

    /** The per-block scales as a new tensor: IEEE half-precision bits, int16 {@code [out, in / 32]}. */
    public Tensor scales() {
        return canonical(false);
    }

    private Tensor canonical(boolean wantValues) {
        Tensor values = empty(new long[] {out, format.rowBytes(in)},
                format == Quantization.INT8 ? ScalarType.Char : ScalarType.Byte);
        Tensor scales = empty(new long[] {out, in / BLOCK}, ScalarType.Short);
        NativeKernels.peft4j_quant_unpack(format.ordinal(), panels.data_ptr().address(),
                panelScales.data_ptr().address(), out, in, values.data_ptr().address(), scales.data_ptr().address(),
                torch.get_num_threads());
        java.lang.ref.Reference.reachabilityFence(this);
        (wantValues ? scales : values).close();
        return wantValues ? values : scales;
    }

    /** The format. */
    public Quantization format() {
        return format;
    }

    /** The input width. */
    public long inFeatures() {
        return in;
    }

    /** The output width. */
    public long outFeatures() {
        return out;
    }

    /** The weight's values as a new {@code [out, in]} tensor of {@code dtype} (float32 or bfloat16). */
    public Tensor dequantize(ScalarType dtype) {
        dtype = dtype.intern();
        Tensor w = empty(new long[] {out, in}, dtype);
        int dt = Kernels.dtypeCode("dtype", w);
        NativeKernels.peft4j_dequantize_panels(format.ordinal(), dt, panels.data_ptr().address(),
                panelScales.data_ptr().address(), out, in, w.data_ptr().address(), torch.get_num_threads());
        java.lang.ref.Reference.reachabilityFence(this);
        return w;
    }

    /**
     * {@code x·Wᵀ + bias} for {@code x} {@code [..., in]} (float32 or bfloat16, CPU), as a new tensor
     * {@code [..., out]} of x's dtype; {@code bias} ({@code [out]}, x's dtype) may be null.
     *
     * @throws IllegalArgumentException naming the argument at fault
     */
    public Tensor linear(Tensor x, Tensor bias) {
        Kernels.checkCpuContiguous("x", x);
        int dt = Kernels.dtypeCode("x", x);
        long[] shape = x.shape();
        if (shape.length == 0 || shape[shape.length - 1] != in) {
            throw new IllegalArgumentException("x: expected last dimension " + in + ", got shape "
                    + Arrays.toString(shape));
        }
        if (bias != null) {
            Kernels.checkCpuContiguous("bias", bias);
            Kernels.checkSameDtype("bias", bias, "x", x);
            if (bias.numel() != out) {
                throw new IllegalArgumentException("bias: " + bias.numel() + " entries, expected " + out);
            }
        }
        long[] outShape = shape.clone();
        outShape[outShape.length - 1] = out;
        Tensor y = empty(outShape, x.scalar_type().intern());
        long rows = x.numel() / in;
        if (rows > 0) {
            NativeKernels.peft4j_quant_linear_panels(format.ordinal(), dt, panels.data_ptr().address(),
                    panelScales.data_ptr().address(), bias == null ? 0L : bias.data_ptr().address(),
                    x.data_ptr().address(), y.data_ptr().address(), rows, in, out, torch.get_num_threads());
        }
        java.lang.ref.Reference.reachabilityFence(x);
        java.lang.ref.Reference.reachabilityFence(bias);
        java.lang.ref.Reference.reachabilityFence(this);
        return y;
    }

    /**
     * The decode state of a Linear on this weight for {@link DecodeKernels#linearGroup} and
     * {@link DecodeKernels#gatedLinear} (and {@link DecodeKernels#linear} on its own): {@code x·Wᵀ + bias} plus the
     * LoRA {@code delta} when not null, the delta fused into the quantized product ({@link
     * DecodeKernels#quantizedLoraFused()}; off: added in place after it, as {@link LoraDelta#apply} adds it after
     * {@link #linear}). Every one of those calls gives a member the same output bit for bit.
     *
     * @param bias {@code [out]} of {@code dtype}, contiguous on the CPU, or null
     * @param dtype float32 or bfloat16: the input's and the output's
     * @param delta the adapters made for {@code [out, in]} in {@code dtype}, or null
     * @throws IllegalArgumentException naming the argument that does not fit
     */
    public DecodeLinear decodeLinear(Tensor bias, ScalarType dtype, LoraDelta.Slots delta) {
        ScalarType dt = dtype.intern();
        if (dt != ScalarType.Float && dt != ScalarType.BFloat16) {
            throw new IllegalArgumentException("dtype: " + dt + ", expected float32 or bfloat16");
        }
        if (bias != null) {
            Kernels.checkCpuContiguous("bias", bias);
            if (bias.scalar_type().intern() != dt || bias.numel() != out) {
                throw new IllegalArgumentException("bias: " + bias.numel() + " entries of " + bias.scalar_type()
                        + ", expected " + out + " of " + dt);
            }
        }
        if (delta != null && (delta.in != in || delta.out != out || delta.scalarType.intern() != dt)) {
            throw new IllegalArgumentException("delta: made for another layer shape or dtype than [" + out + ", "
                    + in + "] " + dt);
        }
        return new QuantizedDecodeLinear(this, bias, dt, delta);
    }

    /** The integer-dot path the kernels take at the active ISA level: {@code avx512_vnni}, {@code avx2} or {@code scalar}. */
    public static String activePath() {
        return NativeKernels.peft4j_quant_path_name(NativeKernels.peft4j_quant_path()).getString();
    }

    private static Tensor empty(long[] shape, ScalarType dtype) {
        try (TensorOptions o = new TensorOptions(dtype); MemoryFormatOptional mf = new MemoryFormatOptional()) {
            return torch.empty(shape, o, mf);
        }
    }
}

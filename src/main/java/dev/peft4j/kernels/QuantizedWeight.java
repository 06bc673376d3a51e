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
 * <p>Two tensors: {@link #values()} ({@code int8 [out, in]} for {@link Quantization#INT8}, {@code uint8
 * [out, in / 2]} for {@link Quantization#INT4}, llama.cpp's nibble order within each block of 32) and
 * {@link #scales()} ({@code int16 [out, in / 32]} holding IEEE half-precision bits: an integer tensor, so a model's
 * {@code to(dtype)} leaves it alone).
 *
 * <p>The product quantizes each row of x per block of 32 to int8 (llama.cpp's {@code Q8_0} activations), sums
 * every block in int32 and scales in float32; AVX-512 VNNI, AVX2 and scalar paths chosen at run time
 * ({@link #activePath()}), all with the same quantized activations. float32 or bfloat16 activations; threads:
 * libtorch's {@code get_num_threads()}. Not recorded by autograd.
 */
public final class QuantizedWeight {
    /** Weights per block along the input dimension (one scale each). */
    public static final int BLOCK = 32;

    private final Tensor values;
    private final Tensor scales;
    private final Quantization format;
    private final long in;
    private final long out;

    /**
     * Wraps existing tensors, checked: CPU, contiguous, {@code values} int8 {@code [out, in]} (INT8) or uint8
     * {@code [out, in / 2]} (INT4), {@code scales} int16 {@code [out, in / 32]}, {@code in} a multiple of 32.
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
        if (scales.scalar_type().intern() != ScalarType.Short || scales.size(0) != out || scales.size(1) * BLOCK != in) {
            throw new IllegalArgumentException("scales: " + scales.scalar_type().intern() + " "
                    + Arrays.toString(scales.shape()) + ", expected Short [" + out + ", " + in / BLOCK + "] for "
                    + format + " values " + Arrays.toString(values.shape()));
        }
        this.values = values;
        this.scales = scales;
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
        if (in % BLOCK != 0 || in == 0) {
            throw new IllegalArgumentException("weight: shape " + Arrays.toString(weight.shape()) + ": " + format
                    + " needs an input width that is a positive multiple of " + BLOCK + ", got " + in);
        }
        try (Tensor finite = torch.isfinite(weight); Tensor all = finite.all()) {
            if (!all.item_bool()) {
                throw new IllegalArgumentException("weight: shape " + Arrays.toString(weight.shape())
                        + " holds NaN or infinite values, which cannot be quantized");
            }
        }
        Tensor values = empty(new long[] {out, format.rowBytes(in)},
                format == Quantization.INT8 ? ScalarType.Char : ScalarType.Byte);
        Tensor scales = empty(new long[] {out, in / BLOCK}, ScalarType.Short);
        NativeKernels.peft4j_quantize(format.ordinal(), dt, weight.data_ptr().address(), out, in,
                values.data_ptr().address(), scales.data_ptr().address(), torch.get_num_threads());
        java.lang.ref.Reference.reachabilityFence(weight);
        return new QuantizedWeight(values, scales, format);
    }

    /** The quantized values (see the class comment for the layout). */
    public Tensor values() {
        return values;
    }

    /** The per-block scales, IEEE half-precision bits in an int16 tensor {@code [out, in / 32]}. */
    public Tensor scales() {
        return scales;
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
        NativeKernels.peft4j_dequantize(format.ordinal(), dt, values.data_ptr().address(), scales.data_ptr().address(),
                out, in, w.data_ptr().address(), torch.get_num_threads());
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
            NativeKernels.peft4j_quant_linear(format.ordinal(), dt, values.data_ptr().address(),
                    scales.data_ptr().address(), bias == null ? 0L : bias.data_ptr().address(),
                    x.data_ptr().address(), y.data_ptr().address(), rows, in, out, torch.get_num_threads());
        }
        java.lang.ref.Reference.reachabilityFence(x);
        java.lang.ref.Reference.reachabilityFence(bias);
        java.lang.ref.Reference.reachabilityFence(this);
        return y;
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

package dev.peft4j.nn;

import dev.peft4j.kernels.DecodeLinear;
import dev.peft4j.kernels.DecodeLinearSource;
import dev.peft4j.kernels.FusedLoraLinear;
import dev.peft4j.kernels.LoraDelta;
import dev.peft4j.kernels.Quantization;
import dev.peft4j.kernels.QuantizedWeight;
import org.bytedeco.pytorch.GradMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A frozen {@link Linear} whose weight is stored quantized ({@link Quantization#INT8} or {@link Quantization#INT4}),
 * llama.cpp's weight-only {@code Q8_0} / {@code Q4_0}: {@code y = x·Ŵᵀ + b} with {@code Ŵ} the dequantized weight.
 *
 * <p>Buffers {@code qpanels} and {@code qpanel_scales} (the panel layout of {@link QuantizedWeight#panels()} and
 * {@link QuantizedWeight#panelScales()}; {@link #weight()}'s {@code values()} / {@code scales()} give llama.cpp's
 * canonical layout) and, when the Linear had one, the bias as a frozen parameter. The input and output dtype is the one the weight was quantized from
 * ({@link #dtype()}, float32 or bfloat16).
 *
 * <p>Forward: the native quantized kernel (CPU, float32 / bfloat16, activations quantized per block of 32 to int8 as
 * llama.cpp does). When autograd has to reach x (grad mode on and x requires grad, as when a LoRA below this layer
 * trains through it: QLoRA's frozen base), the weight is dequantized for that forward and libtorch's linear runs,
 * so the backward to x is exact for {@code Ŵ}. The weight itself never receives a gradient, and a merge into it is
 * refused by the tuners: rounding the merged weight again would change it (PEFT warns about exactly this).
 */
public final class QuantizedLinear extends Module implements Layer, DecodeLinearSource {
    private final long inFeatures;
    private final long outFeatures;
    private final Quantization format;
    private final ScalarType dtype;

    private QuantizedLinear(QuantizedWeight w, Tensor bias, ScalarType dtype) {
        this.inFeatures = w.inFeatures();
        this.outFeatures = w.outFeatures();
        this.format = w.format();
        this.dtype = dtype;
        registerBuffer("qpanels", w.panels(), true);
        registerBuffer("qpanel_scales", w.panelScales(), true);
        if (bias != null) {
            registerParameter("bias", bias, false);
        }
    }

    /**
     * A quantized copy of {@code linear} (its float32 / bfloat16 CPU weight quantized to {@code format}; its bias
     * copied). {@code linear} itself is left as it is; the caller closes it when it replaces it.
     *
     * @param name the module's name in its model, for the error messages
     * @throws IllegalArgumentException naming the module when its weight cannot be quantized (another dtype, not on
     *         the CPU, an input width that is not a multiple of 32, NaN or infinite values)
     */
    public static QuantizedLinear quantize(Linear linear, Quantization format, String name) {
        Tensor w = linear.weight();
        ScalarType dt = w.scalar_type().intern();
        if (dt != ScalarType.Float && dt != ScalarType.BFloat16) {
            throw new IllegalArgumentException("cannot quantize " + name + " to " + format + ": weight dtype " + dt
                    + ", expected float32 or bfloat16");
        }
        QuantizedWeight q;
        try {
            Tensor wc = w.is_contiguous() ? w : w.contiguous();
            try {
                q = QuantizedWeight.quantize(wc, format);
            } finally {
                if (wc != w) {
                    wc.close();
                }
            }
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("cannot quantize " + name + " to " + format + ": " + e.getMessage(), e);
        }
        Tensor b = linear.bias();
        Tensor bias = b == null ? null : b.detach().clone();
        if (bias != null) {
            bias.requires_grad_(false);
        }
        return new QuantizedLinear(q, bias, dt);
    }

    /**
     * A layer on an existing quantized weight (taken over: the layer's buffers are {@code weight}'s panel tensors)
     * computing in {@code dtype}, as a model file that stores its weights quantized (GGUF's {@code Q8_0} /
     * {@code Q4_0}) is loaded; {@code bias} ({@code [out]} of {@code dtype}, or null) is taken over too.
     *
     * @throws IllegalArgumentException when {@code dtype} is not float32 or bfloat16, or the bias does not fit
     */
    public static QuantizedLinear of(QuantizedWeight weight, Tensor bias, ScalarType dtype) {
        ScalarType dt = dtype.intern();
        if (dt != ScalarType.Float && dt != ScalarType.BFloat16) {
            throw new IllegalArgumentException("a quantized layer computes in float32 or bfloat16, not " + dt);
        }
        if (bias != null && (bias.numel() != weight.outFeatures() || bias.scalar_type().intern() != dt)) {
            throw new IllegalArgumentException("bias: " + bias.numel() + " entries of " + bias.scalar_type()
                    + ", expected " + weight.outFeatures() + " of " + dt);
        }
        return new QuantizedLinear(weight, bias, dt);
    }

    @Override
    public String typeName() {
        return "QuantizedLinear";
    }

    /** The input width. */
    public long inFeatures() {
        return inFeatures;
    }

    /** The output width. */
    public long outFeatures() {
        return outFeatures;
    }

    /** The storage format of the weight. */
    public Quantization format() {
        return format;
    }

    /** The dtype the weight was quantized from: the dtype of this layer's input and output (and of LoRA on it). */
    public ScalarType dtype() {
        return dtype;
    }

    /** The bias {@code (out,)}, or null. */
    public Tensor bias() {
        return paramOrNull("bias");
    }

    /** The quantized weight (views of this module's current buffers). */
    public QuantizedWeight weight() {
        return QuantizedWeight.ofPanels(buffer("qpanels"), buffer("qpanel_scales"), format, outFeatures, inFeatures);
    }

    /** The dequantized weight {@code Ŵ} as a new {@code [out, in]} tensor of {@code dt} (float32 or bfloat16). */
    public Tensor dequantizedWeight(ScalarType dt) {
        return weight().dequantize(dt);
    }

    @Override
    public DecodeLinear decodeLinear(Tensor x) {
        return decodeLinear(x, null);
    }

    /**
     * The decode state whose forward equals this layer's {@code forward(x)} followed by {@code delta} added in place
     * ({@link LoraDelta#apply}, the LoRA layer on this base), or null when x takes another path: autograd to x, not
     * on the CPU, not contiguous, not {@link #dtype()}, more than {@value FusedLoraLinear#MAX_ROWS} rows, or a bias of
     * another dtype.
     *
     * @param delta the adapters on this layer, made for its shape and dtype, or null
     */
    public DecodeLinear decodeLinear(Tensor x, LoraDelta.Slots delta) {
        if (!x.is_cpu() || !x.is_contiguous() || x.dim() < 1 || x.size(x.dim() - 1) != inFeatures
                || x.scalar_type().intern() != dtype || GradMode.is_enabled() && x.requires_grad()
                || x.numel() / inFeatures > FusedLoraLinear.MAX_ROWS) {
            return null;
        }
        Tensor b = bias();
        if (b != null && (b.scalar_type().intern() != dtype || !b.is_contiguous() || !b.is_cpu())) {
            return null;
        }
        return weight().decodeLinear(b, dtype, delta);
    }

    @Override
    public Tensor forward(Tensor x) {
        ScalarType xt = x.scalar_type().intern();
        boolean native_ = x.is_cpu() && (xt == ScalarType.Float || xt == ScalarType.BFloat16)
                && !(GradMode.is_enabled() && x.requires_grad());
        Tensor b = bias();
        if (native_) {
            Tensor xc = x.is_contiguous() ? x : x.contiguous();
            Tensor bc = b == null || b.scalar_type().intern() == xt ? b : b.to(xt);
            try {
                return weight().linear(xc, bc);
            } finally {
                if (xc != x) {
                    xc.close();
                }
                if (bc != b) {
                    bc.close();
                }
            }
        }
        // autograd to x (or a dtype the kernel does not take): the dequantized weight through libtorch's linear
        ScalarType wt = xt == ScalarType.BFloat16 ? ScalarType.BFloat16 : ScalarType.Float;
        try (Tensor w = dequantizedWeight(wt); Tensor wx = wt == xt ? null : w.to(xt)) {
            Tensor wuse = wx == null ? w : wx;
            if (b == null) {
                return torch.linear(x, wuse);
            }
            try (Tensor bx = b.to(xt); TensorOptional ob = new TensorOptional(bx)) {
                return torch.linear(x, wuse, ob);
            }
        }
    }

    @Override
    public String toString() {
        return "QuantizedLinear(in_features=" + inFeatures + ", out_features=" + outFeatures + ", bias="
                + (bias() != null) + ", format=" + format.ggmlName() + ")";
    }
}

package dev.peft4j.nn;

import java.util.Locale;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/** An element-wise activation, named as transformers' {@code ACT2FN} names it ({@code hidden_act}). */
public final class Activation extends Module implements Layer {
    /** The activations the supported models use. */
    public enum Kind {
        /** {@code silu} / {@code swish}. */
        SILU,
        /** {@code gelu}: the exact erf form. */
        GELU,
        /** {@code gelu_new}, {@code gelu_pytorch_tanh}, {@code gelu_fast}-like tanh approximation. */
        GELU_TANH,
        /** {@code relu}. */
        RELU
    }

    private final Kind kind;

    /** The activation of kind {@code kind}. */
    public Activation(Kind kind) {
        this.kind = kind;
    }

    /** The activation transformers' {@code ACT2FN[name]} names; throws listing the known names otherwise. */
    public static Activation named(String name) {
        switch (name.toLowerCase(Locale.ROOT)) {
            case "silu": case "swish": return new Activation(Kind.SILU);
            case "gelu": return new Activation(Kind.GELU);
            case "gelu_new": case "gelu_pytorch_tanh": return new Activation(Kind.GELU_TANH);
            case "relu": return new Activation(Kind.RELU);
            default: throw new IllegalArgumentException("unsupported activation '" + name
                    + "'; supported: silu, swish, gelu, gelu_new, gelu_pytorch_tanh, relu");
        }
    }

    /** Which activation this is. */
    public Kind kind() {
        return kind;
    }

    @Override
    public String typeName() {
        switch (kind) {
            case SILU: return "SiLU";
            case GELU: return "GELUActivation";
            case GELU_TANH: return "NewGELUActivation";
            default: return "ReLU";
        }
    }

    @Override
    public Tensor forward(Tensor x) {
        switch (kind) {
            case SILU: return torch.silu(x);
            case GELU: return torch.gelu(x);
            case GELU_TANH: return torch.gelu(x, "tanh");
            default: return x.is_meta() ? x.clamp_min(new org.bytedeco.pytorch.Scalar(0)) : torch.relu(x); // no meta relu
        }
    }
}

package dev.peft4j.tuners;

import dev.peft4j.nn.Conv1D;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.nn.QuantizedLinear;
import org.bytedeco.pytorch.Tensor;

/**
 * What the tuners need to know of a linear base module, an {@code nn.Linear} ({@code weight [out, in]}) or a
 * transformers {@code Conv1D} ({@code weight [in, out]}, PEFT's {@code fan_in_fan_out}): one place for the two cases.
 */
public record LinearShape(long in, long out, boolean fanInFanOut) {
    /** The shape of {@code m}, or null when it is neither a Linear nor a Conv1D. */
    public static LinearShape of(Module m) {
        if (m instanceof Linear l) {
            return new LinearShape(l.inFeatures(), l.outFeatures(), false);
        }
        if (m instanceof Conv1D c) {
            return new LinearShape(c.inFeatures(), c.outFeatures(), true);
        }
        if (m instanceof QuantizedLinear q) {
            return new LinearShape(q.inFeatures(), q.outFeatures(), false);
        }
        return null;
    }

    /**
     * The current weight of a Linear or Conv1D {@code m} (looked up each call: a module may replace it).
     *
     * @throws UnsupportedOperationException for a {@link QuantizedLinear}, which holds no floating-point weight to
     *         merge into or to read (merging would round the merged weight again)
     */
    public static Tensor weight(Module m) {
        if (m instanceof QuantizedLinear q) {
            throw quantizedRefusal(q, "this operation");
        }
        return m instanceof Linear l ? l.weight() : ((Conv1D) m).weight();
    }

    /** The current bias of a Linear, Conv1D or QuantizedLinear {@code m}, or null. */
    public static Tensor bias(Module m) {
        if (m instanceof QuantizedLinear q) {
            return q.bias();
        }
        return m instanceof Linear l ? l.bias() : ((Conv1D) m).bias();
    }

    /** Whether {@code m} (or the module a tuner layer {@code m} adapts) is a {@link QuantizedLinear}. */
    public static boolean isQuantized(Module m) {
        return BaseTunerLayer.innermost(m) instanceof QuantizedLinear;
    }

    /** The error for {@code what} (a merge, an adapter method) asked of the quantized base {@code q}. */
    static UnsupportedOperationException quantizedRefusal(QuantizedLinear q, String what) {
        return new UnsupportedOperationException("cannot run " + what + " on a quantized base layer (" + q
                + "): its weight is stored as " + q.format().ggmlName() + " blocks, and merging an adapter into it "
                + "would round the merged weight again; load the model without quantization to merge");
    }
}

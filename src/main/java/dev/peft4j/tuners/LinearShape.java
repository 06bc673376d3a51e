package dev.peft4j.tuners;

import dev.peft4j.nn.Conv1D;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
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
        return null;
    }

    /** The current weight of a Linear or Conv1D {@code m} (looked up each call: a module may replace it). */
    public static Tensor weight(Module m) {
        return m instanceof Linear l ? l.weight() : ((Conv1D) m).weight();
    }

    /** The current bias of a Linear or Conv1D {@code m}, or null. */
    public static Tensor bias(Module m) {
        return m instanceof Linear l ? l.bias() : ((Conv1D) m).bias();
    }
}

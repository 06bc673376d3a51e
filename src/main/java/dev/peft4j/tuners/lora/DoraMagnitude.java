package dev.peft4j.tuners.lora;

import dev.peft4j.nn.Module;
import org.bytedeco.pytorch.Tensor;

/**
 * PEFT's {@code DoraLinearLayer} / {@code DoraEmbeddingLayer} as held in {@code lora_magnitude_vector[name]}: a
 * module whose only parameter, {@code weight}, is the magnitude vector {@code m} (one entry per output feature), so
 * the in-memory key is {@code ….lora_magnitude_vector.<name>.weight}. Checkpoints store it without {@code .weight}.
 */
public final class DoraMagnitude extends Module {
    /** Takes ownership of {@code magnitude} ({@code (out,)}), trainable or frozen. */
    public DoraMagnitude(Tensor magnitude, boolean trainable) {
        registerParameter("weight", magnitude, trainable);
    }

    @Override
    public String typeName() {
        return "lora.dora.DoraLinearLayer";
    }

    /** The magnitude vector {@code m}. */
    public Tensor weight() {
        return param("weight");
    }
}

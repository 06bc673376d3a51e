package dev.peft4j.tuners;

import dev.peft4j.nn.Module;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;

/**
 * One target module's share of a {@link PendingAdapter}: the new adapter's tensors for that module, made aside by
 * a method's {@link TunerModel}, and how they go into the model (PEFT's {@code _create_and_replace}).
 */
public interface PendingLayer {
    /** Puts the in-memory key ({@code q_proj.lora_A.default.weight}) and tensor of each new parameter into {@code out}. */
    void putParameters(String module, String adapterName, Map<String, Tensor> out);

    /**
     * Adds the adapter to the tuner layer at {@code module}, first wrapping the module in a new tuner layer of the
     * method when it is not one yet; the tensors then belong to the model.
     */
    void commit(Module model, String module, String adapterName, boolean trainable);

    /** Frees the tensors of an adapter that was never committed. */
    void discard();
}

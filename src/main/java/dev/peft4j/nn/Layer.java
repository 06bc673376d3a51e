package dev.peft4j.nn;

import org.bytedeco.pytorch.Tensor;

/**
 * A module with one tensor in and one out. Parents call their children through this interface, so an adapter
 * wrapper that implements it can stand in for a {@link Linear}, {@link Conv1D} or {@link Embedding}.
 */
public interface Layer {
    /** The output for {@code input}; a new tensor the caller owns. */
    Tensor forward(Tensor input);
}

package dev.peft4j.tuners;

/**
 * The kind of a module in a model tree, as far as PEFT's matching and layer dispatch care.
 *
 * <p>For a module that is already a tuner layer, give the kind of its base layer: PEFT's {@code all-linear}
 * expansion treats a tuner layer whose class name holds {@code Linear} ({@code lora.Linear}, which wraps both
 * {@code nn.Linear} and transformers' {@code Conv1D}) as a linear layer.
 */
public enum ModuleType {
    /** {@code torch.nn.Linear}: weight {@code (out, in)}. */
    LINEAR,
    /** transformers' {@code Conv1D} (GPT-2 style): a linear layer whose weight is stored {@code (in, out)}. */
    TRANSFORMERS_CONV1D,
    /** {@code torch.nn.Embedding}: weight {@code (num_embeddings, embedding_dim)}. */
    EMBEDDING,
    /** {@code torch.nn.Conv1d}. */
    CONV1D,
    /** {@code torch.nn.Conv2d}. */
    CONV2D,
    /** {@code torch.nn.Conv3d}. */
    CONV3D,
    /** Anything else (norms, containers, activations, the model itself). */
    OTHER;

    /** True for the classes {@code all-linear} targets: {@code nn.Linear} and transformers' {@code Conv1D}. */
    public boolean isLinear() {
        return this == LINEAR || this == TRANSFORMERS_CONV1D;
    }
}

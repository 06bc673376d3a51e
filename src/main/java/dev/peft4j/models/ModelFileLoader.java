package dev.peft4j.models;

import java.io.IOException;
import java.nio.file.Path;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A loader of a model file format other than the Hugging Face folder, found through {@link java.util.ServiceLoader}
 * ({@code META-INF/services/dev.peft4j.models.ModelFileLoader}). It is how {@link AutoModel#fromGguf} reaches the
 * GGUF loader ({@code dev.peft4j.gguf.GgufModels}), which builds on this package: this package names the service,
 * the loader's package provides it, and neither package refers to the other's classes both ways.
 *
 * <p>Implementations are stateless and thread-safe, with a public no-argument constructor.
 */
public interface ModelFileLoader {
    /** The format's name as {@link AutoModel} asks for it, lower case: {@code "gguf"}. */
    String format();

    /**
     * Loads the model file {@code file} in {@code dtype} (null: the format's default), in eval mode.
     *
     * @throws IOException when the file cannot be read
     * @throws IllegalArgumentException naming the file and the key or tensor at fault when it holds a model this
     *     loader does not support
     */
    PreTrainedModel load(Path file, ScalarType dtype) throws IOException;
}

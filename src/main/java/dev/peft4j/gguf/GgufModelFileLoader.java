package dev.peft4j.gguf;

import dev.peft4j.models.ModelFileLoader;
import dev.peft4j.models.PreTrainedModel;
import java.io.IOException;
import java.nio.file.Path;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * The {@code gguf} {@link ModelFileLoader}: {@link GgufModels#fromGguf}, registered in {@code META-INF/services} for
 * {@link dev.peft4j.models.AutoModel#fromGguf}. Stateless and thread-safe.
 */
public final class GgufModelFileLoader implements ModelFileLoader {
    /** The instance {@link java.util.ServiceLoader} makes. */
    public GgufModelFileLoader() {}

    /** {@code "gguf"}. */
    @Override
    public String format() {
        return "gguf";
    }

    /** {@link GgufModels#fromGguf(Path, ScalarType)}. */
    @Override
    public PreTrainedModel load(Path file, ScalarType dtype) throws IOException {
        return GgufModels.fromGguf(file, dtype);
    }
}

package dev.peft4j.cli;

import dev.peft4j.models.AutoModel;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import java.io.IOException;
import java.nio.file.Path;
import org.bytedeco.pytorch.global.torch.ScalarType;
import picocli.CommandLine.Option;

/** {@code --model <dir>} and {@code --dtype}: a Hugging Face model folder, loaded by {@link AutoModel}. */
final class ModelOptions {
    @Option(names = "--model", required = true, paramLabel = "<dir>",
            description = "A Hugging Face model folder: config.json and model.safetensors (sharded, or pytorch_model.bin).")
    Path modelDir;

    @Option(names = "--dtype", paramLabel = "<dtype>",
            description = "float32, bfloat16 or float16 (default: the config's torch_dtype, else float32).")
    String dtype;

    /** The model, in eval mode. */
    PreTrainedModel load() throws IOException {
        ScalarType dt = dtype == null ? null : ModelConfig.parseDtype(dtype, "--dtype");
        return AutoModel.fromPretrained(modelDir, dt);
    }
}

package dev.peft4j.cli;

import dev.peft4j.models.AutoModel;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import java.io.IOException;
import java.nio.file.Path;
import org.bytedeco.pytorch.global.torch.ScalarType;
import picocli.CommandLine.Option;

/**
 * {@code --model <dir or repo id>} and {@code --dtype}: a Hugging Face model folder (or a repo's snapshot in the local
 * Hugging Face cache), loaded by {@link AutoModel}.
 */
final class ModelOptions {
    @Option(names = "--model", required = true, paramLabel = "<dir>",
            description = "A Hugging Face model folder: config.json and model.safetensors (sharded, or "
            + "pytorch_model.bin); or a Hub repo id, fetched into the local Hugging Face cache (its 'main').")
    String model;

    private Path modelDir;

    @Option(names = "--dtype", paramLabel = "<dtype>",
            description = "float32, bfloat16 or float16 (default: the config's torch_dtype, else float32).")
    String dtype;

    @Option(names = "--threads", paramLabel = "N", description =
            "libtorch and OpenBLAS threads, set together (default: libtorch's default, usually the number of "
            + "cores).")
    Integer threads;

    /** The model's folder: --model itself, or the repo's snapshot in the Hugging Face cache, fetched as needed. */
    Path dir() throws IOException {
        if (modelDir == null) {
            modelDir = AutoModel.localOrHub(model, null, null);
        }
        return modelDir;
    }

    /** The model, in eval mode, with the thread count set. */
    PreTrainedModel load() throws IOException {
        if (threads != null && threads < 1) {
            throw new IllegalArgumentException("--threads must be ≥ 1, got " + threads);
        }
        Threads.pin(threads != null ? threads : org.bytedeco.pytorch.global.torch.get_num_threads());
        ScalarType dt = dtype == null ? null : ModelConfig.parseDtype(dtype, "--dtype");
        return AutoModel.fromPretrained(dir(), dt);
    }
}

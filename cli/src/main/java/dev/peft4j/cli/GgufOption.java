package dev.peft4j.cli;

import java.nio.file.Path;
import picocli.CommandLine.Option;

/**
 * {@code --gguf <file>}: the model from a llama.cpp GGUF file, in {@link ModelOptions} (the commands that load a
 * model).
 */
final class GgufOption {
    @Option(names = "--gguf", paramLabel = "<file>", description =
            "Load the model from a llama.cpp GGUF file instead of --model (architecture llama; F32, F16, BF16, Q8_0 "
            + "and Q4_0 tensors; Q8_0 / Q4_0 projections run quantized, in --dtype: float32 or bfloat16). The GGUF's "
            + "own vocabulary is not read: text needs --model with the model's tokenizer.json. "
            + "See docs/GGUF.md.")
    Path file;
}

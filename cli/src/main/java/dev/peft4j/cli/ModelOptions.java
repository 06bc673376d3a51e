package dev.peft4j.cli;

import dev.peft4j.LoadAdapterOptions;
import dev.peft4j.gguf.GgufModels;
import dev.peft4j.kernels.Quantization;
import dev.peft4j.io.HubCache;
import dev.peft4j.io.HubDownload;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.tokenizers.Tokenizer;
import java.io.IOException;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Map;
import org.bytedeco.pytorch.global.torch.ScalarType;
import picocli.CommandLine.Option;

/**
 * The one model-loading path of the commands that load a model ({@code generate}, {@code logits}, {@code serve},
 * {@code train}, {@code merge}): {@code --model <dir or repo id>} and {@code --dtype}, a Hugging Face model folder (or
 * a repo's snapshot in the local Hugging Face cache) loaded by {@link AutoModel}; or {@code --gguf FILE}
 * ({@link GgufOption}), a llama.cpp GGUF file loaded by {@link GgufModels}, {@code --model} then only the tokenizer's
 * folder.
 */
final class ModelOptions {
    @Option(names = "--model", paramLabel = "<dir>",
            description = "A Hugging Face model folder: config.json and model.safetensors (sharded, or "
            + "pytorch_model.bin); or a Hub repo id, fetched into the local Hugging Face cache (its 'main'). "
            + "Required, except with --gguf, where it names the folder (or repo) whose tokenizer.json encodes the "
            + "text (--prompt, serve's text prompts, train's --data) and nothing else is read from it (of a repo, "
            + "only tokenizer.json is fetched).")
    String model;

    @picocli.CommandLine.Mixin
    GgufOption ggufOption;

    @picocli.CommandLine.Spec(picocli.CommandLine.Spec.Target.MIXEE)
    picocli.CommandLine.Model.CommandSpec command;

    @Option(names = "--revision", paramLabel = "<rev>", description =
            "With a repo id for --model: the branch, tag or commit to fetch (default: main).")
    String revision;

    @Option(names = "--token", paramLabel = "<token>", description =
            "Hub token for repo ids (--model, --adapter); default: HF_TOKEN, else HUGGING_FACE_HUB_TOKEN, else the "
            + "token file (HF_TOKEN_PATH, default $HF_HOME/token) that hf auth login wrote. Prefer HF_TOKEN: a "
            + "command line is visible to other users of the machine.")
    String token;

    @Option(names = "--cache-dir", paramLabel = "<dir>", description =
            "The Hugging Face cache for repo ids (default: HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub).")
    String cacheDir;

    private Path modelDir;

    @Option(names = "--dtype", paramLabel = "<dtype>",
            description = "float32, bfloat16 or float16 (default: the config's torch_dtype, else float32).")
    String dtype;

    @Option(names = "--quantize", paramLabel = "<format>", description =
            "int8 or int4: quantize the Linear layers of the transformer blocks at load to llama.cpp's Q8_0 / Q4_0 "
            + "block formats (weight-only; embeddings, norms and lm_head stay in --dtype, which must be float32 or "
            + "bfloat16). Adapters run on top in --dtype; merging into a quantized base is refused. "
            + "See docs/QUANTIZATION.md.")
    String quantize;

    @Option(names = "--quantize-head", paramLabel = "<format>", description =
            "With --quantize: the output head (lm_head) too, int8 (llama.cpp's Q8_0, as its Q8_0 model files store "
            + "it; its Q4_0 files use Q6_K, which peft4j does not have), int4, or none (the default: lm_head stays in "
            + "--dtype). A head tied to the token embedding is refused.")
    String quantizeHead;

    @Option(names = "--threads", paramLabel = "N", description =
            "libtorch and OpenBLAS threads, set together (default: libtorch's default, usually the number of "
            + "cores).")
    Integer threads;

    /** The GGUF file to load the model from; null: load --model. */
    Path gguf() {
        return ggufOption.file;
    }

    /** True when --model names a folder or repo (with --gguf: the tokenizer's). */
    boolean hasModel() {
        return model != null;
    }

    /** The model's folder: --model itself, or the repo's snapshot in the Hugging Face cache, fetched as needed. */
    Path dir() throws IOException {
        if (model == null) {
            throw usage(gguf() != null
                    ? "a tokenizer is needed, and the GGUF's own vocabulary is not read: give --model with a folder "
                            + "(or repo id) holding the model's tokenizer.json beside --gguf"
                    : "Missing required option: '--model=<dir>'");
        }
        if (modelDir == null) {
            HubDownload.Settings hub = HubDownload.Settings.fromEnvironment(token);
            if (gguf() != null && HubCache.refersToHub(model)) {
                // the tokenizer alone: the weights come from the GGUF, and a model repo's may be gigabytes
                Path file = HubDownload.file(HubCache.root(cacheDir), model, revision, Tokenizer.FILE_NAME, hub);
                if (file == null) {
                    throw new NoSuchFileException(model, null, "'" + model + "' at revision '"
                            + (revision == null ? "main" : revision) + "' has no " + Tokenizer.FILE_NAME
                            + " (with --gguf, --model gives only the tokenizer)");
                }
                modelDir = file.getParent();
            } else {
                modelDir = AutoModel.localOrHub(model, revision, cacheDir, hub);
            }
        }
        return modelDir;
    }

    /** loadAdapter's options for an adapter folder or repo id: this command's token and cache, the given revision. */
    LoadAdapterOptions adapterOptions(String name, String adapterRevision) {
        return LoadAdapterOptions.builder().adapterName(name).revision(adapterRevision).token(token)
                .adapterKwargs(cacheDir == null ? null : Map.of("cache_dir", cacheDir)).build();
    }

    /** What the model is loaded from, for progress messages: the GGUF file, else the folder. */
    String source() throws IOException {
        return gguf() != null ? gguf().toString() : dir().toString();
    }

    private picocli.CommandLine.ParameterException usage(String message) {
        return new picocli.CommandLine.ParameterException(command.commandLine(), message);
    }

    /**
     * Refuses options that exclude each other, before a command does any work; {@link #load} checks them too.
     */
    void check() throws IOException {
        if (threads != null && threads < 1) {
            throw new IllegalArgumentException("--threads must be ≥ 1, got " + threads);
        }
        Path gguf = gguf();
        if (gguf == null && model == null) {
            dir(); // the missing --model, as a usage error
        }
        if (gguf != null && (quantize != null || quantizeHead != null)) {
            throw usage("--gguf loads the tensors in the types the file holds (Q8_0 / Q4_0 projections run "
                    + "quantized): --quantize and --quantize-head do not apply");
        }
    }

    /** The model, in eval mode, with the thread count set. */
    PreTrainedModel load() throws IOException {
        check();
        Path gguf = gguf();
        Threads.pin(threads != null ? threads : org.bytedeco.pytorch.global.torch.get_num_threads());
        ScalarType dt = dtype == null ? null : ModelConfig.parseDtype(dtype, "--dtype");
        if (gguf != null) {
            return GgufModels.fromGguf(gguf, dt);
        }
        Quantization q;
        try {
            q = quantize == null ? null : Quantization.parse(quantize);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--quantize: " + e.getMessage(), e);
        }
        Quantization head;
        try {
            head = quantizeHead == null || quantizeHead.trim().equalsIgnoreCase("none") ? null
                    : Quantization.parse(quantizeHead);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--quantize-head: " + e.getMessage() + ", or none", e);
        }
        if (head != null && q == null) {
            throw new IllegalArgumentException("--quantize-head " + quantizeHead + " needs --quantize int8|int4");
        }
        if (head == null) {
            return AutoModel.fromPretrained(dir(), dt, q);
        }
        PreTrainedModel m = AutoModel.fromPretrained(dir(), dt);
        try {
            AutoModel.quantize(m, q, head);
        } catch (RuntimeException e) {
            m.close();
            throw e;
        }
        return m;
    }
}

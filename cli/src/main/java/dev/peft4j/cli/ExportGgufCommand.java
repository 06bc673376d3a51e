package dev.peft4j.cli;

import dev.peft4j.gguf.GgufExport;
import dev.peft4j.io.HubDownload;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.ModelConfig;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.bytedeco.pytorch.global.torch.ScalarType;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code peft4j export-gguf}: a Llama model and / or a PEFT LoRA adapter of it written as GGUF files llama.cpp (and
 * Ollama) load, laid out as llama.cpp's own converters lay them out ({@link GgufExport}).
 */
@Command(name = "export-gguf", header = "Write a Llama model and a PEFT LoRA adapter as GGUF files for llama.cpp.",
        description =
            "Write the model (--out) and / or a PEFT LoRA adapter of it (--adapter, --adapter-out) as GGUF files "
            + "that llama.cpp loads, as its convert_hf_to_gguf.py and convert_lora_to_gguf.py write them: tensor "
            + "names, q/k rows permuted for llama.cpp's RoPE (a LoRA's B of q and k too), general.type = adapter "
            + "with adapter.lora.alpha. Llama architecture only; no tokenizer is written (tokenizer.ggml.model = "
            + "none): llama.cpp runs the model on token ids. The adapter's export reads the model's config.json "
            + "only; or, with --gguf, the base model's GGUF file (its metadata and tensor infos: each adapted "
            + "weight must be one of its tensors, of the pair's shape). Each file appears under its name when "
            + "complete.")
final class ExportGgufCommand extends CliCommand {
    @Option(names = "--model", paramLabel = "<dir>", description =
            "The Hugging Face Llama model folder (config.json, model.safetensors sharded or not), or a Hub repo "
            + "id, fetched into the local Hugging Face cache. Required, except with --gguf.")
    String model;

    @Option(names = "--gguf", paramLabel = "<file>", description =
            "Instead of --model, with --adapter: the llama.cpp GGUF file of the base model (any tensor types, "
            + "Q8_0 / Q4_0 too) the adapter is exported against. --outtype auto is then the file's F16 / BF16 "
            + "type, else f32.")
    Path gguf;

    @Option(names = "--revision", paramLabel = "<rev>", description =
            "With a repo id for --model: the branch, tag or commit to fetch (default: main).")
    String revision;

    @Option(names = "--token", paramLabel = "<token>", description =
            "Hub token for a repo id (default: HF_TOKEN, else the token file hf auth login wrote).")
    String token;

    @Option(names = "--cache-dir", paramLabel = "<dir>", description =
            "The Hugging Face cache for a repo id (default: HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub).")
    String cacheDir;

    @Option(names = "--out", paramLabel = "<model.gguf>", description = "Where to write the model.")
    Path out;

    @Option(names = "--adapter", paramLabel = "<dir>", description =
            "A local PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors or .bin) to export.")
    Path adapter;

    @Option(names = "--adapter-out", paramLabel = "<adapter.gguf>", description = "Where to write the adapter.")
    Path adapterOut;

    @Option(names = "--outtype", paramLabel = "<type>", defaultValue = "auto", description =
            "f32, f16, bf16, or auto: the config's torch_dtype (float32 when it names none). 1-D tensors (norms) "
            + "are float32 in every type, as llama.cpp's converter writes them (default: ${DEFAULT-VALUE}).")
    String outtype;

    @Override
    public Integer call() throws IOException {
        if ((adapter == null) != (adapterOut == null)) {
            throw usage(adapter == null ? "--adapter-out needs --adapter" : "--adapter needs --adapter-out");
        }
        if (out == null && adapterOut == null) {
            throw usage("nothing to write: give --out for the model, and / or --adapter with --adapter-out");
        }
        if (adapter != null && !Files.isDirectory(adapter)) {
            throw usage("--adapter " + adapter + ": no such folder (export-gguf reads a local adapter folder)");
        }
        if (out != null && adapterOut != null && out.toAbsolutePath().normalize()
                .equals(adapterOut.toAbsolutePath().normalize())) {
            throw usage("--out and --adapter-out name the same file");
        }
        for (Path p : new Path[] {out, adapterOut}) {
            if (p != null && Files.isDirectory(p)) {
                throw usage(p + " is a folder; name the .gguf file to write");
            }
        }
        if (gguf != null && model != null) {
            throw usage("--gguf and --model are alternatives: give the base model as one of them");
        }
        if (gguf == null && model == null) {
            throw usage("Missing required option: '--model=<dir>' (or '--gguf=<file>' with --adapter)");
        }
        if (gguf != null && out != null) {
            throw usage("--out writes a Hugging Face model as GGUF; the --gguf base is one already: with --gguf, "
                    + "export an adapter (--adapter, --adapter-out)");
        }
        if (gguf != null && (revision != null || token != null || cacheDir != null)) {
            throw usage("--revision, --token and --cache-dir apply to a repo id for --model, not to --gguf");
        }
        GgufExport.OutType type = null;
        if (!"auto".equalsIgnoreCase(outtype)) {
            try {
                type = GgufExport.OutType.parse(outtype);
            } catch (IllegalArgumentException e) {
                throw usage("--outtype: " + e.getMessage() + ", auto");
            }
        }
        if (gguf != null) {
            if (type == null) {
                type = GgufExport.defaultAdapterType(gguf);
            }
            GgufExport.Written w = GgufExport.exportAdapterForGguf(adapter, gguf, adapterOut, type);
            out().printf("%s: LoRA adapter, %d tensors, %s, %d bytes%n", w.file(), w.tensors(),
                    type.name().toLowerCase(), w.bytes());
            out().flush();
            return 0;
        }
        Path dir = AutoModel.localOrHub(model, revision, cacheDir, HubDownload.Settings.fromEnvironment(token));
        if (type == null) {
            ScalarType dt = ModelConfig.read(dir.resolve("config.json")).dtype(ScalarType.Float);
            type = dt == ScalarType.BFloat16 ? GgufExport.OutType.BF16
                    : dt == ScalarType.Half ? GgufExport.OutType.F16 : GgufExport.OutType.F32;
        }
        if (out != null) {
            progress("writing %s (%s) ...", out, type.name().toLowerCase());
            GgufExport.Written w = GgufExport.exportModel(dir, out, type);
            out().printf("%s: model, %d tensors, %s, %d bytes%n", w.file(), w.tensors(),
                    type.name().toLowerCase(), w.bytes());
        }
        if (adapterOut != null) {
            GgufExport.Written w = GgufExport.exportAdapter(adapter, dir, adapterOut, type);
            out().printf("%s: LoRA adapter, %d tensors, %s, %d bytes%n", w.file(), w.tensors(),
                    type.name().toLowerCase(), w.bytes());
        }
        out().flush();
        return 0;
    }
}

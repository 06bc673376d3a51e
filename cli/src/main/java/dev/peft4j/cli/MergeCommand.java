package dev.peft4j.cli;

import dev.peft4j.models.PreTrainedModel;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code peft4j merge}: loads a PEFT adapter into a model, merges it into the base weights and unloads it
 * ({@code merge_and_unload}), then writes a plain Hugging Face checkpoint ({@code config.json} +
 * {@code model.safetensors}, as transformers' {@code save_pretrained}).
 */
@Command(name = "merge", header = "Merge an adapter into its model and write a Hugging Face checkpoint.",
        description =
            "Load the adapter into the model, merge it into the base weights and unload it "
            + "(merge_and_unload), then write config.json and model.safetensors as transformers' "
            + "save_pretrained does. The model may be a GGUF file (--gguf) with F32, F16 or BF16 weights; merging "
            + "into Q8_0 / Q4_0 weights is refused, as with --quantize.")
final class MergeCommand extends CliCommand {
    @Mixin
    ModelOptions model;

    @Option(names = "--adapter", required = true, paramLabel = "<dir>",
            description = "The PEFT adapter folder, or a Hub repo id (fetched into the local Hugging Face cache).")
    String adapter;

    @Option(names = "--adapter-revision", paramLabel = "<rev>",
            description = "With a repo id for --adapter: the branch, tag or commit to fetch (default: main).")
    String adapterRevision;

    @Option(names = "--out", required = true, paramLabel = "<dir>",
            description = "Where to write the merged model (created; existing files of the same name are replaced).")
    Path out;

    @Override
    public Integer call() throws IOException {
        if (Files.exists(out) && !Files.isDirectory(out)) {
            throw usage("--out " + out + " is a file; the merged model is written into a folder");
        }
        progress("loading %s", model.source());
        try (PreTrainedModel m = model.load()) {
            m.loadAdapter(adapter, model.adapterOptions("default", adapterRevision));
            m.mergeAndUnload();
            m.savePretrained(out);
        }
        progress("wrote %s and %s", out.resolve("config.json"), out.resolve("model.safetensors"));
        return 0;
    }
}

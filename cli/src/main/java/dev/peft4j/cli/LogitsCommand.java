package dev.peft4j.cli;

import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.BertForMaskedLM;
import dev.peft4j.models.BertForSequenceClassification;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.PreTrainedModel;
import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code peft4j logits}: one forward of a model over token ids, the logits written as float32 safetensors under the
 * key {@code logits} — an interface for scripted conformance checks against Python.
 */
@Command(name = "logits", header = "Write one forward's float32 logits to a safetensors file.",
        description =
            "Run one forward over the token ids and write the logits, float32, to a safetensors file under "
            + "the key 'logits': [batch, seq, vocab] for a language model, [batch, labels] for sequence "
            + "classification. With --adapter, the PEFT adapters are loaded into the model first.")
final class LogitsCommand extends CliCommand {
    @Mixin
    ModelOptions model;

    @Mixin
    AdapterOptions adapterOptions;

    @Option(names = "--row-adapters", split = ",", paramLabel = "n1,__base__,...",
            description = "One adapter per batch row (PEFT's adapter_names; __base__: no adapter).")
    List<String> rowAdapters;

    @Option(names = "--input-ids", required = true, paramLabel = "<ids>",
            description = "Token ids, rows separated by ';' (all rows the same length), e.g. \"1,2,3;4,5,6\".")
    String inputIds;

    @Option(names = "--out", required = true, paramLabel = "<file.safetensors>", description = "Where to write them.")
    Path out;

    @Override
    public Integer call() throws IOException {
        long[][] rows;
        try {
            rows = TokenIds.parse(inputIds);
            int len = rows[0].length;
            for (int r = 1; r < rows.length; r++) {
                if (rows[r].length != len) {
                    throw new IllegalArgumentException("all rows need the same length: row 0 has " + len
                            + " ids, row " + r + " has " + rows[r].length);
                }
            }
        } catch (IllegalArgumentException e) {
            throw usage("--input-ids: " + e.getMessage());
        }
        Map<String, Path> folders;
        try {
            folders = adapterOptions.parse();
        } catch (IllegalArgumentException e) {
            throw usage(e.getMessage());
        }
        if (rowAdapters != null) {
            if (folders.isEmpty()) {
                throw usage("--row-adapters needs at least one --adapter");
            }
            if (rowAdapters.size() != rows.length) {
                throw usage("--row-adapters names " + rowAdapters.size() + " adapters for " + rows.length + " rows");
            }
        }
        progress("loading %s", model.dir());
        try (PreTrainedModel m = model.load(); PointerScope scope = new PointerScope();
                InferenceMode im = new InferenceMode()) {
            adapterOptions.apply(m, folders, model);
            long vocab = m.config().getLong("vocab_size");
            try {
                TokenIds.checkVocab(rows, vocab);
            } catch (IllegalArgumentException e) {
                throw usage("--input-ids: " + e.getMessage());
            }
            Tensor ids = TokenIds.rectangular(rows);
            long t0 = System.nanoTime();
            Tensor raw = rowAdapters == null ? forward(m, ids) : m.withAdapterNames(rowAdapters, () -> forward(m, ids));
            Tensor logits = raw.to(ScalarType.Float).contiguous();
            long t1 = System.nanoTime();
            SafetensorsFile.write(out, Map.of("logits", logits));
            progress("forward %.1f ms (measured); wrote logits %s float32 to %s", (t1 - t0) / 1e6,
                    Arrays.toString(logits.shape()), out);
        }
        return 0;
    }

    /** The logits of a model with a head; a bare base model has none. */
    static Tensor forward(PreTrainedModel m, Tensor ids) {
        if (m instanceof CausalLM lm) {
            return lm.forward(ids, null, null, null);
        }
        if (m instanceof BertForMaskedLM mlm) {
            return mlm.forward(ids, null, null);
        }
        if (m instanceof BertForSequenceClassification cls) {
            return cls.forward(ids, null, null);
        }
        throw new IllegalArgumentException(m.typeName() + " has no language-model or classification head: "
                + "no logits to write (name a *ForCausalLM, *LMHeadModel, *ForMaskedLM or *ForSequenceClassification "
                + "architecture in config.json)");
    }
}

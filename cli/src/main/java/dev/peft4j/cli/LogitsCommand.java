package dev.peft4j.cli;

import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.BertForMaskedLM;
import dev.peft4j.models.BertForSequenceClassification;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.models.Seq2SeqLM;
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
            + "classification. With --adapter, the PEFT adapters are loaded into the model first. For an "
            + "encoder-decoder (T5, mT5) --input-ids go to the encoder and --decoder-input-ids to the decoder, "
            + "whose logits are written.")
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

    @Option(names = "--decoder-input-ids", paramLabel = "<ids>",
            description = "Encoder-decoder models only: the decoder's token ids (same format as --input-ids, as many "
                + "rows), starting with the decoder start token (T5: 0).")
    String decoderInputIds;

    @Option(names = "--out", required = true, paramLabel = "<file.safetensors>", description = "Where to write them.")
    Path out;

    @Override
    public Integer call() throws IOException {
        long[][] rows = parseRows("--input-ids", inputIds);
        long[][] decoderRows = decoderInputIds == null ? null : parseRows("--decoder-input-ids", decoderInputIds);
        if (decoderRows != null && decoderRows.length != rows.length) {
            throw usage("--decoder-input-ids has " + decoderRows.length + " rows, --input-ids " + rows.length);
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
        progress("loading %s", model.source());
        try (PreTrainedModel m = model.load(); PointerScope scope = new PointerScope();
                InferenceMode im = new InferenceMode()) {
            adapterOptions.apply(m, folders, model);
            long vocab = m.config().getLong("vocab_size");
            try {
                TokenIds.checkVocab(rows, vocab);
            } catch (IllegalArgumentException e) {
                throw usage("--input-ids: " + e.getMessage());
            }
            boolean seq2seq = m instanceof Seq2SeqLM;
            if (seq2seq && decoderRows == null) {
                throw usage(m.typeName() + " is an encoder-decoder: give the decoder's ids with --decoder-input-ids "
                        + "(starting with the decoder start token, " + ((Seq2SeqLM) m).decoderStartTokenId() + ")");
            }
            if (!seq2seq && decoderRows != null) {
                throw usage("--decoder-input-ids is for encoder-decoder models; " + m.typeName() + " is not one");
            }
            if (decoderRows != null) {
                try {
                    TokenIds.checkVocab(decoderRows, vocab);
                } catch (IllegalArgumentException e) {
                    throw usage("--decoder-input-ids: " + e.getMessage());
                }
            }
            Tensor ids = TokenIds.rectangular(rows);
            Tensor decIds = decoderRows == null ? null : TokenIds.rectangular(decoderRows);
            long t0 = System.nanoTime();
            Tensor raw = rowAdapters == null ? forward(m, ids, decIds)
                    : m.withAdapterNames(rowAdapters, () -> forward(m, ids, decIds));
            Tensor logits = raw.to(ScalarType.Float).contiguous();
            long t1 = System.nanoTime();
            SafetensorsFile.write(out, Map.of("logits", logits));
            progress("forward %.1f ms (measured); wrote logits %s float32 to %s", (t1 - t0) / 1e6,
                    Arrays.toString(logits.shape()), out);
        }
        return 0;
    }

    private long[][] parseRows(String option, String text) {
        try {
            long[][] rows = TokenIds.parse(text);
            int len = rows[0].length;
            for (int r = 1; r < rows.length; r++) {
                if (rows[r].length != len) {
                    throw new IllegalArgumentException("all rows need the same length: row 0 has " + len
                            + " ids, row " + r + " has " + rows[r].length);
                }
            }
            return rows;
        } catch (IllegalArgumentException e) {
            throw usage(option + ": " + e.getMessage());
        }
    }

    /** The logits of a model with a head (an encoder-decoder's decoder logits); a bare base model has none. */
    static Tensor forward(PreTrainedModel m, Tensor ids, Tensor decoderIds) {
        if (m instanceof Seq2SeqLM s2s) {
            return s2s.forward(ids, null, decoderIds);
        }
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
                + "no logits to write (name a *ForCausalLM, *LMHeadModel, *ForMaskedLM, *ForConditionalGeneration or "
                + "*ForSequenceClassification "
                + "architecture in config.json)");
    }
}

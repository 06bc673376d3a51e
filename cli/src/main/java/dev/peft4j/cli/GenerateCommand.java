package dev.peft4j.cli;

import dev.peft4j.models.CausalLM;
import dev.peft4j.models.Seq2SeqGeneration;
import dev.peft4j.models.Seq2SeqLM;
import dev.peft4j.models.Generation;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.tokenizers.Tokenizer;
import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code peft4j generate}: greedy or seeded-sampling decoding. With {@code --prompt TEXT} (the model folder needs a
 * {@code tokenizer.json}) it prints each row's text, prompt and continuation; with {@code --input-ids} one line of
 * ids per row (prompt then new tokens).
 */
@Command(name = "generate", header = "Generate text or token ids from a model (greedy or seeded sampling).",
        description =
            "Generate tokens after a prompt (greedy, or sampling with --do-sample). --prompt TEXT "
            + "(repeatable, one row each) needs the model folder's tokenizer.json: each row's text, prompt and "
            + "continuation, is printed on a line of its own (special tokens left out; --print-ids adds the "
            + "ids). --input-ids works without a tokenizer: each row's ids, prompt and new tokens, "
            + "comma-separated, one row per line. An encoder-decoder (T5, mT5) reads the prompt with its encoder "
            + "and prints the decoder's output: its ids (the decoder start token first), or its text.")
final class GenerateCommand extends CliCommand {
    @Mixin
    ModelOptions model;

    @Mixin
    AdapterOptions adapterOptions;

    @Option(names = "--prompt", paramLabel = "TEXT", description =
            "Prompt text, encoded by the model folder's tokenizer.json (repeatable: one batch row each, "
            + "shorter rows left-padded). Or give --input-ids.")
    List<String> prompts;

    @Option(names = "--input-ids", paramLabel = "<ids>",
            description = "Prompt token ids, rows separated by ';' (shorter rows are left-padded), e.g. \"1,2,3;4,5\".")
    String inputIds;

    @Option(names = "--add-special-tokens", negatable = true, defaultValue = "true", fallbackValue = "true",
            description = "With --prompt: let the tokenizer add the model's special tokens, e.g. a BOS (default).")
    boolean addSpecialTokens;

    @Option(names = "--print-ids", description =
            "With --prompt: after each row's text, a line 'ids: ' and the ids it decodes (prompt, then the "
            + "new tokens up to the first eos).")
    boolean printIds;

    @Option(names = "--max-new-tokens", paramLabel = "N", defaultValue = "20",
            description = "Tokens to generate per row (default ${DEFAULT-VALUE}); fewer if the row ends with eos.")
    int maxNewTokens;

    @Option(names = "--do-sample", description = "Sample (temperature, then top-k, then top-p) instead of greedy.")
    boolean doSample;

    @Option(names = "--seed", paramLabel = "S", description = "Seed of the sampler (with --do-sample; default 0).")
    Long seed;

    @Option(names = "--temperature", paramLabel = "T", description = "With --do-sample (default 1.0).")
    Double temperature;

    @Option(names = "--top-k", paramLabel = "K", description = "With --do-sample; 0 keeps all (default 0).")
    Integer topK;

    @Option(names = "--top-p", paramLabel = "P", description = "With --do-sample; 1 keeps all (default 1.0).")
    Double topP;

    @Option(names = "--ignore-eos", description = "Do not stop at the config's eos_token_id.")
    boolean ignoreEos;

    @Override
    public Integer call() throws IOException {
        if (!doSample && (seed != null || temperature != null || topK != null || topP != null)) {
            throw usage("--seed, --temperature, --top-k and --top-p apply to sampling: add --do-sample");
        }
        if (maxNewTokens < 0) {
            throw usage("--max-new-tokens must be ≥ 0, got " + maxNewTokens);
        }
        boolean text = prompts != null;
        if (text == (inputIds != null)) {
            throw usage(text ? "--prompt and --input-ids are alternatives: give one of them"
                    : "give the prompt as text (--prompt TEXT) or as token ids (--input-ids 1,2,3)");
        }
        if (!text && (printIds || !addSpecialTokens)) {
            throw usage((printIds ? "--print-ids" : "--no-add-special-tokens") + " applies to --prompt");
        }
        if (text && !Tokenizer.existsIn(model.dir())) {
            throw usage("--prompt needs a tokenizer, and " + model.dir() + " has no " + Tokenizer.FILE_NAME
                    + ": give the prompt as token ids with --input-ids");
        }
        long[][] rows = null;
        if (!text) {
            try {
                rows = TokenIds.parse(inputIds);
            } catch (IllegalArgumentException e) {
                throw usage("--input-ids: " + e.getMessage());
            }
        }
        Map<String, Path> folders;
        try {
            folders = adapterOptions.parse();
        } catch (IllegalArgumentException e) {
            throw usage(e.getMessage());
        }
        Generation.Options options;
        try {
            options = doSample
                    ? Generation.Options.sampling(maxNewTokens, temperature == null ? 1.0 : temperature,
                            topK == null ? 0 : topK, topP == null ? 1.0 : topP, seed == null ? 0 : seed)
                    : Generation.Options.greedy(maxNewTokens);
        } catch (IllegalArgumentException e) {
            throw usage(e.getMessage());
        }
        try (Tokenizer tokenizer = text ? Tokenizer.fromFile(model.dir().resolve(Tokenizer.FILE_NAME)) : null) {
            if (text) {
                rows = new long[prompts.size()][];
                for (int r = 0; r < rows.length; r++) {
                    rows[r] = tokenizer.encode(prompts.get(r), addSpecialTokens);
                    if (rows[r].length == 0) {
                        throw usage("--prompt " + quoted(prompts.get(r)) + " encodes to no tokens: nothing to continue");
                    }
                }
            }
            generate(rows, options, folders, tokenizer);
        }
        return 0;
    }

    private void generate(long[][] rows, Generation.Options options, Map<String, Path> folders, Tokenizer tokenizer)
            throws IOException {
        progress("loading %s", model.source());
        try (PreTrainedModel m = model.load(); PointerScope scope = new PointerScope()) {
            if (m instanceof Seq2SeqLM s2s) {
                generateSeq2Seq(m, s2s, rows, options, folders, tokenizer);
                return;
            }
            if (!(m instanceof CausalLM lm)) {
                throw new IllegalArgumentException(model.source() + ": " + m.typeName()
                        + " has no language-model head: generate needs a causal LM or an encoder-decoder");
            }
            Batch b = prepare(m, rows, options, folders, tokenizer);
            Tensor[] batch = b.ids;
            long eos = b.eos;
            long t0 = System.nanoTime();
            Tensor out = Generation.generate(lm, batch[0], b.mask(), b.options);
            long t1 = System.nanoTime();
            long width = batch[0].size(1);
            for (int r = 0; r < rows.length; r++) {
                long[] all = TokenIds.row(out, r);
                long[] kept = Arrays.copyOfRange(all, (int) (width - rows[r].length), all.length);
                if (tokenizer == null) {
                    out().println(TokenIds.join(kept));
                } else {
                    long[] ids = throughFirstEos(kept, rows[r].length, eos);
                    out().println(tokenizer.decode(ids, true));
                    if (printIds) {
                        out().println("ids: " + TokenIds.join(ids));
                    }
                }
            }
            out().flush();
            long produced = out.size(1) - width;
            progress("%d new tokens per row in %.1f ms (%.1f ms/token, measured)", produced, (t1 - t0) / 1e6,
                    produced == 0 ? 0.0 : (t1 - t0) / 1e6 / produced);
        }
    }

    /**
     * An encoder-decoder (T5): each prompt goes to the encoder (left-padded under a mask), the decoder generates from
     * its start token. Prints each row's decoder ids (start token first, as transformers' generate returns them), or
     * with a tokenizer the decoded new tokens.
     */
    private void generateSeq2Seq(PreTrainedModel m, Seq2SeqLM lm, long[][] rows, Generation.Options options,
            Map<String, Path> folders, Tokenizer tokenizer) throws IOException {
        Batch b = prepare(m, rows, options, folders, tokenizer);
        long eos = b.eos;
        long t0 = System.nanoTime();
        Tensor out = Seq2SeqGeneration.generate(lm, b.ids[0], b.mask(), b.options);
        long t1 = System.nanoTime();
        for (int r = 0; r < rows.length; r++) {
            long[] all = TokenIds.row(out, r);
            if (tokenizer == null) {
                out().println(TokenIds.join(all));
            } else {
                long[] ids = throughFirstEos(all, 1, eos);
                out().println(tokenizer.decode(Arrays.copyOfRange(ids, 1, ids.length), true));
                if (printIds) {
                    out().println("ids: " + TokenIds.join(ids));
                }
            }
        }
        out().flush();
        long produced = out.size(1) - 1;
        progress("%d new tokens per row in %.1f ms (%.1f ms/token, measured)", produced, (t1 - t0) / 1e6,
                produced == 0 ? 0.0 : (t1 - t0) / 1e6 / produced);
    }

    /** The prompts left-padded ({@code ids[0]} ids, {@code ids[1]} mask), the options with eos / pad, the eos id. */
    private record Batch(Tensor[] ids, boolean padded, long eos, Generation.Options options) {
        Tensor mask() {
            return padded ? ids[1] : null;
        }
    }

    /**
     * Applies the adapters, checks the prompts against the vocabulary, and pads them with the model's pad id (else
     * its eos, else 0): what causal and encoder-decoder generation share.
     */
    private Batch prepare(PreTrainedModel m, long[][] rows, Generation.Options options, Map<String, Path> folders,
            Tokenizer tokenizer) throws IOException {
        adapterOptions.apply(m, folders, model);
        ModelConfig c = m.config();
        try {
            TokenIds.checkVocab(rows, c.getLong("vocab_size"));
        } catch (IllegalArgumentException e) {
            if (tokenizer == null) {
                throw usage("--input-ids: " + e.getMessage());
            }
            throw new IllegalArgumentException(tokenizer.file() + " does not fit the model: the prompt's "
                    + e.getMessage());
        }
        long eos = ignoreEos ? -1 : firstId(c, "eos_token_id");
        long pad = firstId(c, "pad_token_id");
        if (pad < 0) {
            pad = Math.max(eos, 0);
        }
        boolean padded = false;
        for (long[] r : rows) {
            padded |= r.length != rows[0].length;
        }
        return new Batch(TokenIds.leftPadded(rows, pad), padded, eos, eos >= 0 ? options.withEos(eos, pad) : options);
    }

    /** The prompt and the new tokens up to and including the first {@code eos} (the padding after it dropped). */
    static long[] throughFirstEos(long[] row, int promptLength, long eos) {
        if (eos >= 0) {
            for (int i = promptLength; i < row.length; i++) {
                if (row[i] == eos) {
                    return Arrays.copyOf(row, i + 1);
                }
            }
        }
        return row;
    }

    private static String quoted(String s) {
        return "\"" + s.replace("\n", "\\n") + "\"";
    }

    /** An id key of config.json: an int, or the first of a list; -1 when absent. */
    private static long firstId(ModelConfig c, String key) {
        var n = c.json().get(key);
        if (n == null || n.isNull()) {
            return -1;
        }
        if (n.isArray()) {
            return n.size() > 0 && n.get(0).canConvertToLong() ? n.get(0).asLong() : -1;
        }
        return n.canConvertToLong() ? n.asLong() : -1;
    }
}

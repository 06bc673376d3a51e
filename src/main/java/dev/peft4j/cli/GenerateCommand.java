package dev.peft4j.cli;

import dev.peft4j.models.CausalLM;
import dev.peft4j.models.Generation;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import java.io.IOException;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code peft4j generate}: greedy or seeded-sampling decoding from token ids. Prints one line of ids per row
 * (prompt then new tokens). Text in and out needs a tokenizer, which peft4j does not have yet: ids only.
 */
@Command(name = "generate", header = "Generate token ids from a model (greedy or seeded sampling).",
        description = {
        "Generate tokens after the given token ids (greedy, or sampling with --do-sample) and print each row's ids,",
        "prompt and new tokens, comma-separated, one row per line. Token ids only: peft4j has no tokenizer yet."})
final class GenerateCommand extends CliCommand {
    @Mixin
    ModelOptions model;

    @Mixin
    AdapterOptions adapterOptions;

    @Option(names = "--input-ids", required = true, paramLabel = "<ids>",
            description = "Prompt token ids, rows separated by ';' (shorter rows are left-padded), e.g. \"1,2,3;4,5\".")
    String inputIds;

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
        long[][] rows;
        try {
            rows = TokenIds.parse(inputIds);
        } catch (IllegalArgumentException e) {
            throw usage("--input-ids: " + e.getMessage());
        }
        java.util.Map<String, java.nio.file.Path> folders;
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
        progress("loading %s", model.modelDir);
        try (PreTrainedModel m = model.load(); PointerScope scope = new PointerScope()) {
            if (!(m instanceof CausalLM lm)) {
                throw new IllegalArgumentException(model.modelDir + ": " + m.typeName()
                        + " has no language-model head: generate needs a causal LM");
            }
            adapterOptions.apply(m, folders);
            ModelConfig c = m.config();
            try {
                TokenIds.checkVocab(rows, c.getLong("vocab_size"));
            } catch (IllegalArgumentException e) {
                throw usage("--input-ids: " + e.getMessage());
            }
            long eos = ignoreEos ? -1 : firstId(c, "eos_token_id");
            long pad = firstId(c, "pad_token_id");
            if (pad < 0) {
                pad = Math.max(eos, 0);
            }
            if (eos >= 0) {
                options = options.withEos(eos, pad);
            }
            Tensor[] batch = TokenIds.leftPadded(rows, pad);
            boolean padded = false;
            for (long[] r : rows) {
                padded |= r.length != rows[0].length;
            }
            long t0 = System.nanoTime();
            Tensor out = Generation.generate(lm, batch[0], padded ? batch[1] : null, options);
            long t1 = System.nanoTime();
            long width = batch[0].size(1);
            for (int r = 0; r < rows.length; r++) {
                long[] all = TokenIds.row(out, r);
                long[] kept = java.util.Arrays.copyOfRange(all, (int) (width - rows[r].length), all.length);
                out().println(TokenIds.join(kept));
            }
            out().flush();
            long produced = out.size(1) - width;
            progress("%d new tokens per row in %.1f ms (%.1f ms/token, measured)", produced, (t1 - t0) / 1e6,
                    produced == 0 ? 0.0 : (t1 - t0) / 1e6 / produced);
        }
        return 0;
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

package dev.peft4j.tuners.lora;

import dev.peft4j.tuners.Scoped;
import java.util.Locale;
import java.util.Objects;
import org.bytedeco.pytorch.Generator;
import org.bytedeco.pytorch.GeneratorOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;

/**
 * LoRA's {@code init_lora_weights} for the simple options ({@code LoraLayer.reset_lora_parameters}, §3.8), drawn
 * from a caller-supplied generator so initialisation is reproducible.
 *
 * <table>
 *   <caption>What each option does</caption>
 *   <tr><th>option</th><th>Linear/Conv1D A {@code (r, in)}</th><th>B {@code (out, r)}</th><th>Embedding A / B</th></tr>
 *   <tr><td>{@code true}</td><td>Kaiming-uniform, a=√5: U(−1/√in, 1/√in)</td><td>zeros (bias zeros)</td>
 *       <td>zeros / N(0, 1)</td></tr>
 *   <tr><td>{@code "gaussian"}</td><td>N(0, (1/r)²)</td><td>zeros</td><td>zeros / N(0, 1)</td></tr>
 *   <tr><td>{@code false}</td><td>{@code nn.Linear}'s default: U(−1/√in, 1/√in)</td><td>U(−1/√r, 1/√r) (bias
 *       too)</td><td>N(0, 1) / N(0, 1)</td></tr>
 * </table>
 *
 * Only {@code true} makes the adapter a no-op at start; {@code false} is meant for tests. The other PEFT options
 * either need data ({@code eva}, {@code corda}, {@code lora_ga}) or rewrite the base weights ({@code pissa*},
 * {@code olora}, {@code loftq}) and are refused by {@link #parse}.
 */
public final class LoraInit {
    private LoraInit() {}

    /** The simple {@code init_lora_weights} values. */
    public enum Mode {
        /** {@code true}, PEFT's default. */
        DEFAULT,
        /** {@code "gaussian"}. */
        GAUSSIAN,
        /** {@code false}: random A and B, the adapter is not a no-op. */
        RANDOM
    }

    /**
     * Reads the JSON value of {@code init_lora_weights}: a {@link Boolean} or the string {@code "gaussian"}
     * (case-insensitive, as PEFT compares it lower-cased).
     *
     * @throws IllegalArgumentException for any other value, naming it
     */
    public static Mode parse(Object initLoraWeights) {
        if (initLoraWeights instanceof Boolean) {
            return (Boolean) initLoraWeights ? Mode.DEFAULT : Mode.RANDOM;
        }
        if (initLoraWeights instanceof String && ((String) initLoraWeights).toLowerCase(Locale.ROOT).equals("gaussian")) {
            return Mode.GAUSSIAN;
        }
        throw new IllegalArgumentException("init_lora_weights=" + initLoraWeights + " is not supported: only true, "
                + "false and \"gaussian\" are; data-dependent inits (eva, corda, lora_ga) and inits that rewrite the "
                + "base weights (pissa, olora, loftq) must be converted to a plain LoRA first");
    }

    /**
     * Fills a Linear/Conv1D adapter in place.
     *
     * @param bBias {@code lora_B} bias ({@code lora_bias=True}) or null
     */
    public static void initLinear(Tensor a, Tensor b, Tensor bBias, Mode mode, Generator generator) {
        Objects.requireNonNull(generator, "generator");
        long r = a.size(0);
        long in = a.size(1);
        try (NoGradGuard g = new NoGradGuard()) {
            Scoped.run(() -> {
                GeneratorOptional gen = new GeneratorOptional(generator);
                switch (mode) {
                    case DEFAULT:
                        a.uniform_(-1.0 / Math.sqrt(in), 1.0 / Math.sqrt(in), gen);
                        b.zero_();
                        if (bBias != null) {
                            bBias.zero_();
                        }
                        break;
                    case GAUSSIAN:
                        a.normal_(0.0, 1.0 / r, gen);
                        b.zero_();
                        if (bBias != null) {
                            bBias.zero_();
                        }
                        break;
                    default:
                        a.uniform_(-1.0 / Math.sqrt(in), 1.0 / Math.sqrt(in), gen);
                        b.uniform_(-1.0 / Math.sqrt(r), 1.0 / Math.sqrt(r), gen);
                        if (bBias != null) {
                            bBias.uniform_(-1.0 / Math.sqrt(r), 1.0 / Math.sqrt(r), gen);
                        }
                }
            });
        }
    }

    /** Fills an Embedding adapter ({@code lora_embedding_A (r, num)}, {@code lora_embedding_B (dim, r)}) in place. */
    public static void initEmbedding(Tensor embA, Tensor embB, Mode mode, Generator generator) {
        Objects.requireNonNull(generator, "generator");
        try (NoGradGuard g = new NoGradGuard()) {
            Scoped.run(() -> {
                GeneratorOptional gen = new GeneratorOptional(generator);
                if (mode == Mode.RANDOM) {
                    embA.normal_(0.0, 1.0, gen);
                } else {
                    embA.zero_();
                }
                embB.normal_(0.0, 1.0, gen);
            });
        }
    }
}

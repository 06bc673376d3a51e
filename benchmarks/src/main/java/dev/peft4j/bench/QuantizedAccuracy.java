package dev.peft4j.bench;

import dev.peft4j.kernels.Quantization;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Init;
import dev.peft4j.train.Trainer;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AdamW;
import org.bytedeco.pytorch.AdamWOptions;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * How much int8 (Q8_0) and int4 (Q4_0) weights move a trained model's outputs: logits and perplexity against the
 * float32 and bfloat16 model, on two public-domain texts kept in the repo (the opening of the United States
 * Declaration of Independence, 1776, and the Gettysburg Address, 1863; {@code src/main/resources/dev/peft4j/bench}).
 *
 * <p>No trained Llama checkpoint ships with the repo or its fixtures, and random weights make perplexity
 * meaningless, so the benchmark trains its own small Llama first: hidden 128, 2 layers, 4 heads, MLP 384, a byte
 * vocabulary (the UTF-8 bytes of the text as Llama's byte-fallback ids {@code <0xNN>} = 3 + byte), float32, AdamW,
 * fixed seeds, on the Declaration only, in windows of 64 bytes. It then reloads the trained weights as float32,
 * bfloat16, and each dtype with its blocks' Linears quantized to int8 and int4, with and without {@code lm_head} in
 * int8 ({@code AutoModel.quantize}), runs every text through each in windows of 64 bytes (the training length), and
 * prints a Markdown table: perplexity on the seen text (Declaration) and the unseen one (Gettysburg), its change
 * against the float32 model, the share of positions whose top token agrees with float32's, and the largest logit
 * difference relative to the largest reference logit. A model this small learns the letters and words of its one
 * paragraph, not English: the unseen text's perplexity is high for every configuration, and its difference between
 * configurations is the figure to read there.
 *
 * <pre>
 * OMP_WAIT_POLICY=passive OPENBLAS_THREAD_TIMEOUT=4 java -Dorg.bytedeco.javacpp.maxPhysicalBytes=0 \
 *     -cp benchmarks/target/benchmarks.jar dev.peft4j.bench.QuantizedAccuracy [steps (300)]
 * </pre>
 */
public final class QuantizedAccuracy {
    private QuantizedAccuracy() {}

    static final String CONFIG = "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"],"
            + " \"vocab_size\": 288, \"hidden_size\": 128, \"intermediate_size\": 384, \"num_hidden_layers\": 2,"
            + " \"num_attention_heads\": 4, \"num_key_value_heads\": 4, \"rms_norm_eps\": 1e-5,"
            + " \"rope_theta\": 10000.0, \"max_position_embeddings\": 2048, \"tie_word_embeddings\": false,"
            + " \"torch_dtype\": \"float32\"}";

    static final String[] TEXTS = {"declaration-1776.txt", "gettysburg-1863.txt"};

    /** The text's UTF-8 bytes as Llama byte-fallback ids ({@code <0xNN>} is id 3 + NN). */
    static long[] ids(String resource) throws IOException {
        byte[] b;
        try (InputStream in = QuantizedAccuracy.class.getResourceAsStream(resource)) {
            if (in == null) {
                throw new IOException("resource dev/peft4j/bench/" + resource + " is missing from the class path");
            }
            b = new String(in.readAllBytes(), StandardCharsets.UTF_8).strip().getBytes(StandardCharsets.UTF_8);
        }
        long[] ids = new long[b.length];
        for (int i = 0; i < b.length; i++) {
            ids[i] = 3 + (b[i] & 0xff);
        }
        return ids;
    }

    static Tensor longs(long[] v, long rows, long cols) {
        try (TensorOptions o = new TensorOptions(ScalarType.Long)) {
            Tensor t = torch.zeros(new long[] {rows, cols}, o);
            t.data_ptr_long().capacity(v.length).put(v);
            return t;
        }
    }

    /** Trains the small Llama on {@code text} (windows of 64 bytes, batch 8) and saves it to {@code dir}. */
    static void train(long[] text, int steps, Path dir) throws IOException {
        torch.manual_seed(7);
        try (PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(CONFIG), Init.cpu(ScalarType.Float))) {
            Init.normal(m, 0.02, 1234);
            List<Tensor> params = new ArrayList<>();
            for (Tensor p : m.namedParameters().values()) {
                p.requires_grad_(true);
                params.add(p);
            }
            CausalLM lm = (CausalLM) m;
            m.train(true);
            int seq = 64, batch = 8;
            Random rng = new Random(42);
            TensorVector pv = new TensorVector(params.toArray(new Tensor[0]));
            AdamWOptions opts = new AdamWOptions(3e-3);
            opts.weight_decay().put(0.0);
            long t0 = System.nanoTime();
            try (AdamW opt = new AdamW(pv, opts)) {
                for (int step = 0; step < steps; step++) {
                    // linear decay to a tenth
                    opt.param_groups().get(0).options().set_lr(3e-3 * (1 - 0.9 * step / (double) steps));
                    long[] win = new long[batch * seq];
                    for (int b = 0; b < batch; b++) {
                        int start = rng.nextInt(text.length - seq + 1);
                        System.arraycopy(text, start, win, b * seq, seq);
                    }
                    try (PointerScope s = new PointerScope()) {
                        Tensor in = longs(win, batch, seq);
                        Tensor loss = Trainer.causalLmLoss(lm.forward(in, null, null, null), in);
                        loss.backward();
                        opt.step();
                        opt.zero_grad(true);
                        if ((step + 1) % 50 == 0 || step + 1 == steps) {
                            System.err.printf("  train step %d / %d: loss %.3f (%.0f s)%n", step + 1, steps,
                                    loss.item_double(), (System.nanoTime() - t0) / 1e9);
                        }
                    }
                }
            }
            m.train(false);
            for (Tensor p : params) {
                p.requires_grad_(false);
            }
            m.savePretrained(dir);
        }
    }

    static final int SEQ = 64;

    /** The text cut into windows of {@link #SEQ} (the training length; the tail dropped) as [windows, SEQ]. */
    static Tensor windows(long[] text) {
        int n = text.length / SEQ;
        return longs(java.util.Arrays.copyOf(text, n * SEQ), n, SEQ);
    }

    /** Float32 logits [windows, SEQ, vocab] of the text's windows, in one forward. */
    static Tensor logits(CausalLM lm, long[] text) {
        Tensor out;
        try (TensorOptions o = new TensorOptions(ScalarType.Float)) {
            // created outside the scope: it outlives it
            out = torch.zeros(new long[] {text.length / SEQ, SEQ, 288}, o);
        }
        try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
            out.copy_(lm.forward(windows(text), null, null, null));
        }
        return out;
    }

    /** Perplexity: exp of the mean cross entropy of each window's position t predicting its byte t + 1. */
    static double perplexity(Tensor logits, long[] text) {
        try (PointerScope s = new PointerScope()) {
            return Math.exp(Trainer.causalLmLoss(logits, windows(text)).item_double());
        }
    }

    static double topAgreement(Tensor a, Tensor ref) {
        try (PointerScope s = new PointerScope()) {
            return a.argmax(new org.bytedeco.pytorch.LongOptional(2), false)
                    .eq(ref.argmax(new org.bytedeco.pytorch.LongOptional(2), false)).to(ScalarType.Double).mean()
                    .item_double();
        }
    }

    static double maxRelDiff(Tensor a, Tensor ref) {
        try (PointerScope s = new PointerScope()) {
            return a.sub(ref).abs().max().item_double() / ref.abs().max().item_double();
        }
    }

    record Config(String name, ScalarType dtype, Quantization q, Quantization head) {}

    public static void main(String[] args) throws Exception {
        int steps = args.length > 0 ? Integer.parseInt(args[0]) : 300;
        torch.set_num_threads(2);
        long[][] texts = new long[TEXTS.length][];
        for (int i = 0; i < TEXTS.length; i++) {
            texts[i] = ids(TEXTS[i]);
        }
        Path dir = Files.createTempDirectory("peft4j-quant-accuracy");
        try {
            System.err.println("QuantizedAccuracy: training the small Llama on " + TEXTS[0] + " (" + texts[0].length
                    + " bytes), " + steps + " steps ...");
            train(texts[0], steps, dir);
            List<Config> configs = List.of(new Config("float32", ScalarType.Float, null, null),
                    new Config("bfloat16", ScalarType.BFloat16, null, null),
                    new Config("float32 + int8", ScalarType.Float, Quantization.INT8, null),
                    new Config("bfloat16 + int8", ScalarType.BFloat16, Quantization.INT8, null),
                    new Config("bfloat16 + int8, lm_head int8", ScalarType.BFloat16, Quantization.INT8,
                            Quantization.INT8),
                    new Config("float32 + int4", ScalarType.Float, Quantization.INT4, null),
                    new Config("bfloat16 + int4", ScalarType.BFloat16, Quantization.INT4, null),
                    new Config("bfloat16 + int4, lm_head int8", ScalarType.BFloat16, Quantization.INT4,
                            Quantization.INT8));
            Map<String, Tensor[]> out = new LinkedHashMap<>();
            for (Config c : configs) {
                try (PreTrainedModel m = AutoModel.fromPretrained(dir, c.dtype())) {
                    if (c.q() != null) {
                        AutoModel.quantize(m, c.q(), c.head());
                    }
                    Tensor[] l = new Tensor[texts.length];
                    for (int i = 0; i < texts.length; i++) {
                        l[i] = logits((CausalLM) m, texts[i]);
                    }
                    out.put(c.name(), l);
                }
            }
            Tensor[] f32 = out.get("float32");
            Tensor[] bf16 = out.get("bfloat16");
            double[] ppl32 = {perplexity(f32[0], texts[0]), perplexity(f32[1], texts[1])};
            System.out.println("| model | perplexity, seen text | perplexity, unseen text | vs float32 (seen / unseen)"
                    + " | top-1 agreement with float32 (seen / unseen) | max logit diff / max logit, vs float32 |"
                    + " vs bfloat16 |");
            System.out.println("| --- | --- | --- | --- | --- | --- | --- |");
            for (Map.Entry<String, Tensor[]> e : out.entrySet()) {
                Tensor[] l = e.getValue();
                double p0 = perplexity(l[0], texts[0]), p1 = perplexity(l[1], texts[1]);
                double rel32 = Math.max(maxRelDiff(l[0], f32[0]), maxRelDiff(l[1], f32[1]));
                double relbf = Math.max(maxRelDiff(l[0], bf16[0]), maxRelDiff(l[1], bf16[1]));
                System.out.printf("| %s | %.3f | %.2f | %+.2f %% / %+.2f %% | %.3f / %.3f | %.4f | %.4f |%n",
                        e.getKey(), p0, p1, 100 * (p0 / ppl32[0] - 1), 100 * (p1 / ppl32[1] - 1),
                        topAgreement(l[0], f32[0]), topAgreement(l[1], f32[1]), rel32, relbf);
            }
            for (Tensor[] l : out.values()) {
                for (Tensor t : l) {
                    t.close();
                }
            }
        } finally {
            try (var w = Files.walk(dir)) {
                w.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
    }
}

package dev.peft4j.bench;

import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.models.SlotKVCache;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Layer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.DoubleOptional;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Where a serving decode step of B rows spends its time, against one row: the whole {@link CausalLM#forwardSlots}
 * step (rows on consecutive slots, and on scattered ones), then each op of one decoder layer called alone on the same
 * shapes (the LoRA q/k/v/o linears with a mixed batch of adapters, the MLP linears, attention over the slot cache and
 * the gather of scattered slots, RMSNorm, RoPE), the LM head and the argmax. The layer ops × layers + head is compared
 * with the whole step: the rest is the per-op overhead of the Java side and libtorch's dispatcher.
 *
 * <pre>
 * java -Dorg.bytedeco.javacpp.maxPhysicalBytes=0 -cp benchmarks/target/benchmarks.jar dev.peft4j.bench.SlotDecodeProfile \
 *     [dtype=Float|BFloat16] [layers=22] [hidden=2048] [intermediate=5632] [rows=16] [adapters=8]
 *     [past=48] [threads=1] [reps=5]
 * </pre>
 */
public final class SlotDecodeProfile {
    private SlotDecodeProfile() {}

    public static void main(String[] args) throws Exception {
        Map<String, String> a = BenchArgs.parse(args, "dtype", "Float", "layers", "22", "hidden", "2048",
                "intermediate", "5632", "rows", "16", "adapters", "8", "past", "48", "threads", "1", "reps", "5");
        ScalarType dt = ScalarType.valueOf(a.get("dtype"));
        int layers = Integer.parseInt(a.get("layers"));
        int hidden = Integer.parseInt(a.get("hidden"));
        int inter = Integer.parseInt(a.get("intermediate"));
        int rows = Integer.parseInt(a.get("rows"));
        int adapters = Integer.parseInt(a.get("adapters"));
        int past = Integer.parseInt(a.get("past"));
        int threads = Integer.parseInt(a.get("threads"));
        int reps = Integer.parseInt(a.get("reps"));
        torch.set_num_threads(threads);
        org.bytedeco.openblas.presets.openblas_nolapack.blas_set_num_threads(threads);
        System.out.println("config: " + a);
        long heads = hidden / 64;
        long kvHeads = Math.max(1, hidden / 512);
        String cfg = String.format("{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"],"
                + " \"vocab_size\": 32000, \"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d,"
                + " \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"rms_norm_eps\": 1e-5,"
                + " \"tie_word_embeddings\": false}", hidden, inter, layers, heads, kvHeads);
        Path tmp = Files.createTempDirectory("peft4j-slot-profile");
        try (PreTrainedModel model = AutoModel.fromConfig(ModelConfig.parse(cfg), Init.cpu(dt));
                InferenceMode im = new InferenceMode(false)) {
            Init.normal(model, 0.02, 1234);
            for (int i = 0; i < adapters; i++) {
                model.loadAdapter(ServeThroughput.lora(tmp.resolve("a" + i), hidden, (int) heads, (int) kvHeads,
                        layers, i), "a" + i);
            }
            CausalLM lm = (CausalLM) model;
            try (InferenceMode on = new InferenceMode(); SlotKVCache cache = lm.newSlotCache(2 * rows, past + 8)) {
                profile(model, lm, cache, rows, adapters, past, layers, hidden, inter, heads, kvHeads, dt, reps);
            }
        }
    }

    private static void profile(PreTrainedModel model, CausalLM lm, SlotKVCache cache, int rows, int adapters,
            int past, int layers, int hidden, int inter, long heads, long kvHeads, ScalarType dt, int reps) {
        List<String> one = List.of("a0");
        List<String> mixed = new ArrayList<>();
        for (int i = 0; i < rows; i++) {
            mixed.add("a" + (i % adapters));
        }
        int[] consecutive = new int[rows];
        int[] scattered = new int[rows];
        long[] pastOf = new long[rows];
        for (int i = 0; i < rows; i++) {
            consecutive[i] = i;
            scattered[i] = 2 * i;
            pastOf[i] = past;
        }
        List<String> both = new ArrayList<>(mixed);
        System.out.printf("%-44s %12s %12s %8s%n", "op (ms)", "1 row", rows + " rows", "ratio");
        // whole steps
        row("forwardSlots, consecutive slots", reps,
                () -> step(model, lm, cache, 1, new int[] {0}, new long[] {past}, one),
                () -> step(model, lm, cache, rows, consecutive, pastOf, both), 1);
        row("forwardSlots, scattered slots", reps,
                () -> step(model, lm, cache, 1, new int[] {2}, new long[] {past}, one),
                () -> step(model, lm, cache, rows, scattered, pastOf, both), 1);
        // one layer's ops, × layers
        String p = "model.layers.0.";
        double sum1 = 0;
        double sumB = 0;
        for (String lin : new String[] {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                "self_attn.o_proj"}) {
            Layer l = (Layer) model.getSubmodule(p + lin);
            double[] r = row("LoRA " + lin + " × " + layers, reps,
                    () -> model.withAdapterNames(one, () -> l.forward(input(1, hidden, dt))),
                    () -> model.withAdapterNames(mixed, () -> l.forward(input(rows, hidden, dt))), layers);
            sum1 += r[0];
            sumB += r[1];
        }
        for (String lin : new String[] {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
            Layer l = (Layer) model.getSubmodule(p + lin);
            int in = lin.endsWith("down_proj") ? inter : hidden;
            double[] r = row(lin + " × " + layers, reps, () -> l.forward(input(1, in, dt)),
                    () -> l.forward(input(rows, in, dt)), layers);
            sum1 += r[0];
            sumB += r[1];
        }
        Layer norm = (Layer) model.getSubmodule(p + "input_layernorm");
        double[] r = row("RMSNorm × 2 × " + layers, reps, () -> norm.forward(input(1, hidden, dt)),
                () -> norm.forward(input(rows, hidden, dt)), 2 * layers);
        sum1 += r[0];
        sumB += r[1];
        r = row("RoPE (q and k) × " + layers, reps, () -> rope(1, heads, kvHeads, dt),
                () -> rope(rows, heads, kvHeads, dt), layers);
        sum1 += r[0];
        sumB += r[1];
        r = row("attention over slots, consecutive × " + layers, reps,
                () -> attention(cache, new int[] {0}, past + 1, heads, kvHeads, dt),
                () -> attention(cache, consecutive, past + 1, heads, kvHeads, dt), layers);
        sum1 += r[0];
        sumB += r[1];
        row("attention over slots, scattered × " + layers, reps,
                () -> attention(cache, new int[] {2}, past + 1, heads, kvHeads, dt),
                () -> attention(cache, scattered, past + 1, heads, kvHeads, dt), layers);
        Layer head = (Layer) model.getSubmodule("lm_head");
        r = row("lm_head", reps, () -> head.forward(input(1, hidden, dt).view(1, hidden)),
                () -> head.forward(input(rows, hidden, dt).view(rows, hidden)), 1);
        sum1 += r[0];
        sumB += r[1];
        try (TensorOptions o = new TensorOptions(dt)) {
            Tensor l1 = torch.randn(new long[] {1, 32000}, o);
            Tensor lb = torch.randn(new long[] {rows, 32000}, o);
            r = row("to(float) + argmax", reps,
                    () -> l1.to(ScalarType.Float).argmax(new LongOptional(-1), false),
                    () -> lb.to(ScalarType.Float).argmax(new LongOptional(-1), false), 1);
        }
        sum1 += r[0];
        sumB += r[1];
        System.out.printf("%-44s %12.2f %12.2f %8.2f%n", "sum of the ops above (consecutive)", sum1, sumB,
                sumB / sum1);
    }

    private static Tensor input(int rows, long features, ScalarType dt) {
        try (TensorOptions o = new TensorOptions(dt)) {
            return torch.randn(new long[] {rows, 1, features}, o);
        }
    }

    private static Tensor step(PreTrainedModel model, CausalLM lm, SlotKVCache cache, int rows, int[] slots,
            long[] past, List<String> names) {
        long[] ids = new long[rows];
        Arrays.fill(ids, 7);
        Tensor t = Tensor.create(ids, rows, 1);
        return model.withAdapterNames(names, () -> lm.forwardSlots(t, cache, slots, past));
    }

    private static Tensor rope(int rows, long heads, long kvHeads, ScalarType dt) {
        try (TensorOptions o = new TensorOptions(dt)) {
            Tensor cos = torch.randn(new long[] {rows, 1, 1, 64}, o);
            Tensor sin = torch.randn(new long[] {rows, 1, 1, 64}, o);
            Tensor out = null;
            for (long h : new long[] {heads, kvHeads}) {
                Tensor x = torch.randn(new long[] {rows, 1, h, 64}, o).transpose(1, 2);
                Tensor rotated = torch.cat(new org.bytedeco.pytorch.TensorVector(x.narrow(-1, 32, 32).neg(),
                        x.narrow(-1, 0, 32)), -1);
                out = x.mul(cos).add_(rotated.mul_(sin));
            }
            return out;
        }
    }

    /** Reads the slots' keys and values (a view or a gather), repeats the kv heads, and runs SDPA for one query. */
    private static Tensor attention(SlotKVCache cache, int[] slots, long keyLength, long heads, long kvHeads,
            ScalarType dt) {
        int b = slots.length;
        boolean consecutive = true;
        for (int i = 1; i < b; i++) {
            consecutive &= slots[i] == slots[0] + i;
        }
        Tensor k;
        Tensor v;
        if (consecutive) {
            k = cache.keys(0).narrow(0, slots[0], b).narrow(2, 0, keyLength);
            v = cache.values(0).narrow(0, slots[0], b).narrow(2, 0, keyLength);
        } else {
            long[] s = Arrays.stream(slots).asLongStream().toArray();
            Tensor idx = Tensor.create(s, s.length);
            k = cache.keys(0).narrow(2, 0, keyLength).index_select(0, idx);
            v = cache.values(0).narrow(2, 0, keyLength).index_select(0, idx);
        }
        long g = heads / kvHeads;
        long[] ks = k.shape();
        k = k.unsqueeze(2).expand(ks[0], ks[1], g, ks[2], ks[3]).reshape(ks[0], ks[1] * g, ks[2], ks[3]);
        v = v.unsqueeze(2).expand(ks[0], ks[1], g, ks[2], ks[3]).reshape(ks[0], ks[1] * g, ks[2], ks[3]);
        try (TensorOptions o = new TensorOptions(dt)) {
            Tensor q = torch.randn(new long[] {b, heads, 1, 64}, o);
            return torch.scaled_dot_product_attention(q, k, v, new TensorOptional(), 0.0, false,
                    new DoubleOptional(0.125), false);
        }
    }

    /** Times both calls alternately ({@code reps} each after a warm-up); prints and returns ms × {@code times}. */
    private static double[] row(String name, int reps, Supplier<Tensor> oneRow, Supplier<Tensor> manyRows,
            int times) {
        int inner = times == 1 ? 1 : 20;
        long[] t1 = new long[reps];
        long[] tb = new long[reps];
        for (int w = 0; w < 2; w++) {
            time(oneRow, 1);
            time(manyRows, 1);
        }
        for (int i = 0; i < reps; i++) {
            t1[i] = time(oneRow, inner);
            tb[i] = time(manyRows, inner);
        }
        Arrays.sort(t1);
        Arrays.sort(tb);
        double m1 = t1[reps / 2] / 1e6 / inner * times;
        double mb = tb[reps / 2] / 1e6 / inner * times;
        System.out.printf("%-44s %12.2f %12.2f %8.2f%n", name, m1, mb, mb / m1);
        return new double[] {m1, mb};
    }

    private static long time(Supplier<Tensor> f, int n) {
        long t0 = System.nanoTime();
        for (int i = 0; i < n; i++) {
            try (PointerScope s = new PointerScope()) {
                f.get();
            }
        }
        return System.nanoTime() - t0;
    }
}

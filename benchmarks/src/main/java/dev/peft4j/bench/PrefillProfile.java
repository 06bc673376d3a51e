package dev.peft4j.bench;

import dev.peft4j.kernels.DecodeKernels;
import dev.peft4j.kernels.Quantization;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.models.SlotKVCache;
import dev.peft4j.nn.Layer;
import dev.peft4j.nn.RMSNorm;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.function.Supplier;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.DoubleOptional;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Where the prefill of a Llama-family model on the slot-cache path ({@link CausalLM#forwardSlots} of a whole prompt
 * into an empty slot: the path of {@code generate}, the serving engine and the peer benchmark) spends its time: the
 * whole prefill, then each op group of one decoder layer called alone on the prefill's shapes, times the layers
 * (the q/k/v/o and MLP Linears as the model holds them: quantized, LoRA-wrapped or plain; the norms; RoPE; the
 * key / value write into the slot cache; attention over the prompt; the residual adds and the MLP's activation), and
 * the head on the last position. Rows marked "alt" time another way of computing the same group (libtorch's 16-bit
 * attention kernel, the native norm / RoPE kernels) for comparison; they are not in the sum. The sum of the other
 * rows against the whole prefill leaves the Java side's and the dispatcher's overhead.
 *
 * <pre>
 * java -Dorg.bytedeco.javacpp.maxPhysicalBytes=0 -cp benchmarks/target/benchmarks.jar dev.peft4j.bench.PrefillProfile \
 *     model=/tmp/quant-peers/model [dtype=bfloat16|float32] [quantize=none|int8|int4] [head=none|int8|int4]
 *     [adapter=PATH] [prompt=128] [threads=2] [reps=5]
 * </pre>
 *
 * With {@code quantize} set and {@code head} left out, the head is int8 (the peer benchmark's choice).
 */
public final class PrefillProfile {
    private PrefillProfile() {}

    public static void main(String[] args) throws Exception {
        Map<String, String> a = BenchArgs.parse(args, "model", "", "dtype", "bfloat16", "quantize", "none", "head",
                "", "adapter", "", "prompt", "128", "threads", "2", "reps", "5");
        if (a.get("model").isEmpty()) {
            throw new IllegalArgumentException("model=PATH (a Llama-family checkpoint folder) is required");
        }
        int threads = Integer.parseInt(a.get("threads"));
        int prompt = Integer.parseInt(a.get("prompt"));
        int reps = Integer.parseInt(a.get("reps"));
        torch.set_num_threads(threads);
        org.bytedeco.openblas.presets.openblas_nolapack.blas_set_num_threads(threads);
        System.out.println("config: " + a);
        try (PreTrainedModel model = AutoModel.fromPretrained(Path.of(a.get("model")),
                ModelConfig.parseDtype(a.get("dtype"), "dtype"))) {
            if (!a.get("quantize").equals("none")) {
                String head = a.get("head").isEmpty() ? "int8" : a.get("head");
                AutoModel.quantize(model, Quantization.parse(a.get("quantize")),
                        head.equals("none") ? null : Quantization.parse(head));
            }
            if (!a.get("adapter").isEmpty()) {
                model.loadAdapter(Path.of(a.get("adapter")), "default");
            }
            CausalLM lm = (CausalLM) model;
            try (InferenceMode im = new InferenceMode(); SlotKVCache cache = lm.newSlotCache(1, prompt + 8)) {
                profile(model, lm, cache, prompt, reps);
            }
        }
    }

    private static void profile(PreTrainedModel model, CausalLM lm, SlotKVCache cache, int t, int reps) {
        ModelConfig c = model.config();
        int layers = c.getInt("num_hidden_layers");
        long hidden = c.getInt("hidden_size");
        long inter = c.getInt("intermediate_size");
        long heads = c.getInt("num_attention_heads");
        long kvHeads = c.has("num_key_value_heads") ? c.getInt("num_key_value_heads") : heads;
        long dim = hidden / heads;
        ScalarType dt = cache.keys(0).scalar_type().intern();
        System.out.printf("%-52s %10s%n", "op group (ms per prefill of " + t + " tokens)", "ms");
        double whole = row("whole forwardSlots prefill", reps, () -> prefill(lm, cache, t), 1);
        double sum = 0;
        // inputs made once, outside the timings
        Tensor xh = input(t, hidden, dt);
        Tensor xh2 = input(t, hidden, dt);
        Tensor xi = input(t, inter, dt);
        Tensor xi2 = input(t, inter, dt);
        Tensor ids = ids(t);
        Layer embed = (Layer) model.getSubmodule("model.embed_tokens");
        sum += row("embedding", reps, () -> embed.forward(ids), 1);
        String p = "model.layers.0.";
        Layer norm = (Layer) model.getSubmodule(p + "input_layernorm");
        sum += row("RMSNorm (libtorch ops) × 2 × " + layers, reps, () -> norm.forward(xh), 2 * layers);
        RMSNorm rms = (RMSNorm) norm;
        row("alt: RMSNorm, native kernel × 2 × " + layers, reps,
                () -> DecodeKernels.rmsNorm(xh, rms.weight(), rms.eps()), 2 * layers);
        sum += row("residual add × 2 × " + layers, reps, () -> xh.add(xh2), 2 * layers);
        for (String lin : new String[] {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
            Layer l = (Layer) model.getSubmodule(p + lin);
            Tensor x = lin.endsWith("down_proj") ? xi : xh;
            sum += row(lin + " (" + l.getClass().getSimpleName() + ") × " + layers, reps, () -> l.forward(x),
                    layers);
        }
        Layer act = (Layer) model.getSubmodule(p + "mlp.act_fn");
        sum += row("act(gate) · up × " + layers, reps, () -> act.forward(xi).mul(xi2), layers);
        Tensor q4 = input(t, heads * dim, dt).view(1, t, heads, dim).transpose(1, 2);
        Tensor k4 = input(t, kvHeads * dim, dt).view(1, t, kvHeads, dim).transpose(1, 2);
        Tensor cos = input(t, dim, dt).unsqueeze(1);
        Tensor sin = input(t, dim, dt).unsqueeze(1);
        sum += row("RoPE of q and k (libtorch ops) × " + layers, reps,
                () -> {
                    rope(q4, cos, sin, dim);
                    return rope(k4, cos, sin, dim);
                }, layers);
        long[] positions = new long[t];
        Arrays.setAll(positions, i -> i);
        Tensor invFreq = invFreq(c, dim);
        Tensor qn = input(t, heads * dim, dt);
        Tensor kn = input(t, kvHeads * dim, dt);
        row("alt: RoPE of q and k, native kernel × " + layers, reps, () -> {
            DecodeKernels.rope(qn, heads, positions, invFreq);
            DecodeKernels.rope(kn, kvHeads, positions, invFreq);
            return kn;
        }, layers);
        Tensor index = kvIndex(cache, t, kvHeads);
        Tensor kNew = input(t, kvHeads * dim, dt).view(1, t, kvHeads, dim).transpose(1, 2);
        sum += row("k / v write into the slot cache × " + layers, reps, () -> {
            cache.keys(0).view(-1, dim).index_copy_(0, index, kNew.reshape(-1, dim));
            return cache.values(0).view(-1, dim).index_copy_(0, index, kNew.reshape(-1, dim));
        }, layers);
        Tensor mask = causalMask(t);
        sum += row("attention: repeat kv + SDPA in float32 × " + layers, reps,
                () -> attention(cache, q4, t, heads, kvHeads, dim, dt, mask, true), layers);
        row("alt: attention, SDPA in float32, is_causal × " + layers, reps,
                () -> attention(cache, q4, t, heads, kvHeads, dim, dt, null, true), layers);
        if (dt != ScalarType.Float) {
            row("alt: attention, libtorch's " + dt + " SDPA × " + layers, reps,
                    () -> attention(cache, q4, t, heads, kvHeads, dim, dt, mask, false), layers);
        }
        Layer finalNorm = (Layer) model.getSubmodule("model.norm");
        Layer head = (Layer) model.getSubmodule("lm_head");
        sum += row("final norm + lm_head (" + head.getClass().getSimpleName() + "), last position", reps,
                () -> head.forward(finalNorm.forward(xh.narrow(1, t - 1, 1))), 1);
        System.out.printf("%-52s %10.1f%n", "sum of the op groups above (no alt)", sum);
        System.out.printf("%-52s %10.1f%n", "whole - sum", whole - sum);
    }

    private static Tensor ids(int t) {
        long[] ids = new long[t];
        Arrays.setAll(ids, i -> 1 + 7L * i % 31000);
        return Tensor.create(ids, 1, t);
    }

    private static Tensor prefill(CausalLM lm, SlotKVCache cache, int t) {
        return lm.forwardSlots(ids(t), cache, new int[] {0}, new long[] {0});
    }

    private static Tensor input(long rows, long features, ScalarType dt) {
        try (TensorOptions o = new TensorOptions(dt)) {
            return torch.randn(new long[] {1, rows, features}, o);
        }
    }

    private static Tensor invFreq(ModelConfig c, long dim) {
        double theta = c.getDouble("rope_theta", 10000.0);
        float[] f = new float[(int) dim / 2];
        for (int i = 0; i < f.length; i++) {
            f[i] = (float) (1.0 / Math.pow(theta, 2.0 * i / dim));
        }
        return Tensor.create(f, f.length);
    }

    /** LlamaAttention's RoPE of the prefill ({@code x·cos + rotate_half(x)·sin}) on a [1, heads, t, dim] view. */
    private static Tensor rope(Tensor x, Tensor cos, Tensor sin, long dim) {
        Tensor rotated = torch.cat(new TensorVector(x.narrow(-1, dim / 2, dim / 2).neg(), x.narrow(-1, 0, dim / 2)),
                -1);
        return x.mul(cos).add_(rotated.mul_(sin));
    }

    /** SlotKVCache.writeIndex of slot 0, t new positions from 0. */
    private static Tensor kvIndex(SlotKVCache cache, int t, long kvHeads) {
        long[] idx = new long[(int) (kvHeads * t)];
        int n = 0;
        for (long h = 0; h < kvHeads; h++) {
            for (long i = 0; i < t; i++) {
                idx[n++] = h * cache.maxLength() + i;
            }
        }
        return Tensor.create(idx, idx.length);
    }

    private static Tensor causalMask(int t) {
        Tensor pos = torch.arange(new Scalar(t), new TensorOptions(ScalarType.Long));
        return pos.view(1, t).le(pos.view(t, 1)).view(1, 1, t, t);
    }

    /** Attention over the slot's first t positions, as the prefill runs it: repeated kv heads, a bool mask. */
    private static Tensor attention(SlotKVCache cache, Tensor q, int t, long heads, long kvHeads, long dim,
            ScalarType dt, Tensor mask, boolean inFloat32) {
        Tensor k = cache.keys(0).narrow(0, 0, 1).narrow(2, 0, t);
        Tensor v = cache.values(0).narrow(0, 0, 1).narrow(2, 0, t);
        long g = heads / kvHeads;
        k = k.unsqueeze(2).expand(1, kvHeads, g, t, dim).reshape(1, heads, t, dim);
        v = v.unsqueeze(2).expand(1, kvHeads, g, t, dim).reshape(1, heads, t, dim);
        DoubleOptional scale = new DoubleOptional(1.0 / Math.sqrt(dim));
        TensorOptional m = mask == null ? new TensorOptional() : new TensorOptional(mask);
        boolean causal = mask == null;
        if (inFloat32 && dt != ScalarType.Float) {
            Tensor o = torch.scaled_dot_product_attention(q.to(ScalarType.Float), k.to(ScalarType.Float),
                    v.to(ScalarType.Float), m, 0.0, causal, scale, false);
            return o.to(dt).transpose(1, 2).reshape(1, t, heads * dim);
        }
        return torch.scaled_dot_product_attention(q, k, v, m, 0.0, causal, scale, false)
                .transpose(1, 2).reshape(1, t, heads * dim);
    }

    /**
     * The median over {@code reps} timings (after a warm-up) of {@code f}, times {@code times}; prints and returns it
     * in ms.
     */
    private static double row(String name, int reps, Supplier<Tensor> f, int times) {
        int inner = times == 1 ? 1 : Math.min(times, 10);
        long[] ts = new long[reps];
        time(f, 1);
        for (int i = 0; i < reps; i++) {
            ts[i] = time(f, inner);
        }
        Arrays.sort(ts);
        double ms = ts[reps / 2] / 1e6 / inner * times;
        System.out.printf("%-52s %10.1f%n", name, ms);
        return ms;
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

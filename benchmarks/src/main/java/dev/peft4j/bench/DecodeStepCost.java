package dev.peft4j.bench;

import dev.peft4j.PeftAdapterMixin;
import dev.peft4j.config.InitLoraWeights;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.SlotKVCache;
import dev.peft4j.nn.Module;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * What a one-row decode step costs, base against LoRA in the same rounds: the TinyLlama-shaped Llama of
 * {@link GenerateBench} (or its hollow twin: the same 22 layers and heads, hidden 64, MLP 64, vocab 32, whose step is
 * all overhead beyond reading weights), LoRA r = 16 on q, k, v, o, a slot KV cache holding {@code past} positions,
 * then {@code steps} one-token {@code forwardSlots} steps with greedy argmax, the adapter disabled and enabled
 * alternately (which goes first alternates by round). Prints the medians of ms per step and LoRA / base.
 *
 * <pre>
 * java -Dorg.bytedeco.javacpp.maxPhysicalBytes=0 -cp benchmarks/target/benchmarks.jar dev.peft4j.bench.DecodeStepCost \
 *     [dtype=BFloat16|Float] [model=tinyllama|hollow] [rounds=5] [steps=32] [past=128] [threads=2]
 *     [compare=lora|group] [quantize=none|int8|int4] [head=none|int8|int4] [qlora=fused|separate|both]
 * </pre>
 *
 * <p>{@code quantize}: the blocks' Linears quantized ({@code AutoModel.quantize}) before the adapter is added, so the
 * LoRA runs on a quantized base; {@code head} quantizes {@code lm_head} too. {@code qlora} (compare=lora on a quantized
 * base): the LoRA delta fused into the quantized product ({@code DecodeKernels.quantizedLoraFused()}), run as its own
 * call after it, or {@code both}: base, LoRA fused and LoRA separate alternating in the same rounds (the order rotating
 * by round), with both ratios printed.
 *
 * <p>{@code compare=group} times the step with its projections grouped (q/k/v in one parallel region, gate/up with
 * the activation fused: {@code DecodeKernels.grouped()}) against each projection on its own call, base and LoRA.
 */
public final class DecodeStepCost {
    private DecodeStepCost() {}

    public static void main(String[] args) {
        Map<String, String> a = BenchArgs.parse(args, "dtype", "BFloat16", "model", "tinyllama", "rounds", "5",
                "steps", "32", "past", "128", "threads", "2", "compare", "lora", "quantize", "none", "head", "none",
                "qlora", "fused");
        if (a.get("compare").equals("group")) {
            compareGrouping(a);
            return;
        }
        ScalarType dt = ScalarType.valueOf(a.get("dtype"));
        boolean hollow = a.get("model").equals("hollow");
        int rounds = Integer.parseInt(a.get("rounds"));
        int steps = Integer.parseInt(a.get("steps"));
        int past = Integer.parseInt(a.get("past"));
        int threads = Integer.parseInt(a.get("threads"));
        torch.set_num_threads(threads);
        org.bytedeco.openblas.presets.openblas_nolapack.blas_set_num_threads(threads);
        System.out.println("config: " + a);
        String qlora = a.get("qlora");
        // configurations alternating in each round: base, LoRA (fused or separate as asked), or all three
        String[] names = qlora.equals("both") ? new String[] {"base", "LoRA fused", "LoRA separate"}
                : new String[] {"base", "LoRA"};
        try (Module model = build(a, dt, hollow)) {
            PeftAdapterMixin peft = (PeftAdapterMixin) model;
            peft.addAdapter(LoraConfig.builder().r(16).loraAlpha(32).targetModules("q_proj", "k_proj", "v_proj",
                    "o_proj").initLoraWeights(new InitLoraWeights.Flag(false)).build());
            CausalLM lm = (CausalLM) model;
            List<List<Double>> ms = new ArrayList<>();
            List<List<Double>> pre = new ArrayList<>();
            for (int c = 0; c < names.length; c++) {
                ms.add(new ArrayList<>());
                pre.add(new ArrayList<>());
            }
            try {
                for (int r = -1; r < rounds; r++) { // round -1 warms up
                    for (int i = 0; i < names.length; i++) {
                        int c = Math.floorMod(i + r, names.length);
                        if (c == 0) {
                            peft.disableAdapters();
                        } else {
                            peft.enableAdapters();
                        }
                        dev.peft4j.kernels.DecodeKernels.setQuantizedLoraFused(
                                names.length == 3 ? c != 2 : !qlora.equals("separate"));
                        double[] t = timed(lm, past, steps, hollow ? 32 : 32000);
                        if (r >= 0) {
                            ms.get(c).add(t[0]);
                            pre.get(c).add(t[1]);
                        }
                    }
                }
            } finally {
                dev.peft4j.kernels.DecodeKernels.setQuantizedLoraFused(true);
            }
            double base = GenerateBench.median(ms.get(0));
            String label = dt + " " + a.get("model") + (a.get("quantize").equals("none") ? "" : " " + a.get("quantize"));
            for (int c = 1; c < names.length; c++) {
                double lora = GenerateBench.median(ms.get(c));
                // and the median of the rounds' own ratios (each round's configurations ran back to back)
                List<Double> paired = new ArrayList<>();
                for (int r = 0; r < rounds; r++) {
                    paired.add(ms.get(c).get(r) / ms.get(0).get(r));
                }
                System.out.printf("%s decode ms/step: base %.2f, %s %.2f, %s/base %.3f (median of per-round ratios "
                        + "%.3f)%n", label, base, names[c], lora, names[c], lora / base, GenerateBench.median(paired));
            }
            double basePrefill = GenerateBench.median(pre.get(0));
            for (int c = 1; c < names.length; c++) {
                double p = GenerateBench.median(pre.get(c));
                System.out.printf("%s prefill of %d positions, ms: base %.1f, %s %.1f, %s/base %.3f%n", label, past,
                        basePrefill, names[c], p, names[c], p / basePrefill);
            }
            for (int c = 0; c < names.length; c++) {
                System.out.println("   per round, " + names[c] + " " + ms.get(c) + ", prefill " + pre.get(c));
            }
        }
    }

    /** The model of {@code model=}, its blocks (and with {@code head=} its lm_head) quantized when asked. */
    private static Module build(Map<String, String> a, ScalarType dt, boolean hollow) {
        Module model = hollow ? GenerateBench.build(32, 64, 64, dt) : GenerateBench.build(32000, 2048, 5632, dt);
        String q = a.get("quantize");
        if (!q.equals("none")) {
            String head = a.get("head");
            dev.peft4j.models.AutoModel.quantize((dev.peft4j.models.PreTrainedModel) model,
                    dev.peft4j.kernels.Quantization.parse(q),
                    head.equals("none") ? null : dev.peft4j.kernels.Quantization.parse(head));
        }
        return model;
    }

    /**
     * {@code compare=group}: the step with the projections grouped ({@code DecodeKernels.grouped()}: q/k/v in one
     * region, gate/up with the activation fused) against each projection on its own call, base and LoRA, the four
     * alternating in the same rounds (the order rotating by round).
     */
    private static void compareGrouping(Map<String, String> a) {
        ScalarType dt = ScalarType.valueOf(a.get("dtype"));
        boolean hollow = a.get("model").equals("hollow");
        int rounds = Integer.parseInt(a.get("rounds"));
        int steps = Integer.parseInt(a.get("steps"));
        int past = Integer.parseInt(a.get("past"));
        int threads = Integer.parseInt(a.get("threads"));
        torch.set_num_threads(threads);
        org.bytedeco.openblas.presets.openblas_nolapack.blas_set_num_threads(threads);
        System.out.println("config: " + a);
        String[] names = {"base grouped", "LoRA grouped", "base separate", "LoRA separate"};
        try (Module model = build(a, dt, hollow)) {
            PeftAdapterMixin peft = (PeftAdapterMixin) model;
            peft.addAdapter(LoraConfig.builder().r(16).loraAlpha(32).targetModules("q_proj", "k_proj", "v_proj",
                    "o_proj").initLoraWeights(new InitLoraWeights.Flag(false)).build());
            CausalLM lm = (CausalLM) model;
            List<List<Double>> ms = List.of(new ArrayList<>(), new ArrayList<>(), new ArrayList<>(), new ArrayList<>());
            try {
                for (int r = -1; r < rounds; r++) { // round -1 warms up
                    for (int j = 0; j < 4; j++) {
                        int c = Math.floorMod(j + r, 4);
                        dev.peft4j.kernels.DecodeKernels.setGrouped(c < 2);
                        if (c % 2 == 1) {
                            peft.enableAdapters();
                        } else {
                            peft.disableAdapters();
                        }
                        double t = stepMs(lm, past, steps, hollow ? 32 : 32000);
                        if (r >= 0) {
                            ms.get(c).add(t);
                        }
                    }
                }
            } finally {
                dev.peft4j.kernels.DecodeKernels.setGrouped(true);
            }
            double[] med = new double[4];
            for (int c = 0; c < 4; c++) {
                med[c] = GenerateBench.median(ms.get(c));
                System.out.printf("%s %s decode ms/step, %s: %.2f   per round %s%n", dt, a.get("model"), names[c],
                        med[c], ms.get(c));
            }
            System.out.printf("grouped / separate: base %.3f, LoRA %.3f; LoRA / base grouped %.3f%n", med[0] / med[2],
                    med[1] / med[3], med[1] / med[0]);
        }
    }

    /** Fills a slot with {@code past} positions, then times {@code steps} greedy one-token steps: ms per step. */
    static double stepMs(CausalLM lm, int past, int steps, long vocab) {
        return timed(lm, past, steps, vocab)[0];
    }

    /** {@link #stepMs}, and the prefill of the {@code past} positions: {ms per step, ms of the prefill}. */
    static double[] timed(CausalLM lm, int past, int steps, long vocab) {
        int[] slot = {0};
        try (InferenceMode im = new InferenceMode(); SlotKVCache cache = lm.newSlotCache(1, past + steps + 1);
                PointerScope outer = new PointerScope(); TensorOptions o = new TensorOptions(ScalarType.Long)) {
            torch.manual_seed(7);
            long tok;
            double prefill;
            try (PointerScope s = new PointerScope()) {
                Tensor ids = torch.randint(vocab, new long[] {1, past}, o);
                long p0 = System.nanoTime();
                tok = lm.forwardSlots(ids, cache, slot, new long[] {0}).argmax().item_long();
                prefill = (System.nanoTime() - p0) / 1e6;
            }
            Tensor next = torch.zeros(new long[] {1, 1}, o);
            long t0 = System.nanoTime();
            for (int g = 0; g < steps; g++) {
                next.data_ptr_long().put(0, tok);
                try (PointerScope s = new PointerScope()) {
                    tok = lm.forwardSlots(next, cache, slot, new long[] {past + g}).argmax().item_long();
                }
            }
            return new double[] {(System.nanoTime() - t0) / 1e6 / steps, prefill};
        }
    }
}

package dev.peft4j.bench;

import dev.peft4j.kernels.FusedLoraLinear;
import dev.peft4j.kernels.Kernels;
import dev.peft4j.kernels.Quantization;
import dev.peft4j.kernels.QuantizedWeight;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.KVCache;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Module;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Weight-only quantized decode against bfloat16, in one process, alternating:
 *
 * <ul>
 *   <li>{@code layers}: one Linear at the TinyLlama-1.1B shapes (in x out 2048x2048, 2048x5632, 5632x2048), m = 1 and
 *       16 rows: the bf16 fused kernel ({@link FusedLoraLinear}, no adapter) against {@link QuantizedWeight#linear}
 *       in int8 (Q8_0) and int4 (Q4_0); ms per call and the weight bytes streamed per second.
 *   <li>{@code decode}: the TinyLlama-shaped model of {@link DecodeBench} (hidden 2048, 22 layers, MLP 5632, vocab
 *       32000, random weights), one decode step after a 128-token prompt, bf16 against the same model with its
 *       blocks' Linears quantized to int8 and to int4 ({@code lm_head} and embeddings bf16 in all three).
 * </ul>
 *
 * Each round times every configuration once (a median over {@code reps} calls), in rotating order; the figures are
 * medians over rounds, and the ratios are per round, then their median. 2 threads.
 *
 * <pre>
 * flock /work/notes/bench.lock java -Dorg.bytedeco.javacpp.maxPhysicalBytes=0 -cp benchmarks/target/benchmarks.jar \
 *     dev.peft4j.bench.QuantizedDecode layers|decode|both [rounds]
 * </pre>
 */
public final class QuantizedDecode {
    private QuantizedDecode() {}

    interface Call {
        void run();
    }

    static double medianNanos(Call c, int reps) {
        long[] t = new long[reps];
        for (int i = 0; i < reps; i++) {
            long s = System.nanoTime();
            c.run();
            t[i] = System.nanoTime() - s;
        }
        Arrays.sort(t);
        return t[reps / 2];
    }

    static double median(List<Double> v) {
        double[] a = v.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        return a.length % 2 == 1 ? a[a.length / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
    }

    /** Times configurations in rotating order for {@code rounds} rounds; returns per configuration its per-round ns. */
    static List<List<Double>> alternate(List<Call> calls, int rounds, int reps) {
        List<List<Double>> out = new ArrayList<>();
        for (int i = 0; i < calls.size(); i++) {
            out.add(new ArrayList<>());
            medianNanos(calls.get(i), Math.max(2, reps / 4)); // warm-up
        }
        for (int r = 0; r < rounds; r++) {
            for (int j = 0; j < calls.size(); j++) {
                int i = (j + r) % calls.size();
                out.get(i).add(medianNanos(calls.get(i), reps));
            }
        }
        return out;
    }

    static void layers(int rounds) {
        long[][] shapes = {{2048, 2048}, {2048, 5632}, {5632, 2048}};
        System.out.println("| in x out | m | bf16 fused ms (GB/s) | int8 ms (GB/s) | int4 ms (GB/s) | int8 / bf16 | int4 / bf16 |");
        System.out.println("| --- | --- | --- | --- | --- | --- | --- |");
        for (long[] s : shapes) {
            long in = s[0];
            long out = s[1];
            try (PointerScope scope = new PointerScope(); InferenceMode im = new InferenceMode();
                    TensorOptions f32 = new TensorOptions(ScalarType.Float)) {
                Tensor w = torch.randn(new long[] {out, in}, f32).mul_(new Scalar(0.02));
                Tensor wb = w.to(ScalarType.BFloat16);
                FusedLoraLinear bf = new FusedLoraLinear(wb, null);
                QuantizedWeight q8 = QuantizedWeight.quantize(wb, Quantization.INT8);
                QuantizedWeight q4 = QuantizedWeight.quantize(wb, Quantization.INT4);
                double[] bytes = {2.0 * in * out, in * out + 2.0 * in * out / 32, in * out / 2.0 + 2.0 * in * out / 32};
                for (long m : new long[] {1, 16}) {
                    Tensor x = torch.randn(new long[] {m, in}, f32).to(ScalarType.BFloat16);
                    List<Call> calls = List.of(() -> bf.forward(x).close(), () -> q8.linear(x, null).close(),
                            () -> q4.linear(x, null).close());
                    List<List<Double>> ns = alternate(calls, rounds, 60);
                    double[] med = new double[3];
                    StringBuilder row = new StringBuilder("| " + in + " x " + out + " | " + m + " |");
                    for (int i = 0; i < 3; i++) {
                        med[i] = median(ns.get(i));
                        row.append(String.format(" %.3f (%.1f) |", med[i] / 1e6, bytes[i] / med[i]));
                    }
                    for (int i = 1; i < 3; i++) {
                        List<Double> ratio = new ArrayList<>();
                        for (int r = 0; r < rounds; r++) {
                            ratio.add(ns.get(i).get(r) / ns.get(0).get(r));
                        }
                        row.append(String.format(" %.2f |", median(ratio)));
                    }
                    System.out.println(row);
                }
                bf.close();
            }
        }
    }

    static void decode(int rounds) {
        String[] names = {"bf16", "int8 (Q8_0 blocks)", "int4 (Q4_0 blocks)"};
        Quantization[] qs = {null, Quantization.INT8, Quantization.INT4};
        CausalLM[] lms = new CausalLM[3];
        KVCache[] caches = new KVCache[3];
        Tensor prompt;
        Tensor token;
        try (TensorOptions o = new TensorOptions(ScalarType.Long)) {
            prompt = torch.randint(32000, new long[] {1, DecodeBench.PROMPT}, o);
            token = torch.full(new long[] {1, 1}, new Scalar(7), o);
        }
        for (int i = 0; i < 3; i++) {
            lms[i] = DecodeBench.build(32000, 2048, 5632, ScalarType.BFloat16);
            if (qs[i] != null) {
                AutoModel.quantize((PreTrainedModel) lms[i], qs[i]);
            }
            caches[i] = DecodeBench.prefilled(lms[i], prompt);
        }
        List<Call> calls = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            CausalLM lm = lms[i];
            KVCache cache = caches[i];
            calls.add(() -> {
                try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
                    lm.forward(token, null, null, cache);
                    cache.truncate(DecodeBench.PROMPT);
                }
            });
        }
        List<List<Double>> ns = alternate(calls, rounds, 8);
        System.out.println("| TinyLlama shape, decode step at position 128 | ms / token | / bf16 |");
        System.out.println("| --- | --- | --- |");
        for (int i = 0; i < 3; i++) {
            List<Double> ratio = new ArrayList<>();
            for (int r = 0; r < rounds; r++) {
                ratio.add(ns.get(i).get(r) / ns.get(0).get(r));
            }
            System.out.printf("| %s | %.1f | %.2f |%n", names[i], median(ns.get(i)) / 1e6, median(ratio));
        }
        for (int i = 0; i < 3; i++) {
            caches[i].close();
            ((Module) lms[i]).close();
        }
    }

    public static void main(String[] args) {
        String what = args.length > 0 ? args[0] : "both";
        int rounds = args.length > 1 ? Integer.parseInt(args[1]) : 5;
        torch.set_num_threads(2);
        org.bytedeco.openblas.presets.openblas_nolapack.blas_set_num_threads(2);
        System.out.println("ISA " + Kernels.activeIsa() + ", quantized path " + QuantizedWeight.activePath()
                + ", threads " + torch.get_num_threads() + ", " + rounds + " rounds");
        if (!what.equals("decode")) {
            layers(rounds);
        }
        if (!what.equals("layers")) {
            decode(rounds);
        }
    }
}

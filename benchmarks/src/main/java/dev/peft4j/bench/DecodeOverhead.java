package dev.peft4j.bench;

import dev.peft4j.models.CausalLM;
import dev.peft4j.models.KVCache;
import dev.peft4j.nn.Module;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Decode steps of the TinyLlama-shaped model of {@link DecodeBench}, for ~{@code seconds}, run under Java Flight
 * Recorder to measure where the decoding thread spends its time: JFR samples it either executing Java code
 * ({@code jdk.ExecutionSample}) or inside a native method ({@code jdk.NativeMethodSample}: libtorch, our kernels).
 * With both sampled at the same period, the share of Java samples is the share of a decode step spent in Java.
 *
 * <pre>
 * java -XX:StartFlightRecording:filename=/tmp/decode.jfr,jdk.ExecutionSample#period=10ms,jdk.NativeMethodSample#period=10ms \
 *   -Dorg.bytedeco.javacpp.maxPhysicalBytes=0 -cp benchmarks/target/benchmarks.jar dev.peft4j.bench.DecodeOverhead BFloat16 60
 * jfr summary /tmp/decode.jfr | grep -E 'ExecutionSample|NativeMethodSample'
 * </pre>
 */
public final class DecodeOverhead {
    private DecodeOverhead() {}

    public static void main(String[] args) {
        ScalarType dt = ScalarType.valueOf(args.length > 0 ? args[0] : "BFloat16");
        long seconds = args.length > 1 ? Long.parseLong(args[1]) : 60;
        torch.set_num_threads(2);
        org.bytedeco.openblas.presets.openblas_nolapack.blas_set_num_threads(2);
        CausalLM lm = DecodeBench.build(32000, 2048, 5632, dt);
        Tensor prompt;
        Tensor token;
        try (TensorOptions o = new TensorOptions(ScalarType.Long)) {
            prompt = torch.randint(32000, new long[] {1, DecodeBench.PROMPT}, o);
            token = torch.full(new long[] {1, 1}, new Scalar(7), o);
        }
        KVCache cache = DecodeBench.prefilled(lm, prompt);
        long steps = 0;
        long start = System.nanoTime();
        long end = start + seconds * 1_000_000_000L;
        while (System.nanoTime() < end) {
            try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
                lm.forward(token, null, null, cache);
                cache.truncate(DecodeBench.PROMPT);
            }
            steps++;
        }
        System.out.printf("%s: %d decode steps, %.1f ms/step (wall, this machine under its current load)%n", dt, steps,
                (System.nanoTime() - start) / 1e6 / steps);
        cache.close();
        ((Module) lm).close();
    }
}

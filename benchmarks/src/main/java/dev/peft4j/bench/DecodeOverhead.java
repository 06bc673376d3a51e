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
 * Decode steps of the TinyLlama-shaped model of {@link DecodeBench}, for {@code seconds}, under an in-process Java
 * Flight Recorder recording, to measure where the decoding thread spends its time. Every 10 ms JFR takes an
 * execution sample of threads that are running Java code ({@code jdk.ExecutionSample}; few threads run Java here, so
 * the decoding thread is sampled whenever it is in Java). The Java share of a decode step is therefore about
 * (execution samples of the decoding thread during the loop) / (loop time / 10 ms); the rest is native: libtorch
 * (including its dispatcher) and our kernels.
 *
 * <pre>
 * java -Dorg.bytedeco.javacpp.maxPhysicalBytes=0 -cp benchmarks/target/benchmarks.jar dev.peft4j.bench.DecodeOverhead BFloat16 40
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
        jdk.jfr.Recording rec = new jdk.jfr.Recording();
        rec.enable("jdk.ExecutionSample").withPeriod(java.time.Duration.ofMillis(10));
        rec.enable("jdk.NativeMethodSample").withPeriod(java.time.Duration.ofMillis(10));
        rec.start();
        java.time.Instant loopStart = java.time.Instant.now();
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
        long loopNanos = System.nanoTime() - start;
        java.time.Instant loopEnd = java.time.Instant.now();
        rec.stop();
        long javaSamples = 0;
        long nativeSamples = 0;
        try {
            java.nio.file.Path file = java.nio.file.Files.createTempFile("decode", ".jfr");
            rec.dump(file);
            for (jdk.jfr.consumer.RecordedEvent e : jdk.jfr.consumer.RecordingFile.readAllEvents(file)) {
                jdk.jfr.consumer.RecordedThread t = e.getThread("sampledThread");
                if (t == null || !"main".equals(t.getJavaName()) || e.getStartTime().isBefore(loopStart)
                        || e.getStartTime().isAfter(loopEnd)) {
                    continue;
                }
                if (e.getEventType().getName().equals("jdk.ExecutionSample")) {
                    javaSamples++;
                } else {
                    nativeSamples++;
                }
            }
            java.nio.file.Files.delete(file);
        } catch (java.io.IOException ex) {
            throw new java.io.UncheckedIOException(ex);
        }
        rec.close();
        long ticks = loopNanos / 10_000_000L;
        System.out.printf("%s: %d decode steps, %.1f ms/step (wall, this machine under its current load)%n", dt, steps,
                loopNanos / 1e6 / steps);
        System.out.printf("decoding thread: %d Java execution samples in %d ticks of 10 ms (%d native-method samples):"
                + " Java share of a decode step ≈ %.3f%%%n", javaSamples, ticks, nativeSamples, 100.0 * javaSamples / ticks);
        cache.close();
        ((Module) lm).close();
    }
}

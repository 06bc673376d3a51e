package dev.peft4j.bench;

import dev.peft4j.kernels.Kernels;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Linear;
import dev.peft4j.tuners.lora.DoraMagnitude;
import dev.peft4j.tuners.lora.LoraLayer;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.bytedeco.pytorch.GradMode;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * DoRA against plain LoRA on the fused decode path, through {@link LoraLayer#forward} in inference (autograd off):
 * K = N = 4096, one adapter of rank 16, the same weights, the DoRA layer with a magnitude vector. DoRA's factor
 * {@code m / ‖W + s·B·A‖} is cached (recomputed only when a tensor changes), so per call it adds the version-counter
 * checks and one multiply per output in the kernel's write. {@code pairedLoraVsDora} times both back to back:
 * {@code :candidateNs / :baselineNs} is DoRA's cost relative to plain LoRA.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 2, time = 1)
@Measurement(iterations = 4, time = 1)
@Fork(value = 1, jvmArgsAppend = {"-Dorg.bytedeco.javacpp.maxPhysicalBytes=0"})
public class DoraFusedBench {
    @Param({"1", "16"})
    public int m;

    @Param({"Float", "BFloat16"})
    public String dtype;

    /** Distinct layers cycled through, so each call streams its weight from DRAM (see FusedLoraLinearBench). */
    @Param({"4"})
    public int weights;

    private static final int K = 4096;
    private static final int N = 4096;
    private static final int R = 16;

    private Tensor x;
    private LoraLayer[] lora;
    private LoraLayer[] dora;
    private WeightCycle loraCycle;
    private WeightCycle doraCycle;

    private static LoraLayer layer(Tensor w, Tensor a, Tensor b, Tensor m, ScalarType dt) {
        Linear base = new Linear(K, N, false, Init.cpu(dt));
        Linear la = new Linear(K, R, false, Init.cpu(dt));
        Linear lb = new Linear(R, N, false, Init.cpu(dt));
        try (NoGradGuard g = new NoGradGuard()) {
            base.weight().copy_(w);
            la.weight().copy_(a);
            lb.weight().copy_(b);
        }
        LoraLayer l = new LoraLayer(base);
        l.addAdapter("default", la, lb, 2.0, 0.0, m == null ? null : new DoraMagnitude(m.clone(), false));
        l.setAdapter(List.of("default"));
        l.eval();
        return l;
    }

    @Setup
    public void setup() {
        ScalarType dt = ScalarType.valueOf(dtype);
        torch.manual_seed(0);
        x = torch.randn(m, K).to(dt);
        Tensor a = torch.randn(R, K).mul_(new Scalar(1.0 / Math.sqrt(K))).to(dt);
        Tensor b = torch.randn(N, R).mul_(new Scalar(0.01)).to(dt);
        Tensor mag = torch.rand(N).add_(new Scalar(0.5)).to(dt);
        lora = new LoraLayer[weights];
        dora = new LoraLayer[weights];
        for (int i = 0; i < weights; i++) {
            Tensor w = torch.randn(N, K).mul_(new Scalar(1.0 / Math.sqrt(K))).to(dt);
            lora[i] = layer(w, a, b, null, dt);
            dora[i] = layer(w, a, b, mag, dt);
            w.close();
        }
        loraCycle = new WeightCycle(weights, 0);
        doraCycle = new WeightCycle(weights, weights / 2);
    }

    /** The worker thread's grad mode (thread-local): off, as in the project's inference entry points. */
    @Setup(Level.Iteration)
    public void noGrad() {
        GradMode.set_enabled(false);
        long before = Kernels.layerCalls();
        lora[0].forward(x).close();
        dora[0].forward(x).close();
        if (Kernels.layerCalls() - before != 2) {
            throw new IllegalStateException("the layers did not take the fused path: the figures would not be DoRA's");
        }
    }

    @TearDown
    public void tearDown() {
        for (int i = 0; i < weights; i++) {
            lora[i].close();
            dora[i].close();
        }
    }

    @Benchmark
    public void loraFused() {
        lora[loraCycle.next()].forward(x).close();
    }

    @Benchmark
    public void doraFused() {
        dora[doraCycle.next()].forward(x).close();
    }

    /**
     * Per-pair ratios of one iteration: their median (and quartiles) is printed at its end. On a loaded machine a
     * descheduled call skews a sum ({@link PairedNanos}) but not the median of back-to-back pairs.
     */
    @State(Scope.Thread)
    public static class PairRatios {
        private double[] ratios = new double[1 << 12];
        private int n;
        private boolean doraFirst;

        @Setup(Level.Iteration)
        public void reset() {
            n = 0;
        }

        void add(double r) {
            if (n == ratios.length) {
                ratios = java.util.Arrays.copyOf(ratios, 2 * n);
            }
            ratios[n++] = r;
        }

        @TearDown(Level.Iteration)
        public void report() {
            if (n > 0) {
                double[] s = java.util.Arrays.copyOf(ratios, n);
                java.util.Arrays.sort(s);
                System.out.printf("pairs: %d, DoRA / LoRA median %.4f (quartiles %.4f, %.4f)%n", n, s[n / 2],
                        s[n / 4], s[3 * n / 4]);
            }
        }
    }

    /** Plain LoRA and DoRA back to back, alternating which goes first; the per-pair ratio goes to {@code p}. */
    @Benchmark
    public void pairedMedian(PairRatios p) {
        p.doraFirst = !p.doraFirst;
        long t0 = System.nanoTime();
        if (p.doraFirst) {
            doraFused();
        } else {
            loraFused();
        }
        long t1 = System.nanoTime();
        if (p.doraFirst) {
            loraFused();
        } else {
            doraFused();
        }
        long t2 = System.nanoTime();
        p.add(p.doraFirst ? (double) (t1 - t0) / (t2 - t1) : (double) (t2 - t1) / (t1 - t0));
    }

    /** Plain LoRA (baseline) and DoRA (candidate) back to back, alternating which goes first. */
    @Benchmark
    public void pairedLoraVsDora(PairedNanos t) {
        t.time(this::loraFused, this::doraFused);
    }
}

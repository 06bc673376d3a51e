package dev.peft4j.bench;

import dev.peft4j.kernels.FusedLoraLinear;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
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
 * A decode-sized adapted Linear (K = N = 4096, one LoRA adapter of rank 16) three ways, in one run:
 * libtorch's {@code linear} of the base layer alone (the baseline), PEFT's composed path
 * ({@code linear(x,W) + s·linear(linear(x,A),B)}), and peft4j's fused native kernel. libtorch and the
 * kernel both use libtorch's thread count (2 here).
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"-Dorg.bytedeco.javacpp.maxPhysicalBytes=0"})
public class FusedLoraLinearBench {
    @Param({"1", "4", "16"})
    public int m;

    @Param({"Float", "BFloat16"})
    public String dtype;

    /**
     * Distinct base weights cycled through call by call: 1 lets a weight that fits the last-level cache (bf16 4096²
     * is 32 MiB) stay partly cached between calls; 4 makes every call stream its weight from DRAM, as a decode step
     * through many layers does.
     */
    @Param({"1", "4"})
    public int weights;

    private static final int K = 4096;
    private static final int N = 4096;
    private static final int R = 16;

    private Tensor x;
    private Tensor[] w;
    private Tensor a;
    private Tensor b;
    private Scalar scale;
    private FusedLoraLinear[] fused;
    private WeightCycle baseCycle;
    private WeightCycle composedCycle;
    private WeightCycle fusedCycle;

    @Setup
    public void setup() {
        ScalarType dt = ScalarType.valueOf(dtype);
        torch.manual_seed(0);
        x = torch.randn(m, K).to(dt);
        a = torch.randn(R, K).mul_(new Scalar(1.0 / Math.sqrt(K))).to(dt);
        b = torch.randn(N, R).mul_(new Scalar(0.01)).to(dt);
        scale = new Scalar(2.0f);
        w = new Tensor[weights];
        baseCycle = new WeightCycle(weights, 0);
        composedCycle = new WeightCycle(weights, 0);
        fusedCycle = new WeightCycle(weights, weights / 2);
        fused = new FusedLoraLinear[weights];
        for (int i = 0; i < weights; i++) {
            w[i] = torch.randn(N, K).mul_(new Scalar(1.0 / Math.sqrt(K))).to(dt);
            fused[i] = new FusedLoraLinear(w[i], null);
            fused[i].setAdapters(List.of(new FusedLoraLinear.Adapter(a, b, 2.0f)));
        }
    }

    @TearDown
    public void tearDown() {
        for (FusedLoraLinear f : fused) {
            f.close();
        }
    }

    @Benchmark
    public void libtorchBaseLinear() {
        torch.linear(x, w[baseCycle.next()]).close();
    }

    @Benchmark
    public void peftComposed() {
        Tensor y = torch.linear(x, w[composedCycle.next()]);
        Tensor t = torch.linear(x, a);
        Tensor d = torch.linear(t, b);
        y.add_(d, scale);
        d.close();
        t.close();
        y.close();
    }

    @Benchmark
    public void peft4jFused() {
        fused[fusedCycle.next()].forward(x).close();
    }

    /**
     * libtorch's base and the fused layer back to back in one loop (see {@link PairedNanos}): the ratio of
     * {@code :candidateNs} to {@code :baselineNs}. Each path takes the next of its own cycle of weights
     * ({@link WeightCycle}), so both stream all of them.
     */
    @Benchmark
    public void pairedBaseVsFused(PairedNanos t) {
        t.time(this::libtorchBaseLinear, this::peft4jFused);
    }

    /**
     * base, base, fused, fused, base in one call, each timed into {@link TransitionNanos} by what preceded it (the
     * first base follows the previous call's last): whether either path pays for following the other, which a
     * paired ratio would fold in. Each counter gets two calls' worth per invocation.
     */
    @Benchmark
    public void transitions(TransitionNanos t) {
        long t0 = System.nanoTime();
        libtorchBaseLinear();
        long t1 = System.nanoTime();
        libtorchBaseLinear();
        long t2 = System.nanoTime();
        peft4jFused();
        long t3 = System.nanoTime();
        peft4jFused();
        long t4 = System.nanoTime();
        libtorchBaseLinear();
        long t5 = System.nanoTime();
        t.baseAfterBase += (t1 - t0) + (t2 - t1);
        t.fusedAfterBase += 2 * (t3 - t2);
        t.fusedAfterFused += 2 * (t4 - t3);
        t.baseAfterFused += 2 * (t5 - t4);
    }
}

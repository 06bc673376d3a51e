package dev.peft4j.bench;

import dev.peft4j.kernels.FusedLoraLinear;
import dev.peft4j.kernels.LoraDelta;
import java.util.ArrayList;
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
 * A mixed decode batch (K = N = 4096, 16 rows spread over 8 LoRA adapters of rank 16, two rows each), in one run:
 * the fused decode kernel with a per-row adapter index ({@code mixedFused}), the same 16 rows all on one adapter
 * ({@code oneAdapterFused}, the baseline: target mixed / one ≤ 1.05), the prefill path (libtorch base GEMM + the
 * native delta) mixed and on one adapter, and PEFT's per-adapter loop of composed ops
 * ({@code _mixed_batch_forward}: index_select, two linears, scale, index_add per adapter). With
 * {@code weights=4} each call takes the next of 4 distinct base weights, so the weight streams from DRAM as in a
 * decode step through many layers; with 1 a bf16 weight (32 MiB, the L3's size) partly stays cached, and the
 * adapters' extra 1.75 MiB evict more of it on the mixed path than on the single-adapter one.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 2, time = 1)
@Measurement(iterations = 3, time = 1)
@Fork(value = 1, jvmArgsAppend = {"-Dorg.bytedeco.javacpp.maxPhysicalBytes=0"})
public class MixedBatchBench {
    @Param({"Float", "BFloat16"})
    public String dtype;

    @Param({"1", "4"})
    public int weights;

    private static final int K = 4096;
    private static final int N = 4096;
    private static final int R = 16;
    private static final int M = 16;
    private static final int ADAPTERS = 8;

    private Tensor x;
    private Tensor[] ws;
    private WeightCycle oneCycle;
    private WeightCycle mixedCycle;
    private WeightCycle otherCycle;
    private final List<FusedLoraLinear.Adapter> all = new ArrayList<>();
    private final List<Tensor> rowIndex = new ArrayList<>();
    private Scalar scale;
    private FusedLoraLinear[] mixed;
    private FusedLoraLinear[] one;
    private final int[] rowSlot = new int[M];
    private final int[] allZero = new int[M];

    @Setup
    public void setup() {
        ScalarType dt = ScalarType.valueOf(dtype);
        torch.manual_seed(0);
        x = torch.randn(M, K).to(dt);
        ws = new Tensor[weights];
        for (int i = 0; i < weights; i++) {
            ws[i] = torch.randn(N, K).mul_(new Scalar(1.0 / Math.sqrt(K))).to(dt);
        }
        for (int i = 0; i < ADAPTERS; i++) {
            Tensor a = torch.randn(R, K).mul_(new Scalar(1.0 / Math.sqrt(K))).to(dt);
            Tensor b = torch.randn(N, R).mul_(new Scalar(0.01)).to(dt);
            all.add(new FusedLoraLinear.Adapter(a, b, 2.0f));
        }
        for (int i = 0; i < M; i++) {
            rowSlot[i] = i % ADAPTERS;
        }
        for (int s = 0; s < ADAPTERS; s++) {
            rowIndex.add(Tensor.create(new long[] {s, s + ADAPTERS}, 2));
        }
        scale = new Scalar(2.0f);
        oneCycle = new WeightCycle(weights, 0);
        mixedCycle = new WeightCycle(weights, weights / 2);
        otherCycle = new WeightCycle(weights, 0);
        mixed = new FusedLoraLinear[weights];
        one = new FusedLoraLinear[weights];
        for (int i = 0; i < weights; i++) {
            mixed[i] = new FusedLoraLinear(ws[i], null);
            mixed[i].setAdapters(all);
            one[i] = new FusedLoraLinear(ws[i], null);
            one[i].setAdapters(List.of(all.get(0)));
        }
    }

    @TearDown
    public void tearDown() {
        for (int i = 0; i < weights; i++) {
            mixed[i].close();
            one[i].close();
        }
    }

    @Benchmark
    public void mixedFused() {
        mixed[mixedCycle.next()].forward(x, rowSlot).close();
    }

    @Benchmark
    public void oneAdapterFused() {
        one[oneCycle.next()].forward(x, allZero).close();
    }

    /** The same rows on one adapter, then over 8, back to back in one loop (see {@link PairedNanos}). */
    @Benchmark
    public void pairedOneVsMixed(PairedNanos t) {
        t.time(this::oneAdapterFused, this::mixedFused);
    }

    @Benchmark
    public void mixedPrefillPath() {
        LoraDelta.linear(x, ws[otherCycle.next()], null, all, rowSlot).close();
    }

    @Benchmark
    public void oneAdapterPrefillPath() {
        LoraDelta.linear(x, ws[otherCycle.next()], null, all, allZero).close();
    }

    @Benchmark
    public void peftComposedLoop() {
        Tensor y = torch.linear(x, ws[otherCycle.next()]);
        for (int s = 0; s < ADAPTERS; s++) {
            Tensor idx = rowIndex.get(s);
            FusedLoraLinear.Adapter ad = all.get(s);
            Tensor sub = x.index_select(0, idx);
            Tensor t = torch.linear(sub, ad.a());
            Tensor d = torch.linear(t, ad.b());
            d.mul_(scale);
            y.index_add_(0, idx, d);
            sub.close();
            t.close();
            d.close();
        }
        y.close();
    }
}

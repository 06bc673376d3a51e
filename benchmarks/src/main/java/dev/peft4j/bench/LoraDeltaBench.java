package dev.peft4j.bench;

import dev.peft4j.kernels.FusedLoraLinear;
import dev.peft4j.kernels.LoraDelta;
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
 * Prefill-sized adapted Linear (K = N = 4096, one LoRA adapter of rank 16), in one run: libtorch's base
 * {@code linear} alone (the baseline), peft4j's adapted layer (libtorch's base GEMM + the native delta added in
 * place, {@link LoraDelta#linear}) and PEFT's composed path ({@code linear(x,W) + s·linear(linear(x,A),B)}).
 * Target: adapted / base ≤ 1.03; {@code peft4jDeltaOnly} times the native delta alone (the adapted layer's
 * overhead, measurable on a noisy machine where two 100 ms GEMMs are not). libtorch and the kernel use libtorch's
 * thread count. {@code pairedBaseVsAdapted} times the two back to back in one loop (see {@link PairedNanos}): on
 * this shared machine the ratio from separate forks drifts by more than the 1-3 % being measured.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 2, time = 1)
@Measurement(iterations = 3, time = 1)
@Fork(value = 1, jvmArgsAppend = {"-Dorg.bytedeco.javacpp.maxPhysicalBytes=0"})
public class LoraDeltaBench {
    @Param({"128", "512"})
    public int m;

    @Param({"Float", "BFloat16"})
    public String dtype;

    private static final int K = 4096;
    private static final int N = 4096;
    private static final int R = 16;

    private Tensor x;
    private Tensor w;
    private Tensor a;
    private Tensor b;
    private Scalar scale;
    private List<FusedLoraLinear.Adapter> slots;
    private LoraDelta.Slots checkedSlots; // as an adapted layer holds them: checked once, not per call
    private Tensor y;

    @Setup
    public void setup() {
        ScalarType dt = ScalarType.valueOf(dtype);
        torch.manual_seed(0);
        x = torch.randn(m, K).to(dt);
        w = torch.randn(N, K).mul_(new Scalar(1.0 / Math.sqrt(K))).to(dt);
        a = torch.randn(R, K).mul_(new Scalar(1.0 / Math.sqrt(K))).to(dt);
        b = torch.randn(N, R).mul_(new Scalar(0.01)).to(dt);
        scale = new Scalar(2.0f);
        slots = List.of(new FusedLoraLinear.Adapter(a, b, 2.0f));
        checkedSlots = LoraDelta.Slots.of(slots, K, N, dt);
        y = torch.zeros(m, N).to(dt);
    }

    @Benchmark
    public void libtorchBaseLinear() {
        torch.linear(x, w).close();
    }

    @Benchmark
    public void peftComposed() {
        Tensor y = torch.linear(x, w);
        Tensor t = torch.linear(x, a);
        Tensor d = torch.linear(t, b);
        y.add_(d, scale);
        d.close();
        t.close();
        y.close();
    }

    /** The native delta alone, added into a preallocated output: the adapted layer's overhead over the base. */
    @Benchmark
    public void peft4jDeltaOnly() {
        LoraDelta.apply(y, x, checkedSlots, null);
    }

    @Benchmark
    public void peft4jAdapted() {
        LoraDelta.linear(x, w, null, checkedSlots, null).close();
    }

    /** Base and adapted back to back in one loop: the ratio of {@code :candidateNs} to {@code :baselineNs}. */
    @Benchmark
    public void pairedBaseVsAdapted(PairedNanos t) {
        t.time(this::libtorchBaseLinear, this::peft4jAdapted);
    }

    /** Base and PEFT's composed ops back to back, the same way: where peft4j's delta stands against libtorch's. */
    @Benchmark
    public void pairedBaseVsComposed(PairedNanos t) {
        t.time(this::libtorchBaseLinear, this::peftComposed);
    }

    private Tensor wT;

    /**
     * libtorch's GEMM accumulating into an existing output ({@code y.addmm_(x, Wᵀ)}, beta = 1): what the base would
     * cost if the delta were written first and libtorch added the base into it.
     */
    @Benchmark
    public void addmmAccumulate() {
        if (wT == null) {
            wT = w.t();
        }
        y.addmm_(x, wT);
    }

    /** Base {@code linear} and the accumulating {@code addmm_} back to back (see {@link PairedNanos}). */
    @Benchmark
    public void pairedBaseVsAddmmAccumulate(PairedNanos t) {
        t.time(this::libtorchBaseLinear, this::addmmAccumulate);
    }


    /**
     * libtorch's base GEMM, then the delta added into its output as an adapted layer does ({@code NativeLinear}:
     * the layer's own base forward, then {@link LoraDelta#apply} with slots checked once), each timed on its own:
     * {@code :deltaNs / :baseNs} is the adapted layer's overhead with the caches as a forward leaves them (the GEMM
     * streamed the weight through all of them), without the GEMM's run-to-run spread in the figure.
     */
    @Benchmark
    public void splitBaseThenDelta(SplitNanos t) {
        long t0 = System.nanoTime();
        Tensor out = torch.linear(x, w);
        long t1 = System.nanoTime();
        LoraDelta.apply(out, x, checkedSlots, null);
        long t2 = System.nanoTime();
        out.close();
        t.baseNs += t1 - t0;
        t.deltaNs += t2 - t1;
    }

    /**
     * As {@link #splitBaseThenDelta}, with the adapters checked on every call ({@link LoraDelta#apply(Tensor, Tensor,
     * List, int[])}, the list form): the difference between the two splits is what checking them once saves right
     * after a GEMM.
     */
    @Benchmark
    public void splitBaseThenDeltaCheckedPerCall(SplitNanos t) {
        long t0 = System.nanoTime();
        Tensor out = torch.linear(x, w);
        long t1 = System.nanoTime();
        LoraDelta.apply(out, x, slots, null);
        long t2 = System.nanoTime();
        out.close();
        t.baseNs += t1 - t0;
        t.deltaNs += t2 - t1;
    }
}

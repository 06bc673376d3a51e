package dev.peft4j.bench;

import dev.peft4j.kernels.MergeKernels;
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
 * Merge then unmerge a rank-16 LoRA adapter into a 4096 x 4096 weight, in one run: peft4j's in-place kernel (one
 * read and write of W each way, no temporary the size of W) against the composed {@code W.add_(B.mm(A).mul(s))}
 * then {@code sub_}. Target: peft4j / composed ≤ 0.7.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 2, time = 1)
@Measurement(iterations = 3, time = 1)
@Fork(value = 1, jvmArgsAppend = {"-Dorg.bytedeco.javacpp.maxPhysicalBytes=0"})
public class MergeBench {
    @Param({"Float", "BFloat16"})
    public String dtype;

    private static final int K = 4096;
    private static final int N = 4096;
    private static final int R = 16;

    private Tensor w;
    private Tensor a;
    private Tensor b;
    private Scalar scale;

    @Setup
    public void setup() {
        ScalarType dt = ScalarType.valueOf(dtype);
        torch.manual_seed(0);
        w = torch.randn(N, K).mul_(new Scalar(1.0 / Math.sqrt(K))).to(dt);
        a = torch.randn(R, K).mul_(new Scalar(1.0 / Math.sqrt(K))).to(dt);
        b = torch.randn(N, R).mul_(new Scalar(0.01)).to(dt);
        scale = new Scalar(2.0);
    }

    @Benchmark
    public void composedMergeUnmerge() {
        Tensor ba = b.mm(a);
        Tensor d = ba.mul(scale);
        w.add_(d);
        d.close();
        ba.close();
        Tensor ba2 = b.mm(a);
        Tensor d2 = ba2.mul(scale);
        w.sub_(d2);
        d2.close();
        ba2.close();
    }

    @Benchmark
    public void peft4jMergeUnmerge() {
        MergeKernels.mergeLora(w, a, b, 2.0, false, 1);
        MergeKernels.mergeLora(w, a, b, 2.0, false, -1);
    }
}

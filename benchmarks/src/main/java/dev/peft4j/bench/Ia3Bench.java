package dev.peft4j.bench;

import dev.peft4j.kernels.Ia3Kernel;
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
 * An IA3 feed-forward Linear (K = N = 4096, two active vectors), in one run: libtorch's base {@code linear}
 * (baseline), peft4j's {@link Ia3Kernel} (vectors folded once; scaling fused into the decode kernel's read of x,
 * or one native pass for prefill) and the composed path ({@code l1·l2} per call, {@code x.mul(l)}, {@code linear}).
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 2, time = 1)
@Measurement(iterations = 3, time = 1)
@Fork(value = 1, jvmArgsAppend = {"-Dorg.bytedeco.javacpp.maxPhysicalBytes=0"})
public class Ia3Bench {
    @Param({"1", "512"})
    public int m;

    @Param({"Float", "BFloat16"})
    public String dtype;

    private static final int K = 4096;
    private static final int N = 4096;

    private Tensor x;
    private Tensor w;
    private Tensor l1;
    private Tensor l2;
    private Ia3Kernel kernel;

    @Setup
    public void setup() {
        ScalarType dt = ScalarType.valueOf(dtype);
        torch.manual_seed(0);
        x = torch.randn(m, K).to(dt);
        w = torch.randn(N, K).mul_(new Scalar(1.0 / Math.sqrt(K))).to(dt);
        l1 = torch.rand(1, K).to(dt);
        l2 = torch.rand(1, K).to(dt);
        kernel = new Ia3Kernel(w, null, true);
        kernel.setActive(List.of(l1, l2));
    }

    @TearDown
    public void tearDown() {
        kernel.close();
    }

    @Benchmark
    public void libtorchBaseLinear() {
        torch.linear(x, w).close();
    }

    @Benchmark
    public void composed() {
        Tensor f1 = l1.flatten();
        Tensor f2 = l2.flatten();
        Tensor l = f1.mul(f2);
        Tensor xs = x.mul(l);
        torch.linear(xs, w).close();
        xs.close();
        l.close();
        f1.close();
        f2.close();
    }

    @Benchmark
    public void peft4jIa3() {
        kernel.forward(x).close();
    }
}

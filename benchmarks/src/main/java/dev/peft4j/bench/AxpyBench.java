package dev.peft4j.bench;

import dev.peft4j.kernels.Kernels;
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
 * peft4j's native {@code y += a*x} against libtorch's {@code y.add_(x, a)} on the same tensors, in one
 * run. Both single-threaded (our kernel is; libtorch pinned with set_num_threads(1)) so the ratio
 * compares code, not thread counts.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"-Dorg.bytedeco.javacpp.maxPhysicalBytes=0"})
public class AxpyBench {
    @Param({"4096", "1048576", "16777216"})
    public int n;

    @Param({"Float", "BFloat16"})
    public String dtype;

    private Tensor x;
    private Tensor y;
    private Scalar alpha;

    @Setup
    public void setup() {
        torch.set_num_threads(1);
        ScalarType dt = ScalarType.valueOf(dtype);
        x = torch.randn(n).to(dt);
        y = torch.randn(n).to(dt);
        alpha = new Scalar(1e-3f);
    }

    @TearDown
    public void tearDown() {
        x.close();
        y.close();
        alpha.close();
    }

    @Benchmark
    public void peft4jAxpy() {
        Kernels.axpy(y, x, 1e-3f);
    }

    @Benchmark
    public void libtorchAdd() {
        // add_ returns y's own Java object (JavaCPP hands back `this` for a returned *this): never close it
        y.add_(x, alpha);
    }
}

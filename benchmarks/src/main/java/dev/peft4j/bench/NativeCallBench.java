package dev.peft4j.bench;

import dev.peft4j.kernels.Kernels;
import java.util.concurrent.TimeUnit;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.CompilerControl;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.Warmup;

/**
 * The fixed cost of one call into peft4j's native layer, beside a Java call that is not inlined
 * (the floor) and the cheapest libtorch call from Java (a JavaCPP call that reads a tensor's rank).
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"-Dorg.bytedeco.javacpp.maxPhysicalBytes=0"})
public class NativeCallBench {
    private Tensor t;

    @Setup
    public void setup() {
        t = torch.zeros(4);
        Kernels.noop(); // load the native layer outside the measurement
    }

    @CompilerControl(CompilerControl.Mode.DONT_INLINE)
    private static void javaEmpty() {}

    @Benchmark
    public void javaCallNotInlined() {
        javaEmpty();
    }

    @Benchmark
    public void peft4jNativeNoop() {
        Kernels.noop();
    }

    @Benchmark
    public long libtorchTensorDim() {
        return t.dim();
    }
}

package dev.peft4j.bench;

import java.util.concurrent.TimeUnit;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * The machine's read bandwidth, the yardstick of the decode kernels' GB/s: libtorch's multithreaded {@code sum} over
 * a float32 tensor 8× the last-level cache (256 MiB), so every byte comes from DRAM. GB/s = 268.4 MB / score.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"-Dorg.bytedeco.javacpp.maxPhysicalBytes=0"})
public class ReadBandwidthBench {
    private static final long BYTES = 256L << 20;
    private Tensor t;

    @Setup
    public void setup() {
        t = torch.ones(BYTES / 4);
    }

    @TearDown
    public void tearDown() {
        t.close();
    }

    @Benchmark
    public void sum256MiB() {
        t.sum().close();
    }
}

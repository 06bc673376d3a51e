package dev.peft4j.bench;

import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.io.TensorInfo;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
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
 * safetensors I/O on a file of {@code sizeMiB} MiB holding 64 float32 tensors (written once in setup to
 * a temp dir): opening it memory-mapped and getting every tensor, against reading every tensor into
 * heap arrays; and writing it (atomic, fsynced) against {@code dd if=/dev/zero bs=16M conv=fsync} of
 * the same size into the same directory, in the same run. The file is in the page cache for the
 * reads (it was just written): both read paths run warm.
 */
@State(Scope.Benchmark)
@Fork(value = 1, jvmArgsAppend = {"-Xmx3g", "-Dorg.bytedeco.javacpp.maxPhysicalBytes=0"})
public class SafetensorsBench {
    private static final int TENSORS = 64;

    @Param({"64", "1024"})
    public int sizeMiB;

    private Path dir;
    private Path file;
    private Path written;
    private Map<String, Tensor> source;

    @Setup
    public void setup() throws IOException {
        dir = Files.createTempDirectory("peft4j-safetensors-bench");
        file = dir.resolve("model.safetensors");
        written = dir.resolve("written.safetensors");
        source = new LinkedHashMap<>();
        long rows = (long) sizeMiB * (1 << 20) / (TENSORS * 2048L * 4); // 1 GiB: 64 x [2048, 2048]
        for (int i = 0; i < TENSORS; i++) {
            source.put(String.format("model.layers.%03d.weight", i), torch.rand(rows, 2048));
        }
        SafetensorsFile.write(file, source);
    }

    @TearDown
    public void tearDown() throws IOException {
        source.values().forEach(Tensor::close);
        try (Stream<Path> files = Files.walk(dir)) {
            for (Path p : (Iterable<Path>) files.sorted(Comparator.reverseOrder())::iterator) {
                Files.deleteIfExists(p);
            }
        }
    }

    /** mmap + header validation + one zero-copy view per tensor; no tensor byte is read. */
    @Benchmark
    @BenchmarkMode(Mode.AverageTime)
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    @Warmup(iterations = 3, time = 1)
    @Measurement(iterations = 5, time = 1)
    public long openMappedAndGetEveryTensor() throws IOException {
        long elements = 0;
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            for (Tensor t : f.tensors().values()) {
                elements += t.numel();
                t.close();
            }
        }
        return elements;
    }

    /** The baseline: the same header, then every tensor's bytes read into a Java heap array. */
    @Benchmark
    @BenchmarkMode(Mode.SingleShotTime)
    @OutputTimeUnit(TimeUnit.MILLISECONDS)
    @Warmup(iterations = 2)
    @Measurement(iterations = 5)
    public long readEveryTensorIntoHeapArrays() throws IOException {
        long checksum = 0;
        try (SafetensorsFile f = SafetensorsFile.open(file);
                FileChannel in = FileChannel.open(file, StandardOpenOption.READ)) {
            long dataStart = Files.size(file) - f.infos().stream().mapToLong(TensorInfo::byteSize).sum();
            for (TensorInfo info : f.infos()) {
                byte[] array = new byte[Math.toIntExact(info.byteSize())];
                ByteBuffer buf = ByteBuffer.wrap(array);
                long at = dataStart + info.begin();
                while (buf.hasRemaining()) {
                    int n = in.read(buf, at + buf.position());
                    if (n < 0) {
                        throw new IOException("unexpected end of " + file);
                    }
                }
                checksum += array[array.length - 1];
            }
        }
        return checksum;
    }

    /** Atomic write: temp file, every byte written from libtorch memory, fsync, rename, dir fsync. */
    @Benchmark
    @BenchmarkMode(Mode.SingleShotTime)
    @OutputTimeUnit(TimeUnit.MILLISECONDS)
    @Warmup(iterations = 2)
    @Measurement(iterations = 5)
    public long writeAtomically() throws IOException {
        SafetensorsFile.write(written, source);
        return Files.size(written);
    }

    /** The disk's reference speed: {@code dd} writing as many bytes, fsynced, into the same directory. */
    @Benchmark
    @BenchmarkMode(Mode.SingleShotTime)
    @OutputTimeUnit(TimeUnit.MILLISECONDS)
    @Warmup(iterations = 2)
    @Measurement(iterations = 5)
    public int ddSameSize() throws IOException, InterruptedException {
        Process dd = new ProcessBuilder("dd", "if=/dev/zero", "of=" + dir.resolve("dd.bin"), "bs=16M",
                "count=" + sizeMiB / 16, "conv=fsync")
                .redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.DISCARD)
                .start();
        int status = dd.waitFor();
        if (status != 0) {
            throw new IOException("dd exited with " + status);
        }
        return status;
    }
}

package dev.peft4j.bench;

import dev.peft4j.io.SafetensorsFile;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.StandardOpenOption;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * Write speed against {@code dd} on a noisy disk: {@code dd if=/dev/zero of=DIR/dd.bin bs=16M count=64
 * conv=fsync} and {@link SafetensorsFile#write} of 1 GiB (64 float32 tensors of 2048 x 2048) into the
 * same directory, alternated A-B-B-A so drifts in the disk's speed hit both alike; prints every time and
 * the medians. A third column writes the same tensor bytes the way dd does, truncating and overwriting
 * one file in place (not atomic), to separate the cost of the I/O path from that of the atomic
 * replace (a fresh file, and freeing the old one at the rename). Run: {@code java -Xmx3g -cp 'benchmarks/target/benchmarks.jar:benchmarks/target/lib/*'
 * -Drounds=8 dev.peft4j.bench.SafetensorsWriteVsDd [dir]}.
 */
public final class SafetensorsWriteVsDd {
    private SafetensorsWriteVsDd() {}

    public static void main(String[] args) throws IOException, InterruptedException {
        Path dir = Files.createTempDirectory(Path.of(args.length > 0 ? args[0] : System.getProperty("java.io.tmpdir")),
                "peft4j-write-vs-dd");
        Path ddFile = dir.resolve("dd.bin");
        Path out = dir.resolve("model.safetensors");
        Path inPlaceFile = dir.resolve("in-place.bin");
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        for (int i = 0; i < 64; i++) {
            tensors.put(String.format("model.layers.%03d.weight", i), torch.rand(2048, 2048));
        }
        try {
            dd(ddFile); // warm-up: both files allocated once
            write(out, tensors);
            int rounds = Integer.getInteger("rounds", 8);
            double[] dd = new double[2 * rounds];
            double[] write = new double[2 * rounds];
            double[] inPlace = new double[rounds];
            for (int r = 0; r < rounds; r++) {
                dd[2 * r] = dd(ddFile);
                write[2 * r] = write(out, tensors);
                write[2 * r + 1] = write(out, tensors);
                dd[2 * r + 1] = dd(ddFile);
                inPlace[r] = overwriteInPlace(inPlaceFile, tensors);
                System.out.printf(Locale.ROOT, "round %d: dd %.0f, %.0f ms   write %.0f, %.0f ms   in place %.0f ms%n", r,
                        dd[2 * r], dd[2 * r + 1], write[2 * r], write[2 * r + 1], inPlace[r]);
            }
            double ddMedian = median(dd);
            double writeMedian = median(write);
            System.out.printf(Locale.ROOT, "median: dd %.0f ms (%.2f GB/s), write %.0f ms (%.2f GB/s); "
                    + "write speed = %.2f x dd speed (fastest: dd %.0f ms, write %.0f ms); in place %.0f ms = %.2f x dd%n",
                    ddMedian, 1.073741824e3 / ddMedian, writeMedian, 1.073741824e3 / writeMedian, ddMedian / writeMedian,
                    Arrays.stream(dd).min().orElseThrow(), Arrays.stream(write).min().orElseThrow(), median(inPlace),
                    ddMedian / median(inPlace));
        } finally {
            tensors.values().forEach(Tensor::close);
            Files.deleteIfExists(out);
            Files.deleteIfExists(ddFile);
            Files.deleteIfExists(inPlaceFile);
            Files.deleteIfExists(dir);
        }
    }

    private static double dd(Path file) throws IOException, InterruptedException {
        long start = System.nanoTime();
        Process dd = new ProcessBuilder("dd", "if=/dev/zero", "of=" + file, "bs=16M", "count=64", "conv=fsync")
                .redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.DISCARD)
                .start();
        if (dd.waitFor() != 0) {
            throw new IOException("dd exited with " + dd.exitValue());
        }
        return (System.nanoTime() - start) / 1e6;
    }

    private static double write(Path file, Map<String, Tensor> tensors) throws IOException {
        long start = System.nanoTime();
        SafetensorsFile.write(file, tensors);
        return (System.nanoTime() - start) / 1e6;
    }

    /** The tensors' bytes through a FileChannel into one truncated file, fsynced: dd's pattern. */
    private static double overwriteInPlace(Path file, Map<String, Tensor> tensors) throws IOException {
        long start = System.nanoTime();
        try (FileChannel out = FileChannel.open(file, StandardOpenOption.WRITE, StandardOpenOption.CREATE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
            for (Tensor t : tensors.values()) {
                ByteBuffer bytes = new BytePointer(t.data_ptr()).capacity(t.nbytes()).asBuffer();
                while (bytes.hasRemaining()) {
                    out.write(bytes);
                }
            }
            out.force(true);
        }
        return (System.nanoTime() - start) / 1e6;
    }

    private static double median(double[] values) {
        double[] sorted = values.clone();
        Arrays.sort(sorted);
        int n = sorted.length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }
}

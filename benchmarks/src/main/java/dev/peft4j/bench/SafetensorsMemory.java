package dev.peft4j.bench;

import dev.peft4j.io.SafetensorsFile;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * Shows that reading allocates no copy of the data: writes a 1 GiB safetensors file, then opens it,
 * gets every tensor and reads every element (a sum per tensor, all tensors held), printing the
 * process's private memory (RssAnon), mapped file pages (RssFile) and JavaCPP's view of native memory
 * before and after. Run: {@code java -cp 'benchmarks/target/benchmarks.jar:benchmarks/target/lib/*'
 * dev.peft4j.bench.SafetensorsMemory [dir]}.
 */
public final class SafetensorsMemory {
    private SafetensorsMemory() {}

    public static void main(String[] args) throws IOException {
        Path dir = Files.createTempDirectory(args.length > 0 ? Path.of(args[0]) : Path.of(System.getProperty("java.io.tmpdir")),
                "peft4j-safetensors-memory");
        Path file = dir.resolve("model.safetensors");
        try {
            Map<String, Tensor> source = new LinkedHashMap<>();
            for (int i = 0; i < 64; i++) {
                source.put(String.format("model.layers.%03d.weight", i), torch.ones(2048, 2048));
            }
            SafetensorsFile.write(file, source);
            source.values().forEach(Tensor::close);
            System.gc();
            print("before open", file);
            double total = 0;
            try (SafetensorsFile f = SafetensorsFile.open(file)) {
                Map<String, Tensor> all = f.tensors();
                print("after open + get of all " + all.size() + " tensors", file);
                for (Tensor t : all.values()) {
                    try (Tensor sum = t.sum()) {
                        total += sum.item_double();
                    }
                }
                print("after reading every element (all tensors still held)", file);
                all.values().forEach(Tensor::close);
            }
            System.out.printf("sum of all elements = %.0f (expected %d)%n", total, 64L * 2048 * 2048);
        } finally {
            Files.deleteIfExists(file);
            Files.deleteIfExists(dir);
        }
    }

    private static void print(String when, Path file) throws IOException {
        long anon = 0;
        long mapped = 0;
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("RssAnon:")) {
                anon = Long.parseLong(line.replaceAll("[^0-9]", "")) >> 10;
            } else if (line.startsWith("RssFile:")) {
                mapped = Long.parseLong(line.replaceAll("[^0-9]", "")) >> 10;
            }
        }
        System.out.printf("%-55s RssAnon %6d MiB   RssFile %6d MiB   JavaCPP physicalBytes %6d MiB, totalBytes %d%n",
                when, anon, mapped, Pointer.physicalBytes() >> 20, Pointer.totalBytes());
    }
}

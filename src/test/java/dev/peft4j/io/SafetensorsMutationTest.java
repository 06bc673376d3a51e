package dev.peft4j.io;

import static dev.peft4j.io.TestTensors.fixture;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import java.util.Set;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Corrupts the headers of valid files thousands of times: every mutant either opens, and then every
 * tensor reads back in full, or fails with {@link SafetensorsException}; never another exception, a
 * crash or an OutOfMemoryError. {@code -Dpeft4j.mutations=N} runs more.
 */
class SafetensorsMutationTest {
    private static final String[] SEEDS = {
        "safetensors-vectors/djl/list.safetensors",
        "safetensors-vectors/safetensors-java/sample.safetensors",
        "safetensors-vectors/burn/multi_layer.safetensors",
        "safetensors-vectors/hf-safetensors-samples/overall.safetensors",
        "safetensors-vectors/safetensors-jl/non_sharded/model.with_metadata.safetensors",
        "peft-lora-tinyllama-added-tokens-fms/adapter_model.safetensors",
    };
    private static final Set<String> NO_LIBTORCH_TYPE = Set.of("F4", "F6_E2M3", "F6_E3M2");
    private static final byte[] JSON_BYTES = "{}[]\":,0123456789-+.eE \\tnulfase_FIUBC".getBytes();

    @TempDir
    Path tmp;

    @Test
    void corruptedHeadersOnlyEverFailWithSafetensorsException() throws Exception {
        int mutations = Integer.getInteger("peft4j.mutations", 6000);
        Random random = new Random(0x5AFE7E45L);
        byte[][] seeds = new byte[SEEDS.length][];
        for (int i = 0; i < SEEDS.length; i++) {
            seeds[i] = Files.readAllBytes(fixture(SEEDS[i]));
        }
        int opened = 0;
        int rejected = 0;
        for (int i = 0; i < mutations; i++) {
            byte[] seed = seeds[i % seeds.length];
            byte[] mutant = mutate(seed, random);
            Path file = tmp.resolve("m" + i + ".safetensors");
            Files.write(file, mutant);
            try {
                if (readEverything(file)) {
                    opened++;
                }
            } catch (SafetensorsException expected) {
                assertTrue(expected.getMessage().startsWith(file + ": "), expected.getMessage());
                rejected++;
            } catch (Throwable unexpected) {
                Path keep = Path.of("target", "mutant-" + i + ".safetensors");
                Files.createDirectories(keep.getParent());
                Files.write(keep, mutant);
                fail("mutant " + i + " (kept as " + keep + ") threw " + unexpected, unexpected);
            }
            Files.delete(file);
        }
        System.out.println("safetensors mutants: " + mutations + " run, " + opened + " opened and read in full, "
                + rejected + " rejected with SafetensorsException");
        // every mapping was released, on the error paths too (the files are deleted: maps would say so)
        String dir = tmp.toRealPath().toString();
        long leaked = Files.readAllLines(Path.of("/proc/self/maps")).stream().filter(l -> l.contains(dir)).count();
        assertTrue(leaked == 0, leaked + " mappings of mutant files still alive");
        // both outcomes occur: the mutations reach past the first check, and the checks do reject
        assertTrue(rejected > mutations / 2, "rejected " + rejected + " of " + mutations);
        assertTrue(opened > mutations / 100, "opened " + opened + " of " + mutations);
    }

    /** Opens and reads every byte of every tensor; false if a tensor's dtype has no libtorch type. */
    private static boolean readEverything(Path file) throws Exception {
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            boolean all = true;
            for (String name : f.names()) {
                TensorInfo info = f.info(name);
                try (Tensor t = f.get(name)) {
                    byte[] b = TestTensors.bytes(t);
                    if (b.length != info.byteSize()) {
                        throw new AssertionError(name + ": " + b.length + " bytes read, header says " + info.byteSize());
                    }
                } catch (UnsupportedOperationException e) {
                    if (!NO_LIBTORCH_TYPE.contains(info.dtype())) {
                        throw e;
                    }
                    all = false;
                }
            }
            return all;
        }
    }

    private static byte[] mutate(byte[] seed, Random r) {
        int headerEnd = (int) Math.min(seed.length, 8 + ByteBuffer.wrap(seed, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong());
        byte[] m = seed.clone();
        switch (r.nextInt(8)) {
            case 0 -> { // flip bits in the header
                for (int k = 1 + r.nextInt(4); k > 0; k--) {
                    int at = 8 + r.nextInt(headerEnd - 8);
                    m[at] ^= (byte) (1 << r.nextInt(8));
                }
            }
            case 1 -> { // JSON-significant bytes dropped into the header
                for (int k = 1 + r.nextInt(3); k > 0; k--) {
                    m[8 + r.nextInt(headerEnd - 8)] = JSON_BYTES[r.nextInt(JSON_BYTES.length)];
                }
            }
            case 2 -> { // a digit changed: offsets and shapes that no longer agree
                int at = findDigit(m, 8 + r.nextInt(headerEnd - 8), headerEnd);
                if (at >= 0) {
                    m[at] = (byte) ('0' + r.nextInt(10));
                }
            }
            case 3 -> { // the length field rewritten
                long len = switch (r.nextInt(4)) {
                    case 0 -> r.nextLong();
                    case 1 -> headerEnd - 8 + r.nextInt(33) - 16;
                    case 2 -> r.nextInt(seed.length + 64);
                    default -> (1L << r.nextInt(63)) - 1;
                };
                ByteBuffer.wrap(m, 0, 8).order(ByteOrder.LITTLE_ENDIAN).putLong(len);
            }
            case 4 -> m = Arrays.copyOf(m, r.nextInt(m.length)); // truncated
            case 5 -> { // a header byte deleted, length field kept
                int at = 8 + r.nextInt(headerEnd - 8);
                byte[] d = new byte[m.length - 1];
                System.arraycopy(m, 0, d, 0, at);
                System.arraycopy(m, at + 1, d, at, m.length - at - 1);
                m = d;
            }
            case 6 -> { // a digit run replaced by a huge or negative number
                int at = findDigit(m, 8 + r.nextInt(headerEnd - 8), headerEnd);
                if (at >= 0) {
                    String n = r.nextBoolean() ? "-" + r.nextInt(100) : Long.toString(Long.MAX_VALUE / (1 + r.nextInt(1000)));
                    int end = at;
                    while (end < headerEnd && m[end] >= '0' && m[end] <= '9') {
                        end++;
                    }
                    byte[] number = n.getBytes();
                    byte[] d = new byte[m.length - (end - at) + number.length];
                    System.arraycopy(m, 0, d, 0, at);
                    System.arraycopy(number, 0, d, at, number.length);
                    System.arraycopy(m, end, d, at + number.length, m.length - end);
                    long newLen = headerEnd - 8 - (end - at) + number.length;
                    ByteBuffer.wrap(d, 0, 8).order(ByteOrder.LITTLE_ENDIAN).putLong(newLen);
                    m = d;
                }
            }
            default -> { // a header slice duplicated in place, length field adjusted
                int from = 8 + r.nextInt(headerEnd - 8);
                int len = 1 + r.nextInt(Math.min(40, headerEnd - from));
                byte[] d = new byte[m.length + len];
                System.arraycopy(m, 0, d, 0, from + len);
                System.arraycopy(m, from, d, from + len, m.length - from);
                ByteBuffer.wrap(d, 0, 8).order(ByteOrder.LITTLE_ENDIAN).putLong(headerEnd - 8 + len);
                m = d;
            }
        }
        return m;
    }

    private static int findDigit(byte[] m, int from, int end) {
        for (int i = from; i < end; i++) {
            if (m[i] >= '0' && m[i] <= '9') {
                return i;
            }
        }
        return -1;
    }
}

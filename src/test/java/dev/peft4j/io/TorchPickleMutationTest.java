package dev.peft4j.io;

import static dev.peft4j.io.PickleTestTensors.fixture;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;
import java.util.zip.ZipOutputStream;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Corrupts valid files many times (deterministic seeds): every load must either succeed or throw
 * {@link TorchPickleException}; never another exception, a crash, a hang or an OutOfMemoryError.
 * Zip files are mutated both as raw bytes (mostly caught by the zip layer and CRC-32 checks) and
 * inside {@code data.pkl}, re-zipped with valid checksums so that the unpickler itself is fuzzed.
 */
class TorchPickleMutationTest {
    /** 400 per file in the normal build; {@code -Dpeft4j.fuzz.mutations=N} for a longer campaign. */
    private static final int MUTATIONS_PER_FILE = Integer.getInteger("peft4j.fuzz.mutations", 400);

    @TempDir
    Path tmp;

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {
        "torch-pickle-vectors/burn/float32.pt",
        "torch-pickle-vectors/candle/fortran_tensor_3d.pth",
        "torch-pickle-vectors/burn/legacy_uncloned_views.pt",
        "torch-pickle-vectors/burn/checkpoint.pt",
        "torch-pickle-goldens/views.pt",
        "torch-pickle-goldens/views_legacy.pt",
        "torch-pickle-goldens/all_dtypes_legacy.pt",
        "torch-pickle-goldens/plain_values.pt",
        "torch-pickle-goldens/module_state_dict.pt",
        "peft-ia3-mt0-large/adapter_model.bin",
    })
    void corruptedFilesFailOnlyWithTorchPickleException(String name) throws Exception {
        byte[] original = Files.readAllBytes(fixture(name));
        boolean zip = original[0] == 'P' && original[1] == 'K';
        List<String> names = new ArrayList<>();
        List<byte[]> contents = new ArrayList<>();
        if (zip) {
            // ZipFile, not ZipInputStream: torch writes stored entries with data descriptors
            try (ZipFile z = new ZipFile(fixture(name).toFile())) {
                for (ZipEntry e : java.util.Collections.list(z.entries())) {
                    names.add(e.getName());
                    contents.add(z.getInputStream(e).readAllBytes());
                }
            }
        }
        Random random = new Random(name.hashCode());
        int refused = 0;
        for (int i = 0; i < MUTATIONS_PER_FILE; i++) {
            long seed = random.nextLong();
            Random r = new Random(seed);
            byte[] mutated;
            String how;
            if (zip && i % 2 == 1) {
                how = "data.pkl mutation, seed " + seed;
                mutated = mutatePickleInsideZip(names, contents, r);
            } else {
                how = "raw mutation, seed " + seed;
                mutated = mutate(original, r);
            }
            Path file = tmp.resolve("m" + i + ".pt");
            Files.write(file, mutated);
            if (loadsOrRefuses(file, name + " " + how)) {
                refused++;
            }
            Files.delete(file);
        }
        assertTrue(refused > MUTATIONS_PER_FILE / 4, name + ": only " + refused + " of " + MUTATIONS_PER_FILE
                + " mutants refused; the mutations are too weak to exercise the checks");
    }

    /** True when refused with a TorchPickleException, false when loaded; fails on anything else. */
    private static boolean loadsOrRefuses(Path file, String what) {
        return assertTimeoutPreemptively(Duration.ofSeconds(20), () -> {
            try {
                TorchPickle.load(file);
                return false;
            } catch (TorchPickleException e) {
                if (e.getMessage() == null || !e.getMessage().contains(file.getFileName().toString())) {
                    fail(what + ": message does not name the file: " + e.getMessage());
                }
                return true;
            } catch (Throwable t) {
                throw new AssertionError(what + ": escaped as " + t, t);
            }
        }, what + ": hangs");
    }

    /** One of: flip bits, overwrite a run, truncate, insert, delete, or set a byte to an extreme value. */
    static byte[] mutate(byte[] in, Random r) {
        byte[] b = in.clone();
        int kind = r.nextInt(6);
        int n = b.length;
        switch (kind) {
            case 0 -> {
                for (int k = 1 + r.nextInt(4); k > 0; k--) {
                    int p = r.nextInt(n);
                    b[p] ^= (byte) (1 << r.nextInt(8));
                }
            }
            case 1 -> {
                int p = r.nextInt(n);
                int len = Math.min(n - p, 1 + r.nextInt(16));
                byte v = (byte) (r.nextBoolean() ? 0xff : r.nextInt(256));
                Arrays.fill(b, p, p + len, v);
            }
            case 2 -> b = Arrays.copyOf(b, r.nextInt(n));
            case 3 -> {
                int p = r.nextInt(n + 1);
                byte[] ins = new byte[1 + r.nextInt(8)];
                r.nextBytes(ins);
                byte[] out = new byte[n + ins.length];
                System.arraycopy(b, 0, out, 0, p);
                System.arraycopy(ins, 0, out, p, ins.length);
                System.arraycopy(b, p, out, p + ins.length, n - p);
                b = out;
            }
            case 4 -> {
                int p = r.nextInt(n);
                int len = Math.min(n - p, 1 + r.nextInt(8));
                byte[] out = new byte[n - len];
                System.arraycopy(b, 0, out, 0, p);
                System.arraycopy(b, p + len, out, p, n - p - len);
                b = out;
            }
            default -> {
                int[] extremes = {0x00, 0x7f, 0x80, 0xff, 0xfe};
                b[r.nextInt(n)] = (byte) extremes[r.nextInt(extremes.length)];
            }
        }
        return b;
    }

    /** Mutates the data.pkl entry and rewrites the archive (stored entries, valid CRC-32s). */
    static byte[] mutatePickleInsideZip(List<String> names, List<byte[]> contents, Random r) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (ZipOutputStream zout = new ZipOutputStream(out)) {
            for (int i = 0; i < names.size(); i++) {
                byte[] data = contents.get(i);
                if (names.get(i).endsWith("/data.pkl")) {
                    data = mutate(data, r);
                }
                ZipEntry e = new ZipEntry(names.get(i));
                e.setMethod(ZipEntry.STORED);
                e.setSize(data.length);
                CRC32 crc = new CRC32();
                crc.update(data);
                e.setCrc(crc.getValue());
                zout.putNextEntry(e);
                zout.write(data);
                zout.closeEntry();
            }
        }
        return out.toByteArray();
    }
}

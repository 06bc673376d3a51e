package dev.peft4j.io;

import static dev.peft4j.io.TestTensors.bytes;
import static dev.peft4j.io.TestTensors.fixture;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class SafetensorsWriteTest {
    @TempDir
    Path tmp;

    /** A tensor of {@code type} and {@code shape} whose bytes are {@code raw} (bools: 0/1 bytes). */
    private static Tensor fromBytes(byte[] raw, ScalarType type, long... shape) {
        if (raw.length == 0) {
            try (org.bytedeco.pytorch.TensorOptions o = new org.bytedeco.pytorch.TensorOptions(type);
                    org.bytedeco.pytorch.MemoryFormatOptional m = new org.bytedeco.pytorch.MemoryFormatOptional()) {
                return torch.empty(shape, o, m);
            }
        }
        try (Tensor flat = Tensor.create(raw, false, raw.length)) {
            try (Tensor typed = flat.view(type)) {
                return typed.view(shape);
            }
        }
    }

    private static byte[] randomBytes(Random random, Dtype dtype, long numel) {
        byte[] raw = new byte[Math.toIntExact(numel * dtype.elementBytes())];
        random.nextBytes(raw);
        if (dtype == Dtype.BOOL) {
            for (int i = 0; i < raw.length; i++) {
                raw[i] &= 1;
            }
        }
        return raw;
    }

    @Test
    void roundTripsRandomTensorsOfEveryDtypeBitExactly() throws Exception {
        Random random = new Random(20261129);
        long[][] shapes = {{3, 5}, {}, {0, 4}, {2, 3, 7}, {1}};
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        Map<String, byte[]> expected = new LinkedHashMap<>();
        Map<String, long[]> expectedShape = new LinkedHashMap<>();
        List<Dtype> covered = new ArrayList<>();
        for (Dtype d : Dtype.values()) {
            if (d.scalarType == null) {
                continue; // F4 / F6_*: no libtorch type to hold them
            }
            covered.add(d);
            for (int s = 0; s < shapes.length; s++) {
                long numel = Arrays.stream(shapes[s]).reduce(1, (a, b) -> a * b);
                byte[] raw = randomBytes(random, d, numel);
                String name = "t." + d.name().toLowerCase() + "." + s;
                tensors.put(name, fromBytes(raw, d.scalarType, shapes[s]));
                expected.put(name, raw);
                expectedShape.put(name, shapes[s]);
            }
        }
        assertEquals(19, covered.size(), "every dtype but F4, F6_E2M3, F6_E3M2");
        Path file = tmp.resolve("all.safetensors");
        SafetensorsFile.write(file, tensors, Map.of("format", "pt"));
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            assertEquals(Map.of("format", "pt"), f.metadata());
            assertEquals(expected.keySet(), new java.util.HashSet<>(f.names()));
            for (String name : expected.keySet()) {
                try (Tensor t = f.get(name)) {
                    Dtype d = Dtype.valueOf(f.info(name).dtype());
                    assertEquals(tensors.get(name).scalar_type().intern(), t.scalar_type().intern(), name);
                    assertEquals(d.scalarType, t.scalar_type().intern(), name);
                    assertArrayEquals(expectedShape.get(name), t.shape(), name);
                    assertArrayEquals(expected.get(name), bytes(t), name);
                }
            }
            // layout: widest dtype first in the format's order (U64, I64, F64, C64, F32, ...), then by name
            List<String> names = f.names();
            for (int i = 1; i < names.size(); i++) {
                Dtype prev = Dtype.valueOf(f.info(names.get(i - 1)).dtype());
                Dtype cur = Dtype.valueOf(f.info(names.get(i)).dtype());
                assertTrue(prev.ordinal() > cur.ordinal()
                        || (prev == cur && names.get(i - 1).compareTo(names.get(i)) < 0), names.get(i));
            }
            assertEquals("t.u64.0", names.get(0));
        }
        tensors.values().forEach(Tensor::close);
    }

    @Test
    void writesNonContiguousTensorsInLogicalOrder() throws Exception {
        try (Tensor m = Tensor.create(new float[] {1, 2, 3, 4, 5, 6}, 2, 3); Tensor t = m.t()) {
            Path file = tmp.resolve("t.safetensors");
            SafetensorsFile.write(file, Map.of("t", t));
            try (SafetensorsFile f = SafetensorsFile.open(file); Tensor back = f.get("t")) {
                assertArrayEquals(new long[] {3, 2}, back.shape());
                assertArrayEquals(TestTensors.f32(1, 4, 2, 5, 3, 6), bytes(back));
            }
        }
    }

    /** peft-spec.md, appendix A.4: the header of a two-tensor LoRA checkpoint, before padding. */
    @Test
    void headerMatchesTheSpecExampleByteForByte() throws Exception {
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        // inserted B first: the writer sorts by name within a dtype
        tensors.put("base_model.model.lin.lora_B.weight", torch.ones(16, 8));
        tensors.put("base_model.model.lin.lora_A.weight", torch.zeros(8, 16));
        Path file = tmp.resolve("adapter_model.safetensors");
        SafetensorsFile.write(file, tensors);
        String json = "{\"__metadata__\":{\"format\":\"pt\"},\"base_model.model.lin.lora_A.weight\":{\"dtype\":\"F32\","
                + "\"shape\":[8,16],\"data_offsets\":[0,512]},\"base_model.model.lin.lora_B.weight\":{\"dtype\":\"F32\","
                + "\"shape\":[16,8],\"data_offsets\":[512,1024]}}";
        int padded = (json.length() + 7) / 8 * 8;
        byte[] file8 = Files.readAllBytes(file);
        assertEquals(8 + padded + 1024, file8.length);
        assertEquals(padded, ByteBuffer.wrap(file8, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong());
        assertEquals(json + " ".repeat(padded - json.length()), new String(file8, 8, padded, StandardCharsets.UTF_8));
        // A (zeros) then B (ones: 0x3f800000 little-endian)
        assertEquals(0, file8[8 + padded + 511]);
        assertArrayEquals(new byte[] {0, 0, (byte) 0x80, 0x3f}, Arrays.copyOfRange(file8, 8 + padded + 512, 8 + padded + 516));
        tensors.values().forEach(Tensor::close);
    }

    /**
     * Files written by Python (PEFT save_pretrained, transformers, safetensors.torch/numpy) re-written
     * from our reader's tensors with our writer come out byte-identical.
     */
    @Test
    void rewritingPythonWrittenFilesReproducesTheirBytes() throws Exception {
        String[] files = {
            "peft-lora-gpt2-tigrinya/adapter_model.safetensors",
            "peft-lora-tinyllama-added-tokens-fms/adapter_model.safetensors",
            "hf-tiny-gpt2-lmbuddy/model.safetensors",
            "safetensors-vectors/safetensors-jl/non_sharded/model.safetensors",
            "safetensors-vectors/safetensors-jl/non_sharded/model.with_metadata.safetensors",
            "safetensors-vectors/safetensors-jl/non_sharded/model.numpy.safetensors",
            "safetensors-vectors/safetensors-jl/sharded/model-00005-of-00006.safetensors",
            "safetensors-vectors/burn/multi_layer.safetensors",
            "safetensors-vectors/safetensors-java/sample.safetensors",
        };
        for (String name : files) {
            Path original = fixture(name);
            Path copy = tmp.resolve(original.getFileName());
            try (SafetensorsFile f = SafetensorsFile.open(original)) {
                Map<String, Tensor> tensors = f.tensors();
                SafetensorsFile.write(copy, tensors, f.hasMetadata() ? f.metadata() : null);
                tensors.values().forEach(Tensor::close);
            }
            assertArrayEquals(Files.readAllBytes(original), Files.readAllBytes(copy), name);
        }
    }

    @Test
    void escapesNamesAndMetadataAsSerdeJsonAndSortsByUtf8Bytes() throws Exception {
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        String odd = "q\"b\\s\n\u0001/\u00e9";
        tensors.put(odd, torch.zeros(1));
        tensors.put("\uD83D\uDE00", torch.zeros(1)); // U+1F600: F0 9F 98 80 in UTF-8
        tensors.put("\uFFFD", torch.zeros(1)); // EF BF BD: before the emoji in UTF-8, after it in UTF-16 units
        Map<String, String> metadata = new LinkedHashMap<>();
        metadata.put("k\t", "v\u007f");
        Path file = tmp.resolve("odd.safetensors");
        SafetensorsFile.write(file, tensors, metadata);
        byte[] all = Files.readAllBytes(file);
        String header = new String(all, 8, (int) ByteBuffer.wrap(all, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong(),
                StandardCharsets.UTF_8);
        assertTrue(header.startsWith("{\"__metadata__\":{\"k\\t\":\"v\u007f\"},\"q\\\"b\\\\s\\n\\u0001/\u00e9\":"), header);
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            assertEquals(List.of(odd, "\uFFFD", "\uD83D\uDE00"), f.names());
            assertEquals(metadata, f.metadata());
        }
        tensors.values().forEach(Tensor::close);
    }

    @Test
    void replacesAtomicallyAndLeavesNothingBehindOnFailure() throws Exception {
        Path file = tmp.resolve("w.safetensors");
        try (Tensor one = torch.ones(4); Tensor cd = torch.ones(2).to(ScalarType.ComplexDouble)) {
            SafetensorsFile.write(file, Map.of("a", one));
            byte[] first = Files.readAllBytes(file);
            SafetensorsFile.write(file, Map.of("b", one));
            try (SafetensorsFile f = SafetensorsFile.open(file)) {
                assertEquals(List.of("b"), f.names());
            }
            byte[] second = Files.readAllBytes(file);
            assertEquals(first.length, second.length);

            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> SafetensorsFile.write(file, Map.of("c", cd)));
            assertTrue(e.getMessage().startsWith(file + ": tensor \"c\"") && e.getMessage().contains("ComplexDouble"),
                    e.getMessage());
            assertThrows(IllegalArgumentException.class,
                    () -> SafetensorsFile.write(file, Map.of("__metadata__", one)));
            assertThrows(IllegalArgumentException.class,
                    () -> SafetensorsFile.write(file, Map.of("u", new Tensor())));
            assertArrayEquals(second, Files.readAllBytes(file), "failed writes leave the file untouched");
            try (Stream<Path> left = Files.list(tmp)) {
                assertEquals(List.of(file), left.toList(), "no temporary files left");
            }
        }
    }

    @Test
    void writesLargeTensorsInChunksWithoutLosingOrDuplicatingBytes() throws Exception {
        byte[] raw = new byte[10_007 * 4];
        new Random(7).nextBytes(raw);
        try (Tensor t = fromBytes(raw, ScalarType.Float, 10_007)) {
            Path file = tmp.resolve("chunked.safetensors");
            // 1000-byte chunks: 41 write calls, the last one partial (the real chunk is 1 GiB)
            SafetensorsWriter.write(file, Map.of("t", t), SafetensorsFile.PT_METADATA, 1000);
            Path whole = tmp.resolve("whole.safetensors");
            SafetensorsFile.write(whole, Map.of("t", t));
            assertArrayEquals(Files.readAllBytes(whole), Files.readAllBytes(file));
            try (SafetensorsFile f = SafetensorsFile.open(file); Tensor back = f.get("t")) {
                assertArrayEquals(raw, bytes(back));
            }
        }
    }

    @Test
    void writtenFileGetsTheUsualPermissionsNotATempFiles0600() throws Exception {
        Path plain = Files.createFile(tmp.resolve("plain"));
        Path file = tmp.resolve("perm.safetensors");
        try (Tensor t = torch.ones(2)) {
            SafetensorsFile.write(file, Map.of("t", t));
        }
        assertEquals(Files.getPosixFilePermissions(plain), Files.getPosixFilePermissions(file));
    }

    @Test
    void replacingKeepsTheFilesPermissionsAndWritesThroughSymlinks() throws Exception {
        Path file = tmp.resolve("target.safetensors");
        Path link = tmp.resolve("link.safetensors");
        try (Tensor t = torch.ones(2); Tensor z = torch.zeros(3)) {
            SafetensorsFile.write(file, Map.of("t", t));
            Files.setPosixFilePermissions(file, java.nio.file.attribute.PosixFilePermissions.fromString("rw-------"));
            Files.createSymbolicLink(link, file.getFileName());
            SafetensorsFile.write(link, Map.of("z", z));
        }
        assertTrue(Files.isSymbolicLink(link), "the link stays a link");
        assertEquals("rw-------", java.nio.file.attribute.PosixFilePermissions.toString(Files.getPosixFilePermissions(file)));
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            assertEquals(List.of("z"), f.names());
        }
    }
}

package dev.peft4j.io;

import static dev.peft4j.io.TestTensors.bytes;
import static dev.peft4j.io.TestTensors.f32;
import static dev.peft4j.io.TestTensors.f64;
import static dev.peft4j.io.TestTensors.fixture;
import static dev.peft4j.io.TestTensors.le;
import static dev.peft4j.io.TestTensors.range;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/**
 * Every file of {@code fixtures/safetensors-vectors} (written by other projects' writers, see its
 * PROVENANCE.md), with the values its authors documented.
 */
class SafetensorsVectorsTest {
    private static final String V = "safetensors-vectors/";

    private static void assertTensor(SafetensorsFile f, String name, ScalarType type, long[] shape, byte[] expected) {
        try (Tensor t = f.get(name)) {
            assertEquals(type, t.scalar_type().intern(), name + " dtype");
            assertArrayEquals(shape, t.shape(), name + " shape");
            assertArrayEquals(expected, bytes(t), name + " bytes");
        }
    }

    @Test
    void readsEveryDtypeOfTheHfSamplesWithTheirValues() throws Exception {
        try (SafetensorsFile f = SafetensorsFile.open(fixture(V + "hf-safetensors-samples/overall.safetensors"))) {
            assertEquals(List.of("B", "H", "I", "b", "d", "e", "f", "h", "i"), f.names());
            assertEquals(Map.of("test", "a"), f.metadata());
            long[] s = {6};
            assertTensor(f, "B", ScalarType.Byte, s, le(1, 253, 254, 255, 0, 1, 2));
            assertTensor(f, "H", ScalarType.UInt16, s, le(2, 65533, 65534, 65535, 0, 1, 2));
            assertTensor(f, "I", ScalarType.UInt32, s, le(4, 4294967293L, 4294967294L, 4294967295L, 0, 1, 2));
            assertTensor(f, "b", ScalarType.Char, s, le(1, -3, -2, -1, 0, 1, 2));
            // this unpadded 2022 file puts "d" at file offset 582, not a multiple of 8: the copy path
            assertTensor(f, "d", ScalarType.Double, s, f64(-3, -2, -1, 0, 1, 2));
            assertTensor(f, "e", ScalarType.Half, s, le(2, 0xC200, 0xC000, 0xBC00, 0, 0x3C00, 0x4000));
            assertTensor(f, "f", ScalarType.Float, s, f32(-3, -2, -1, 0, 1, 2));
            assertTensor(f, "h", ScalarType.Short, s, le(2, -3, -2, -1, 0, 1, 2));
            assertTensor(f, "i", ScalarType.Int, s, le(4, -3, -2, -1, 0, 1, 2));
            try (Tensor d = f.get("d"); Tensor e = f.get("e")) {
                assertEquals(-3.0, d.sum().item_double(), 0.0); // -3-2-1+0+1+2, through libtorch kernels
                assertEquals(-3.0, e.sum().item_float(), 0.0);
            }
        }
    }

    @Test
    void readsEachSingleDtypeHfSample() throws Exception {
        String[][] files = {{"B", "Byte", "1"}, {"H", "UInt16", "2"}, {"I", "UInt32", "4"}, {"b", "Char", "1"},
            {"h", "Short", "2"}, {"i", "Int", "4"}};
        for (String[] file : files) {
            try (SafetensorsFile f = SafetensorsFile.open(fixture(V + "hf-safetensors-samples/" + file[0] + ".safetensors"))) {
                assertEquals(List.of(file[0]), f.names());
                assertEquals(Map.of("test", "a"), f.metadata());
                assertTensor(f, file[0], ScalarType.valueOf(file[1]), new long[] {6},
                        le(Integer.parseInt(file[2]), -3, -2, -1, 0, 1, 2));
            }
        }
        try (SafetensorsFile f = SafetensorsFile.open(fixture(V + "hf-safetensors-samples/d.safetensors"))) {
            assertTensor(f, "d", ScalarType.Double, new long[] {6}, f64(-3, -2, -1, 0, 1, 2));
        }
        try (SafetensorsFile f = SafetensorsFile.open(fixture(V + "hf-safetensors-samples/f.safetensors"))) {
            assertTensor(f, "f", ScalarType.Float, new long[] {6}, f32(-3, -2, -1, 0, 1, 2));
        }
        try (SafetensorsFile f = SafetensorsFile.open(fixture(V + "hf-safetensors-samples/e.safetensors"))) {
            assertTensor(f, "e", ScalarType.Half, new long[] {6}, le(2, 0xC200, 0xC000, 0xBC00, 0, 0x3C00, 0x4000));
        }
    }

    @Test
    void readsDjlInt8Tensors() throws Exception {
        try (SafetensorsFile f = SafetensorsFile.open(fixture(V + "djl/list.safetensors"))) {
            assertEquals(List.of("attention", "embedding"), f.names());
            assertTrue(f.metadata().isEmpty());
            assertTensor(f, "attention", ScalarType.Char, new long[] {2, 3}, le(1, 0, 1, 2, 3, 4, 5));
            assertTensor(f, "embedding", ScalarType.Char, new long[] {2, 2}, le(1, 0, 1, 2, 3));
        }
    }

    @Test
    void readsSafetensorsJavaSample() throws Exception {
        try (SafetensorsFile f = SafetensorsFile.open(fixture(V + "safetensors-java/sample.safetensors"))) {
            assertEquals(List.of("some_ints", "some_floats"), f.names());
            assertTensor(f, "some_ints", ScalarType.Long, new long[] {1, 4}, le(8, -1, 0, 1, 2));
            assertTensor(f, "some_floats", ScalarType.Float, new long[] {1, 2, 2}, f32(-1, 0, 1, 2));
        }
    }

    @Test
    void readsBurnScalarTensorWithoutMetadata() throws Exception {
        try (SafetensorsFile f = SafetensorsFile.open(fixture(V + "burn/multi_layer.safetensors"))) {
            assertTrue(f.metadata().isEmpty());
            assertEquals(List.of("norm1.num_batches_tracked", "conv1.bias", "conv1.weight", "fc1.bias", "fc1.weight",
                    "norm1.bias", "norm1.running_mean", "norm1.running_var", "norm1.weight"), f.names());
            try (Tensor scalar = f.get("norm1.num_batches_tracked")) {
                assertEquals(0, scalar.dim());
                assertEquals(ScalarType.Long, scalar.scalar_type().intern());
            }
            try (Tensor w = f.get("fc1.weight")) {
                assertArrayEquals(new long[] {16, 256}, w.shape());
            }
            assertEquals(new TensorInfo("conv1.weight", "F32", new long[] {4, 3, 3, 3}, 24, 456), f.info("conv1.weight"));
        }
    }

    @Test
    void readsSafetensorsCppFloat64Matrices() throws Exception {
        try (SafetensorsFile f = SafetensorsFile.open(fixture(V + "safetensors-cpp/model.safetensors"))) {
            assertEquals(List.of("weight1", "weight2"), f.names());
            try (Tensor w1 = f.get("weight1"); Tensor w2 = f.get("weight2")) {
                assertArrayEquals(new long[] {8, 8}, w1.shape());
                assertArrayEquals(new long[] {16, 16}, w2.shape());
                // np.random.rand: uniform in [0, 1)
                assertTrue(w1.min().item_double() >= 0 && w1.max().item_double() < 1);
                assertTrue(w2.min().item_double() >= 0 && w2.max().item_double() < 1);
            }
        }
    }

    @Test
    void rejectsTheAbuseVectorWhoseHeaderLengthExceedsTheFile() {
        Path abuse = fixture(V + "safetensors-cpp/safetensors_abuse_attempt_1.safetensors");
        SafetensorsException e = assertThrows(SafetensorsException.class, () -> SafetensorsFile.open(abuse));
        assertTrue(e.getMessage().contains(abuse.toString()), e.getMessage());
        assertTrue(e.getMessage().contains("header length 1000"), e.getMessage());
        assertTrue(e.getMessage().contains("88 bytes"), e.getMessage());
    }

    /** gendata.py: np.arange(prod(shape)).reshape(shape) for each numpy dtype; bool = arange % 2. */
    @Test
    void readsJuliaNumpyArangeTensorsOfEveryDtype() throws Exception {
        try (SafetensorsFile f = SafetensorsFile.open(fixture(V + "safetensors-jl/non_sharded/model.numpy.safetensors"))) {
            assertEquals(27, f.names().size());
            long[][] shapes = {{3}, {3, 5}, {3, 5, 7}};
            String[] suffixes = {"_3", "_35", "_357"};
            for (int s = 0; s < 3; s++) {
                long[] shape = shapes[s];
                int n = 1;
                for (long d : shape) {
                    n *= (int) d;
                }
                long[] ar = range(0, n);
                float[] arf = new float[n];
                double[] ard = new double[n];
                long[] half = new long[n];
                long[] parity = new long[n];
                for (int i = 0; i < n; i++) {
                    arf[i] = i;
                    ard[i] = i;
                    half[i] = TestTensors.halfOfInt(i);
                    parity[i] = i % 2;
                }
                String x = suffixes[s];
                assertTensor(f, "int64" + x, ScalarType.Long, shape, le(8, ar));
                assertTensor(f, "int32" + x, ScalarType.Int, shape, le(4, ar));
                assertTensor(f, "int16" + x, ScalarType.Short, shape, le(2, ar));
                assertTensor(f, "int8" + x, ScalarType.Char, shape, le(1, ar));
                assertTensor(f, "uint8" + x, ScalarType.Byte, shape, le(1, ar));
                assertTensor(f, "float64" + x, ScalarType.Double, shape, f64(ard));
                assertTensor(f, "float32" + x, ScalarType.Float, shape, f32(arf));
                assertTensor(f, "float16" + x, ScalarType.Half, shape, le(2, half));
                assertTensor(f, "bool" + x, ScalarType.Bool, shape, le(1, parity));
            }
        }
    }

    @Test
    void readsJuliaTorchFileWithFloat8AndBfloat16() throws Exception {
        try (SafetensorsFile f = SafetensorsFile.open(fixture(V + "safetensors-jl/non_sharded/model.safetensors"));
                SafetensorsFile m = SafetensorsFile.open(fixture(V + "safetensors-jl/non_sharded/model.with_metadata.safetensors"))) {
            assertEquals(36, f.names().size());
            assertTrue(f.metadata().isEmpty());
            assertEquals(List.of("test", "version"), List.copyOf(m.metadata().keySet()));
            assertEquals(Map.of("test", "metadata", "version", "2.2"), m.metadata());
            Map<String, ScalarType> expected = Map.of("float8_e4m3fn_35", ScalarType.Float8_e4m3fn,
                    "float8_e5m2_357", ScalarType.Float8_e5m2, "bfloat16_3", ScalarType.BFloat16,
                    "bool_35", ScalarType.Bool, "int64_357", ScalarType.Long);
            for (Map.Entry<String, ScalarType> e : expected.entrySet()) {
                try (Tensor t = f.get(e.getKey())) {
                    assertEquals(e.getValue(), t.scalar_type().intern(), e.getKey());
                }
            }
            // the same tensors in both files (gendata.py saves one dict twice)
            assertEquals(f.names(), m.names());
            for (String name : f.names()) {
                try (Tensor a = f.get(name); Tensor b = m.get(name)) {
                    assertArrayEquals(bytes(a), bytes(b), name);
                    assertArrayEquals(f.info(name).shape(), a.shape(), name);
                }
            }
        }
    }
}

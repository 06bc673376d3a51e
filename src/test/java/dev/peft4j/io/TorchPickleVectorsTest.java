package dev.peft4j.io;

import static dev.peft4j.io.PickleTestTensors.doubles;
import static dev.peft4j.io.PickleTestTensors.fixture;
import static dev.peft4j.io.PickleTestTensors.longs;
import static dev.peft4j.io.PickleTestTensors.strides;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The torch-pickle-vectors fixtures (burn, candle, torchtune): every value checked against the
 * values their authors state (see the fixtures' PROVENANCE.md).
 */
class TorchPickleVectorsTest {

    private static Tensor only(String file) throws Exception {
        Map<String, Tensor> sd = TorchPickle.loadStateDict(fixture("torch-pickle-vectors/" + file));
        assertEquals(List.of("tensor"), List.copyOf(sd.keySet()), file);
        return sd.get("tensor");
    }

    @ParameterizedTest(name = "{0}")
    @CsvSource(delimiter = '|', value = {
        "burn/float32.pt  | Float    | 1.0 2.5 -3.7 0.0",
        "burn/float64.pt  | Double   | 1.1 2.2 3.3",
        "burn/float16.pt  | Half     | 1.5 -2.25 3.125",
        "burn/bfloat16.pt | BFloat16 | 1.5 -2.5 3.5",
        "burn/int64.pt    | Long     | 100 -200 300 0",
        "burn/int32.pt    | Int      | 10 20 -30",
        "burn/int16.pt    | Short    | 1000 -2000 3000",
        "burn/int8.pt     | Char     | 127 -128 0 50",
        "burn/uint8.pt    | Byte     | 0 128 255 42",
        "burn/bool.pt     | Bool     | 1 0 1 1 0",
    })
    void everyDtypeLoadsWithItsValues(String file, String dtype, String values) throws Exception {
        Tensor t = only(file);
        assertEquals(ScalarType.valueOf(dtype), t.scalar_type().intern());
        String[] parts = values.trim().split(" ");
        double[] expected = new double[parts.length];
        for (int i = 0; i < parts.length; i++) {
            // the file stores the value rounded to its dtype; round the stated decimal the same way
            expected[i] = dtype.equals("Float") ? (float) Double.parseDouble(parts[i]) : Double.parseDouble(parts[i]);
        }
        assertArrayEquals(new long[] {parts.length}, t.shape());
        assertArrayEquals(expected, doubles(t), 0.0);
        assertFalse(t.requires_grad());
    }

    @Test
    void int64ValuesAreExact() throws Exception {
        assertArrayEquals(new long[] {100, -200, 300, 0}, longs(only("burn/int64.pt")));
    }

    @Test
    void zeroDimTensorIsAScalar() throws Exception {
        Tensor t = only("burn/scalar.pt");
        assertEquals(0, t.dim());
        assertEquals(1, t.numel());
        assertArrayEquals(new double[] {42.0}, doubles(t), 0.0);
    }

    @Test
    void emptyTensorHasShapeZero() throws Exception {
        Tensor t = only("burn/empty.pt");
        assertArrayEquals(new long[] {0}, t.shape());
        assertEquals(ScalarType.Float, t.scalar_type().intern());
        assertEquals(0, doubles(t).length);
    }

    @Test
    void specialAndExtremeFloatsSurvive() throws Exception {
        double[] special = doubles(only("burn/special_values.pt"));
        assertTrue(Double.isNaN(special[0]));
        assertEquals(Double.POSITIVE_INFINITY, special[1]);
        assertEquals(Double.NEGATIVE_INFINITY, special[2]);
        assertArrayEquals(new double[] {0, 1}, new double[] {special[3], special[4]}, 0.0);
        assertArrayEquals(new double[] {(float) 1e-30, (float) 1e30, (float) -1e-30, (float) -1e30},
                doubles(only("burn/extreme_values.pt")), 0.0);
    }

    @Test
    void multiDimensionalShapesAndRowMajorValues() throws Exception {
        Tensor t2 = only("burn/tensor_2d.pt");
        assertArrayEquals(new long[] {3, 2}, t2.shape());
        assertArrayEquals(new double[] {1, 2, 3, 4, 5, 6}, doubles(t2), 0.0);
        Tensor t4 = only("burn/tensor_4d.pt");
        assertArrayEquals(new long[] {2, 3, 2, 2}, t4.shape());
        assertArrayEquals(new long[] {12, 4, 2, 1}, strides(t4));
        Tensor t3 = only("burn/tensor_3d.pt");
        double[] first = {19.26915, 14.872842, 9.007172, -21.055214, 6.7841845, -12.345449, -0.4306748, -16.046669};
        double[] got = doubles(t3);
        for (int i = 0; i < first.length; i++) {
            assertEquals(first[i], got[i], 1e-5, "tensor_3d[" + i + "]");
        }
        Tensor big = only("burn/large_shape.pt");
        double[] v = doubles(big);
        double sum = 0;
        for (double x : v) {
            sum += x;
        }
        assertEquals(6.0, sum, 0.0, "only three non-zero entries, 1 + 2 + 3");
        assertEquals(1.0, v[0], 0.0);
        assertEquals(2.0, v[50 * 100 + 50], 0.0);
        assertEquals(3.0, v[99 * 100 + 99], 0.0);
    }

    @Test
    void fortranOrderStridesAreKept() throws Exception {
        Map<String, Tensor> sd = TorchPickle.loadStateDict(fixture("torch-pickle-vectors/candle/fortran_tensor_3d.pth"));
        Tensor t = sd.get("tensor_fortran");
        assertArrayEquals(new long[] {2, 3, 4}, t.shape());
        assertArrayEquals(new long[] {1, 2, 6}, strides(t));
        assertFalse(t.is_contiguous());
        long[] expected = new long[24];
        for (int i = 0; i < 24; i++) {
            expected[i] = i + 1; // np.arange(1, 25).reshape(2, 3, 4) in logical order
        }
        assertArrayEquals(expected, longs(t));
    }

    @Test
    void orderedDictTopLevelAndBoolMatrix() throws Exception {
        Map<String, Tensor> test = TorchPickle.loadStateDict(fixture("torch-pickle-vectors/candle/test.pt"));
        assertArrayEquals(new long[] {1, 2, 3, 4, 5, 6, 7, 8}, longs(test.get("test")));
        assertArrayEquals(new long[] {2, 4}, test.get("test").shape());
        Tensor b = TorchPickle.loadStateDict(fixture("torch-pickle-vectors/candle/boolean.pt")).get("bool");
        assertEquals(ScalarType.Bool, b.scalar_type().intern());
        assertArrayEquals(new long[] {1, 0, 0, 1}, longs(b));
    }

    @Test
    void parameterKeepsRequiresGrad() throws Exception {
        Tensor p = TorchPickle.loadStateDict(fixture("torch-pickle-vectors/burn/parameter.pt")).get("param");
        assertTrue(p.requires_grad(), "nn.Parameter is saved with requires_grad=True");
        assertArrayEquals(new long[] {3, 3}, p.shape());
        assertEquals(1.0249119, doubles(p)[0], 1e-6);
    }

    @Test
    void loadedParameterTrainsAsALeaf() throws Exception {
        Tensor p = TorchPickle.loadStateDict(fixture("torch-pickle-vectors/burn/parameter.pt")).get("param");
        assertTrue(p.is_leaf());
        double[] before = doubles(p);
        Tensor loss = p.mul(new org.bytedeco.pytorch.Scalar(3.0)).sum();
        loss.backward();
        double[] grad = doubles(p.grad());
        for (double g : grad) {
            assertEquals(3.0, g, 0.0);
        }
        // an optimizer-style in-place step under no-grad
        try (org.bytedeco.pytorch.NoGradGuard guard = new org.bytedeco.pytorch.NoGradGuard()) {
            p.sub_(p.grad());
        }
        assertEquals(before[0] - 3.0, doubles(p)[0], 1e-6);
    }

    @Test
    void legacyViewsShareOneStorageWithOffsets() throws Exception {
        Map<String, Tensor> sd = TorchPickle.loadStateDict(fixture("torch-pickle-vectors/burn/legacy_uncloned_views.pt"));
        Tensor a = sd.get("tensor1");
        Tensor b = sd.get("tensor2");
        assertEquals(10, a.storage_offset());
        assertEquals(50, b.storage_offset());
        assertArrayEquals(new double[] {10, 11, 12, 13, 14, 15, 16, 17, 18, 19}, doubles(a), 0.0);
        assertArrayEquals(new double[] {50, 51, 52, 53, 54, 55, 56, 57, 58, 59}, doubles(b), 0.0);
        // one buffer: the data pointers are 40 floats apart, and a write through one view shows in the storage
        assertEquals(40 * 4, b.data_ptr().address() - a.data_ptr().address());
        assertEquals(a.storage().data().address(), b.storage().data().address());
    }

    @Test
    void legacyFilesLoadWithTheirValues() throws Exception {
        Map<String, Tensor> off = TorchPickle.loadStateDict(fixture("torch-pickle-vectors/burn/legacy_with_offsets.pt"));
        double[] t1 = doubles(off.get("tensor1"));
        for (int i = 0; i < 10; i++) {
            assertEquals((float) (1.0 + 0.01 * i), t1[i], 1e-6);
        }
        assertArrayEquals(new double[] {2.0, 2.1, 2.2, 2.3, 2.4}, doubles(off.get("tensor2")), 1e-6);
        assertArrayEquals(new double[] {3.0, 3.1, 3.2, 3.3, 3.4}, doubles(off.get("tensor3")), 1e-6);
        Map<String, Tensor> simple = TorchPickle.loadStateDict(fixture("torch-pickle-vectors/burn/simple_legacy.pt"));
        assertEquals(List.of("weight", "bias", "running_mean"), List.copyOf(simple.keySet()));
        assertArrayEquals(new double[] {-1.812955, 1.1972814, -1.259396, -0.6564882, -1.4788749, 2.0878928},
                doubles(simple.get("weight")), 1e-6);
        assertArrayEquals(new double[] {1, 1}, doubles(simple.get("bias")), 0.0);
        Map<String, Tensor> shared = TorchPickle.loadStateDict(fixture("torch-pickle-vectors/burn/legacy_shared_storage.pt"));
        assertArrayEquals(new long[] {20}, shared.get("view2").shape());
        assertEquals(1.0439506, doubles(shared.get("view1"))[0], 1e-6);
        assertEquals(0.1538536, doubles(shared.get("view3"))[0], 1e-6);
    }

    @Test
    void checkpointWithNestedDictsAndPlainValues() throws Exception {
        Object top = TorchPickle.load(fixture("torch-pickle-vectors/burn/checkpoint.pt"));
        Map<?, ?> m = assertInstanceOf(Map.class, top);
        assertEquals(42L, m.get("epoch"));
        assertEquals(0.123, (Double) m.get("loss"), 0.0);
        Map<?, ?> model = assertInstanceOf(Map.class, m.get("model_state_dict"));
        Tensor w = assertInstanceOf(Tensor.class, model.get("fc1.weight"));
        assertArrayEquals(new long[] {10, 5}, w.shape());
        assertEquals(1.041401, doubles(w)[0], 1e-6);
        Map<?, ?> opt = assertInstanceOf(Map.class, m.get("optimizer_state_dict"));
        Map<?, ?> state = assertInstanceOf(Map.class, opt.get("state"));
        Map<?, ?> s0 = assertInstanceOf(Map.class, state.get("0"), "burn's generator keyed the state by str");
        assertArrayEquals(new long[] {10, 5}, assertInstanceOf(Tensor.class, s0.get("momentum_buffer")).shape());
    }

    @Test
    void buffersMixedTypesAndStateDict() throws Exception {
        Map<String, Tensor> buffers = TorchPickle.loadStateDict(fixture("torch-pickle-vectors/burn/buffers.pt"));
        assertEquals(ScalarType.Int, buffers.get("buffer1").scalar_type().intern());
        assertArrayEquals(new long[] {1, 2, 3}, longs(buffers.get("buffer1")));
        assertArrayEquals(new long[] {1, 0}, longs(buffers.get("buffer2")));
        Map<String, Tensor> mixed = TorchPickle.loadStateDict(fixture("torch-pickle-vectors/burn/mixed_types.pt"));
        assertEquals(List.of("float32", "int64", "bool", "float64"), List.copyOf(mixed.keySet()));
        assertArrayEquals(new double[] {1, 2}, doubles(mixed.get("float32")), 0.0);
        assertArrayEquals(new long[] {100, 200}, longs(mixed.get("int64")));
        assertArrayEquals(new long[] {1, 0}, longs(mixed.get("bool")));
        assertArrayEquals(new double[] {1.1, 2.2}, doubles(mixed.get("float64")), 0.0);
        Map<String, Tensor> sd = TorchPickle.loadStateDict(fixture("torch-pickle-vectors/burn/state_dict.pt"));
        assertEquals(List.of("weight", "bias", "running_mean", "running_var"), List.copyOf(sd.keySet()));
        assertArrayEquals(new double[] {1.1351023, 0.7592452, -3.5944688}, doubles(sd.get("bias")), 1e-6);
        assertArrayEquals(new double[] {1, 1, 1}, doubles(sd.get("running_var")), 0.0);
    }

    @Test
    void nestedDictsAndComplexStructure() throws Exception {
        Map<?, ?> nested = assertInstanceOf(Map.class,
                TorchPickle.load(fixture("torch-pickle-vectors/burn/nested_dict.pt")));
        Map<?, ?> layer2 = assertInstanceOf(Map.class, nested.get("layer2"));
        Tensor w2 = assertInstanceOf(Tensor.class, layer2.get("weight"));
        assertArrayEquals(new long[] {4, 2}, w2.shape());
        assertArrayEquals(new double[] {1.4111539, -0.655611, 0.8576057, -1.6270243, -1.3951387, -0.2387242,
            -0.5049904, -2.4751632}, doubles(w2), 1e-6);
        Map<?, ?> c = assertInstanceOf(Map.class,
                TorchPickle.load(fixture("torch-pickle-vectors/burn/complex_structure.pt")));
        Map<?, ?> metadata = assertInstanceOf(Map.class, c.get("metadata"));
        assertEquals(1L, metadata.get("version"));
        assertEquals("test_model", metadata.get("name"));
        Map<?, ?> config = assertInstanceOf(Map.class, c.get("config"));
        assertEquals(4L, config.get("hidden_size"));
        assertEquals(2L, config.get("num_layers"));
        Map<?, ?> state = assertInstanceOf(Map.class, c.get("state"));
        Map<?, ?> decoder = assertInstanceOf(Map.class, state.get("decoder"));
        assertArrayEquals(new double[] {-1.002383, 0.445162, 1.7130821},
                doubles(assertInstanceOf(Tensor.class, decoder.get("bias"))), 1e-6);
        Map<?, ?> encoder = assertInstanceOf(Map.class, state.get("encoder"));
        Map<?, ?> layer0 = assertInstanceOf(Map.class, encoder.get("layer_0"));
        assertArrayEquals(new long[] {4, 3}, assertInstanceOf(Tensor.class, layer0.get("weight")).shape());
    }

    @Test
    void stateDictWrappedInACheckpointIsRefusedNamingTheKey() {
        TorchPickleException e = assertThrows(TorchPickleException.class,
                () -> TorchPickle.loadStateDict(fixture("torch-pickle-vectors/candle/test_with_key.pt")));
        assertTrue(e.getMessage().contains("'model_state_dict'"), e.getMessage());
        assertTrue(e.getMessage().contains("test_with_key.pt"), e.getMessage());
    }

    @Test
    void brokenFileFailsCleanly() {
        TorchPickleException e = assertThrows(TorchPickleException.class,
                () -> TorchPickle.load(fixture("torch-pickle-vectors/burn/broken.pt")));
        assertTrue(e.getMessage().contains("broken.pt") && e.getMessage().contains("not a torch.save file"),
                e.getMessage());
    }

    /**
     * The pre-1.0 tar format is refused by name. (burn's tar files are not even what torch 0.x
     * wrote: no {@code tensors} member, and storages passed as plain tuples, not persistent ids.)
     */
    @ParameterizedTest(name = "{0}")
    @org.junit.jupiter.params.provider.ValueSource(strings = {"tar_2d_tensor.tar", "tar_float32.tar",
        "tar_float64.tar", "tar_int64.tar", "tar_multi_dtype.tar", "tar_weight_bias.tar"})
    void ancientTarFormatIsRefusedByName(String file) {
        TorchPickleException e = assertThrows(TorchPickleException.class,
                () -> TorchPickle.load(fixture("torch-pickle-vectors/burn/" + file)));
        assertTrue(e.getMessage().contains("tar format") && e.getMessage().contains(file), e.getMessage());
    }

    @Test
    void torchtuneCheckpointKeysAndShapesInFileOrder() throws Exception {
        Map<String, Tensor> sd = TorchPickle.loadStateDict(fixture("torch-pickle-vectors/torchtune/tiny_fair_checkpoint.pt"));
        assertEquals(21, sd.size());
        List<String> keys = List.copyOf(sd.keySet());
        assertEquals("tok_embeddings.weight", keys.get(0));
        assertEquals("layers.0.attention.wq.weight", keys.get(1));
        assertEquals("output.weight", keys.get(20));
        assertArrayEquals(new long[] {500, 32}, sd.get("tok_embeddings.weight").shape());
        assertArrayEquals(new long[] {32, 256}, sd.get("layers.1.feed_forward.w2.weight").shape());
        Tensor one = TorchPickle.loadStateDict(fixture("torch-pickle-vectors/torchtune/tiny_state_dict_with_one_key.pt"))
                .get("test_key");
        assertEquals(1.3561258, doubles(one)[0], 1e-6);
    }
}

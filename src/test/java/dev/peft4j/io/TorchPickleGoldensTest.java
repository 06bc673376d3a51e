package dev.peft4j.io;

import static dev.peft4j.io.PickleTestTensors.doubles;
import static dev.peft4j.io.PickleTestTensors.fixture;
import static dev.peft4j.io.PickleTestTensors.strides;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.math.BigInteger;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Files written by Python torch 1.13.1 ({@code fixtures/torch-pickle-goldens/make_goldens.py}),
 * in both formats, against {@code expected.json}: what torch itself reads back from them.
 */
class TorchPickleGoldensTest {
    private static final String DIR = "torch-pickle-goldens/";

    private static JsonNode expected(String file) throws Exception {
        JsonNode all = new ObjectMapper().readTree(Files.readString(fixture(DIR + "expected.json")));
        JsonNode e = all.get(file);
        assertTrue(e != null, "expected.json has " + file);
        return e;
    }

    private static ScalarType dtype(String python) {
        return switch (python) {
            case "float32" -> ScalarType.Float;
            case "float64" -> ScalarType.Double;
            case "float16" -> ScalarType.Half;
            case "bfloat16" -> ScalarType.BFloat16;
            case "int64" -> ScalarType.Long;
            case "int32" -> ScalarType.Int;
            case "int16" -> ScalarType.Short;
            case "int8" -> ScalarType.Char;
            case "uint8" -> ScalarType.Byte;
            case "bool" -> ScalarType.Bool;
            case "complex64" -> ScalarType.ComplexFloat;
            case "complex128" -> ScalarType.ComplexDouble;
            default -> throw new IllegalArgumentException(python);
        };
    }

    /** Values in logical order; complex ones as (real, imaginary) pairs, as torch.view_as_real gives. */
    private static double[] values(Tensor t) {
        ScalarType dt = t.scalar_type().intern();
        if (dt != ScalarType.ComplexFloat && dt != ScalarType.ComplexDouble) {
            return doubles(t);
        }
        long n = 2 * t.numel();
        Tensor c = t.contiguous();
        double[] out = new double[(int) n];
        if (dt == ScalarType.ComplexFloat) {
            float[] f = new float[(int) n];
            new FloatPointer(c.data_ptr()).capacity(n).get(f);
            for (int i = 0; i < n; i++) {
                out[i] = f[i];
            }
        } else {
            new DoublePointer(c.data_ptr()).capacity(n).get(out);
        }
        return out;
    }

    private static long[] longArray(JsonNode n) {
        long[] out = new long[n.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = n.get(i).asLong();
        }
        return out;
    }

    private static void assertTensor(JsonNode e, Object actual, String where) {
        Tensor t = assertInstanceOf(Tensor.class, actual, where);
        assertEquals(dtype(e.get("tensor").asText()), t.scalar_type().intern(), where + " dtype");
        assertArrayEquals(longArray(e.get("shape")), t.shape(), where + " shape");
        assertArrayEquals(longArray(e.get("stride")), strides(t), where + " stride");
        assertEquals(e.get("offset").asLong(), t.storage_offset(), where + " storage offset");
        assertEquals(e.get("requires_grad").asBoolean(), t.requires_grad(), where + " requires_grad");
        JsonNode v = e.get("values");
        double[] got = values(t);
        assertEquals(v.size(), got.length, where + " number of values");
        for (int i = 0; i < got.length; i++) {
            JsonNode x = v.get(i);
            double want = x.isTextual() ? Double.parseDouble(x.asText().replace("inf", "Infinity"))
                    : x.isBoolean() ? (x.asBoolean() ? 1 : 0) : x.asDouble();
            assertEquals(want, got[i], 0.0, where + "[" + i + "]");
        }
    }

    /** Compares a value tree against make_goldens.py's description of it. */
    private static void assertValue(JsonNode e, Object actual, String where) {
        if (e.isNull()) {
            assertNull(actual, where);
        } else if (e.isBoolean()) {
            assertEquals(e.asBoolean(), actual, where);
        } else if (e.isTextual()) {
            assertEquals(e.asText(), actual, where);
        } else if (e.has("tensor")) {
            assertTensor(e, actual, where);
        } else if (e.has("dict")) {
            Map<?, ?> m = assertInstanceOf(Map.class, actual, where);
            JsonNode items = e.get("dict");
            assertEquals(items.size(), m.size(), where + " size");
            Iterator<? extends Map.Entry<?, ?>> it = m.entrySet().iterator();
            for (JsonNode kv : items) {
                Map.Entry<?, ?> entry = it.next();
                assertEquals(kv.get(0).asText(), entry.getKey(), where + " key order");
                assertValue(kv.get(1), entry.getValue(), where + "." + kv.get(0).asText());
            }
        } else if (e.has("list") || e.has("tuple")) {
            List<?> l = assertInstanceOf(List.class, actual, where);
            JsonNode items = e.has("list") ? e.get("list") : e.get("tuple");
            assertEquals(items.size(), l.size(), where + " size");
            for (int i = 0; i < l.size(); i++) {
                assertValue(items.get(i), l.get(i), where + "[" + i + "]");
            }
        } else if (e.has("int")) {
            BigInteger want = new BigInteger(e.get("int").asText());
            assertEquals(want.bitLength() < 64 ? (Object) want.longValue() : want, actual, where);
        } else {
            throw new AssertionError("unknown expectation " + e + " at " + where);
        }
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"all_dtypes.pt", "all_dtypes_legacy.pt", "views.pt", "views_legacy.pt",
        "module_state_dict.pt", "parameter_legacy.pt", "views_protocol4.pt", "views_legacy_protocol4.pt",
        "views_legacy_protocol1.pt"})
    void loadsWhatTorchReadsBack(String file) throws Exception {
        assertValue(expected(file), TorchPickle.load(fixture(DIR + file)), file);
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"views.pt", "views_legacy.pt", "views_bigendian.pt", "views_legacy_protocol1.pt"})
    void viewsOfOneTensorShareOneStorage(String file) throws Exception {
        Map<String, Tensor> sd = TorchPickle.loadStateDict(fixture(DIR + file));
        long base = sd.get("base").data_ptr().address();
        for (String view : new String[] {"row_slice", "transposed", "every_other", "column", "scalar_view"}) {
            Tensor t = sd.get(view);
            assertEquals(base + 4 * t.storage_offset(), t.data_ptr().address(), view + " points into base's buffer");
        }
        // writing through the base shows in a view: one buffer, not copies
        sd.get("base").fill_(new org.bytedeco.pytorch.Scalar(3.0));
        assertEquals(3.0, doubles(sd.get("every_other"))[4], 0.0);
    }

    @Test
    void bigEndianFileReadsAsItsLittleEndianTwin() throws Exception {
        JsonNode e = expected("views.pt");
        Object big = TorchPickle.load(fixture(DIR + "views_bigendian.pt"));
        assertValue(e, big, "views_bigendian.pt");
    }

    @Test
    void plainValuesComeBackAsJavaValues() throws Exception {
        Map<?, ?> m = assertInstanceOf(Map.class, TorchPickle.load(fixture(DIR + "plain_values.pt")));
        assertEquals(7L, m.get("int"));
        assertEquals(-300000L, m.get("negative"));
        assertEquals(BigInteger.TWO.pow(70), m.get("big"));
        assertEquals(0.1, m.get("float"));
        assertTrue(((Double) m.get("nan")).isNaN());
        assertEquals(Boolean.TRUE, m.get("true"));
        assertTrue(m.containsKey("none"));
        assertNull(m.get("none"));
        assertEquals("h\u00e9llo \u2603", m.get("text"));
        assertArrayEquals(new byte[] {0, 1, (byte) 0xfe, (byte) 0xff}, (byte[]) m.get("bytes"));
        assertEquals(List.of(1L, List.of(2L, List.of(3L))), m.get("list"));
        List<Object> tuple = new ArrayList<>();
        tuple.add(1L);
        tuple.add("a");
        tuple.add(null);
        assertEquals(tuple, m.get("tuple"));
        assertThrows(UnsupportedOperationException.class, () -> ((List<Object>) m.get("tuple")).add("x"),
                "tuples are unmodifiable");
        assertEquals(List.of(2L, 3L), m.get("size"));
        assertEquals("int key", m.get(5L));
        assertEquals(ScalarType.Half, m.get("dtype"));
        assertEquals("cuda:1", m.get("device"));
        assertEquals("cpu", m.get("cpu"));
        Map<?, ?> w = assertInstanceOf(Map.class, m.get("weights"));
        assertArrayEquals(new double[] {1, 1}, doubles((Tensor) w.get("w")), 0.0);
        assertFalse(m.containsKey("unexpected"));
    }

    @Test
    void storageSavedAsAValueComesBackAsA1dTensorSharingMemory() throws Exception {
        Map<?, ?> m = assertInstanceOf(Map.class, TorchPickle.load(fixture(DIR + "storage_values.pt")));
        Tensor s = assertInstanceOf(Tensor.class, m.get("storage"));
        assertEquals(ScalarType.Float, s.scalar_type().intern());
        assertArrayEquals(new double[] {1.5, -2.0, 4.0}, doubles(s), 0.0);
        Tensor i16 = assertInstanceOf(Tensor.class, m.get("int_storage"));
        assertEquals(ScalarType.Short, i16.scalar_type().intern());
        assertArrayEquals(new double[] {3, 4}, doubles(i16), 0.0);
        Tensor t = assertInstanceOf(Tensor.class, m.get("tensor"));
        assertEquals(s.data_ptr().address(), t.data_ptr().address(), "the tensor is a view of the saved storage");
    }

    @Test
    void globalThatWouldRunCodeIsRefusedByName() {
        TorchPickleException e = assertThrows(TorchPickleException.class,
                () -> TorchPickle.load(fixture(DIR + "evil_os_system.pt")));
        assertTrue(e.getMessage().contains("'posix.system'") && e.getMessage().contains("evil_os_system.pt"),
                e.getMessage());
    }

    @Test
    void wholePickledModuleIsRefusedByName() {
        TorchPickleException e = assertThrows(TorchPickleException.class,
                () -> TorchPickle.load(fixture(DIR + "whole_module.pt")));
        assertTrue(e.getMessage().contains("'torch.nn.modules.linear.Linear'"), e.getMessage());
    }
}

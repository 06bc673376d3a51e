package dev.peft4j.tuners;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/** Test helper: tensors from the JSON goldens/fixtures, and allclose with a readable failure message. */
public final class Goldens {
    private Goldens() {}

    /** The parsed JSON resource at {@code path} (class-path absolute, e.g. {@code /dev/peft4j/tuners/...}). */
    public static JsonNode json(String path) {
        try (InputStream in = Goldens.class.getResourceAsStream(path)) {
            if (in == null) {
                throw new IllegalStateException("missing test resource " + path);
            }
            return new ObjectMapper().readTree(in);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** A goldens case of {@code goldens/tuner_goldens.json}. */
    public static JsonNode goldenCase(String name) {
        JsonNode c = json("/dev/peft4j/tuners/goldens/tuner_goldens.json").path("cases").path(name);
        if (c.isMissingNode()) {
            throw new IllegalStateException("no golden case " + name);
        }
        return c;
    }

    /** {@code {"dtype", "shape", "data"}} (dtype float32 when absent) as a tensor of that dtype. */
    public static Tensor tensor(JsonNode node) {
        long[] shape = new long[node.path("shape").size()];
        for (int i = 0; i < shape.length; i++) {
            shape[i] = node.path("shape").get(i).asLong();
        }
        JsonNode data = node.path("data");
        String dtype = node.path("dtype").asText("float32");
        if (dtype.equals("int64")) {
            long[] v = new long[data.size()];
            for (int i = 0; i < v.length; i++) {
                v[i] = data.get(i).asLong();
            }
            return Tensor.create(v, shape);
        }
        float[] v = new float[data.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) data.get(i).asDouble();
        }
        Tensor t = Tensor.create(v, shape);
        // bfloat16 values are stored as the floats they represent: the conversion is exact
        return dtype.equals("bfloat16") ? t.to(ScalarType.BFloat16) : t;
    }

    /** The tensor's values as floats (any floating dtype, any layout). */
    public static float[] floats(Tensor t) {
        Tensor c = t.to(ScalarType.Float).contiguous();
        float[] out = new float[(int) c.numel()];
        if (out.length > 0) {
            new FloatPointer(c.data_ptr()).capacity(out.length).get(out);
        }
        return out;
    }

    /**
     * {@code |actual − expected| <= atol + rtol·|expected|} elementwise (torch.allclose), same shape; the message
     * names the worst element.
     */
    public static void assertClose(Tensor expected, Tensor actual, double atol, double rtol, String what) {
        assertArrayEquals(expected.shape(), actual.shape(), what + ": shape");
        float[] e = floats(expected);
        float[] a = floats(actual);
        int worst = -1;
        double worstExcess = 0;
        for (int i = 0; i < e.length; i++) {
            double excess = Math.abs((double) a[i] - e[i]) - (atol + rtol * Math.abs(e[i]));
            if (!(excess <= 0) && (worst < 0 || excess > worstExcess || Double.isNaN(excess))) {
                worst = i;
                worstExcess = excess;
            }
        }
        if (worst >= 0) {
            assertTrue(false, what + ": element " + worst + " is " + a[worst] + ", expected " + e[worst]
                    + " (atol " + atol + ", rtol " + rtol + ")");
        }
    }

    /** Bit-for-bit equal values and shapes (compared as floats, so exact for fp32 and bf16). */
    public static void assertSameValues(Tensor expected, Tensor actual, String what) {
        assertArrayEquals(expected.shape(), actual.shape(), what + ": shape");
        assertArrayEquals(floats(expected), floats(actual), what);
    }
}

package dev.peft4j.io;

import java.net.URISyntaxException;
import java.nio.file.Path;
import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/** Test helpers: fixture paths and tensor values read back into Java arrays. */
final class PickleTestTensors {
    private PickleTestTensors() {}

    /** A file under {@code src/test/resources/fixtures/}. */
    static Path fixture(String relative) {
        try {
            return Path.of(PickleTestTensors.class.getResource("/fixtures/" + relative).toURI());
        } catch (URISyntaxException | NullPointerException e) {
            throw new IllegalStateException("missing test fixture " + relative, e);
        }
    }

    /** Values in logical row-major order, converted to double by libtorch. */
    static double[] doubles(Tensor t) {
        long n = t.numel();
        if (n == 0) {
            return new double[0];
        }
        Tensor c = t.to(ScalarType.Double).contiguous();
        double[] out = new double[(int) n];
        new DoublePointer(c.data_ptr()).capacity(n).get(out);
        c.close();
        return out;
    }

    /** Values in logical row-major order, converted to int64 by libtorch. */
    static long[] longs(Tensor t) {
        long n = t.numel();
        if (n == 0) {
            return new long[0];
        }
        Tensor c = t.to(ScalarType.Long).contiguous();
        long[] out = new long[(int) n];
        new LongPointer(c.data_ptr()).capacity(n).get(out);
        c.close();
        return out;
    }

    static long[] strides(Tensor t) {
        long[] s = new long[(int) t.dim()];
        for (int i = 0; i < s.length; i++) {
            s[i] = t.stride(i);
        }
        return s;
    }
}

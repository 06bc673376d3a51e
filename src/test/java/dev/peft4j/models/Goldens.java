package dev.peft4j.models;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.Arrays;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/** Test helpers: golden folders under src/test/resources/dev/peft4j/models/golden, and tensor comparison. */
final class Goldens {
    private Goldens() {}

    static Path resource(String relative) {
        try {
            return Path.of(Goldens.class.getResource("/dev/peft4j/models/" + relative).toURI());
        } catch (URISyntaxException | NullPointerException e) {
            throw new IllegalStateException("test resource missing: " + relative, e);
        }
    }

    static Path golden(String name) {
        return resource("golden/" + name);
    }

    /** Max |a - b| over all elements (compared in float32). */
    static float maxAbsDiff(Tensor a, Tensor b) {
        assertArrayEquals(a.shape(), b.shape(), "shapes differ: " + Arrays.toString(a.shape()) + " vs "
                + Arrays.toString(b.shape()));
        try (Tensor af = a.to(ScalarType.Float); Tensor bf = b.to(ScalarType.Float); Tensor d = af.sub(bf);
                Tensor ad = d.abs(); Tensor m = ad.max()) {
            return m.item_float();
        }
    }

    static void assertClose(Tensor expected, Tensor actual, float tol, String what) {
        float d = maxAbsDiff(expected, actual);
        assertTrue(d <= tol, what + ": max |diff| " + d + " > " + tol);
    }
}

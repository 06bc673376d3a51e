package dev.peft4j.models;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.Arrays;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.LongOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Test helpers: golden folders under src/test/resources/dev/peft4j/models/golden, a golden case opened with its model
 * and reference tensors, and tensor comparison.
 */
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

    /**
     * Asserts a left-padded reference batch: row 0 whole, row 1 (left-padded by 2) on its real positions 2 to 6 only,
     * the padded positions being undefined.
     */
    static void assertPaddedClose(Tensor expected, Tensor actual, float tol, String what) {
        assertClose(expected.select(0, 0), actual.select(0, 0), tol, what + " row 0");
        assertClose(expected.select(0, 1).narrow(0, 2, 5), actual.select(0, 1).narrow(0, 2, 5), tol, what + " row 1");
    }

    /**
     * The logits of {@code ids} [B, 7] decoded through {@code cache}: a prefill of 3 tokens, then one token a step,
     * the mask growing with them; asserts the cache's length after the prefill and at the end.
     */
    static Tensor decodeStepwise(CausalLM lm, Tensor ids, Tensor mask, KVCache cache) {
        TensorVector steps = new TensorVector();
        steps.push_back(lm.forward(ids.narrow(1, 0, 3), mask.narrow(1, 0, 3), null, cache));
        assertEquals(3, cache.length(), "cache length after the prefill");
        for (int t = 3; t < 7; t++) {
            steps.push_back(lm.forward(ids.narrow(1, t, 1), mask.narrow(1, 0, t + 1), null, cache));
        }
        assertEquals(7, cache.length(), "cache length after the steps");
        return torch.cat(steps, 1);
    }

    /** Greedy decoding of {@code n} tokens by a full forward over the whole sequence each step, no cache. */
    static Tensor uncachedGreedy(CausalLM lm, Tensor prompt, int n) {
        try (InferenceMode g = new InferenceMode()) {
            Tensor ids = prompt;
            for (int i = 0; i < n; i++) {
                Tensor logits = lm.forward(ids, null, null, null);
                Tensor next = logits.select(1, logits.size(1) - 1).argmax(new LongOptional(-1), true);
                ids = torch.cat(new TensorVector(ids, next), 1);
            }
            return ids;
        }
    }

    /** Loads the model of a golden folder. */
    interface Loader<M extends AutoCloseable> {
        M load(Path dir) throws Exception;
    }

    /** A causal LM golden case in float32 under inference mode. */
    static Case<CausalLM> causalLM(String name) throws Exception {
        return open(name, dir -> AutoModel.causalLM(dir, ScalarType.Float), true);
    }

    /**
     * Opens golden case {@code name}: a pointer scope, inference mode when {@code inference}, the model
     * {@code loader} makes of the folder, and its golden.safetensors.
     */
    static <M extends AutoCloseable> Case<M> open(String name, Loader<M> loader, boolean inference) throws Exception {
        Path dir = golden(name);
        PointerScope scope = new PointerScope();
        InferenceMode mode = null;
        M model = null;
        try {
            mode = inference ? new InferenceMode() : null;
            model = loader.load(dir);
            return new Case<>(name, dir, scope, mode, model, Checkpoints.open(dir, "golden.safetensors"));
        } catch (Exception | Error e) {
            if (model != null) {
                model.close();
            }
            if (mode != null) {
                mode.close();
            }
            scope.close();
            throw e;
        }
    }

    /**
     * One golden case opened for a test: its model and reference tensors inside a pointer scope (and inference mode
     * when asked); {@link #close} releases them in the reverse order.
     */
    static final class Case<M extends AutoCloseable> implements AutoCloseable {
        final String name;
        final Path dir;
        final M model;
        /** The reference batch's {@code input_ids} and {@code attention_mask}. */
        final Tensor ids;
        final Tensor mask;
        private final PointerScope scope;
        private final InferenceMode inference;
        private final Checkpoints.Opened golden;

        private Case(String name, Path dir, PointerScope scope, InferenceMode inference, M model,
                Checkpoints.Opened golden) {
            this.name = name;
            this.dir = dir;
            this.scope = scope;
            this.inference = inference;
            this.model = model;
            this.golden = golden;
            this.ids = golden.tensors.get("input_ids");
            this.mask = golden.tensors.get("attention_mask");
        }

        /** The reference tensor {@code key} of golden.safetensors. */
        Tensor golden(String key) {
            Tensor t = golden.tensors.get(key);
            if (t == null) {
                throw new IllegalStateException(dir + "/golden.safetensors has no tensor '" + key + "'");
            }
            return t;
        }

        @Override
        public void close() throws Exception {
            try {
                golden.close();
                model.close();
            } finally {
                if (inference != null) {
                    inference.close();
                }
                scope.close();
            }
        }
    }
}

package dev.peft4j.tuners.adalora;

import static dev.peft4j.tuners.Goldens.assertClose;
import static dev.peft4j.tuners.Goldens.assertSameValues;
import static dev.peft4j.tuners.Goldens.floats;
import static dev.peft4j.tuners.Goldens.goldenCase;
import static dev.peft4j.tuners.Goldens.tensor;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Against a step-by-step restatement of PEFT's {@code RankAllocator} in torch 1.13 (goldens). The smoothed scores are
 * element-wise fp32 arithmetic on the same inputs: compared at 1e-6 relative (a couple of ulps, for the different
 * evaluation order of {@code β·a + (1−β)·b}).
 */
class AdaLoraRankAllocatorTest {
    private PointerScope scope;

    @BeforeEach
    void openScope() {
        scope = new PointerScope();
    }

    @AfterEach
    void closeScope() {
        scope.close();
    }

    static Map<String, Tensor> params(JsonNode c) {
        Map<String, Tensor> p = new LinkedHashMap<>();
        c.path("initial").fields().forEachRemaining(e -> p.put(e.getKey(), tensor(e.getValue()).requires_grad_(true)));
        return p;
    }

    /** Gives every parameter the gradient {@code g} (via backward of Σ p·g), then applies {@code p -= lr·g}. */
    static void train(Map<String, Tensor> params, JsonNode grads, AdaLoraRankAllocator allocator, double lr) {
        for (JsonNode step : grads) {
            Tensor loss = null;
            List<Tensor> gs = new ArrayList<>();
            for (Map.Entry<String, Tensor> e : params.entrySet()) {
                Tensor p = e.getValue();
                if (p.grad().defined()) {
                    p.mutable_grad().zero_();
                }
                Tensor g = tensor(step.path(e.getKey()));
                gs.add(g);
                Tensor term = p.mul(g).sum();
                loss = loss == null ? term : loss.add(term);
            }
            loss.backward();
            allocator.updateImportance(params);
            try (NoGradGuard ng = new NoGradGuard()) {
                int i = 0;
                for (Tensor p : params.values()) {
                    p.sub_(gs.get(i++).mul(new Scalar(lr)));
                }
            }
        }
    }

    @Test
    void importanceAndMaskMatchPeftRankAllocator() {
        JsonNode c = goldenCase("adalora_rank_allocator");
        Map<String, Tensor> params = params(c);
        try (AdaLoraRankAllocator ra = AdaLoraRankAllocator.create(params, c.path("adapter").asText(), 2, 0, 0, 10, 1,
                c.path("beta1").asDouble(), c.path("beta2").asDouble())) {
            assertEquals(c.path("init_bgt").asInt(), ra.schedule().initBudget());
            assertEquals(4, ra.schedule().targetBudget(), "target_r 2 x 2 modules");
            train(params, c.path("grads"), ra, c.path("lr").asDouble());
            c.path("exp_avg_ipt").fields().forEachRemaining(e -> assertClose(tensor(e.getValue()),
                    ra.smoothedImportance(e.getKey()), 0, 1e-6, "avg_ipt " + e.getKey()));
            c.path("exp_avg_unc").fields().forEachRemaining(e -> assertClose(tensor(e.getValue()),
                    ra.smoothedUncertainty(e.getKey()), 1e-9, 1e-6, "avg_unc " + e.getKey()));
            assertNull(ra.smoothedImportance("m.q.lora_A.other"), "other adapters are not scored");
            assertNull(ra.smoothedImportance("m.q.ranknum.default"), "ranknum is not scored");

            Map<String, List<Boolean>> pattern = ra.maskToBudget(params, c.path("budget").asInt());
            c.path("rank_pattern").fields().forEachRemaining(e -> {
                List<Boolean> expected = new ArrayList<>();
                e.getValue().forEach(b -> expected.add(b.asBoolean()));
                assertEquals(expected, pattern.get(e.getKey()), e.getKey());
            });
            assertEquals(2, pattern.size());
            c.path("masked_E").fields().forEachRemaining(e -> assertSameValues(tensor(e.getValue()),
                    params.get(e.getKey()), "masked " + e.getKey()));
        }
    }

    @Test
    void storedPatternWithoutAdapterNameMasksE() {
        Map<String, Tensor> params = new LinkedHashMap<>();
        params.put("m.q.lora_A.default", Tensor.create(new float[12], 3, 4));
        params.put("m.q.lora_E.default", Tensor.create(new float[] {1, 2, 3}, 3, 1));
        try (AdaLoraRankAllocator ra = AdaLoraRankAllocator.create(params, "default", 1, 0, 0, 10, 1, 0.85, 0.85)) {
            ra.maskUsingRankPattern(params, Map.of("m.q.lora_E", List.of(true, false, true)));
            assertArrayEquals(new float[] {1, 0, 3}, floats(params.get("m.q.lora_E.default")));
        }
    }

    @Test
    void updatingWithoutGradientsAndMaskingWithoutScoresAreRefused() {
        Map<String, Tensor> params = new LinkedHashMap<>();
        params.put("m.q.lora_A.default", Tensor.create(new float[12], 3, 4).requires_grad_(true));
        params.put("m.q.lora_E.default", Tensor.create(new float[3], 3, 1));
        try (AdaLoraRankAllocator ra = AdaLoraRankAllocator.create(params, "default", 1, 0, 0, 10, 1, 0.85, 0.85)) {
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> ra.updateImportance(params));
            assertTrue(e.getMessage().startsWith("parameter m.q.lora_A.default has no gradient"), e.getMessage());
            assertThrows(IllegalStateException.class, () -> ra.maskToBudget(params, 1));
            assertThrows(IllegalArgumentException.class, () -> ra.maskToBudget(params, 3), "nothing to prune");
        }
        assertThrows(IllegalArgumentException.class,
                () -> AdaLoraRankAllocator.create(params, "default", 1, 0, 0, 10, 1, 1.0, 0.5));
    }
}

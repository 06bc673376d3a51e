package dev.peft4j.serve;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.kernels.DecodeKernels;
import dev.peft4j.models.PreTrainedModel;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The serving engine's steps are mixed batches (each row on its own adapter); their q/k/v projections (adapted by
 * both adapters) and the MLP input run as grouped decode calls, two a layer a step, and the tokens are those of
 * generate alone on each request's adapter.
 */
class ServingEngineGroupedStepTest {
    @Test
    void mixedStepsRunGroupedProjectionsAndMatchGenerateAlone(@TempDir Path tmp) throws Exception {
        Path a = ServeFixtures.lora(tmp.resolve("a"), ServeFixtures.HIDDEN, ServeFixtures.LAYERS, 4, 11);
        Path b = ServeFixtures.lora(tmp.resolve("b"), ServeFixtures.HIDDEN, ServeFixtures.LAYERS, 4, 12);
        long[] prompt = {3, 9, 27, 17};
        int maxNew = 12;
        long[] wantA;
        long[] wantB;
        try (PreTrainedModel ref = ServeFixtures.llama(5)) {
            ref.loadAdapter(a, "a");
            ref.loadAdapter(b, "b");
            ref.setAdapter("a");
            wantA = ServingEngineConcurrencyTest.generateAlone(ref, prompt, maxNew);
            ref.setAdapter("b");
            wantB = ServingEngineConcurrencyTest.generateAlone(ref, prompt, maxNew);
        }
        try (PreTrainedModel model = ServeFixtures.llama(5);
                ServingEngine engine = ServingEngine.builder(model).maxConcurrent(2).maxLength(64)
                        .maxResidentAdapters(2).threads(1).build()) {
            engine.register("a", a);
            engine.register("b", b);
            long groups = DecodeKernels.groupCalls();
            CompletableFuture<ServeResult> ra = engine.submit(ServeRequest.builder().adapter("a").promptIds(prompt)
                    .maxNewTokens(maxNew).build()).result();
            CompletableFuture<ServeResult> rb = engine.submit(ServeRequest.builder().adapter("b").promptIds(prompt)
                    .maxNewTokens(maxNew).build()).result();
            assertArrayEquals(wantA, ra.get().tokenIds(), "request on a: generate alone's tokens");
            assertArrayEquals(wantB, rb.get().tokenIds(), "request on b: generate alone's tokens");
            long grouped = DecodeKernels.groupCalls() - groups;
            // at least maxNew - 1 decode steps run a's rows (mixed batches), two groups a layer each; the MLP group
            // alone (q/k/v falling back to one call per layer) gives at most half of that
            long want = 2L * ServeFixtures.LAYERS * (maxNew - 1);
            assertTrue(grouped >= want, "grouped calls " + grouped + ", want at least " + want);
        }
    }
}

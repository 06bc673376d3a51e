package dev.peft4j.serve;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.Generation;
import dev.peft4j.models.PreTrainedModel;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The serving engine on the Gemma 2, Gemma 3, Qwen3 and Phi-3 decoders (their slot caches): greedy requests with and
 * without the golden LoRA adapter, sharing batches, give the tokens {@code Generation.generate} gives alone.
 */
class ServingFamiliesTest {
    static Path golden(String name) throws Exception {
        return Path.of(ServingFamiliesTest.class.getResource("/dev/peft4j/models/golden/" + name).toURI());
    }

    static long[] generated(CausalLM lm, long[] prompt, int n) {
        try (PointerScope scope = new PointerScope()) {
            Tensor out = Generation.generate(lm, Tensor.create(prompt, 1, prompt.length), null,
                    Generation.Options.greedy(n));
            long[] all = new long[(int) out.numel()];
            out.contiguous().data_ptr_long().capacity(all.length).get(all);
            return java.util.Arrays.copyOfRange(all, prompt.length, all.length);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"gemma2-softcap-sliding", "gemma3-qknorm-localrope", "qwen3-qknorm-sliding",
        "phi3-longrope-partial"})
    void greedyRequestsWithAndWithoutTheAdapterMatchGenerateAlone(String name) throws Exception {
        Path dir = golden(name);
        long[] p1 = {3, 17, 42, 8, 1};
        long[] p2 = {5, 23};
        long[] base;
        long[] adapted;
        try (PreTrainedModel ref = AutoModel.fromPretrained(dir)) {
            base = generated((CausalLM) ref, p1, 8);
            ref.loadAdapter(dir.resolve("adapter"), "a");
            adapted = generated((CausalLM) ref, p2, 8);
        }
        try (PreTrainedModel m = AutoModel.fromPretrained(dir);
                ServingEngine e = ServingEngine.builder(m).maxConcurrent(4).maxLength(32).threads(1).build()) {
            e.register("a", dir.resolve("adapter"));
            CompletableFuture<ServeResult> b = e.submit(ServeRequest.builder().promptIds(p1).maxNewTokens(8).build())
                    .result();
            CompletableFuture<ServeResult> a = e.submit(ServeRequest.builder().adapter("a").promptIds(p2)
                    .maxNewTokens(8).build()).result();
            assertArrayEquals(base, b.get(60, TimeUnit.SECONDS).tokenIds(), name + " base request");
            assertArrayEquals(adapted, a.get(60, TimeUnit.SECONDS).tokenIds(), name + " adapted request");
        }
    }
}

package dev.peft4j.serve;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.tokenizers.Tokenizer;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The serving snippet of docs/GUIDE.md (and, chained, the README's), run as written on a tiny Llama with a real BPE tokenizer, so the front page cannot
 * rot: its greedy tokens must equal those of {@code generate} alone on the same adapter.
 */
class ReadmeServingExampleTest {
    @Test
    void readmeServingSnippetRunsAsWritten(@TempDir Path cwd) throws Exception {
        Path adapterDir = ServeFixtures.lora(Files.createDirectories(cwd.resolve("adapters/sql")),
                ServeFixtures.HIDDEN, ServeFixtures.LAYERS, 4, 7);
        Tokenizer tok = Tokenizer.fromFile(Path.of(getClass()
                .getResource("/dev/peft4j/tokenizers/llama-bpe/tokenizer.json").toURI()));
        ServeResult r;
        try (PreTrainedModel model = ServeFixtures.llama(3)) {
            // ---- docs/GUIDE.md snippet ("Serving"; the README's is the same calls, chained), the adapter path resolved against cwd
            try (ServingEngine engine = ServingEngine.builder(model).tokenizer(tok).maxConcurrent(16).maxLength(2048)
                    .maxResidentAdapters(32).build()) {
                engine.register("sql", cwd.resolve(Path.of("adapters/sql")));
                RequestHandle h = engine.submit(ServeRequest.builder().adapter("sql").promptText("SELECT")
                        .maxNewTokens(32).greedy().build());
                r = h.result().get();
            }
            // ---- end of snippet
        }
        assertEquals(32, r.tokenIds().length, "max new tokens honoured: " + r.finishReason());
        try (PreTrainedModel ref = ServeFixtures.llama(3)) {
            ref.loadAdapter(adapterDir, "sql");
            ref.setAdapter("sql");
            assertArrayEquals(ServingEngineConcurrencyTest.generateAlone(ref, tok.encode("SELECT"), 32), r.tokenIds(),
                    "the engine's greedy tokens differ from generate alone on the adapter");
        }
    }
}

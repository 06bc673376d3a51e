package dev.peft4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.PeftConfigs;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.Generation;
import dev.peft4j.models.PreTrainedModel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The Java tour of docs/GUIDE.md ("The mixin"), run as written on a tiny model; the README's "Five-minute tour" is
 * that snippet less a few lines, so the front page cannot rot.
 */
class ReadmeExampleTest {
    @TempDir
    Path tmp;

    @Test
    void readmeJavaExampleRunsAsWritten() throws Exception {
        // what the README assumes exists: a model folder and two adapter folders written by PEFT (here: by us)
        Path modelDir = tmp.resolve("TinyLlama-1.1B");
        try (PreTrainedModel m = MixinSupport.tinyLlama(1)) {
            m.savePretrained(modelDir);
            for (String name : List.of("sql", "chat")) {
                // different ranks: the seeded init would otherwise give two identical adapters
                int r = name.equals("sql") ? 4 : 2;
                m.addAdapter(LoraConfig.builder().r(r).loraAlpha(16).targetModules("q_proj", "v_proj")
                        .initLoraWeights(new dev.peft4j.config.InitLoraWeights.Flag(false)).build(), name);
                // scaled, so that the saved weights are not what the seeded init of a load would draw: a load that
                // ignored its tensors would then give other logits
                try (NoGradGuard g = new NoGradGuard()) {
                    for (Tensor t : m.getAdapterStateDict(name).values()) {
                        t.mul_(new org.bytedeco.pytorch.Scalar(1.5));
                    }
                }
                m.saveAdapter(tmp.resolve("adapters").resolve(name), name);
            }
        }
        Tensor ids = MixinSupport.ids(1, 5, 32, 2);
        Tensor mask = torch.ones_like(ids);
        Tensor ids3 = MixinSupport.ids(3, 5, 32, 3);
        Tensor mask3 = torch.ones_like(ids3);
        Path cwd = tmp; // the README's relative paths, resolved against tmp
        Tensor sqlRow0;
        try (NoGradGuard g = new NoGradGuard();
                PreTrainedModel model = AutoModel.fromPretrained(cwd.resolve("TinyLlama-1.1B"), ScalarType.BFloat16)) {
            // ---- docs/GUIDE.md snippet ("The mixin"; the README's tour is a part of it), paths prefixed with cwd; the Hub line is left out (it needs
            // a Hub: HubDownloadTest and HubCacheJarIT run that path against a local server) ----
            CausalLM lm = (CausalLM) model;
            model.loadAdapter(cwd.resolve("adapters/sql"), "sql");
            model.loadAdapter(cwd.resolve("adapters/chat"), "chat");
            try (SafetensorsFile f = SafetensorsFile.open(cwd.resolve("adapters/sql/adapter_model.safetensors"))) {
                model.loadAdapter(PeftConfigs.read(cwd.resolve("adapters/sql")), f.tensors(), "sql_copy");
            }
            model.setAdapter("sql");
            Tensor logits = lm.forward(ids, mask, null, null);
            Tensor out = Generation.generate(lm, ids, mask, Generation.Options.greedy(20));
            Tensor mixed = model.withAdapterNames(List.of("sql", "chat", "__base__"),
                    () -> lm.forward(ids3, mask3, null, null));
            model.mergeAdapter("sql");
            model.unmergeAdapter();
            model.addAdapter(LoraConfig.builder().r(16).loraAlpha(32).targetModules("q_proj", "v_proj").build(), "new");
            model.saveAdapter(cwd.resolve("out/new"), "new");
            // ---- end of snippet ----
            assertArrayEquals(new long[] {1, 5 + 20}, out.shape());
            // the in-memory copy of sql is sql: the same logits (both after the bf16 merge / unmerge above, which
            // need not restore the base weights bit for bit)
            model.setAdapter("sql");
            Tensor sqlLogits = lm.forward(ids, mask, null, null);
            model.setAdapter("sql_copy");
            Tensor copyLogits = lm.forward(ids, mask, null, null);
            model.setAdapter("sql");
            assertEquals(0.0, copyLogits.sub(sqlLogits).abs().max().item_double(), 0.0, "sql_copy gives sql's logits");
            assertArrayEquals(new long[] {1, 5, 32}, logits.shape());
            assertArrayEquals(new long[] {3, 5, 32}, mixed.shape());
            model.setAdapter("sql");
            sqlRow0 = lm.forward(ids3.narrow(0, 0, 1), mask3.narrow(0, 0, 1), null, null);
            // bf16: the mixed batch's row and the single-adapter run round differently; 0.05 is ~12 bf16 ulps at 1
            model.setAdapter("chat");
            Tensor chatRow0 = lm.forward(ids3.narrow(0, 0, 1), mask3.narrow(0, 0, 1), null, null);
            model.setAdapter("sql");
            double toSql = mixed.narrow(0, 0, 1).sub(sqlRow0).abs().max().item_double();
            double toChat = mixed.narrow(0, 0, 1).sub(chatRow0).abs().max().item_double();
            // bf16: the mixed batch's row and the single-adapter run round differently (a few bf16 ulps); the other
            // adapter's row must be farther away than that by a wide margin
            assertTrue(toSql < 0.05 && toChat > 10 * toSql, "mixed row 0 is sql's: " + toSql + " vs chat " + toChat);
            assertEquals(List.of("sql"), model.activeAdapters());
        }
        assertTrue(Files.isRegularFile(cwd.resolve("out/new/adapter_config.json")));
        assertTrue(Files.isRegularFile(cwd.resolve("out/new/adapter_model.safetensors")));
    }
}

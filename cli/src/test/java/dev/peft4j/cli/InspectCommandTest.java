package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code peft4j inspect}: config, targeted modules, tensors and totals; with --model, hits and stray keys. */
class InspectCommandTest {
    @Test
    void inspectShowsTypeConfigModulesTensorsAndTotals(@TempDir Path tmp) throws Exception {
        Path adapter = TinyModels.loraAdapter(tmp.resolve("lora"), false);
        Cli.Result r = Cli.run("inspect", adapter.toString());
        assertEquals(0, r.rc(), r.toString());
        String out = r.out();
        assertTrue(out.contains("peft_type: LORA\n"), out);
        assertTrue(out.contains("task_type: CAUSAL_LM\n"), out);
        assertTrue(out.contains("  r: 2\n"), out);
        assertTrue(out.contains("  target_modules: [\"q_proj\",\"v_proj\"]\n"), out);
        assertTrue(out.contains("targeted modules (named by the weights): 4\n"), out);
        assertTrue(out.contains("  model.layers.1.self_attn.v_proj\n"), out);
        assertTrue(out.contains("tensors (adapter_model.safetensors): 8\n"), out);
        // q: A [2,32] + B [32,2] = 128; v: A [2,32] + B [16,2] = 96; two layers; float32
        assertTrue(out.matches("(?s).*base_model\\.model\\.model\\.layers\\.0\\.self_attn\\.v_proj\\.lora_B\\.weight\\s+F32\\s+\\[16, 2\\]\\s+128\n.*"),
                out);
        assertTrue(out.contains("total: 8 tensors, 448 parameters, 1,792 bytes\n"), out);
        assertFalse(out.contains("model:"), "no model section without --model");
    }

    @Test
    void withAModelItListsTheModulesItWouldHitAndTheKeysMatchingNothing(@TempDir Path tmp) throws Exception {
        Path adapter = TinyModels.loraAdapter(tmp.resolve("lora"), true);
        Path model = TinyModels.llama(tmp.resolve("tiny"), 1);
        Cli.Result r = Cli.run("inspect", adapter.toString(), "--model", model.toString());
        assertEquals(0, r.rc(), r.toString());
        List<String> lines = r.out().lines().toList();
        int hits = lines.indexOf("modules the config targets in this model: 4");
        assertTrue(hits > 0, r.toString());
        assertEquals(List.of("  model.layers.0.self_attn.q_proj (Linear)", "  model.layers.0.self_attn.v_proj (Linear)",
                "  model.layers.1.self_attn.q_proj (Linear)", "  model.layers.1.self_attn.v_proj (Linear)"),
                lines.subList(hits + 1, hits + 5));
        int stray = lines.indexOf("adapter keys matching nothing in this model: 1");
        assertTrue(stray > hits, r.toString());
        assertEquals("  base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight", lines.get(stray + 1));
        assertTrue(lines.contains("target_modules entries matching no module of this model: 0"), r.toString());
    }

    @Test
    void aTargetThatMatchesNothingIsReportedWithPeftsMessage(@TempDir Path tmp) throws Exception {
        Path adapter = TinyModels.loraAdapter(tmp.resolve("lora"), false);
        Files.writeString(adapter.resolve("adapter_config.json"),
                Files.readString(adapter.resolve("adapter_config.json")).replace("\"q_proj\"", "\"query\"")
                        .replace("\"v_proj\"", "\"value\""));
        Path model = TinyModels.llama(tmp.resolve("tiny"), 1);
        Cli.Result r = Cli.run("inspect", adapter.toString(), "--model", model.toString());
        assertEquals(0, r.rc(), r.toString());
        assertTrue(r.out().contains("modules the config targets in this model: 0\n"), r.toString());
        assertTrue(r.out().contains("not found in the base model"), r.toString());
        List<String> lines = r.out().lines().toList();
        int none = lines.indexOf("target_modules entries matching no module of this model: 2");
        assertTrue(none > 0, r.toString());
        assertEquals(List.of("  query", "  value"), lines.subList(none + 1, none + 3));

        assertTrue(r.out().contains("targeted modules without weights") == false, r.toString());
    }

    @Test
    void aFolderWithoutAdapterConfigFailsWithExitOne(@TempDir Path tmp) {
        Cli.Result r = Cli.run("inspect", tmp.toString());
        assertEquals(1, r.rc(), r.toString());
        assertEquals(1, r.err().lines().count(), r.toString());
        assertTrue(r.err().contains("adapter_config.json"), r.toString());
    }

    @Test
    void anAdapterSavedAsBinIsReadToo() {
        // PEFT's IA3 adapter of bigscience/mt0-large, saved by torch.save (fixtures/peft-ia3-mt0-large/PROVENANCE.md)
        Path dir = Cli.resource("../../fixtures/peft-ia3-mt0-large");
        Cli.Result r = Cli.run("inspect", dir.toString());
        assertEquals(0, r.rc(), r.toString());
        assertTrue(r.out().contains("peft_type: IA3\n"), r.toString());
        assertTrue(r.out().contains("tensors (adapter_model.bin): "), r.toString());
        assertTrue(r.out().contains("total: "), r.toString());
    }
}

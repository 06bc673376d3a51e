package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.PreTrainedModel;
import java.nio.file.Files;
import java.nio.file.Path;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The adapter options of logits and generate, and the merge command, on a tiny Llama with two LoRA adapters. */
class AdapterCommandsTest {
    @TempDir
    static Path tmp;
    static Path model;
    static Path loraA;
    static Path loraB;

    @BeforeAll
    static void fixtures() throws Exception {
        model = TinyModels.llama(tmp.resolve("tiny"), 21);
        loraA = TinyModels.loraAdapter(tmp.resolve("lora-a"), false, 3);
        loraB = TinyModels.loraAdapter(tmp.resolve("lora-b"), false, 4);
    }

    static Tensor logits(String name, String... extra) throws Exception {
        Path out = tmp.resolve(name + ".safetensors");
        String[] base = {"logits", "--model", model.toString(), "--input-ids", "1,2,3;7,8,9", "--out", out.toString()};
        String[] args = java.util.Arrays.copyOf(base, base.length + extra.length);
        System.arraycopy(extra, 0, args, base.length, extra.length);
        Cli.Result r = Cli.run(args);
        assertEquals(0, r.rc(), r.toString());
        try (SafetensorsFile f = SafetensorsFile.open(out)) {
            return f.get("logits").clone();
        }
    }

    static float diff(Tensor a, Tensor b) {
        return a.sub(b).abs().max().item_float();
    }

    @Test
    void anAdapterChangesTheLogitsAsTheMixinComputesThemAndDisableGivesTheBase() throws Exception {
        try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
            Tensor base = logits("base");
            Tensor withA = logits("a", "--adapter", loraA.toString());
            Tensor expected;
            try (PreTrainedModel m = AutoModel.fromPretrained(model, ScalarType.Float)) {
                m.loadAdapter(loraA, "default");
                expected = ((CausalLM) m).forward(TokenIds.rectangular(new long[][] {{1, 2, 3}, {7, 8, 9}}), null, null,
                        null);
            }
            assertEquals(0f, diff(expected, withA), "the CLI runs the mixin's forward");
            assertTrue(diff(base, withA) > 1e-3f, "the adapter changes the logits");
            assertEquals(0f, diff(base, logits("disabled", "--adapter", loraA.toString(), "--disable")));
            float merged = diff(withA, logits("merged", "--adapter", loraA.toString(), "--merge"));
            assertTrue(merged < 1e-4f, "merged ≈ unmerged: " + merged);
        }
    }

    @Test
    void activeSelectsANamedAdapterAndRowAdaptersGiveEachRowItsOwn() throws Exception {
        try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode()) {
            String a = loraA + "=a";
            String b = loraB + "=b";
            Tensor onlyA = logits("only-a", "--adapter", a, "--adapter", b, "--active", "a");
            Tensor onlyB = logits("only-b", "--adapter", a, "--adapter", b, "--active", "b");
            Tensor base = logits("base2");
            assertTrue(diff(onlyA, onlyB) > 1e-3f);
            Tensor mixed = logits("mixed", "--adapter", a, "--adapter", b, "--row-adapters", "b,__base__");
            assertTrue(diff(onlyB.narrow(0, 0, 1), mixed.narrow(0, 0, 1)) < 1e-5f, "row 0 ran adapter b");
            assertTrue(diff(base.narrow(0, 1, 1), mixed.narrow(0, 1, 1)) < 1e-5f, "row 1 ran the base model");
        }
    }

    @Test
    void adapterOptionMisuseIsAUsageError() {
        Path out = tmp.resolve("x.safetensors");
        String[] common = {"logits", "--model", model.toString(), "--input-ids", "1,2;3,4", "--out", out.toString()};
        Cli.Result twoDefaults = Cli.run(concat(common, "--adapter", loraA.toString(), "--adapter", loraB.toString()));
        assertEquals(2, twoDefaults.rc(), twoDefaults.toString());
        assertTrue(twoDefaults.err().contains("name it"), twoDefaults.toString());
        Cli.Result unknownActive = Cli.run(concat(common, "--adapter", loraA.toString(), "--active", "zz"));
        assertEquals(2, unknownActive.rc(), unknownActive.toString());
        Cli.Result rowsMismatch = Cli.run(concat(common, "--adapter", loraA.toString(), "--row-adapters", "default"));
        assertEquals(2, rowsMismatch.rc(), rowsMismatch.toString());
        Cli.Result noAdapter = Cli.run(concat(common, "--disable"));
        assertEquals(2, noAdapter.rc(), noAdapter.toString());
    }

    @Test
    void generateWithAnAdapterDiffersFromTheBaseAndDisableRestoresIt() {
        String[] common = {"generate", "--model", model.toString(), "--input-ids", "1,2,3", "--max-new-tokens", "8"};
        Cli.Result base = Cli.run(common);
        Cli.Result adapted = Cli.run(concat(common, "--adapter", loraA.toString()));
        Cli.Result disabled = Cli.run(concat(common, "--adapter", loraA.toString(), "--disable"));
        assertEquals(0, adapted.rc(), adapted.toString());
        assertEquals(base.out(), disabled.out());
        assertTrue(!base.out().equals(adapted.out()), "the adapter changes the greedy tokens:\n" + base + adapted);
    }

    @Test
    void mergeWritesAPlainCheckpointThatLoadsAndGivesTheAdaptedLogits() throws Exception {
        Path merged = tmp.resolve("merged");
        Cli.Result r = Cli.run("merge", "--model", model.toString(), "--adapter", loraA.toString(), "--out",
                merged.toString());
        assertEquals(0, r.rc(), r.toString());
        assertEquals("", r.out());
        assertTrue(Files.isRegularFile(merged.resolve("config.json")));
        try (PointerScope s = new PointerScope(); InferenceMode im = new InferenceMode();
                SafetensorsFile f = SafetensorsFile.open(merged.resolve("model.safetensors"))) {
            assertTrue(f.names().stream().noneMatch(k -> k.contains("lora")), "no adapter keys: " + f.names());
            assertEquals(SafetensorsFile.PT_METADATA, f.metadata());
            Path out = tmp.resolve("from-merged.safetensors");
            Cli.Result l = Cli.run("logits", "--model", merged.toString(), "--input-ids", "1,2,3;7,8,9", "--out",
                    out.toString());
            assertEquals(0, l.rc(), l.toString());
            Tensor adapted = logits("a-for-merge", "--adapter", loraA.toString());
            try (SafetensorsFile g = SafetensorsFile.open(out)) {
                float d = diff(adapted, g.get("logits"));
                assertTrue(d < 1e-4f, "merged checkpoint ≈ base + adapter: " + d);
            }
        }
    }

    static String[] concat(String[] a, String... b) {
        String[] out = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }
}

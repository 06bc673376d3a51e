package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.PeftConfigs;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code peft4j demo}, end to end: the default command, its comparisons hold, its adapter folder is PEFT's. */
class DemoCommandTest {
    private static final Pattern DIFF = Pattern.compile("max \\|[^|]+\\| ([0-9.eE+-]+)");

    @Test
    void noArgumentsRunsTheDemoWhoseComparisonsHoldAndWhoseSavedAdapterInspects(@TempDir Path tmp) throws Exception {
        Cli.Result plain = Cli.run(); // the README's first command
        assertEquals(0, plain.rc(), plain.toString());
        assertTrue(plain.out().startsWith("peft4j demo: the model and adapters have seeded RANDOM weights"), plain.toString());

        Cli.Result r = Cli.run("demo", "--iterations", "2", "--out", tmp.toString(), "--save-model");
        assertEquals(0, r.rc(), r.toString());
        List<String> lines = r.out().lines().toList();
        // each adapter changes the output; rows of the mixed batch, merge/unmerge and the reload agree to float32 noise
        int checked = 0;
        for (String line : lines) {
            Matcher m = DIFF.matcher(line);
            if (!m.find()) {
                continue;
            }
            double d = Double.parseDouble(m.group(1));
            if (line.contains("logits - base")) {
                assertTrue(d > 1e-2, line);
            } else {
                assertTrue(d < 1e-4, line);
            }
            checked++;
        }
        long adapters = lines.stream().filter(l -> l.contains("(max |logits - base|")).count();
        assertEquals(3, adapters, "two LoRA adapters and one IA3 adapter, each run on the prompt:\n" + r);
        assertTrue(lines.stream().anyMatch(l -> l.startsWith("   row 2 lora_b ")), "the mixed batch:\n" + r);
        assertEquals(3 + 3 + 2 + 1 + 1, checked,
                "each adapter, each row of the mixed batch, merge and unmerge, reload, fused:\n" + r);
        assertTrue(lines.stream().anyMatch(l -> l.startsWith("   ia3     IA3 on up_proj, down_proj: 8 layers wrapped")),
                "the IA3 adapter is attached:\n" + r);
        assertEquals(4, lines.stream().filter(l -> l.startsWith("   per token: ")).count(), r.toString());
        assertEquals(3, lines.stream().filter(l -> l.startsWith("   per layer: ")).count(), r.toString());

        // serving: every request served at once gets the tokens it gets alone, and the throughput of both is shown
        assertEquals(10, lines.stream().filter(l -> l.matches("   request +\\d+ .*")).count(), r.toString());
        assertEquals(10, lines.stream().filter(l -> l.matches("   request +\\d+ .*= one at a time")).count(),
                r.toString());
        assertTrue(lines.contains("   10 of 10 requests: the same tokens both ways"), r.toString());
        assertTrue(lines.stream().anyMatch(l -> l.startsWith("   one at a time: 80 tokens in ")), r.toString());
        assertTrue(lines.stream().anyMatch(l -> l.startsWith("   request  4  __base__ ")), r.toString());

        Path saved = tmp.resolve("lora_a");
        assertTrue(Files.isRegularFile(saved.resolve("adapter_model.safetensors")), r.toString());
        assertEquals("LORA", PeftConfigs.read(saved).peftType().jsonValue());
        Cli.Result inspect = Cli.run("inspect", saved.toString(), "--model", tmp.resolve("model").toString());
        assertEquals(0, inspect.rc(), inspect.toString());
        assertTrue(inspect.out().contains("targeted modules (named by the weights): 8\n"), inspect.toString());
        assertTrue(inspect.out().contains("modules the config targets in this model: 8\n"), inspect.toString());
        assertTrue(inspect.out().contains("adapter keys matching nothing in this model: 0\n"), inspect.toString());
        // the saved model + adapter reproduce the demo's adapter output for its prompt
        Path logits = tmp.resolve("l.safetensors");
        Cli.Result l = Cli.run("logits", "--model", tmp.resolve("model").toString(), "--adapter", saved.toString(),
                "--input-ids", "1,306,2966,304,1560,263,3535", "--out", logits.toString());
        assertEquals(0, l.rc(), l.toString());
        Cli.Result g = Cli.run("generate", "--model", tmp.resolve("model").toString(), "--adapter", saved.toString(),
                "--input-ids", "1,306,2966,304,1560,263,3535", "--max-new-tokens", "8");
        String adapterRow = lines.stream().filter(x -> x.startsWith("   lora_a ") && x.contains("... ")).findFirst().orElseThrow();
        String newIds = adapterRow.substring(adapterRow.indexOf("... ") + 4, adapterRow.indexOf("   (max"));
        assertEquals("1,306,2966,304,1560,263,3535," + newIds + "\n", g.out(), "generate on the saved folders");
    }
}

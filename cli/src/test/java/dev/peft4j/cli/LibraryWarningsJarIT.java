package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The packaged jar ships an SLF4J provider: the library's warnings reach stderr, one line each, while stdout holds the
 * result alone. {@code generate} on an adapter whose config has a key peft4j does not know and whose weights hold a
 * key matching no module prints both warnings.
 */
class LibraryWarningsJarIT {
    @Test
    void generatePrintsTheLibrarysWarningsOnStderr(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llama(tmp.resolve("tiny"), 5);
        Path adapter = TinyModels.loraAdapter(tmp.resolve("lora"), true);
        Path cfg = adapter.resolve("adapter_config.json");
        Files.writeString(cfg, Files.readString(cfg).replaceFirst("\\{", "{\n  \"future_option\": 3,"));
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        ProcessBuilder pb = new ProcessBuilder(List.of(java, "-Dorg.bytedeco.javacpp.maxPhysicalBytes=0", "-jar",
                Path.of("target", "peft4j-cli.jar").toString(), "generate", "--model", model.toString(), "--adapter",
                adapter.toString(), "--input-ids", "1,2,3", "--max-new-tokens", "2"));
        pb.environment().put("OMP_WAIT_POLICY", "passive"); // as the ./peft4j launcher sets them
        pb.environment().put("OPENBLAS_THREAD_TIMEOUT", "4");
        Process p = pb.start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.waitFor(), out + err);
        assertTrue(out.matches("1,2,3,\\d+,\\d+\n"), out);
        List<String> lines = err.lines().toList();
        assertTrue(lines.stream().anyMatch(l -> l.startsWith("WARN ") && l.contains("future_option")
                && l.contains("'default'")), err);
        assertTrue(lines.stream().anyMatch(l -> l.startsWith("WARN ") && l.contains("unexpected keys")
                && l.contains("layers.7.self_attn.q_proj.lora_A.weight")), err);
        assertTrue(lines.stream().noneMatch(l -> l.contains("SLF4J")), "a provider is found: " + err);
    }
}

package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code generate --prompt} from the packaged jar: the tokenizers jar is on its manifest class path, and its native
 * library is unpacked from that jar into a fresh cache (no download, no network), with nothing on stderr.
 */
class GenerateTextJarIT {
    @Test
    void thePackagedJarGeneratesTextWithTheBundledNativeTokenizer(@TempDir Path tmp) throws Exception {
        Path model = TinyModels.llamaWithTokenizer(tmp.resolve("tiny"), 5);
        Path cache = tmp.resolve("djl-cache");
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        ProcessBuilder pb = new ProcessBuilder(List.of(java, "-Dorg.bytedeco.javacpp.maxPhysicalBytes=0", "-jar",
                Path.of("target", "peft4j-cli.jar").toString(), "generate", "--model", model.toString(), "--prompt",
                "hello world", "--max-new-tokens", "4", "--print-ids"));
        pb.environment().put("DJL_CACHE_DIR", cache.toString());
        pb.environment().remove("ENGINE_CACHE_DIR");
        pb.environment().put("OMP_WAIT_POLICY", "passive"); // as the ./peft4j launcher sets them: no thread warning
        pb.environment().put("OPENBLAS_THREAD_TIMEOUT", "4");
        Process p = pb.start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
        int rc = p.waitFor();
        assertEquals(0, rc, out + err);
        assertTrue(out.startsWith("hello world"), out);
        assertTrue(out.contains("\nids: 1,41,46,"), out);
        assertEquals("", err, "nothing but the result when stdout is not a terminal");
        try (Stream<Path> files = Files.walk(cache)) {
            List<String> libs = files.map(f -> cache.relativize(f).toString())
                    .filter(f -> f.endsWith("libtokenizers.so") || f.endsWith("libtokenizers.dylib")
                            || f.endsWith("tokenizers.dll"))
                    .toList();
            assertEquals(1, libs.size(), libs.toString());
            assertTrue(libs.get(0).startsWith("tokenizers/") && libs.get(0).contains("-cpu-"), libs.toString());
        }
    }
}

package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The README's first command: the packaged jar with no arguments runs the demo, stdout a pipe, stderr quiet. */
class DemoJarIT {
    @Test
    void thePackagedJarWithNoArgumentsRunsTheDemoAndPrintsNothingOnStderr() throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process p = new ProcessBuilder(List.of(java, "-Dorg.bytedeco.javacpp.maxPhysicalBytes=0", "-jar",
                Path.of("target", "peft4j-cli.jar").toString())).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
        int rc = p.waitFor();
        assertEquals(0, rc, out + err);
        assertTrue(out.startsWith("peft4j demo: "), out);
        assertTrue(out.contains("demo done in "), out);
        assertEquals("", err, "no output but the result when stdout is not a terminal");
    }
}

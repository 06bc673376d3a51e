package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The packaged CLI (target/peft4j-cli.jar and the target/lib its manifest names) runs on its own. */
class SelfCheckJarIT {
    @Test
    void thePackagedJarPassesItsSelfCheckAndPrintsItsVersion() throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        String jar = Path.of("target", "peft4j-cli.jar").toString();
        Process p = new ProcessBuilder(List.of(java, "-jar", jar, "selfcheck")).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.waitFor(), out);
        assertTrue(out.contains("kernel path"), out);
        assertTrue(out.strip().endsWith("OK"), out);

        Process v = new ProcessBuilder(List.of(java, "-jar", jar, "--version")).redirectErrorStream(true).start();
        String version = new String(v.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, v.waitFor(), version);
        assertEquals("peft4j " + System.getProperty("peft4j.expectedVersion"), version.strip());
    }
}

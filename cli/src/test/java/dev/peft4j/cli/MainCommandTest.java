package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** The command's contract: default command, --help everywhere, exit codes 0/1/2, one-line errors, --verbose. */
class MainCommandTest {
    @Test
    void selfcheckPassesAndExitsZero() {
        Cli.Result r = Cli.run("selfcheck");
        assertEquals(0, r.rc(), r.toString());
        assertTrue(r.out().contains("kernel path"), r.toString());
        assertTrue(r.out().strip().endsWith("OK"), r.toString());
        assertEquals("", r.err(), r.toString());
    }

    @ParameterizedTest
    @ValueSource(strings = {"demo", "selfcheck", "inspect", "logits", "generate", "bench", "merge"})
    void everyCommandHasHelpThatExitsZero(String command) {
        Cli.Result r = Cli.run(command, "--help");
        assertEquals(0, r.rc(), r.toString());
        assertTrue(r.out().startsWith(r.out().lines().findFirst().orElse("")) && r.out().contains("Usage: peft4j " + command),
                r.toString());
        assertTrue(r.out().contains("-h, --help"), r.toString());
    }

    @Test
    void topLevelHelpListsTheCommands() {
        Cli.Result r = Cli.run("--help");
        assertEquals(0, r.rc(), r.toString());
        for (String c : new String[] {"demo", "selfcheck", "inspect", "logits", "generate", "bench", "merge"}) {
            assertTrue(r.out().contains("  " + c + " "), c + " missing:\n" + r);
        }
    }

    @Test
    void versionPrintsTheVersionMavenBuilt() {
        String expected = System.getProperty("peft4j.expectedVersion");
        assertTrue(expected != null && !expected.isBlank(), "the build passes peft4j.expectedVersion");
        for (String flag : new String[] {"--version", "-V"}) {
            Cli.Result r = Cli.run(flag);
            assertEquals(0, r.rc(), r.toString());
            assertEquals("peft4j " + expected, r.out().strip(), r.toString());
            assertEquals("", r.err(), r.toString());
        }
    }

    @Test
    void unknownCommandIsAUsageErrorOnOneLine() {
        Cli.Result r = Cli.run("frobnicate");
        assertEquals(2, r.rc(), r.toString());
        assertEquals(1, r.err().lines().count(), r.toString());
        assertTrue(r.err().startsWith("peft4j: ") && r.err().contains("frobnicate"), r.toString());
        assertEquals("", r.out());
    }

    @Test
    void missingRequiredOptionIsAUsageErrorOnOneLineNamingTheOption() {
        Cli.Result r = Cli.run("logits", "--model", "x");
        assertEquals(2, r.rc(), r.toString());
        assertEquals(1, r.err().lines().count(), r.toString());
        assertTrue(r.err().startsWith("peft4j logits: ") && r.err().contains("--input-ids"), r.toString());
    }

    @Test
    void aFailureExitsOneWithOneLineAndTheStackTraceOnlyUnderVerbose(@TempDir Path tmp) {
        Path missing = tmp.resolve("no-such-model");
        Cli.Result r = Cli.run("logits", "--model", missing.toString(), "--input-ids", "1,2", "--out",
                tmp.resolve("o.safetensors").toString());
        assertEquals(1, r.rc(), r.toString());
        assertEquals(1, r.err().lines().count(), r.toString());
        assertTrue(r.err().startsWith("peft4j logits: ") && r.err().contains("config.json"), r.toString());
        assertFalse(r.err().contains("\tat "), r.toString());

        Cli.Result v = Cli.run("--verbose", "logits", "--model", missing.toString(), "--input-ids", "1,2", "--out",
                tmp.resolve("o.safetensors").toString());
        assertEquals(1, v.rc(), v.toString());
        assertTrue(v.err().lines().count() > 3 && v.err().contains("\tat dev.peft4j."), v.toString());
        Cli.Result v2 = Cli.run("logits", "--verbose", "--model", missing.toString(), "--input-ids", "1,2", "--out",
                tmp.resolve("o.safetensors").toString());
        assertTrue(v2.err().contains("\tat dev.peft4j."), "--verbose after the command works too\n" + v2);
    }
}

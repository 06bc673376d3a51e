package dev.peft4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/** {@code peft4j bench}: a table of measured times, and the fused layer agrees with the composed one. */
class BenchCommandTest {
    @Test
    void benchPrintsAMeasuredRowPerCaseAndTheFusedLayerAgreesWithTheComposedOne() {
        Cli.Result r = Cli.run("bench", "--iterations", "3", "--size", "256", "--rank", "4", "--threads", "1");
        assertEquals(0, r.rc(), r.toString());
        List<String> lines = r.out().lines().toList();
        assertEquals(6, lines.size(), r.toString());
        assertTrue(lines.get(0).startsWith("peft4j bench: measured on this machine, 1 thread "), r.toString());
        Pattern time = Pattern.compile("\\s(\\d+\\.\\d+) (ms|µs)\\s");
        for (String line : lines.subList(2, 6)) {
            Matcher m = time.matcher(line);
            assertTrue(m.find() && Double.parseDouble(m.group(1)) > 0, line);
        }
        assertTrue(lines.get(2).startsWith("decode step"), r.toString());
        assertTrue(lines.get(5).contains("fused"), r.toString());
        Matcher diff = Pattern.compile("max \\|fused - composed\\| (\\S+)\\)").matcher(lines.get(5));
        assertTrue(diff.find(), lines.get(5));
        assertTrue(Double.parseDouble(diff.group(1)) < 1e-4, lines.get(5));
    }

    @Test
    void aDtypeTheKernelLacksIsAUsageError() {
        Cli.Result r = Cli.run("bench", "--dtype", "float16");
        assertEquals(2, r.rc(), r.toString());
        assertTrue(r.err().contains("float32 or bfloat16"), r.toString());
    }
}

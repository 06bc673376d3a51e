package dev.peft4j.bench;

import org.openjdk.jmh.annotations.AuxCounters;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * Two consecutive parts of one call timed separately (a base GEMM and what follows it): JMH reports their sums per
 * iteration as secondary results ({@code :baseNs}, {@code :deltaNs}); {@code 1 + deltaNs / baseNs} estimates a
 * candidate / baseline ratio without the GEMM's own run-to-run spread, which on this machine is larger than the
 * part being measured. Each iteration's figure is printed to the fork's output.
 */
@State(Scope.Thread)
@AuxCounters(AuxCounters.Type.EVENTS)
public class SplitNanos {
    public long baseNs;
    public long deltaNs;

    @Setup(Level.Iteration)
    public void reset() {
        baseNs = 0;
        deltaNs = 0;
    }

    @TearDown(Level.Iteration)
    public void report() {
        if (baseNs > 0) {
            System.out.printf("split: 1 + delta / base = %.4f%n", 1.0 + (double) deltaNs / baseNs);
        }
    }
}

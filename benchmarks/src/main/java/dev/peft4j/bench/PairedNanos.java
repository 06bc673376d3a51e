package dev.peft4j.bench;

import org.openjdk.jmh.annotations.AuxCounters;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * A paired measurement: each benchmark call times the baseline and the candidate back to back (alternating which
 * goes first), so a slow spell of this shared machine hits both and cancels in their ratio. Measured in separate
 * JMH forks a minute apart, 1-3 % differences drown in the machine's drift; paired, they do not. JMH reports the
 * two sums per iteration as secondary results ({@code :baselineNs}, {@code :candidateNs}); their ratio is the
 * figure, and each iteration's ratio is printed to the fork's output.
 */
@State(Scope.Thread)
@AuxCounters(AuxCounters.Type.EVENTS)
public class PairedNanos {
    public long baselineNs;
    public long candidateNs;
    private boolean candidateFirst;

    @Setup(Level.Iteration)
    public void reset() {
        baselineNs = 0;
        candidateNs = 0;
    }

    /** Prints the iteration's ratio (the sums stay as they are for JMH to collect). */
    @TearDown(Level.Iteration)
    public void report() {
        if (baselineNs > 0) {
            System.out.printf("paired: candidate / baseline = %.4f%n", (double) candidateNs / baselineNs);
        }
    }

    /** Runs both, in alternating order, adding each one's wall time to its sum. */
    public void time(Runnable baseline, Runnable candidate) {
        candidateFirst = !candidateFirst;
        if (candidateFirst) {
            candidateNs += timed(candidate);
            baselineNs += timed(baseline);
        } else {
            baselineNs += timed(baseline);
            candidateNs += timed(candidate);
        }
    }

    private static long timed(Runnable r) {
        long t0 = System.nanoTime();
        r.run();
        return System.nanoTime() - t0;
    }
}

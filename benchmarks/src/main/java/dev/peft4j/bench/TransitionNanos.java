package dev.peft4j.bench;

import org.openjdk.jmh.annotations.AuxCounters;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;

/**
 * Each call of a base / candidate pair timed by what ran just before it (see
 * {@link FusedLoraLinearBench#transitions}): whether a call is slower after the other path's than after its own.
 * Secondary results: the four sums per iteration.
 */
@State(Scope.Thread)
@AuxCounters(AuxCounters.Type.EVENTS)
public class TransitionNanos {
    public long baseAfterBase;
    public long baseAfterFused;
    public long fusedAfterBase;
    public long fusedAfterFused;

    @Setup(Level.Iteration)
    public void reset() {
        baseAfterBase = 0;
        baseAfterFused = 0;
        fusedAfterBase = 0;
        fusedAfterFused = 0;
    }
}

package dev.peft4j.bench;

/**
 * The index of the next of {@code n} weights for one benchmarked path. Each path keeps its own cycle: with one
 * cycle shared by a paired baseline and candidate (which alternate order), the baseline always got weights 0 and 3
 * and the candidate 1 and 2, so any difference between the weights' placement in memory went into the ratio. The
 * candidate's cycle starts half-way round, so that the two calls of a pair still take different weights (a
 * weight just read would be partly cached for the next call).
 */
final class WeightCycle {
    private final int n;
    private int next;

    WeightCycle(int n, int start) {
        this.n = n;
        this.next = start % n;
    }

    int next() {
        int i = next;
        next = (i + 1) % n;
        return i;
    }
}

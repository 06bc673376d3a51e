package dev.peft4j.cli;

import java.util.Arrays;

/** Measured wall-clock timings: a warm-up, then the median of the samples. */
final class Timing {
    private Timing() {}

    /** Runs {@code body} {@code warmup} times untimed, then {@code n} times timed; returns the median in ns. */
    static double medianNanos(int warmup, int n, Runnable body) {
        for (int i = 0; i < warmup; i++) {
            body.run();
        }
        long[] t = new long[n];
        for (int i = 0; i < n; i++) {
            long t0 = System.nanoTime();
            body.run();
            t[i] = System.nanoTime() - t0;
        }
        return median(t);
    }

    /**
     * Times {@code bodies} in rounds (each round runs every body once, in turn), so that a machine whose speed drifts
     * during the measurement (other load, frequency changes) affects all of them alike; returns each body's median
     * in ns.
     */
    static double[] interleavedMedianNanos(int warmup, int n, Runnable... bodies) {
        for (int i = 0; i < warmup; i++) {
            for (Runnable b : bodies) {
                b.run();
            }
        }
        long[][] t = new long[bodies.length][n];
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < bodies.length; j++) {
                long t0 = System.nanoTime();
                bodies[j].run();
                t[j][i] = System.nanoTime() - t0;
            }
        }
        double[] out = new double[bodies.length];
        for (int j = 0; j < bodies.length; j++) {
            out[j] = median(t[j]);
        }
        return out;
    }

    /** The median of {@code t} (not modified). */
    static double median(long[] t) {
        long[] s = t.clone();
        Arrays.sort(s);
        int n = s.length;
        return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2.0;
    }
}

package dev.peft4j.serve;

/**
 * A snapshot of a {@link ServingEngine}'s state and counters (each read without a lock: a snapshot taken while the
 * engine works may mix two nearby moments).
 *
 * @param running requests holding a slot (prefilling or decoding)
 * @param waiting requests submitted and not yet in a slot
 * @param slots the engine's slots (its most concurrent requests)
 * @param registeredAdapters adapters registered
 * @param residentAdapters adapters loaded in the model now
 * @param maxResidentObserved the most adapters ever loaded (or loading) at once
 * @param adapterHits requests with an adapter that was resident when first considered
 * @param adapterMisses requests with an adapter that had to be loaded first (by them or an earlier request)
 * @param adapterLoads adapter loads started
 * @param adapterEvictions adapters unloaded to make room (least recently used first, never one in use)
 * @param adapterLoadFailures loads that failed (their waiting requests failed with the error)
 * @param completed requests finished normally
 * @param failed requests failed with an error (a timeout included)
 * @param cancelled requests cancelled
 * @param generatedTokens tokens produced since the start
 * @param tokensPerSecond tokens produced per second over the last second or so
 * @param steps scheduler steps that ran a forward
 * @param ttftP50Millis median time to first token over the latest finished requests (up to 4096)
 * @param ttftP99Millis 99th percentile of the same
 * @param tpotP50Millis median time per output token over the latest finished requests
 * @param tpotP99Millis 99th percentile of the same
 * @param prefillTokens prompt tokens run through the model since the start
 * @param prefillNanos time spent in prefill forwards (with the pick of each prompt's first new token)
 * @param decodeTokens tokens produced by decode steps (every new token but each request's first)
 * @param decodeNanos time spent in decode steps (the forward, the pick of the next tokens, their hand-off)
 */
public record EngineStats(int running, int waiting, int slots, int registeredAdapters, int residentAdapters,
        int maxResidentObserved, long adapterHits, long adapterMisses, long adapterLoads, long adapterEvictions,
        long adapterLoadFailures, long completed, long failed, long cancelled, long generatedTokens,
        double tokensPerSecond, long steps, double ttftP50Millis, double ttftP99Millis, double tpotP50Millis,
        double tpotP99Millis, long prefillTokens, long prefillNanos, long decodeTokens, long decodeNanos) {

    /** Prompt tokens per second of prefill time (0 before any prefill). */
    public double prefillTokensPerSecond() {
        return prefillNanos == 0 ? 0 : prefillTokens * 1e9 / prefillNanos;
    }

    /**
     * Tokens per second of decode time (0 before any decode step): the aggregate decode throughput of the running
     * requests, prefill time excluded.
     */
    public double decodeTokensPerSecond() {
        return decodeNanos == 0 ? 0 : decodeTokens * 1e9 / decodeNanos;
    }
}

package dev.peft4j.serve;

/**
 * A finished request.
 *
 * @param requestId the engine's id of the request
 * @param adapter the adapter it ran with, or null for the base model
 * @param promptIds its prompt's token ids
 * @param tokenIds the new tokens (a stop token included)
 * @param text the new tokens' text (special tokens and the stop string left out), or null without a tokenizer
 * @param finishReason why it stopped
 * @param timings where its time went
 */
public record ServeResult(long requestId, String adapter, long[] promptIds, long[] tokenIds, String text,
        FinishReason finishReason, Timings timings) {

    /**
     * Nanosecond timings of a request: queued (submission to its admission into a slot, which includes waiting for
     * its adapter to load), time to first token (submission to the first token), time per output token (mean gap
     * between the following tokens; 0 with one token) and the total (submission to the last token).
     */
    public record Timings(long queuedNanos, long timeToFirstTokenNanos, long timePerOutputTokenNanos, long totalNanos) {}
}

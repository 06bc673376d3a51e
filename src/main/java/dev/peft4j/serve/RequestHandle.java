package dev.peft4j.serve;

import java.util.concurrent.CompletableFuture;

/**
 * A submitted request: its result to come, and a way to cancel it. Thread-safe.
 */
public final class RequestHandle {
    private final long id;
    private final CompletableFuture<ServeResult> result;
    private final Runnable onCancel;

    RequestHandle(long id, CompletableFuture<ServeResult> result, Runnable onCancel) {
        this.id = id;
        this.result = result;
        this.onCancel = onCancel;
    }

    /** The engine's id of the request. */
    public long id() {
        return id;
    }

    /**
     * The result: completes normally when the request finishes; exceptionally with a
     * {@link java.util.concurrent.CancellationException} when cancelled (or the engine closed before it finished), a
     * {@link java.util.concurrent.TimeoutException} when it ran past its timeout, or the error that failed it (an
     * adapter that would not load, a listener that threw). Completing or cancelling this future yourself cancels the
     * request.
     */
    public CompletableFuture<ServeResult> result() {
        return result;
    }

    /**
     * Cancels the request if it has not finished: its slot is freed at the engine's next step and its result
     * completes with a {@link java.util.concurrent.CancellationException}. Returns at once.
     */
    public void cancel() {
        onCancel.run();
    }
}

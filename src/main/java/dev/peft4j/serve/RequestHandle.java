package dev.peft4j.serve;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Flow;

/**
 * A submitted request: its result to come, and a way to cancel it. Thread-safe.
 */
public final class RequestHandle {
    private final long id;
    private final CompletableFuture<ServeResult> result;
    private final Runnable onCancel;
    private final TokenPublisher tokens;

    RequestHandle(long id, CompletableFuture<ServeResult> result, Runnable onCancel, TokenPublisher tokens) {
        this.id = id;
        this.result = result;
        this.onCancel = onCancel;
        this.tokens = tokens;
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
     * The request's tokens as they are produced, with backpressure: each subscriber gets the tokens from the first on
     * (those produced before it subscribed too), no more than it {@linkplain Flow.Subscription#request requested},
     * then {@code onComplete} once the request finished normally, or {@code onError} with what ended it (a
     * {@link java.util.concurrent.CancellationException}, a {@link java.util.concurrent.TimeoutException}, the error
     * that failed it). A slow subscriber delays no one: the engine keeps decoding and the tokens wait for it.
     * {@link Flow.Subscription#cancel} cancels the request. Signals come on the engine's callback threads, or on the
     * subscriber's own thread inside {@code request}, one at a time.
     */
    public Flow.Publisher<StreamedToken> tokens() {
        return tokens;
    }

    /**
     * Cancels the request if it has not finished: its slot is freed at the engine's next step and its result
     * completes with a {@link java.util.concurrent.CancellationException}. Returns at once.
     */
    public void cancel() {
        onCancel.run();
    }
}

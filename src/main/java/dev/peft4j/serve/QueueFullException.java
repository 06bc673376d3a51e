package dev.peft4j.serve;

import java.util.concurrent.RejectedExecutionException;

/** {@link ServingEngine#submit} refused a request: the wait queue is full (HTTP 429). Retry later. */
public final class QueueFullException extends RejectedExecutionException {
    private static final long serialVersionUID = 1L;

    QueueFullException(String message) {
        super(message);
    }
}

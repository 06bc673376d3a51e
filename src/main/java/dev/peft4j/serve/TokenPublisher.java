package dev.peft4j.serve;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Flow;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The tokens of one request as a {@link Flow.Publisher}: every subscriber gets the request's tokens from the first
 * on, as many as it requested, then {@code onComplete} when the request finished normally or {@code onError} with
 * the error that ended it. A subscription's {@code cancel} cancels the request.
 *
 * <p>Thread safety: {@link #add} and {@link #end} are called in the request's event order (one callback thread at a
 * time); each subscription's signals are serialised by a drain loop (the thread that adds a token, ends the stream or
 * requests more delivers what it can), so a subscriber never sees two signals at once. A subscriber whose
 * {@code onNext} throws gets no more signals, and its exception fails the request as a listener's does.
 */
final class TokenPublisher implements Flow.Publisher<StreamedToken> {
    private final List<StreamedToken> tokens = new ArrayList<>();
    private final List<Subscription> subscriptions = new ArrayList<>();
    private final Runnable cancelRequest;
    private boolean ended;
    private Throwable error;

    TokenPublisher(Runnable cancelRequest) {
        this.cancelRequest = cancelRequest;
    }

    void add(StreamedToken t) {
        List<Subscription> subs;
        synchronized (this) {
            if (ended) {
                return;
            }
            tokens.add(t);
            subs = List.copyOf(subscriptions);
        }
        subs.forEach(Subscription::drain);
    }

    /** Ends the stream: normally when {@code why} is null. Later calls are ignored. */
    void end(Throwable why) {
        List<Subscription> subs;
        synchronized (this) {
            if (ended) {
                return;
            }
            ended = true;
            error = why;
            subs = List.copyOf(subscriptions);
        }
        subs.forEach(Subscription::drain);
    }

    @Override
    public void subscribe(Flow.Subscriber<? super StreamedToken> subscriber) {
        if (subscriber == null) {
            throw new NullPointerException("subscriber is null");
        }
        Subscription s = new Subscription(subscriber);
        synchronized (this) {
            subscriptions.add(s);
        }
        subscriber.onSubscribe(s);
        s.drain();
    }

    private final class Subscription implements Flow.Subscription {
        private final Flow.Subscriber<? super StreamedToken> subscriber;
        private final AtomicLong requested = new AtomicLong();
        private final AtomicInteger wip = new AtomicInteger();
        private volatile boolean done;
        private volatile Throwable badRequest;
        private int next; // drain loop only

        Subscription(Flow.Subscriber<? super StreamedToken> subscriber) {
            this.subscriber = subscriber;
        }

        @Override
        public void request(long n) {
            if (n <= 0) {
                badRequest = new IllegalArgumentException("request(" + n + "): the count must be positive "
                        + "(Reactive Streams rule 3.9)");
            } else {
                requested.accumulateAndGet(n, (a, b) -> a + b < 0 ? Long.MAX_VALUE : a + b);
            }
            drain();
        }

        @Override
        public void cancel() {
            if (!done) {
                done = true;
                detach();
                cancelRequest.run();
            }
        }

        private void detach() {
            synchronized (TokenPublisher.this) {
                subscriptions.remove(this);
            }
        }

        void drain() {
            if (wip.getAndIncrement() != 0) {
                return;
            }
            do {
                while (!done) {
                    if (badRequest != null) {
                        done = true;
                        detach();
                        subscriber.onError(badRequest);
                        break;
                    }
                    StreamedToken t = null;
                    boolean end;
                    Throwable why;
                    synchronized (TokenPublisher.this) {
                        if (next < tokens.size() && requested.get() > 0) {
                            t = tokens.get(next);
                        }
                        end = ended && next >= tokens.size();
                        why = error;
                    }
                    if (t != null) {
                        next++;
                        requested.decrementAndGet();
                        try {
                            subscriber.onNext(t);
                        } catch (RuntimeException | Error e) {
                            done = true; // a subscriber that throws gets no more signals (and fails the request)
                            detach();
                            throw e;
                        }
                    } else if (end) {
                        done = true;
                        detach();
                        if (why == null) {
                            subscriber.onComplete();
                        } else {
                            subscriber.onError(why instanceof java.util.concurrent.CompletionException
                                    && why.getCause() != null ? why.getCause() : why);
                        }
                    } else {
                        break;
                    }
                }
            } while (wip.decrementAndGet() != 0);
        }
    }
}

package dev.peft4j.serve;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.models.PreTrainedModel;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Flow;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** {@link RequestHandle#tokens()}: backpressure, replay to late subscribers, and cancel from the subscriber. */
class TokenPublisherTest {
    /** Records what it is sent; requests nothing by itself. */
    private static final class Recorder implements Flow.Subscriber<StreamedToken> {
        final List<StreamedToken> tokens = java.util.Collections.synchronizedList(new ArrayList<>());
        final CountDownLatch ended = new CountDownLatch(1);
        volatile Flow.Subscription subscription;
        volatile Throwable error;
        volatile int completions;
        volatile int signalsAfterEnd;

        @Override
        public void onSubscribe(Flow.Subscription s) {
            subscription = s;
        }

        @Override
        public void onNext(StreamedToken t) {
            if (ended.getCount() == 0) {
                signalsAfterEnd++;
            }
            tokens.add(t);
        }

        @Override
        public void onError(Throwable t) {
            error = t;
            ended.countDown();
        }

        @Override
        public void onComplete() {
            completions++;
            ended.countDown();
        }

        List<Long> ids() {
            synchronized (tokens) {
                return tokens.stream().map(StreamedToken::tokenId).toList();
            }
        }
    }

    @Test
    void deliversNoMoreThanRequestedAndCancelCancelsTheRequest() throws Exception {
        try (PreTrainedModel m = ServeFixtures.llama(2);
                ServingEngine e = ServingEngine.builder(m).maxConcurrent(2).maxLength(512).threads(1).build()) {
            CountDownLatch tenth = new CountDownLatch(1);
            CountDownLatch release = new CountDownLatch(1);
            List<Long> produced = java.util.Collections.synchronizedList(new ArrayList<>());
            // the listener runs after the publisher got the same token: holding it at token 10 means the publisher
            // holds 11 tokens while the subscriber asked for 3
            RequestHandle h = e.submit(ServeRequest.builder().promptIds(1, 2, 3).maxNewTokens(500).ignoreEos(true)
                    .listener((i, id, text) -> {
                        produced.add(id);
                        if (i == 10) {
                            tenth.countDown();
                            release.await(60, TimeUnit.SECONDS);
                        }
                    }).build());
            Recorder r = new Recorder();
            h.tokens().subscribe(r);
            r.subscription.request(3);
            assertTrue(tenth.await(60, TimeUnit.SECONDS), "the request produced 11 tokens");
            assertEquals(produced.subList(0, 3), r.ids(), "exactly the 3 requested, in order");
            r.subscription.request(2); // delivered at once, on this thread: the tokens are there
            assertEquals(produced.subList(0, 5), r.ids());
            assertEquals(List.of(0, 1, 2, 3, 4), r.tokens.stream().map(StreamedToken::index).toList());
            r.subscription.cancel();
            release.countDown();
            assertThrows(CancellationException.class, () -> h.result().get(60, TimeUnit.SECONDS),
                    "the subscriber's cancel cancelled the request");
            assertEquals(5, r.tokens.size(), "nothing after cancel");
            assertEquals(0, r.completions);
            assertNull(r.error, "no signal after cancel");
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (e.stats().running() > 0 && System.nanoTime() < deadline) {
                Thread.sleep(5);
            }
            assertEquals(0, e.stats().running(), "its slot was freed");
            assertEquals(1, e.stats().cancelled());
        }
    }

    @Test
    void lateSubscribersGetEveryTokenThenTheEnd() throws Exception {
        try (PreTrainedModel m = ServeFixtures.llama(2);
                ServingEngine e = ServingEngine.builder(m).maxConcurrent(2).maxLength(64).threads(1).build()) {
            RequestHandle h = e.submit(ServeRequest.builder().promptIds(5, 6).maxNewTokens(9).ignoreEos(true)
                    .build());
            ServeResult done = h.result().get(60, TimeUnit.SECONDS);
            Recorder all = new Recorder();
            h.tokens().subscribe(all);
            all.subscription.request(Long.MAX_VALUE);
            assertTrue(all.ended.await(10, TimeUnit.SECONDS));
            assertEquals(java.util.Arrays.stream(done.tokenIds()).boxed().toList(), all.ids());
            assertEquals(1, all.completions);
            assertNull(all.error);
            assertNull(all.tokens.get(0).textDelta(), "no tokenizer: no text");

            Recorder some = new Recorder(); // one at a time, then the end only after the last one was requested
            h.tokens().subscribe(some);
            for (int i = 0; i < 9; i++) {
                some.subscription.request(1);
                assertEquals(i + 1, some.tokens.size());
            }
            assertEquals(1, some.completions, "the end follows the last token without a further request");
            assertEquals(0, some.signalsAfterEnd);

            Recorder bad = new Recorder();
            h.tokens().subscribe(bad);
            bad.subscription.request(0);
            assertInstanceOf(IllegalArgumentException.class, bad.error, "rule 3.9: request(0) is an error");
            assertTrue(bad.tokens.isEmpty());
        }
    }

    @Test
    void aFailedRequestEndsItsStreamWithTheError() throws Exception {
        try (PreTrainedModel m = ServeFixtures.llama(2);
                ServingEngine e = ServingEngine.builder(m).maxConcurrent(2).maxLength(64).threads(1).build()) {
            RequestHandle h = e.submit(ServeRequest.builder().promptIds(5, 6).maxNewTokens(40).ignoreEos(true)
                    .listener((i, id, text) -> {
                        if (i == 2) {
                            throw new java.io.IOException("listener gave up");
                        }
                    }).build());
            Recorder r = new Recorder();
            h.tokens().subscribe(r);
            r.subscription.request(Long.MAX_VALUE);
            assertTrue(r.ended.await(60, TimeUnit.SECONDS));
            assertInstanceOf(java.io.IOException.class, r.error);
            assertEquals(0, r.completions);
        }
    }
}

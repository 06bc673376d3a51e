package dev.peft4j.serve;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.models.CausalLM;
import dev.peft4j.models.Generation;
import dev.peft4j.models.PreTrainedModel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The engine's contract request by request: sampling, streaming, stops, refusals and failures that stay local. */
class ServingEngineTest {
    private static ServingEngine.Builder engine(PreTrainedModel m) {
        return ServingEngine.builder(m).maxConcurrent(4).maxLength(64).threads(1);
    }

    private static Throwable cause(CompletableFuture<?> f) throws InterruptedException {
        try {
            f.get(60, TimeUnit.SECONDS);
            throw new AssertionError("expected a failure");
        } catch (ExecutionException e) {
            return e.getCause();
        } catch (java.util.concurrent.CancellationException e) {
            return e;
        } catch (TimeoutException e) {
            throw new AssertionError("no result in 60 s", e);
        }
    }

    @Test
    void seededSamplingEqualsGenerateAloneAndStreamsInOrder(@TempDir Path tmp) throws Exception {
        Path a = ServeFixtures.lora(tmp.resolve("a"), ServeFixtures.HIDDEN, ServeFixtures.LAYERS, 4, 9);
        long[] prompt = {3, 1, 4, 1, 5};
        long[] expected;
        int before = torch.get_num_threads();
        torch.set_num_threads(1);
        try (PreTrainedModel ref = ServeFixtures.llama(2); PointerScope scope = new PointerScope()) {
            ref.loadAdapter(a, "a");
            Tensor out = Generation.generate((CausalLM) ref, Tensor.create(prompt, 1, prompt.length), null,
                    Generation.Options.sampling(12, 0.8, 20, 0.9, 42));
            long[] all = new long[(int) out.numel()];
            out.contiguous().data_ptr_long().capacity(all.length).get(all);
            expected = java.util.Arrays.copyOfRange(all, prompt.length, all.length);
        } finally {
            torch.set_num_threads(before);
        }
        try (PreTrainedModel m = ServeFixtures.llama(2); ServingEngine e = engine(m).build()) {
            e.register("a", a);
            List<Long> streamed = java.util.Collections.synchronizedList(new ArrayList<>());
            List<Integer> indices = java.util.Collections.synchronizedList(new ArrayList<>());
            // a greedy base request alongside, so that the sampled row shares batches
            CompletableFuture<ServeResult> other = e.submit(ServeRequest.builder().promptIds(7, 7, 7).maxNewTokens(20)
                    .build()).result();
            ServeResult r = e.submit(ServeRequest.builder().adapter("a").promptIds(prompt).maxNewTokens(12)
                    .sampling(0.8, 20, 0.9, 42).listener((i, id, text) -> {
                        indices.add(i);
                        streamed.add(id);
                    }).build()).result().get(60, TimeUnit.SECONDS);
            assertArrayEquals(expected, r.tokenIds());
            assertEquals(java.util.stream.IntStream.range(0, 12).boxed().toList(), indices, "in order, before the result");
            assertEquals(java.util.Arrays.stream(expected).boxed().toList(), streamed);
            assertEquals(20, other.get(60, TimeUnit.SECONDS).tokenIds().length);
            assertEquals(null, r.text(), "no tokenizer, no text");
        }
    }

    @Test
    void stopTokenEndsTheRequest() throws Exception {
        try (PreTrainedModel m = ServeFixtures.llama(2); ServingEngine e = engine(m).build()) {
            long[] free = e.submit(ServeRequest.builder().promptIds(1, 2, 3).maxNewTokens(10).build()).result()
                    .get(60, TimeUnit.SECONDS).tokenIds();
            long stop = free[3];
            int first = 0;
            while (free[first] != stop) {
                first++;
            }
            ServeResult r = e.submit(ServeRequest.builder().promptIds(1, 2, 3).maxNewTokens(10)
                    .stopTokenIds(Set.of(stop)).build()).result().get(60, TimeUnit.SECONDS);
            assertEquals(FinishReason.STOP, r.finishReason());
            assertArrayEquals(java.util.Arrays.copyOf(free, first + 1), r.tokenIds(), "the stop token ends it, kept");
        }
    }

    @Test
    void refusalsAtSubmitAreClear(@TempDir Path tmp) throws Exception {
        try (PreTrainedModel m = ServeFixtures.llama(2);
                ServingEngine e = engine(m).maxWaiting(2).maxConcurrent(1).build()) {
            UnknownAdapterException u = assertThrows(UnknownAdapterException.class, () -> e.submit(
                    ServeRequest.builder().adapter("nope").promptIds(1).build()));
            assertEquals("nope", u.adapter());
            IllegalArgumentException tooLong = assertThrows(IllegalArgumentException.class, () -> e.submit(
                    ServeRequest.builder().promptIds(new long[60]).maxNewTokens(5).build()));
            assertTrue(tooLong.getMessage().contains("60 prompt + 5 new = 65 positions; the engine's slots hold 64"),
                    tooLong.getMessage());
            IllegalArgumentException badId = assertThrows(IllegalArgumentException.class, () -> e.submit(
                    ServeRequest.builder().promptIds(1, 64).build()));
            assertTrue(badId.getMessage().contains("prompt token 1 is 64, outside the vocabulary [0, 64)"),
                    badId.getMessage());
            assertThrows(IllegalArgumentException.class, () -> e.submit(ServeRequest.builder().promptText("hi")
                    .build()), "text without a tokenizer");
            // one slot: a long request runs, two wait, the next is refused
            CountDownLatch release = new CountDownLatch(1);
            RequestHandle slow = e.submit(ServeRequest.builder().promptIds(1).maxNewTokens(50).listener((i, id, t) -> {
                try {
                    release.await();
                } catch (InterruptedException ex) {
                    Thread.currentThread().interrupt();
                }
            }).build());
            List<RequestHandle> queued = new ArrayList<>();
            QueueFullException full = null;
            for (int i = 0; i < 4 && full == null; i++) {
                try {
                    queued.add(e.submit(ServeRequest.builder().promptIds(2).maxNewTokens(50).build()));
                } catch (QueueFullException q) {
                    full = q;
                }
            }
            assertTrue(full != null && full.getMessage().contains("wait queue is full (2 requests)"));
            release.countDown();
            assertEquals(50, slow.result().get(60, TimeUnit.SECONDS).tokenIds().length);
            for (RequestHandle h : queued) {
                assertEquals(50, h.result().get(60, TimeUnit.SECONDS).tokenIds().length);
            }
        }
    }

    @Test
    void failuresStayInTheirRequest(@TempDir Path tmp) throws Exception {
        Path good = ServeFixtures.lora(tmp.resolve("good"), ServeFixtures.HIDDEN, ServeFixtures.LAYERS, 4, 1);
        Path broken = Files.createDirectories(tmp.resolve("broken"));
        Files.copy(good.resolve("adapter_config.json"), broken.resolve("adapter_config.json"));
        Files.writeString(broken.resolve("adapter_model.safetensors"), "not a safetensors file");
        try (PreTrainedModel m = ServeFixtures.llama(2);
                ServingEngine e = engine(m).maxResidentAdapters(2).build()) {
            e.register("good", good);
            e.register("broken", broken);
            CompletableFuture<ServeResult> ok = e.submit(ServeRequest.builder().adapter("good").promptIds(1, 2)
                    .maxNewTokens(30).build()).result();
            Throwable loadErr = cause(e.submit(ServeRequest.builder().adapter("broken").promptIds(1, 2).build())
                    .result());
            assertTrue(loadErr.getMessage().contains("adapter 'broken'") && loadErr.getMessage().contains(
                    "failed to load"), loadErr.getMessage());
            Throwable listenerErr = cause(e.submit(ServeRequest.builder().promptIds(1, 2).maxNewTokens(30)
                    .listener((i, id, t) -> {
                        if (i == 2) {
                            throw new IllegalStateException("client went away");
                        }
                    }).build()).result());
            assertEquals("client went away", listenerErr.getMessage());
            Throwable timeout = cause(e.submit(ServeRequest.builder().promptIds(1, 2).maxNewTokens(60)
                    .timeout(Duration.ofNanos(1)).build()).result());
            assertInstanceOf(TimeoutException.class, timeout);
            RequestHandle cancelled = e.submit(ServeRequest.builder().promptIds(1, 2).maxNewTokens(60).build());
            cancelled.cancel();
            assertInstanceOf(java.util.concurrent.CancellationException.class, cause(cancelled.result()));
            assertEquals(30, ok.get(60, TimeUnit.SECONDS).tokenIds().length, "the others ran on");
            EngineStats st = e.stats();
            assertEquals(1, st.adapterLoadFailures());
            assertEquals(0, st.running());

            // unregister: refused while used, then done
            RequestHandle busy = e.submit(ServeRequest.builder().adapter("good").promptIds(1).maxNewTokens(60).build());
            IllegalStateException inUse = assertThrows(IllegalStateException.class, () -> e.unregister("good"));
            assertTrue(inUse.getMessage().contains("adapter 'good' is used by 1 request"), inUse.getMessage());
            busy.result().get(60, TimeUnit.SECONDS);
            e.unregister("good");
            assertTrue(!e.isRegistered("good") && e.stats().residentAdapters() == 0);
            assertThrows(UnknownAdapterException.class, () -> e.unregister("good"));
        }
    }

    @Test
    void closeCancelsWhatIsLeftAndRefusesNewRequests() throws Exception {
        try (PreTrainedModel m = ServeFixtures.llama(2)) {
            ServingEngine e = engine(m).maxConcurrent(1).build();
            List<CompletableFuture<ServeResult>> fs = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                fs.add(e.submit(ServeRequest.builder().promptIds(1).maxNewTokens(60).build()).result());
            }
            e.close();
            for (CompletableFuture<ServeResult> f : fs) {
                assertTrue(f.isDone());
                if (f.isCompletedExceptionally()) {
                    assertInstanceOf(java.util.concurrent.CancellationException.class, cause(f));
                }
            }
            assertThrows(IllegalStateException.class, () -> e.submit(ServeRequest.builder().promptIds(1).build()));
            e.close(); // idempotent
        }
    }

    @Test
    void modelsWithoutSlotCacheAreRefused() throws Exception {
        String gpt2 = "{\"model_type\": \"gpt2\", \"architectures\": [\"GPT2LMHeadModel\"], \"vocab_size\": 64,"
                + " \"n_embd\": 16, \"n_layer\": 1, \"n_head\": 2, \"n_positions\": 32}";
        try (PreTrainedModel m = dev.peft4j.models.AutoModel.fromConfig(dev.peft4j.models.ModelConfig.parse(gpt2),
                dev.peft4j.nn.Init.cpu(torch.ScalarType.Float))) {
            UnsupportedOperationException u = assertThrows(UnsupportedOperationException.class,
                    () -> ServingEngine.builder(m).build());
            assertTrue(u.getMessage().contains("only the Llama family"), u.getMessage());
        }
    }
}

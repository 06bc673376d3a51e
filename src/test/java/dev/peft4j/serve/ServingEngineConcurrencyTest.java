package dev.peft4j.serve;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.models.CausalLM;
import dev.peft4j.models.Generation;
import dev.peft4j.models.PreTrainedModel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Continuous batching is exact: many client threads submit requests over several adapters and the base model, of
 * mixed lengths, while others run; each request's greedy tokens must be those of {@code generate} alone with its
 * adapter set (a second copy of the model), and cancelled requests must free their slots.
 */
class ServingEngineConcurrencyTest {
    private static final int ADAPTERS = 8;
    private static final int CLIENTS = 16;
    private static final int PER_CLIENT = 13; // 208 requests

    record Job(int client, String adapter, long[] prompt, int maxNew, boolean cancel, long delayMicros) {}

    @Test
    void concurrentMixedAdapterRequestsMatchGenerateAlone(@TempDir Path tmp) throws Exception {
        List<Path> folders = new ArrayList<>();
        for (int a = 0; a < ADAPTERS; a++) {
            folders.add(ServeFixtures.lora(tmp.resolve("a" + a), ServeFixtures.HIDDEN, ServeFixtures.LAYERS, 4, 100 + a));
        }
        Random rnd = new Random(7);
        List<Job> jobs = new ArrayList<>();
        for (int c = 0; c < CLIENTS; c++) {
            for (int i = 0; i < PER_CLIENT; i++) {
                int pick = rnd.nextInt(ADAPTERS + 1);
                long[] prompt = new long[1 + rnd.nextInt(64)];
                for (int k = 0; k < prompt.length; k++) {
                    prompt[k] = rnd.nextInt(ServeFixtures.VOCAB);
                }
                jobs.add(new Job(c, pick == ADAPTERS ? null : "a" + pick, prompt, 1 + rnd.nextInt(64),
                        rnd.nextInt(12) == 0, rnd.nextInt(3000)));
            }
        }
        // references: generate alone on a second copy of the model, adapter set (grouped by adapter: one switch each)
        long[][] expected = new long[jobs.size()][];
        long[][] baseline = new long[jobs.size()][];
        int differFromBase = 0;
        int threadsBefore = torch.get_num_threads();
        // one libtorch thread: on a busy 2-core machine OpenMP's barriers cost more than tiny ops gain
        torch.set_num_threads(1);
        try (PreTrainedModel ref = ServeFixtures.llama(1)) {
            for (int a = 0; a < ADAPTERS; a++) {
                ref.loadAdapter(folders.get(a), "a" + a);
            }
            ref.disableAdapters();
            for (int i = 0; i < jobs.size(); i++) {
                baseline[i] = generateAlone(ref, jobs.get(i).prompt(), jobs.get(i).maxNew());
            }
            ref.enableAdapters();
            for (int a = 0; a < ADAPTERS; a++) {
                ref.setAdapter("a" + a);
                for (int i = 0; i < jobs.size(); i++) {
                    if (("a" + a).equals(jobs.get(i).adapter())) {
                        expected[i] = generateAlone(ref, jobs.get(i).prompt(), jobs.get(i).maxNew());
                        differFromBase += java.util.Arrays.equals(expected[i], baseline[i]) ? 0 : 1;
                    }
                }
            }
            for (int i = 0; i < jobs.size(); i++) {
                if (jobs.get(i).adapter() == null) {
                    expected[i] = baseline[i];
                }
            }
        } finally {
            torch.set_num_threads(threadsBefore);
        }
        assertTrue(differFromBase > 50, "the adapters must change the outputs, changed " + differFromBase);

        try (PreTrainedModel model = ServeFixtures.llama(1);
                ServingEngine engine = ServingEngine.builder(model).maxConcurrent(8).maxLength(128)
                        .maxResidentAdapters(4).prefillChunk(16).threads(1).build()) {
            for (int a = 0; a < ADAPTERS; a++) {
                engine.register("a" + a, folders.get(a));
            }
            List<CompletableFuture<ServeResult>> results = new ArrayList<>(jobs.size());
            for (int i = 0; i < jobs.size(); i++) {
                results.add(null);
            }
            CountDownLatch go = new CountDownLatch(1);
            List<Thread> clients = new ArrayList<>();
            List<Throwable> clientErrors = java.util.Collections.synchronizedList(new ArrayList<>());
            for (int c = 0; c < CLIENTS; c++) {
                int client = c;
                Thread t = new Thread(() -> {
                    try {
                        go.await();
                        for (int i = 0; i < jobs.size(); i++) {
                            Job j = jobs.get(i);
                            if (j.client() != client) {
                                continue;
                            }
                            TimeUnit.MICROSECONDS.sleep(j.delayMicros());
                            RequestHandle h = engine.submit(ServeRequest.builder().adapter(j.adapter())
                                    .promptIds(j.prompt()).maxNewTokens(j.maxNew()).build());
                            results.set(i, h.result());
                            if (j.cancel()) {
                                TimeUnit.MICROSECONDS.sleep(j.delayMicros());
                                h.cancel();
                            }
                        }
                    } catch (Throwable e) {
                        clientErrors.add(e);
                    }
                });
                t.start();
                clients.add(t);
            }
            go.countDown();
            for (Thread t : clients) {
                t.join();
            }
            assertEquals(List.of(), clientErrors);

            int cancelled = 0;
            int checked = 0;
            for (int i = 0; i < jobs.size(); i++) {
                Job j = jobs.get(i);
                try {
                    ServeResult r = results.get(i).get(60, TimeUnit.SECONDS);
                    assertArrayEquals(expected[i], r.tokenIds(), "request " + i + " (adapter " + j.adapter()
                            + ", prompt " + j.prompt().length + ", max " + j.maxNew() + ")");
                    assertEquals(FinishReason.LENGTH, r.finishReason());
                    assertTrue(r.timings().timeToFirstTokenNanos() > 0);
                    checked++;
                } catch (ExecutionException | CancellationException e) {
                    Throwable cause = e instanceof ExecutionException ? e.getCause() : e;
                    assertTrue(j.cancel() && cause instanceof CancellationException, "request " + i + ": " + cause);
                    cancelled++;
                }
            }
            assertTrue(checked >= 180, "checked " + checked);
            EngineStats st = engine.stats();
            assertEquals(0, st.running());
            assertEquals(0, st.waiting());
            assertEquals(checked, st.completed());
            assertEquals(cancelled, st.cancelled());
            assertTrue(st.maxResidentObserved() <= 4, "resident " + st.maxResidentObserved());
            assertEquals(st.adapterLoads() - st.adapterEvictions(), st.residentAdapters());

            // every slot is free again: a full batch of maximal requests runs
            List<CompletableFuture<ServeResult>> full = new ArrayList<>();
            for (int s = 0; s < 8; s++) {
                full.add(engine.submit(ServeRequest.builder().adapter("a" + s).promptIds(new long[64])
                        .maxNewTokens(64).build()).result());
            }
            for (CompletableFuture<ServeResult> f : full) {
                assertEquals(64, f.get(60, TimeUnit.SECONDS).tokenIds().length);
            }
        }
    }

    static long[] generateAlone(PreTrainedModel ref, long[] prompt, int maxNew) {
        try (PointerScope scope = new PointerScope()) {
            Tensor ids = Tensor.create(prompt, 1, prompt.length);
            Tensor out = Generation.generate((CausalLM) ref, ids, null, Generation.Options.greedy(maxNew));
            long[] all = new long[(int) out.numel()];
            out.contiguous().data_ptr_long().capacity(all.length).get(all);
            return java.util.Arrays.copyOfRange(all, prompt.length, all.length);
        }
    }
}

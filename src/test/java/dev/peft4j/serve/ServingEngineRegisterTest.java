package dev.peft4j.serve;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.LoadAdapterOptions;
import dev.peft4j.models.PreTrainedModel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link ServingEngine#register(String, String, LoadAdapterOptions)}: a repo id found in the Hugging Face cache given
 * as {@code cache_dir}, at a revision and in a subfolder, as the mixin's {@code loadAdapter} finds it (the cache alone,
 * {@code local_files_only}: tests talk to no Hub); options the engine does not apply are refused.
 */
class ServingEngineRegisterTest {
    private static final String MAIN = "1111111111111111111111111111111111111111";
    private static final String V2 = "2222222222222222222222222222222222222222";

    /** Adapter {@code a} at refs/main, adapter {@code b} in subfolder "sub" at refs/v2, as huggingface_hub lays out. */
    private static void cache(Path cache, Path a, Path b) throws Exception {
        Path repo = Files.createDirectories(cache.resolve("models--org--serve-lora"));
        Path blobs = Files.createDirectories(repo.resolve("blobs"));
        Files.createDirectories(repo.resolve("refs"));
        Files.writeString(repo.resolve("refs/main"), MAIN);
        Files.writeString(repo.resolve("refs/v2"), V2);
        Path snapMain = Files.createDirectories(repo.resolve("snapshots/" + MAIN));
        Path snapV2 = Files.createDirectories(repo.resolve("snapshots/" + V2 + "/sub"));
        for (String f : new String[] {"adapter_config.json", "adapter_model.safetensors"}) {
            Path blobA = Files.copy(a.resolve(f), blobs.resolve("a-" + f));
            Path blobB = Files.copy(b.resolve(f), blobs.resolve("b-" + f));
            Files.createSymbolicLink(snapMain.resolve(f), snapMain.relativize(blobA));
            Files.createSymbolicLink(snapV2.resolve(f), snapV2.relativize(blobB));
        }
    }

    private static long[] greedy(ServingEngine e, String adapter) throws Exception {
        return e.submit(ServeRequest.builder().adapter(adapter).promptIds(3, 1, 4, 1, 5).maxNewTokens(12)
                .ignoreEos(true).build()).result().get(60, TimeUnit.SECONDS).tokenIds();
    }

    @Test
    void repoIdsAtARevisionAndSubfolderFromTheGivenCache(@TempDir Path tmp) throws Exception {
        Path a = ServeFixtures.lora(tmp.resolve("a"), ServeFixtures.HIDDEN, ServeFixtures.LAYERS, 4, 9);
        Path b = ServeFixtures.lora(tmp.resolve("b"), ServeFixtures.HIDDEN, ServeFixtures.LAYERS, 4, 10);
        Path cache = tmp.resolve("hf-cache");
        cache(cache, a, b);
        try (PreTrainedModel m = ServeFixtures.llama(2);
                ServingEngine e = ServingEngine.builder(m).maxConcurrent(4).maxLength(64).threads(1).build()) {
            e.register("folder-a", a);
            e.register("folder-b", b);
            e.register("hub-main", "org/serve-lora", LoadAdapterOptions.builder()
                    .adapterKwargs(Map.of("cache_dir", cache.toString(), "local_files_only", true)).build());
            e.register("hub-v2", "org/serve-lora", LoadAdapterOptions.builder().adapterName("hub-v2").revision("v2")
                    .token("hf_not_used_offline").adapterKwargs(Map.of("cache_dir", cache, "subfolder", "sub",
                            "local_files_only", true)).build());
            long[] fa = greedy(e, "folder-a");
            long[] fb = greedy(e, "folder-b");
            assertFalse(Arrays.equals(fa, fb), "the two adapters must differ for this test to tell them apart");
            assertArrayEquals(fa, greedy(e, "hub-main"), "refs/main of the cache given: adapter a");
            assertArrayEquals(fb, greedy(e, "hub-v2"), "refs/v2, subfolder sub: adapter b");

            Exception missing = assertThrows(Exception.class, () -> e.register("v3", "org/serve-lora",
                    LoadAdapterOptions.builder().revision("v3").adapterKwargs(Map.of("cache_dir", cache.toString(),
                            "local_files_only", true)).build()));
            assertTrue(missing.getMessage().contains("org/serve-lora"), missing.getMessage());
            assertFalse(e.isRegistered("v3"));
        }
    }

    @Test
    void optionsTheEngineDoesNotApplyAreRefused(@TempDir Path tmp) throws Exception {
        Path a = ServeFixtures.lora(tmp.resolve("a"), ServeFixtures.HIDDEN, ServeFixtures.LAYERS, 4, 9);
        try (PreTrainedModel m = ServeFixtures.llama(2);
                ServingEngine e = ServingEngine.builder(m).maxConcurrent(2).maxLength(64).threads(1).build()) {
            for (Object[] c : new Object[][] {
                {LoadAdapterOptions.builder().isTrainable(true).build(), "is_trainable"},
                {LoadAdapterOptions.builder().adapterKwargs(Map.of("proxies", "x")).build(),
                    "adapter_kwargs['proxies']"},
                {LoadAdapterOptions.builder().adapterKwargs(Map.of("local_files_only", "yes")).build(), "boolean"},
                {LoadAdapterOptions.builder().adapterName("other").build(), "'other'"},
                {LoadAdapterOptions.builder().adapterKwargs(Map.of("subfolder", "none")).build(), "no subfolder"}}) {
                Exception x = assertThrows(Exception.class, () -> e.register("a", a.toString(),
                        (LoadAdapterOptions) c[0]));
                assertTrue(x.getMessage().contains((String) c[1]), c[1] + " in: " + x.getMessage());
                assertFalse(e.isRegistered("a"));
            }
            e.register("a", a.toString(), LoadAdapterOptions.builder().revision("ignored-for-a-folder").build());
            assertTrue(e.isRegistered("a"));
        }
    }
}

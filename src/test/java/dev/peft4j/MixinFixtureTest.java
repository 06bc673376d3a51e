package dev.peft4j;

import static dev.peft4j.MixinSupport.bitEqual;
import static dev.peft4j.MixinSupport.fixtureFolder;
import static dev.peft4j.MixinSupport.ids;
import static dev.peft4j.MixinSupport.logits;
import static dev.peft4j.MixinSupport.maxAbsDiff;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.IA3Config;
import dev.peft4j.io.AdapterFolder;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.tuners.AdapterKeys;
import dev.peft4j.tuners.lora.LoraLayer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Real PEFT adapters load into models built from their base configs (seeded random base weights): every key
 * consumed, the state dict handed back bit-equal, save → reload bit-exact, merge/disable identities on real trained
 * weights.
 */
class MixinFixtureTest {
    @TempDir
    Path tmp;

    /** GPT-2 with a small vocabulary: the LoRA keys only address the 12 blocks. */
    static PreTrainedModel gpt2() throws Exception {
        return MixinSupport.model("dev/peft4j/models/adapters/gpt2.config.json",
                Map.of("vocab_size", 64, "n_positions", 32, "n_ctx", 32), 7);
    }

    @Test
    void gpt2Conv1dLoraLoadsEveryKeyAndStateDictIsBitEqual() throws Exception {
        Path dir = fixtureFolder(tmp, "peft-lora-gpt2-tigrinya", "adapter_model.safetensors");
        Map<String, Tensor> file = AdapterFolder.read(dir).stateDict();
        try (PreTrainedModel m = gpt2()) {
            AdapterLoadReport report = m.loadAdapter(dir);
            assertEquals(List.of(), report.unexpectedKeys());
            assertEquals(List.of(), report.missingKeys());
            assertEquals(List.of("default"), m.activeAdapters());
            assertTrue(m.getSubmodule("transformer.h.0.attn.c_attn") instanceof LoraLayer);
            assertTrue(((LoraLayer) m.getSubmodule("transformer.h.11.mlp.c_proj")).fanInFanOut());
            assertEquals(4.0, ((LoraLayer) m.getSubmodule("transformer.h.0.attn.c_attn")).scaling("default"));
            Map<String, Tensor> sd = m.getAdapterStateDict("default");
            assertEquals(file.size(), sd.size());
            for (Map.Entry<String, Tensor> e : file.entrySet()) {
                Tensor mine = sd.get(AdapterKeys.stripPeftPrefix(e.getKey()));
                assertTrue(mine != null, "no " + e.getKey());
                assertTrue(bitEqual(e.getValue(), mine), e.getKey());
            }
            // inference mode (is_trainable=false): nothing trains
            assertTrue(m.namedParameters().values().stream().noneMatch(Tensor::requires_grad));
        }
    }

    @Test
    void gpt2SaveWritesPeftFilesAndReloadIsBitExact() throws Exception {
        Path dir = fixtureFolder(tmp, "peft-lora-gpt2-tigrinya", "adapter_model.safetensors");
        Path out = tmp.resolve("saved");
        try (PreTrainedModel m = gpt2()) {
            m.loadAdapter(dir);
            m.saveAdapter(out, "default");
        }
        assertEquals(Files.readString(dir.resolve("adapter_config.json")), Files.readString(out.resolve("adapter_config.json")),
                "adapter_config.json as PEFT formats it");
        try (Var f = new Var(out.resolve("adapter_model.safetensors")); Var g = new Var(dir.resolve("adapter_model.safetensors"))) {
            assertEquals(SafetensorsFile.PT_METADATA, f.file.metadata());
            assertEquals(new java.util.TreeSet<>(g.file.names()), new java.util.TreeSet<>(f.file.names()));
            for (String n : g.file.names()) {
                assertTrue(bitEqual(g.file.get(n), f.file.get(n)), n);
            }
        }
        assertArrayEquals(Files.readAllBytes(dir.resolve("adapter_model.safetensors")),
                Files.readAllBytes(out.resolve("adapter_model.safetensors")), "byte-identical to PEFT's file");
        assertEquals(List.of("adapter_config.json", "adapter_model.safetensors"),
                Files.list(out).map(p -> p.getFileName().toString()).sorted().toList());
        try (PreTrainedModel m = gpt2()) {
            assertEquals(List.of(), m.loadAdapter(out).unexpectedKeys());
        }
    }

    record Var(SafetensorsFile file) implements AutoCloseable {
        Var(Path p) throws java.io.IOException {
            this(SafetensorsFile.open(p));
        }

        public void close() {
            file.close();
        }
    }

    @Test
    void gpt2MergedEqualsUnmergedAndDisabledEqualsBase() throws Exception {
        Path dir = fixtureFolder(tmp, "peft-lora-gpt2-tigrinya", "adapter_model.safetensors");
        try (PreTrainedModel m = gpt2()) {
            Tensor x = ids(2, 6, 64, 3);
            Tensor base = logits(m, x);
            m.loadAdapter(dir);
            Tensor adapted = logits(m, x);
            assertTrue(maxAbsDiff(base, adapted) > 1e-4, "the trained adapter changes the output");
            m.disableAdapters();
            assertTrue(bitEqual(base, logits(m, x)), "disabled == base exactly (never merged: W untouched)");
            m.enableAdapters();
            assertTrue(bitEqual(adapted, logits(m, x)), "enabled again == adapted exactly");
            m.mergeAdapter();
            Tensor merged = logits(m, x);
            // fp32, 12 blocks of 768-wide matmuls: merging reorders sums (x·(W+ΔW) vs x·W + x·ΔW)
            assertTrue(maxAbsDiff(adapted, merged) < 1e-5, "merged == unmerged: " + maxAbsDiff(adapted, merged));
            m.unmergeAdapter();
            assertTrue(maxAbsDiff(adapted, logits(m, x)) < 1e-5);
            m.mergeAdapter();
            m.disableAdapters(); // a merged layer is unmerged by the disabled forward (W back up to rounding)
            assertTrue(maxAbsDiff(base, logits(m, x)) < 1e-5);
            assertTrue(((LoraLayer) m.getSubmodule("transformer.h.0.attn.c_attn")).mergedAdapters().isEmpty());
            m.enableAdapters();
            m.mergeAndUnload();
            assertTrue(maxAbsDiff(adapted, logits(m, x)) < 1e-5);
            assertFalse(m.namedModules().keySet().stream().anyMatch(k -> k.contains("lora_") || k.contains("base_layer")));
        }
    }

    @Test
    void opt125mBinLoraLoadsEveryKey() throws Exception {
        Path dir = MixinSupport.res("fixtures/peft-regression-lora-opt125m");
        Map<String, Tensor> file = AdapterFolder.read(dir).stateDict();
        try (PreTrainedModel m = MixinSupport.model("dev/peft4j/models/adapters/opt-125m.config.json",
                Map.of("vocab_size", 64, "max_position_embeddings", 32), 11)) {
            Tensor x = ids(1, 5, 64, 5);
            Tensor base = logits(m, x);
            AdapterLoadReport r = m.loadAdapter(dir);
            assertEquals(List.of(), r.unexpectedKeys());
            assertEquals(List.of(), r.missingKeys());
            Map<String, Tensor> sd = m.getAdapterStateDict();
            assertEquals(48, sd.size());
            for (Map.Entry<String, Tensor> e : file.entrySet()) {
                assertTrue(bitEqual(e.getValue(), sd.get(AdapterKeys.stripPeftPrefix(e.getKey()))), e.getKey());
            }
            Tensor adapted = logits(m, x);
            assertTrue(maxAbsDiff(base, adapted) > 1e-6);
            m.mergeAdapter();
            assertTrue(maxAbsDiff(adapted, logits(m, x)) < 1e-5);
        }
    }

    @Test
    void tinyllamaAddedTokensLoadsLoraAndEmbeddingRows() throws Exception {
        // the fms artifact is trimmed: embeddings of 5 rows, only layer 0's q_proj; a vocab-5 untied model fits it
        Path dir = tmp.resolve("tl");
        Files.createDirectories(dir);
        Files.copy(MixinSupport.res("dev/peft4j/config/peft-lora-tinyllama-added-tokens-fms/adapter_config.json"),
                dir.resolve("adapter_config.json"));
        Files.copy(MixinSupport.res("fixtures/peft-lora-tinyllama-added-tokens-fms/adapter_model.safetensors"),
                dir.resolve("adapter_model.safetensors"));
        Map<String, Tensor> file = AdapterFolder.read(dir).stateDict();
        try (PreTrainedModel m = MixinSupport.model("dev/peft4j/models/adapters/tinyllama-v0.config.json",
                Map.of("vocab_size", 5, "tie_word_embeddings", false), 5)) {
            AdapterLoadReport r = m.loadAdapter(dir);
            assertEquals(List.of(), r.unexpectedKeys(), "every key consumed");
            // config targets q_proj and v_proj of 8 layers; the file holds layer 0's q_proj only: 15 pairs missing
            assertEquals(30, r.missingKeys().size());
            assertTrue(r.missingKeys().contains("model.layers.0.self_attn.v_proj.lora_A.default.weight"));
            Map<String, Tensor> sd = m.getAdapterStateDict();
            for (Map.Entry<String, Tensor> e : file.entrySet()) {
                Tensor mine = sd.get(AdapterKeys.stripPeftPrefix(e.getKey()));
                // embeddings are loaded into the fp32 base: BF16 → F32 is exact
                assertTrue(torchEqualAsFloat(e.getValue(), mine), e.getKey());
            }
        }
    }

    static boolean torchEqualAsFloat(Tensor a, Tensor b) {
        return org.bytedeco.pytorch.global.torch.equal(a.to(org.bytedeco.pytorch.global.torch.ScalarType.Float),
                b.to(org.bytedeco.pytorch.global.torch.ScalarType.Float));
    }

    /** mt0-large IA³: its base is T5, which we do not have; check every key names a T5 module with IA³'s shape. */
    @Test
    void ia3Mt0KeysParseAndMapOntoT5Naming() throws Exception {
        AdapterFolder f = AdapterFolder.read(MixinSupport.res("fixtures/peft-ia3-mt0-large"));
        IA3Config c = (IA3Config) f.config();
        Pattern t5 = Pattern.compile("(encoder|decoder)\\.block\\.(\\d+)\\.layer\\.(\\d)\\."
                + "(SelfAttention|EncDecAttention|DenseReluDense)\\.(k|v|wi_1)");
        Map<String, Integer> byKind = new LinkedHashMap<>();
        for (Map.Entry<String, Tensor> e : f.stateDict().entrySet()) {
            Optional<AdapterKeys.ParsedKey> pk = AdapterKeys.parseCheckpointKey(e.getKey());
            assertTrue(pk.isPresent() && pk.get().param() == AdapterKeys.Param.IA3_L, e.getKey());
            Matcher mt = t5.matcher(pk.get().module());
            assertTrue(mt.matches(), pk.get().module());
            // feedforward_modules is [] → every vector scales outputs: (out, 1); mt0-large d_model 1024, d_ff 2816
            long out = mt.group(5).equals("wi_1") ? 2816 : 1024;
            assertArrayEquals(new long[] {out, 1}, e.getValue().shape(), e.getKey());
            byKind.merge(mt.group(5), 1, Integer::sum);
        }
        assertTrue(c.targetModules() != null);
        // 24 encoder + 24 decoder blocks; k and v in self-attention (+ cross-attention in the decoder), wi_1 in each FF
        assertEquals(Map.of("k", 72, "v", 72, "wi_1", 48), byKind);
    }

    /**
     * The PEFT adapter folder laid out as huggingface_hub caches a download (files linked into blobs/, refs/main
     * naming the snapshot), under models--org--gpt2-lora of the given cache folder, the adapter in a subfolder "sub"
     * of a second commit that refs/v2 names.
     */
    private static void cacheLikeHuggingfaceHub(Path cache, Path adapterDir) throws Exception {
        Path repo = Files.createDirectories(cache.resolve("models--org--gpt2-lora"));
        Path blobs = Files.createDirectories(repo.resolve("blobs"));
        String main = "1111111111111111111111111111111111111111";
        String v2 = "2222222222222222222222222222222222222222";
        Files.createDirectories(repo.resolve("refs"));
        Files.writeString(repo.resolve("refs/main"), main);
        Files.writeString(repo.resolve("refs/v2"), v2);
        Path snapMain = Files.createDirectories(repo.resolve("snapshots/" + main));
        Path snapV2 = Files.createDirectories(repo.resolve("snapshots/" + v2 + "/sub"));
        for (String f : new String[] {"adapter_config.json", "adapter_model.safetensors"}) {
            Path blob = blobs.resolve("blob-" + f); // huggingface_hub names blobs by their hash
            Files.copy(adapterDir.resolve(f), blob);
            Files.createSymbolicLink(snapMain.resolve(f), snapMain.relativize(blob));
            Files.createSymbolicLink(snapV2.resolve(f), snapV2.relativize(blob));
        }
    }

    @Test
    void loadsRepoIdFromTheHuggingFaceCacheAtARevisionAndSubfolder() throws Exception {
        Path dir = fixtureFolder(tmp, "peft-lora-gpt2-tigrinya", "adapter_model.safetensors");
        Path cache = tmp.resolve("hf-cache");
        cacheLikeHuggingfaceHub(cache, dir);
        Tensor x = ids(2, 6, 64, 3);
        try (PreTrainedModel m = gpt2()) {
            m.loadAdapter(dir, "folder");
            // local_files_only: the cache alone, no request to the Hub (HubDownloadTest covers fetching)
            AdapterLoadReport main = m.loadAdapter("org/gpt2-lora", LoadAdapterOptions.builder().adapterName("main")
                    .adapterKwargs(Map.of("cache_dir", cache.toString(), "local_files_only", true)).build());
            assertEquals(List.of(), main.unexpectedKeys());
            assertEquals(List.of(), main.missingKeys());
            m.loadAdapter("org/gpt2-lora", LoadAdapterOptions.builder().adapterName("v2").revision("v2")
                    .adapterKwargs(Map.of("cache_dir", cache, "subfolder", "sub", "local_files_only", true)).build());
            Map<String, Tensor> want = m.getAdapterStateDict("folder");
            for (String name : List.of("main", "v2")) {
                Map<String, Tensor> got = m.getAdapterStateDict(name);
                assertEquals(want.keySet(), got.keySet(), name);
                for (Map.Entry<String, Tensor> e : want.entrySet()) {
                    assertTrue(bitEqual(e.getValue(), got.get(e.getKey())), name + " " + e.getKey());
                }
            }
            m.setAdapter("folder");
            Tensor fromFolder = logits(m, x);
            m.setAdapter("v2");
            assertEquals(0.0, maxAbsDiff(fromFolder, logits(m, x)), "the same adapter, read through the cache");

            java.nio.file.NoSuchFileException missing = org.junit.jupiter.api.Assertions.assertThrows(
                    java.nio.file.NoSuchFileException.class, () -> m.loadAdapter("org/absent", LoadAdapterOptions
                            .builder().adapterName("x").adapterKwargs(Map.of("cache_dir", cache.toString(),
                                    "local_files_only", true)).build()));
            assertTrue(missing.getMessage().contains("models--org--absent"), missing.getMessage());
            IllegalArgumentException noSub = org.junit.jupiter.api.Assertions.assertThrows(
                    IllegalArgumentException.class, () -> m.loadAdapter("org/gpt2-lora", LoadAdapterOptions
                            .builder().adapterName("y").adapterKwargs(Map.of("cache_dir", cache.toString(),
                                    "subfolder", "sub", "local_files_only", true)).build()));
            assertEquals("adapter model file not found in org/gpt2-lora. Make sure you are passing the correct path "
                    + "to the adapter model.", noSub.getMessage(), "main's snapshot has no sub/: transformers' error");
            IllegalArgumentException badForce = org.junit.jupiter.api.Assertions.assertThrows(
                    IllegalArgumentException.class, () -> m.loadAdapter("org/gpt2-lora", LoadAdapterOptions
                            .builder().adapterName("z").adapterKwargs(Map.of("cache_dir", cache.toString(),
                                    "force_download", "yes", "local_files_only", true)).build()));
            assertEquals("adapter_kwargs['force_download']: expected a boolean, got yes", badForce.getMessage());
            assertEquals(List.of("folder", "main", "v2"), List.copyOf(m.peftAdapters().peftConfig().keySet()),
                    "failed loads left nothing behind");
        }
    }
}

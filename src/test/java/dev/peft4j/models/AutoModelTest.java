package dev.peft4j.models;

import static dev.peft4j.models.Goldens.assertClose;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.nn.Init;
import dev.peft4j.nn.Module;
import java.nio.file.Files;
import java.nio.file.Path;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Picking the architecture, checkpoint formats, dtypes and the errors for bad input. */
class AutoModelTest {
    @ParameterizedTest
    @ValueSource(strings = {"llama-formats/bin", "llama-formats/sharded", "llama-formats/bin-sharded"})
    void pytorchBinAndShardedCheckpointsGiveTheGoldenLogits(String folder) throws Exception {
        Path golden = Goldens.golden("llama-gqa-llama3rope");
        try (PointerScope scope = new PointerScope(); InferenceMode g = new InferenceMode();
                CausalLM lm = AutoModel.causalLM(Goldens.golden(folder), null);
                Checkpoints.Opened gold = Checkpoints.open(golden, "golden.safetensors")) {
            Tensor logits = lm.forward(gold.tensors.get("input_ids"), gold.tensors.get("attention_mask"), null, null);
            assertClose(gold.tensors.get("logits").select(0, 0), logits.select(0, 0), 1e-5f, folder);
        }
    }

    @Test
    void float32LoadAdoptsTheMappedFileWithoutCopyingAndWritesNeverReachIt(@TempDir Path tmp) throws Exception {
        Path src = Goldens.golden("gpt2-tied");
        Files.copy(src.resolve("config.json"), tmp.resolve("config.json"));
        Files.copy(src.resolve("model.safetensors"), tmp.resolve("model.safetensors"));
        byte[] before = Files.readAllBytes(tmp.resolve("model.safetensors"));
        try (PointerScope scope = new PointerScope(); PreTrainedModel m = AutoModel.fromPretrained(tmp)) {
            Tensor w = m.getParameter("transformer.h.0.attn.c_attn.weight");
            // the parameter is a view of the whole-file mapping, not a copy
            assertEquals(before.length, w.storage().nbytes());
            assertTrue(w.storage_offset() > 0);
            try (org.bytedeco.pytorch.NoGradGuard ng = new org.bytedeco.pytorch.NoGradGuard()) {
                w.add_(new org.bytedeco.pytorch.Scalar(1.0)); // what a LoRA merge does to a base weight
            }
        }
        assertArrayEquals(before, Files.readAllBytes(tmp.resolve("model.safetensors")),
                "copy-on-write mapping: the file is unchanged");
    }

    @ParameterizedTest
    @ValueSource(strings = {"BFloat16", "Half"})
    void halfPrecisionLoadConvertsOnceAndStaysCloseToFloat32(String dtype) throws Exception {
        Path dir = Goldens.golden("llama-gqa-llama3rope");
        ScalarType dt = ScalarType.valueOf(dtype);
        try (PointerScope scope = new PointerScope(); InferenceMode g = new InferenceMode();
                PreTrainedModel m = AutoModel.fromPretrained(dir, dt);
                Checkpoints.Opened gold = Checkpoints.open(dir, "golden.safetensors")) {
            for (Tensor t : m.stateDict().values()) {
                assertEquals(dt, t.scalar_type().intern());
                assertEquals(t.numel() * 2, t.storage().nbytes(), "one converted copy, sized to the tensor");
            }
            Tensor logits = ((CausalLM) m).forward(gold.tensors.get("input_ids"), gold.tensors.get("attention_mask"),
                    null, null);
            assertEquals(dt, logits.scalar_type().intern());
            // bf16 keeps 8 bits of mantissa (fp16 11): logits of magnitude ~4 agree to a few hundredths
            assertClose(gold.tensors.get("logits").select(0, 0), logits.select(0, 0), dt == ScalarType.Half ? 0.02f : 0.15f,
                    dtype + " vs fp32 reference");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"bert-mlm", "opt-prenorm", "qwen2-bias-tied-linearrope"})
    void savePretrainedWritesTiedWeightsOnceAndReloadsToTheSameWeights(String name, @TempDir Path tmp) throws Exception {
        try (PointerScope scope = new PointerScope(); PreTrainedModel m = AutoModel.fromPretrained(Goldens.golden(name))) {
            m.savePretrained(tmp);
            try (dev.peft4j.io.SafetensorsFile f = dev.peft4j.io.SafetensorsFile.open(tmp.resolve("model.safetensors"));
                    PreTrainedModel back = AutoModel.fromPretrained(tmp)) {
                for (String tied : m.tiedKeys().keySet()) {
                    assertTrue(!f.contains(tied), tied + " written twice");
                }
                assertEquals(m.stateDict().size() - m.tiedKeys().size(), f.names().size());
                for (var e : m.stateDict().entrySet()) {
                    assertClose(e.getValue(), back.stateDict().get(e.getKey()), 0f, e.getKey());
                }
                assertEquals(m.config().architecture(), back.config().architecture());
            }
        }
    }

    @Test
    void unknownModelTypeListsTheSupportedOnes(@TempDir Path dir) throws Exception {
        Files.writeString(dir.resolve("config.json"), "{\"model_type\": \"falcon\", \"architectures\": [\"FalconForCausalLM\"]}");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> AutoModel.fromPretrained(dir));
        assertTrue(e.getMessage().contains("'falcon'") && e.getMessage().contains(AutoModel.supportedModelTypes().toString())
                && e.getMessage().contains("gemma2, gemma3_text, gpt2") && !e.getMessage().contains("\n"), e.getMessage());
        for (String known : new String[] {"bert", "gpt2", "llama", "mistral", "opt", "qwen2", "t5", "mt5", "mixtral"}) {
            assertTrue(AutoModel.supportedModelTypes().contains(known), known);
        }
    }

    @Test
    void customCodeModelIsRefusedButAKnownTypeWithAutoMapLoadsTheBuiltInClass(@TempDir Path dir) throws Exception {
        Files.writeString(dir.resolve("config.json"), "{\"model_type\": \"phi3small\", \"architectures\": "
                + "[\"Phi3SmallForCausalLM\"], \"auto_map\": {\"AutoModelForCausalLM\": \"modeling_phi3_small.Phi3SmallForCausalLM\"}}");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> AutoModel.fromPretrained(dir));
        assertTrue(e.getMessage().contains("'phi3small'") && e.getMessage().contains("trust_remote_code")
                && e.getMessage().contains("phi3, qwen2"), e.getMessage());
        // Phi-3-mini's config carries auto_map from before transformers shipped Phi3: the built-in class runs it
        ModelConfig phi3 = ModelConfig.parse("{\"model_type\": \"phi3\", \"architectures\": [\"Phi3ForCausalLM\"], "
                + "\"auto_map\": {\"AutoModelForCausalLM\": \"modeling_phi3.Phi3ForCausalLM\"}, \"vocab_size\": 8, "
                + "\"hidden_size\": 8, \"intermediate_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 2}");
        try (PreTrainedModel m = AutoModel.fromConfig(phi3, Init.meta(ScalarType.Float))) {
            assertEquals("Phi3ForCausalLM", m.getClass().getSimpleName());
            assertTrue(m.stateDict().containsKey("model.layers.0.self_attn.qkv_proj.weight"));
            assertTrue(m.stateDict().containsKey("model.layers.0.mlp.gate_up_proj.weight"));
        }
    }

    @Test
    void unsupportedArchitectureAndRopeScalingAreClearErrors() {
        ModelConfig seqcls = ModelConfig.parse("{\"model_type\": \"llama\", \"architectures\": [\"LlamaForSequenceClassification\"]}");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> AutoModel.fromConfig(seqcls, Init.meta(ScalarType.Float)));
        assertTrue(e.getMessage().contains("LlamaForSequenceClassification") && e.getMessage().contains("LlamaForCausalLM"),
                e.getMessage());
        ModelConfig yarn = ModelConfig.parse("{\"model_type\": \"llama\", \"vocab_size\": 8, \"hidden_size\": 8,"
                + " \"intermediate_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,"
                + " \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}}");
        e = assertThrows(IllegalArgumentException.class, () -> AutoModel.fromConfig(yarn, Init.meta(ScalarType.Float)));
        assertTrue(e.getMessage().contains("'yarn'") && e.getMessage().contains("linear, llama3"), e.getMessage());
        ModelConfig noHidden = ModelConfig.parse("{\"model_type\": \"gpt2\"}");
        e = assertThrows(IllegalArgumentException.class, () -> AutoModel.fromConfig(noHidden, Init.meta(ScalarType.Float)));
        assertTrue(e.getMessage().contains("'vocab_size'"), e.getMessage());
    }

    @Test
    void taskCheckpointLoadsIntoItsBaseModelWithHeadKeysReportedUnused() throws Exception {
        Path dir = Goldens.golden("bert-seqcls");
        ModelConfig c = ModelConfig.read(dir).withArchitecture("BertModel");
        try (PointerScope scope = new PointerScope(); PreTrainedModel base = AutoModel.fromConfig(c, Init.meta(ScalarType.Float));
                Checkpoints.Opened ckpt = Checkpoints.open(dir)) {
            Module.LoadReport r = base.loadWeights(ckpt.tensors, ckpt.source);
            assertEquals(java.util.List.of("classifier.bias", "classifier.weight"),
                    r.unexpectedKeys().stream().sorted().toList());
            assertTrue(base.stateDict().containsKey("pooler.dense.weight"));
            assertClose(ckpt.tensors.get("bert.pooler.dense.weight"), base.getParameter("pooler.dense.weight"), 0f, "pooler");
        }
    }

    @Test
    void missingCheckpointKeysAreListedWithTheFile(@TempDir Path dir) throws Exception {
        Path src = Goldens.golden("llama-formats/sharded");
        Files.copy(src.resolve("config.json"), dir.resolve("config.json"));
        Files.copy(src.resolve("model-00001-of-00002.safetensors"), dir.resolve("model.safetensors"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> AutoModel.fromPretrained(dir));
        assertTrue(e.getMessage().contains("model.safetensors") && e.getMessage().contains("missing keys")
                && e.getMessage().contains("model.norm.weight"), e.getMessage());
    }

    @Test
    void maskOfTheWrongShapeIsRejected() throws Exception {
        try (PointerScope scope = new PointerScope();
                CausalLM lm = AutoModel.causalLM(Goldens.golden("gpt2-tied"), null);
                Checkpoints.Opened gold = Checkpoints.open(Goldens.golden("gpt2-tied"), "golden.safetensors")) {
            Tensor ids = gold.tensors.get("input_ids");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> lm.forward(ids, gold.tensors.get("attention_mask").narrow(1, 0, 5), null, null));
            assertTrue(e.getMessage().contains("attention_mask") && e.getMessage().contains("[2, 5]"), e.getMessage());
        }
    }

    @Test
    void advisesQuietIdleThreadsOnlyWhenUnsetWithSeveralThreads() {
        String both = AutoModel.threadsAdvice(null, null, 2);
        assertNotNull(both);
        assertTrue(both.contains("OMP_WAIT_POLICY=passive and OPENBLAS_THREAD_TIMEOUT=4"), both);
        String omp = AutoModel.threadsAdvice(null, "10", 2);
        assertTrue(omp.contains("OMP_WAIT_POLICY=passive") && !omp.contains("OPENBLAS_THREAD_TIMEOUT"), omp);
        String blas = AutoModel.threadsAdvice("passive", null, 2);
        assertTrue(blas.contains("OPENBLAS_THREAD_TIMEOUT=4") && !blas.contains("OMP_WAIT_POLICY"), blas);
        assertNull(AutoModel.threadsAdvice("passive", "4", 2));
        assertNull(AutoModel.threadsAdvice("active", "30", 8), "the user's choice stands");
        assertNull(AutoModel.threadsAdvice(null, null, 1), "one thread cannot spin against another");
    }

    @Test
    void aRepoIdLoadsItsSnapshotFromTheHuggingFaceCache(@TempDir Path tmp) throws Exception {
        Path golden = Goldens.golden("opt-prenorm");
        String commit = "4444444444444444444444444444444444444444";
        Path repo = tmp.resolve("models--facebook--tiny-opt");
        Path snap = Files.createDirectories(repo.resolve("snapshots/" + commit));
        Files.createDirectories(repo.resolve("refs"));
        Files.writeString(repo.resolve("refs/pr-1"), commit);
        try (var files = Files.list(golden)) {
            for (Path f : files.toList()) {
                Files.createSymbolicLink(snap.resolve(f.getFileName()), f.toAbsolutePath());
            }
        }
        // offline: the cache alone (HubDownloadTest covers fetching a model repo)
        dev.peft4j.io.HubDownload.Settings offline = new dev.peft4j.io.HubDownload.Settings("http://unused", null, true);
        try (PointerScope scope = new PointerScope(); PreTrainedModel want = AutoModel.fromPretrained(golden);
                PreTrainedModel got = AutoModel.fromPretrained(
                        AutoModel.localOrHub("facebook/tiny-opt", "pr-1", tmp.toString(), offline), null)) {
            assertEquals(want.stateDict().keySet(), got.stateDict().keySet());
            for (var e : want.stateDict().entrySet()) {
                assertClose(e.getValue(), got.stateDict().get(e.getKey()), 0f, e.getKey());
            }
        }
        java.nio.file.NoSuchFileException main = assertThrows(java.nio.file.NoSuchFileException.class,
                () -> AutoModel.localOrHub("facebook/tiny-opt", null, tmp.toString(), offline));
        assertTrue(main.getMessage().contains("config.json") && main.getMessage().contains("revision 'main'"),
                "no main ref in this cache: " + main.getMessage());
    }
}

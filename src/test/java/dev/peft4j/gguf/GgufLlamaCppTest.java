package dev.peft4j.gguf;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.PreTrainedModel;
import java.io.IOException;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.StringJoiner;
import java.util.concurrent.TimeUnit;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * llama.cpp itself loads the exported float32 files and its logits equal ours: a tiny Llama (2 layers, 4 heads over
 * 2 KV heads, so both the q and the k permutation matter), without and with a LoRA on all seven projections, over 24
 * positions (RoPE at many angles). Tolerance: max |llama.cpp − peft4j| ≤ 2e-5 · max(1, max |logit|) (measured: 5e-7) — float32
 * arithmetic in a different order, far below what a wrong permutation, a missing scale or a transposed LoRA gives
 * (see {@link #aMissingPermutationIsCaught}).
 *
 * <p>Needs llama.cpp: run {@code benchmarks/peers/build.sh} (npm and a C compiler) and set the two variables it
 * prints, {@code PEFT4J_LLAMA_PEER} and {@code LLAMA_PEER_BACKENDS} ({@code .ci/run} does both, so CI runs this
 * test, and sets {@code PEFT4J_REQUIRE_LLAMA_PEER}, which turns a skip into a failure). Without them the test is
 * skipped, saying so.
 */
class GgufLlamaCppTest {
    static final String HOW = "llama.cpp is not set up: run benchmarks/peers/build.sh and export the "
            + "PEFT4J_LLAMA_PEER and LLAMA_PEER_BACKENDS it prints (.ci/run does)";
    static final double TOLERANCE = 2e-5;

    @TempDir
    static Path tmp;

    static Path harness;
    static Path modelDir;
    static Path loraDir;
    static Path modelGguf;
    static Path loraGguf;
    static final long[] IDS = new long[24];

    @BeforeAll
    static void export() throws IOException {
        String h = System.getenv("PEFT4J_LLAMA_PEER");
        if (System.getenv("PEFT4J_REQUIRE_LLAMA_PEER") != null) {
            // CI sets this: there a missing harness is a failure, not a skip
            assertTrue(h != null && Files.isExecutable(Path.of(h)) && System.getenv("LLAMA_PEER_BACKENDS") != null,
                    HOW);
        }
        Assumptions.assumeTrue(h != null && !h.isBlank() && System.getenv("LLAMA_PEER_BACKENDS") != null, HOW);
        harness = Path.of(h);
        Assumptions.assumeTrue(Files.isExecutable(harness), HOW + " (" + harness + " is not an executable)");
        modelDir = GgufFixtures.llama(tmp.resolve("model"), 11);
        loraDir = GgufFixtures.lora(tmp.resolve("lora"), 12);
        modelGguf = GgufExport.exportModel(modelDir, tmp.resolve("model-f32.gguf"), GgufExport.OutType.F32).file();
        loraGguf = GgufExport.exportAdapter(loraDir, modelDir, tmp.resolve("lora-f32.gguf"),
                GgufExport.OutType.F32).file();
        for (int i = 0; i < IDS.length; i++) {
            IDS[i] = (3 + 37L * i) % GgufFixtures.VOCAB;
        }
    }

    @Test
    void baseLogitsEqualLlamaCpp() throws Exception {
        float[][] ours = peft4j(false);
        float[][] theirs = llamaCpp(modelGguf, null);
        assertClose(ours, theirs, "base model");
    }

    @Test
    void loraLogitsEqualLlamaCpp() throws Exception {
        float[][] ours = peft4j(true);
        float[][] theirs = llamaCpp(modelGguf, loraGguf);
        assertClose(ours, theirs, "with the LoRA");
        // the adapter moves the logits far beyond the tolerance: the comparison above sees it
        float[][] base = peft4j(false);
        assertTrue(maxDiff(ours, base) > 100 * TOLERANCE * scale(ours), "the LoRA barely changes the logits");
    }

    /**
     * The check has teeth: a checkpoint whose q / k rows were put in the inverse order beforehand exports as if the
     * permutation were skipped, and llama.cpp's logits on it are far outside the tolerance.
     */
    @Test
    void aMissingPermutationIsCaught() throws Exception {
        Path undone = Files.createDirectories(tmp.resolve("unpermuted"));
        Files.copy(modelDir.resolve("config.json"), undone.resolve("config.json"));
        try (PointerScope scope = new PointerScope();
                SafetensorsFile f = SafetensorsFile.open(modelDir.resolve("model.safetensors"))) {
            Map<String, Tensor> t = new LinkedHashMap<>(f.tensors());
            for (Map.Entry<String, Tensor> e : t.entrySet()) {
                long heads = e.getKey().endsWith("q_proj.weight") ? GgufFixtures.HEADS
                        : e.getKey().endsWith("k_proj.weight") ? GgufFixtures.KV_HEADS : 0;
                if (heads > 0) {
                    long[] shape = e.getValue().shape();
                    // the inverse of reshape(heads, 2, d / 2, in).swapaxes(1, 2)
                    e.setValue(e.getValue().reshape(heads, shape[0] / heads / 2, 2, shape[1]).transpose(1, 2)
                            .reshape(shape).contiguous());
                }
            }
            SafetensorsFile.write(undone.resolve("model.safetensors"), t);
        }
        Path gguf = GgufExport.exportModel(undone, tmp.resolve("unpermuted.gguf"), GgufExport.OutType.F32).file();
        float[][] ours = peft4j(false);
        float[][] theirs = llamaCpp(gguf, null);
        assertTrue(maxDiff(ours, theirs) > 100 * TOLERANCE * scale(ours),
                "an export without the RoPE permutation should disagree: " + maxDiff(ours, theirs));
    }

    /**
     * RoPE scaling reaches llama.cpp: {@code linear} as its rope.scaling keys, {@code llama3} as the
     * {@code rope_freqs} factors (a short original context, so the factors vary across the head's frequencies).
     */
    @Test
    void ropeScalingEqualsLlamaCpp() throws Exception {
        String[] scalings = {
            "{\"rope_type\": \"linear\", \"factor\": 3.0}",
            "{\"rope_type\": \"llama3\", \"factor\": 4.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
                + " \"original_max_position_embeddings\": 64}",
        };
        for (int i = 0; i < scalings.length; i++) {
            Path dir = tmp.resolve("rope" + i);
            Files.createDirectories(dir);
            Files.writeString(dir.resolve("config.json"), GgufFixtures.config(", \"rope_scaling\": " + scalings[i]));
            Files.copy(modelDir.resolve("model.safetensors"), dir.resolve("model.safetensors"));
            Path gguf = GgufExport.exportModel(dir, tmp.resolve("rope" + i + ".gguf"), GgufExport.OutType.F32).file();
            float[][] ours = peft4j(dir, false);
            assertClose(ours, llamaCpp(gguf, null), scalings[i]);
            assertTrue(maxDiff(ours, peft4j(false)) > 100 * TOLERANCE * scale(ours), "scaling had no effect");
        }
    }

    /**
     * llama.cpp's own quantizer ({@code llama_model_quantize}, as {@code llama-quantize} with its defaults) makes
     * Q8_0 and Q4_0 files of a model 256 wide, so that its Q4_0 file holds the output in Q6_K, as real ones do.
     * {@link GgufModels} loads them: every block (and the Q8_0 output) is bit for bit what peft4j's quantizer makes
     * of the same float32 weights, so the logits equal the model quantized at load (its embedding rounded as the
     * file's is) bit for bit; the Q6_K output is dequantized within Q6_K's rounding of the float head; and the logits
     * agree with llama.cpp's on the same file within 5 % of the largest logit, closer than the float32 model's are
     * (measured: 0.13 against 0.29 for Q8_0, 0.19 against 3.5 for Q4_0, largest logit 5.7; the 8-bit activations,
     * quantized in both, round differently where their float inputs differ in the last bits, and llama.cpp computes
     * its Q6_K head on 8-bit activations where peft4j uses float32).
     */
    @Test
    void llamaCppQuantizedFilesLoadBitExact() throws Exception {
        Path dir = GgufFixtures.llama(tmp.resolve("wide"), 13, ", \"hidden_size\": 256, \"intermediate_size\": 256");
        Path f32 = GgufExport.exportModel(dir, tmp.resolve("wide-f32.gguf"), GgufExport.OutType.F32).file();
        for (dev.peft4j.kernels.Quantization q : dev.peft4j.kernels.Quantization.values()) {
            Path file = tmp.resolve("wide-" + q.ggmlName() + ".gguf");
            Process p = new ProcessBuilder(harness.toString(), "quantize", f32.toString(), file.toString(),
                    q.ggmlName(), "1").redirectErrorStream(true).start();
            String log = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            assertTrue(p.waitFor(120, TimeUnit.SECONDS), "llama_peer quantize did not finish");
            assertEquals(0, p.exitValue(), "llama_peer quantize failed: " + log);
            boolean q8 = q == dev.peft4j.kernels.Quantization.INT8;
            try (GgufFile g = GgufFile.open(file)) {
                assertEquals(q8 ? "Q8_0" : "Q4_0", g.tensor("blk.1.ffn_down.weight").typeName());
                assertEquals(q8 ? "Q8_0" : "Q6_K", g.tensor("output.weight").typeName());
                assertEquals(q8 ? "Q8_0" : "Q4_0", g.tensor("token_embd.weight").typeName());
            }
            try (PointerScope scope = new PointerScope(); InferenceMode im = new InferenceMode();
                    PreTrainedModel ref = AutoModel.fromPretrained(dir, ScalarType.Float);
                    PreTrainedModel gg = GgufModels.fromGguf(file, ScalarType.Float)) {
                Tensor floatHead = ((dev.peft4j.nn.Linear) ref.getSubmodule("lm_head")).weight().clone();
                List<String> names = AutoModel.quantize(ref, q, q8 ? q : null);
                for (String name : names) {
                    dev.peft4j.nn.QuantizedLinear a = (dev.peft4j.nn.QuantizedLinear) ref.getSubmodule(name);
                    dev.peft4j.nn.QuantizedLinear b = (dev.peft4j.nn.QuantizedLinear) gg.getSubmodule(name);
                    assertTrue(torch.equal(a.weight().panels(), b.weight().panels())
                            && torch.equal(a.weight().panelScales(), b.weight().panelScales()),
                            q + ": " + name + ": llama.cpp's blocks differ from peft4j's quantizer's");
                }
                // the embedding as llama.cpp reads its blocks: peft4j's quantizer's, dequantized
                Tensor emb = ((dev.peft4j.nn.Embedding) ref.getSubmodule("model.embed_tokens")).weight();
                emb.copy_(dev.peft4j.kernels.QuantizedWeight.quantize(emb.contiguous(), q).dequantize(ScalarType.Float));
                if (!q8) {
                    Tensor head = ((dev.peft4j.nn.Linear) gg.getSubmodule("lm_head")).weight();
                    double err = head.sub(floatHead).abs().max().item_double();
                    double max = floatHead.abs().max().item_double();
                    // Q6_K: 6-bit values on an 8-bit scale per 16 weights, a half scale per 256: error ≲ max / 32
                    assertTrue(err > 0 && err < max / 32, "Q6_K output dequantized with error " + err + " of " + max);
                    ((dev.peft4j.nn.Linear) ref.getSubmodule("lm_head")).weight().copy_(head);
                }
                Tensor ids;
                try (TensorOptions o = new TensorOptions(ScalarType.Long)) {
                    ids = torch.zeros(new long[] {1, IDS.length}, o);
                    ids.data_ptr_long().capacity(IDS.length).put(IDS);
                }
                Tensor want = ((CausalLM) ref).forward(ids, null, null, null);
                Tensor got = ((CausalLM) gg).forward(ids, null, null, null);
                assertTrue(torch.equal(want, got), q + ": logits differ from the model quantized at load by "
                        + want.sub(got).abs().max().item_double());
                float[][] ours = rows(got);
                float[][] theirs = llamaCpp(file, null);
                double d = maxDiff(ours, theirs);
                double vsFloat = maxDiff(peft4j(dir, false), theirs);
                System.out.printf("GgufLlamaCppTest %s file: max |llama.cpp - peft4j| = %.3g, llama.cpp's against "
                        + "the float32 model %.3g (max |logit| %.3g)%n", q.ggmlName(), d, vsFloat, scale(ours));
                assertTrue(d <= 0.05 * scale(ours) && d < vsFloat, q + ": llama.cpp's logits differ by " + d);
            }
        }
    }

    static float[][] rows(Tensor logits) {
        Tensor c = logits.to(ScalarType.Float).contiguous();
        long[] shape = c.shape();
        float[] flat = new float[(int) (shape[1] * shape[2])];
        new org.bytedeco.javacpp.FloatPointer(c.data_ptr()).get(flat);
        float[][] out = new float[(int) shape[1]][];
        for (int i = 0; i < out.length; i++) {
            out[i] = java.util.Arrays.copyOfRange(flat, (int) (i * shape[2]), (int) ((i + 1) * shape[2]));
        }
        return out;
    }

    private static float[][] peft4j(boolean withLora) throws IOException {
        return peft4j(modelDir, withLora);
    }

    private static float[][] peft4j(Path modelDir, boolean withLora) throws IOException {
        try (PreTrainedModel m = AutoModel.fromPretrained(modelDir, ScalarType.Float);
                PointerScope scope = new PointerScope(); InferenceMode im = new InferenceMode()) {
            if (withLora) {
                m.loadAdapter(loraDir);
            }
            Tensor ids;
            try (TensorOptions o = new TensorOptions(ScalarType.Long)) {
                ids = torch.zeros(new long[] {1, IDS.length}, o);
                ids.data_ptr_long().capacity(IDS.length).put(IDS);
            }
            Tensor logits = ((CausalLM) m).forward(ids, null, null, null).to(ScalarType.Float).contiguous();
            long[] shape = logits.shape();
            float[] flat = new float[(int) (shape[1] * shape[2])];
            new org.bytedeco.javacpp.FloatPointer(logits.data_ptr()).get(flat);
            float[][] out = new float[(int) shape[1]][];
            for (int i = 0; i < out.length; i++) {
                out[i] = java.util.Arrays.copyOfRange(flat, (int) (i * shape[2]), (int) ((i + 1) * shape[2]));
            }
            return out;
        }
    }

    static float[][] llamaCpp(Path model, Path lora) throws IOException, InterruptedException {
        Path out = Files.createTempFile(tmp, "logits", ".f32");
        StringJoiner ids = new StringJoiner(",");
        for (long id : IDS) {
            ids.add(Long.toString(id));
        }
        List<String> cmd = new ArrayList<>(List.of(harness.toString(), "logits", model.toString(),
                lora == null ? "-" : lora.toString(), "1", out.toString(), ids.toString()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String log = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "llama_peer did not finish");
        assertEquals(0, p.exitValue(), "llama_peer failed: " + log);
        assertTrue(log.contains("n_vocab=" + GgufFixtures.VOCAB + " n_tokens=" + IDS.length), log);
        java.nio.FloatBuffer fb = java.nio.ByteBuffer.wrap(Files.readAllBytes(out)).order(ByteOrder.LITTLE_ENDIAN)
                .asFloatBuffer();
        assertEquals(IDS.length * GgufFixtures.VOCAB, fb.remaining());
        float[][] rows = new float[IDS.length][GgufFixtures.VOCAB];
        for (float[] row : rows) {
            fb.get(row);
        }
        return rows;
    }

    static double scale(float[][] a) {
        double m = 1;
        for (float[] row : a) {
            for (float v : row) {
                m = Math.max(m, Math.abs(v));
            }
        }
        return m;
    }

    static double maxDiff(float[][] a, float[][] b) {
        assertEquals(a.length, b.length);
        double d = 0;
        for (int i = 0; i < a.length; i++) {
            assertEquals(a[i].length, b[i].length);
            for (int j = 0; j < a[i].length; j++) {
                d = Math.max(d, Math.abs(a[i][j] - b[i][j]));
            }
        }
        return d;
    }

    static void assertClose(float[][] ours, float[][] theirs, String what) {
        double d = maxDiff(ours, theirs);
        double bound = TOLERANCE * scale(ours);
        System.out.printf("GgufLlamaCppTest %s: max |llama.cpp - peft4j| = %.3g (bound %.3g, max |logit| %.3g)%n",
                what, d, bound, scale(ours));
        assertTrue(d <= bound, what + ": max |llama.cpp - peft4j| = " + d + " > " + bound);
    }
}

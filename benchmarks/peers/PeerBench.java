import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.PeftConfigs;
import dev.peft4j.config.TaskType;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.models.SlotKVCache;
import dev.peft4j.nn.Init;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.InferenceMode;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * peft4j's side of the peer benchmark (run by run.sh, on the class path of cli/target/peft4j-cli.jar):
 *
 * <pre>
 *   PeerBench gen DIR          DIR/model: random TinyLlama-1.1B-shaped Llama (float32, N(0, 0.02), seed 1234);
 *                              DIR/lora: LoRA r = 16, alpha = 32 on q, k, v, o (A and B N(0, 0.02), seed 99)
 *   PeerBench bench LABEL PEFT4J_DTYPE[+BLOCKS[+HEAD]]|- MODEL_DIR LORA_DIR GGUF GGUF_LORA ROUNDS THREADS PROMPT GEN
 *                              peft4j in this process and llama.cpp (llama_peer serve, $PEFT4J_LLAMA_PEER) in a
 *                              child, both loaded once; then ROUNDS rounds, each timing base and LoRA on both systems
 *                              one after the other (the first system alternates by round); prints the medians as
 *                              table rows; PEFT4J_DTYPE+BLOCKS+HEAD (e.g. bfloat16+int4+int8) loads the model in
 *                              PEFT4J_DTYPE, quantizes its blocks' Linears to BLOCKS and lm_head to HEAD (kept as
 *                              loaded when not given); the LoRA stays in PEFT4J_DTYPE
 * </pre>
 *
 * A run is PROMPT ids (1 + 7i mod vocab) in one forward, then GEN greedy steps on the KV cache (peft4j: a slot KV
 * cache, the path of {@code Generation.generate}); "base" is the adapter disabled (peft4j {@code disableAdapters},
 * llama.cpp no adapter set), "LoRA" enabled at scale 1. With {@code PEERS_CONTENTION=1} each round runs once as is and
 * once beside a busy loop pinned to the last core (order alternating by round), and the rows come per condition.
 */
public final class PeerBench {
    static final String CONFIG = "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"],"
            + " \"vocab_size\": 32000, \"hidden_size\": 2048, \"intermediate_size\": 5632, \"num_hidden_layers\": 22,"
            + " \"num_attention_heads\": 32, \"num_key_value_heads\": 4, \"rms_norm_eps\": 1e-5,"
            + " \"rope_theta\": 10000.0, \"max_position_embeddings\": 2048, \"tie_word_embeddings\": false,"
            + " \"torch_dtype\": \"float32\"}";

    public static void main(String[] args) throws Exception {
        if (args.length == 2 && args[0].equals("gen")) {
            gen(Path.of(args[1]));
        } else if (args.length == 11 && args[0].equals("bench")) {
            bench(args);
        } else {
            System.err.println("usage: PeerBench gen DIR | PeerBench bench LABEL DTYPE|- MODEL LORA GGUF GGUF_LORA "
                    + "ROUNDS THREADS PROMPT GEN");
            System.exit(2);
        }
    }

    static void gen(Path dir) throws Exception {
        Path model = dir.resolve("model");
        Path lora = dir.resolve("lora");
        try (PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(CONFIG), Init.cpu(ScalarType.Float))) {
            Init.normal(m, 0.02, 1234);
            m.savePretrained(model);
        }
        LoraConfig c = LoraConfig.builder().r(16).loraAlpha(32).targetModules("q_proj", "k_proj", "v_proj", "o_proj")
                .taskType(TaskType.CAUSAL_LM).baseModelNameOrPath("random-tinyllama").build();
        Files.createDirectories(lora);
        PeftConfigs.write(c, lora);
        Map<String, Tensor> t = new LinkedHashMap<>();
        torch.manual_seed(99);
        try (PointerScope s = new PointerScope(); TensorOptions o = new TensorOptions(ScalarType.Float)) {
            for (int l = 0; l < 22; l++) {
                for (String p : new String[] {"q_proj", "k_proj", "v_proj", "o_proj"}) {
                    long out = p.equals("k_proj") || p.equals("v_proj") ? 256 : 2048;
                    String k = "base_model.model.model.layers." + l + ".self_attn." + p;
                    t.put(k + ".lora_A.weight", torch.randn(new long[] {16, 2048}, o).mul_(new Scalar(0.02)));
                    t.put(k + ".lora_B.weight", torch.randn(new long[] {out, 16}, o).mul_(new Scalar(0.02)));
                }
            }
            SafetensorsFile.write(lora.resolve("adapter_model.safetensors"), t);
        }
        System.err.println("PeerBench: wrote " + model + " and " + lora);
    }

    /** One timed run: prefill ms and decode ms per token. */
    record Run(double prefillMs, double decodeMs) {}

    /**
     * One run on the path {@code Generation.generate} and the serving engine take: a slot KV cache written in place,
     * the prompt in one forward, then one-token steps (the native decode step where it applies).
     */
    static Run peft4j(CausalLM lm, int prompt, int gen, long vocab) {
        long[] ids = new long[prompt];
        for (int i = 0; i < prompt; i++) {
            ids[i] = (1 + 7L * i) % vocab;
        }
        int[] slot = {0};
        try (InferenceMode im = new InferenceMode(); SlotKVCache cache = lm.newSlotCache(1, prompt + gen);
                PointerScope outer = new PointerScope(); TensorOptions o = new TensorOptions(ScalarType.Long)) {
            Tensor in = torch.zeros(new long[] {1, prompt}, o);
            in.data_ptr_long().capacity(prompt).put(ids);
            Tensor next = torch.zeros(new long[] {1, 1}, o);
            long t0 = System.nanoTime();
            long tok;
            try (PointerScope s = new PointerScope()) {
                tok = lm.forwardSlots(in, cache, slot, new long[] {0}).argmax().item_long();
            }
            long t1 = System.nanoTime();
            for (int g = 0; g < gen; g++) {
                next.data_ptr_long().put(0, tok);
                try (PointerScope s = new PointerScope()) {
                    tok = lm.forwardSlots(next, cache, slot, new long[] {prompt + g}).argmax().item_long();
                }
            }
            long t2 = System.nanoTime();
            return new Run((t1 - t0) / 1e6, gen == 0 ? 0 : (t2 - t1) / 1e6 / gen);
        }
    }

    static Run parse(String line) {
        // prefill_ms=… decode_ms_per_token=…
        String[] f = line.trim().split("\\s+");
        if (f.length != 2 || !f[0].startsWith("prefill_ms=") || !f[1].startsWith("decode_ms_per_token=")) {
            throw new IllegalStateException("llama_peer said: " + line);
        }
        return new Run(Double.parseDouble(f[0].substring(11)), Double.parseDouble(f[1].substring(20)));
    }

    static double median(List<Double> v) {
        double[] a = v.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        return a.length % 2 == 1 ? a[a.length / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
    }

    static void bench(String[] a) throws Exception {
        String label = a[1];
        String dtype = a[2];
        Path modelDir = Path.of(a[3]);
        Path loraDir = Path.of(a[4]);
        String gguf = a[5];
        String ggufLora = a[6];
        int rounds = Integer.parseInt(a[7]);
        int threads = Integer.parseInt(a[8]);
        int prompt = Integer.parseInt(a[9]);
        int gen = Integer.parseInt(a[10]);
        String harness = System.getenv("PEFT4J_LLAMA_PEER");
        if (harness == null) {
            throw new IllegalStateException("PEFT4J_LLAMA_PEER is not set (benchmarks/peers/build.sh prints it)");
        }
        torch.set_num_threads(threads);
        org.bytedeco.openblas.presets.openblas_nolapack.blas_set_num_threads(threads);

        Process llama = new ProcessBuilder(harness, "serve", gguf, ggufLora, Integer.toString(threads),
                Integer.toString(prompt), Integer.toString(gen)).redirectError(ProcessBuilder.Redirect.INHERIT).start();
        BufferedReader fromLlama = new BufferedReader(new InputStreamReader(llama.getInputStream(),
                StandardCharsets.UTF_8));
        PrintWriter toLlama = new PrintWriter(llama.getOutputStream(), true, StandardCharsets.UTF_8);
        String ready = fromLlama.readLine();
        if (!"ready".equals(ready)) {
            throw new IllegalStateException("llama_peer did not start: " + ready);
        }

        PreTrainedModel model = null;
        CausalLM lm = null;
        if (!dtype.equals("-")) {
            // DTYPE[+BLOCKS[+HEAD]]: the model loaded in DTYPE, its blocks' Linears quantized to BLOCKS (int8 /
            // int4), and lm_head to HEAD when given
            String[] spec = dtype.split("\\+");
            model = AutoModel.fromPretrained(modelDir, ModelConfig.parseDtype(spec[0], "dtype"));
            if (spec.length > 1) {
                AutoModel.quantize(model, dev.peft4j.kernels.Quantization.parse(spec[1]),
                        spec.length > 2 ? dev.peft4j.kernels.Quantization.parse(spec[2]) : null);
            }
            model.loadAdapter(loraDir);
            lm = (CausalLM) model;
            model.disableAdapters();
            peft4j(lm, prompt, Math.min(gen, 4), 32000); // warm-up, as llama_peer's
            model.enableAdapters();
            peft4j(lm, prompt, Math.min(gen, 4), 32000);
        }
        // PEERS_CONTENTION=1: every round runs once on a quiet machine and once beside a CPU hog (a busy loop pinned
        // to the last core), the order alternating by round; the rows are labelled by condition
        boolean contention = "1".equals(System.getenv("PEERS_CONTENTION"));
        String[] conditions = contention ? new String[] {"", " + hog"} : new String[] {""};
        Map<String, List<Double>> samples = new HashMap<>();
        for (int r = 0; r < rounds; r++) {
            for (int ci = 0; ci < conditions.length; ci++) {
                String cond = conditions[(ci + r) % conditions.length];
                Process hog = cond.isEmpty() ? null : startHog();
                try {
                    for (String mode : new String[] {"base", "lora"}) {
                        boolean peftFirst = r % 2 == 0;
                        for (int side = 0; side < 2; side++) {
                            boolean isPeft = (side == 0) == peftFirst;
                            if (isPeft && lm == null) {
                                continue;
                            }
                            Run run;
                            if (isPeft) {
                                if (mode.equals("base")) {
                                    model.disableAdapters();
                                } else {
                                    model.enableAdapters();
                                }
                                run = peft4j(lm, prompt, gen, 32000);
                            } else {
                                toLlama.println(mode);
                                run = parse(fromLlama.readLine());
                            }
                            String who = isPeft ? "peft4j" : "llama";
                            samples.computeIfAbsent(cond + who + "/" + mode + "/prefill", k -> new ArrayList<>())
                                    .add(run.prefillMs());
                            samples.computeIfAbsent(cond + who + "/" + mode + "/decode", k -> new ArrayList<>())
                                    .add(run.decodeMs());
                            System.err.printf("  %s%s round %d %s %s: prefill %.1f ms, decode %.2f ms/token%n", label,
                                    cond, r + 1, who, mode, run.prefillMs(), run.decodeMs());
                        }
                    }
                } finally {
                    if (hog != null) {
                        hog.destroyForcibly().waitFor();
                    }
                }
            }
        }
        toLlama.println("quit");
        llama.waitFor();
        if (model != null) {
            model.close();
        }
        // decode rows: ms per token; prefill rows: ms for the whole prompt
        for (String cond : conditions) {
            for (String phase : new String[] {"decode", "prefill"}) {
                String unit = phase.equals("decode") ? "ms/token" : "ms/" + prompt + " tokens";
                StringBuilder row = new StringBuilder("| " + label + cond + " | " + phase + " (" + unit + ") |");
                String[] p = {fmt(samples, cond + "peft4j/base/" + phase), fmt(samples, cond + "peft4j/lora/" + phase)};
                String[] l = {fmt(samples, cond + "llama/base/" + phase), fmt(samples, cond + "llama/lora/" + phase)};
                row.append(" ").append(p[0]).append(" / ").append(p[1]).append(" |");
                row.append(" ").append(l[0]).append(" / ").append(l[1]).append(" |");
                row.append(" ").append(ratio(samples, cond + "peft4j/base/" + phase, cond + "llama/base/" + phase))
                        .append(" / ")
                        .append(ratio(samples, cond + "peft4j/lora/" + phase, cond + "llama/lora/" + phase))
                        .append(" |");
                // LoRA / base within each system
                row.append(" ").append(ratio(samples, cond + "peft4j/lora/" + phase, cond + "peft4j/base/" + phase))
                        .append(" / ")
                        .append(ratio(samples, cond + "llama/lora/" + phase, cond + "llama/base/" + phase))
                        .append(" |");
                System.out.println(row);
            }
        }
        System.out.flush();
    }

    /** A busy loop pinned to the last core (taskset), the CPU hog of the contention mode. */
    static Process startHog() throws java.io.IOException {
        int core = Runtime.getRuntime().availableProcessors() - 1;
        Process hog = new ProcessBuilder("taskset", "-c", Integer.toString(core), "sh", "-c", "while :; do :; done")
                .redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        // not left spinning when this process is stopped (SIGTERM, Ctrl-C) in the middle of a round
        Runtime.getRuntime().addShutdownHook(new Thread(hog::destroyForcibly));
        return hog;
    }

    static String fmt(Map<String, List<Double>> s, String key) {
        List<Double> v = s.get(key);
        if (v == null) {
            return "—";
        }
        double m = median(v);
        return m >= 100 ? String.format("%.0f", m) : String.format("%.1f", m);
    }

    /** median(num) / median(den), or a dash when either has no samples. */
    static String ratio(Map<String, List<Double>> s, String num, String den) {
        List<Double> p = s.get(num);
        List<Double> l = s.get(den);
        return p == null || l == null ? "—" : String.format("%.2f", median(p) / median(l));
    }
}

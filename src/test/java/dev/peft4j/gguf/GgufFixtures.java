package dev.peft4j.gguf;

import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.PeftConfigs;
import dev.peft4j.config.TaskType;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Init;
import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/** A tiny Llama folder and a LoRA adapter for it, made on the spot with seeded weights. */
final class GgufFixtures {
    private GgufFixtures() {}

    static final int VOCAB = 128;
    static final int HIDDEN = 64;
    static final int HEADS = 4;
    static final int KV_HEADS = 2;
    static final int HEAD_DIM = HIDDEN / HEADS;
    static final int FFN = 96;
    static final int LAYERS = 2;

    static String config(String extra) {
        return "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": " + VOCAB
                + ", \"hidden_size\": " + HIDDEN + ", \"intermediate_size\": " + FFN + ", \"num_hidden_layers\": "
                + LAYERS + ", \"num_attention_heads\": " + HEADS + ", \"num_key_value_heads\": " + KV_HEADS
                + ", \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, \"max_position_embeddings\": 256,"
                + " \"tie_word_embeddings\": false" + extra + "}";
    }

    /** {@code config.json} and {@code model.safetensors} of the tiny Llama (N(0, 0.1) weights, seeded). */
    static Path llama(Path dir, long seed) throws IOException {
        return llama(dir, seed, "");
    }

    static Path llama(Path dir, long seed, String extraConfig) throws IOException {
        try (PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(config(extraConfig)),
                Init.cpu(ScalarType.Float))) {
            Init.normal(m, 0.1, seed);
            m.savePretrained(dir);
        }
        return dir;
    }

    static final String[] TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

    /**
     * A LoRA adapter (r = 4, alpha = 8) on every projection of both layers, N(0, 0.1) A and B so the delta is
     * visible in the logits; {@code configExtra} edits the builder (rslora, patterns).
     */
    static Path lora(Path dir, long seed, java.util.function.UnaryOperator<LoraConfig.Builder> configExtra)
            throws IOException {
        LoraConfig c = configExtra.apply(LoraConfig.builder().r(4).loraAlpha(8).targetModules(TARGETS)
                .taskType(TaskType.CAUSAL_LM).baseModelNameOrPath("tiny-llama")).build();
        PeftConfigs.write(c, dir);
        Map<String, Tensor> t = new LinkedHashMap<>();
        torch.manual_seed(seed);
        try (TensorOptions o = new TensorOptions(ScalarType.Float)) {
            for (int layer = 0; layer < LAYERS; layer++) {
                for (String p : TARGETS) {
                    String module = (p.endsWith("proj") && !p.startsWith("gate") && !p.startsWith("up")
                            && !p.startsWith("down") ? "self_attn." : "mlp.") + p;
                    String rel = "model.layers." + layer + "." + module;
                    long[] shape = GgufExport.expectedShape(GgufExport.modelTensorName(rel + ".weight", "fixture"),
                            GgufExport.Shape.of(ModelConfig.parse(config(""))));
                    int r = c.rankFor(rel);
                    String k = "base_model.model." + rel;
                    t.put(k + ".lora_A.weight", torch.randn(new long[] {r, shape[1]}, o).mul_(new Scalar(0.1)));
                    t.put(k + ".lora_B.weight", torch.randn(new long[] {shape[0], r}, o).mul_(new Scalar(0.1)));
                }
            }
        }
        SafetensorsFile.write(dir.resolve("adapter_model.safetensors"), t);
        return dir;
    }

    static Path lora(Path dir, long seed) throws IOException {
        return lora(dir, seed, b -> b);
    }
}

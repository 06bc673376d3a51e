package dev.peft4j.serve;

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
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/** A tiny float32 Llama and random LoRA adapter folders for it, made on the spot. */
final class ServeFixtures {
    private ServeFixtures() {}

    static final int VOCAB = 64;
    static final int HIDDEN = 32;
    static final int LAYERS = 2;
    static final int KV_OUT = 16; // 2 KV heads x head_dim 8

    static String config(int hidden, int layers) {
        return "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": " + VOCAB
                + ", \"hidden_size\": " + hidden + ", \"intermediate_size\": " + (hidden * 3 / 2)
                + ", \"num_hidden_layers\": " + layers + ", \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
                + " \"rms_norm_eps\": 1e-6, \"tie_word_embeddings\": false}";
    }

    /**
     * Seeded N(0, 0.3) weights; the LM head scaled up so that the top two logits are far apart (greedy tokens then
     * do not flip on float rounding differences between batch shapes).
     */
    static PreTrainedModel llama(long seed) {
        PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(config(HIDDEN, LAYERS)), Init.cpu(ScalarType.Float));
        Init.normal(m, 0.3, seed);
        try (NoGradGuard g = new NoGradGuard()) {
            m.getParameter("lm_head.weight").mul_(new Scalar(4.0));
        }
        return m;
    }

    /** A LoRA adapter (r=4 on q, k, v, o of every layer) with seeded random A and B, written to {@code dir}. */
    static Path lora(Path dir, int hidden, int layers, int r, long seed) throws IOException {
        LoraConfig c = LoraConfig.builder().r(r).loraAlpha(2 * r).targetModules("q_proj", "k_proj", "v_proj", "o_proj")
                .taskType(TaskType.CAUSAL_LM).baseModelNameOrPath("tiny-llama").build();
        PeftConfigs.write(c, dir);
        Map<String, Tensor> t = new LinkedHashMap<>();
        torch.manual_seed(seed);
        int kvOut = hidden / 2;
        try (TensorOptions o = new TensorOptions(ScalarType.Float)) {
            for (int layer = 0; layer < layers; layer++) {
                for (String p : new String[] {"q_proj", "k_proj", "v_proj", "o_proj"}) {
                    long out = p.equals("k_proj") || p.equals("v_proj") ? kvOut : hidden;
                    String m = "base_model.model.model.layers." + layer + ".self_attn." + p;
                    t.put(m + ".lora_A.weight", torch.randn(new long[] {r, hidden}, o).mul(new Scalar(0.3)));
                    t.put(m + ".lora_B.weight", torch.randn(new long[] {out, r}, o).mul(new Scalar(0.3)));
                }
            }
        }
        SafetensorsFile.write(dir.resolve("adapter_model.safetensors"), t);
        for (Tensor x : t.values()) {
            x.close();
        }
        return dir;
    }
}

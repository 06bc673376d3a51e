package dev.peft4j.cli;

import dev.peft4j.models.AutoModel;
import dev.peft4j.models.LlamaForCausalLM;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.nn.Init;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A small Llama-family model built in code, with seeded random weights (no download, no checkpoint): what
 * {@code bench} times. Its outputs mean nothing; its shapes are those of a real (small) Llama.
 */
final class BuiltinLlama {
    private BuiltinLlama() {}

    /** 4 layers, hidden 512, 8 heads (4 KV heads), intermediate 1376, vocab 4096, untied head. */
    static final String CONFIG = "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"],"
            + " \"vocab_size\": 4096, \"hidden_size\": 512, \"intermediate_size\": 1376,"
            + " \"num_hidden_layers\": 4, \"num_attention_heads\": 8, \"num_key_value_heads\": 4,"
            + " \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, \"max_position_embeddings\": 2048,"
            + " \"tie_word_embeddings\": false, \"torch_dtype\": \"float32\"}";

    /** The model with weights drawn from N(0, 0.02) by {@code seed} (norm weights 1), in eval mode. */
    static LlamaForCausalLM create(ScalarType dtype, long seed) {
        ModelConfig config = ModelConfig.parse(CONFIG);
        LlamaForCausalLM m = (LlamaForCausalLM) AutoModel.fromConfig(config, Init.cpu(dtype));
        Init.normal(m, 0.02, seed);
        m.eval();
        return m;
    }

    /** A short human description, for tables. */
    static String describe() {
        return "Llama (4 layers, hidden 512, vocab 4096)";
    }
}

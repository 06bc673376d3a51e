package dev.peft4j.cli;

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
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/** Test fixtures made on the spot: a tiny Llama folder with seeded weights, and a LoRA adapter folder for it. */
final class TinyModels {
    private TinyModels() {}

    static final String TINY_LLAMA = "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"],"
            + " \"vocab_size\": 64, \"hidden_size\": 32, \"intermediate_size\": 48, \"num_hidden_layers\": 2,"
            + " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-6,"
            + " \"tie_word_embeddings\": false}";

    /** Writes {@code config.json} and {@code model.safetensors} of a 2-layer Llama (seeded N(0, 0.3) weights). */
    static Path llama(Path dir, long seed) throws IOException {
        try (PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(TINY_LLAMA), Init.cpu(ScalarType.Float))) {
            Init.normal(m, 0.3, seed);
            m.savePretrained(dir);
        }
        return dir;
    }

    /**
     * {@link #llama} plus the hand-made 64-token Llama-style {@code tokenizer.json} of
     * {@code src/test/resources/dev/peft4j/tokenizers/llama-bpe} (its PROVENANCE.md tells its ids).
     */
    static Path llamaWithTokenizer(Path dir, long seed) throws IOException {
        llama(dir, seed);
        java.nio.file.Files.copy(Cli.resource("tokenizers/llama-bpe/tokenizer.json"), dir.resolve("tokenizer.json"));
        return dir;
    }

    /**
     * A LoRA adapter (r=2, q_proj and v_proj of both layers) for {@link #llama}, plus one key naming a module the
     * model lacks ({@code model.layers.7.self_attn.q_proj}).
     */
    static Path loraAdapter(Path dir, boolean withStrayKey) throws IOException {
        return loraAdapter(dir, withStrayKey, 3);
    }

    static Path loraAdapter(Path dir, boolean withStrayKey, long seed) throws IOException {
        LoraConfig c = LoraConfig.builder().r(2).loraAlpha(4).targetModules("q_proj", "v_proj")
                .taskType(TaskType.CAUSAL_LM).baseModelNameOrPath("tiny-llama").build();
        PeftConfigs.write(c, dir);
        Map<String, Tensor> t = new LinkedHashMap<>();
        torch.manual_seed(seed);
        try (TensorOptions o = new TensorOptions(ScalarType.Float)) {
            for (int layer = 0; layer < 2; layer++) {
                for (String p : new String[] {"q_proj", "v_proj"}) {
                    long out = p.equals("q_proj") ? 32 : 16; // v_proj: 2 KV heads x head_dim 8
                    String m = "base_model.model.model.layers." + layer + ".self_attn." + p;
                    t.put(m + ".lora_A.weight", torch.randn(new long[] {2, 32}, o));
                    t.put(m + ".lora_B.weight", torch.randn(new long[] {out, 2}, o));
                }
            }
            if (withStrayKey) {
                t.put("base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight", torch.randn(new long[] {2, 32}, o));
                // matches: trainable-token rows of embed_tokens (trainable_token_indices)
                t.put("base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta",
                        torch.randn(new long[] {2, 32}, o));
            }
        }
        SafetensorsFile.write(dir.resolve("adapter_model.safetensors"), t);
        return dir;
    }
}

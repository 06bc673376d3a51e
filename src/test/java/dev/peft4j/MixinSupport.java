package dev.peft4j;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Init;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/** Models with seeded random weights built from configs, fixture folders, tensor comparisons. */
final class MixinSupport {
    private MixinSupport() {}

    static Path res(String relative) {
        try {
            return Path.of(MixinSupport.class.getResource("/" + relative).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    /** A model from a config in the models test resources, with some keys overridden, seeded N(0, 0.02) weights. */
    static PreTrainedModel model(String configResource, Map<String, Object> overrides, long seed) throws IOException {
        ObjectNode json = (ObjectNode) new ObjectMapper().readTree(Files.readString(res(configResource)));
        for (Map.Entry<String, Object> e : overrides.entrySet()) {
            json.putPOJO(e.getKey(), e.getValue());
        }
        PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(json.toString()), Init.cpu(ScalarType.Float));
        Init.normal(m, 0.02, seed);
        return m;
    }

    /** A small Llama (2 layers, hidden 16, 4 heads, vocab 32). */
    static PreTrainedModel tinyLlama(long seed) {
        String json = "{\"model_type\":\"llama\",\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":32,"
                + "\"hidden_size\":16,\"intermediate_size\":32,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
                + "\"num_key_value_heads\":2,\"max_position_embeddings\":64,\"rms_norm_eps\":1e-6,"
                + "\"tie_word_embeddings\":false}";
        PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(json), Init.cpu(ScalarType.Float));
        Init.normal(m, 0.2, seed);
        return m;
    }

    /** A folder holding a fixture's config and weights (the test resources keep them in two places). */
    static Path fixtureFolder(Path tmp, String name, String weightsFile) throws IOException {
        Path d = Files.createDirectories(tmp.resolve(name));
        Path cfg = res("dev/peft4j/config/" + name + "/adapter_config.json");
        Files.copy(cfg, d.resolve("adapter_config.json"));
        Files.copy(res("fixtures/" + name + "/" + weightsFile), d.resolve(weightsFile));
        return d;
    }

    static Tensor ids(long batch, long seq, long vocab, long seed) {
        torch.manual_seed(seed);
        return torch.randint(vocab, new long[] {batch, seq}, new org.bytedeco.pytorch.TensorOptions(ScalarType.Long));
    }

    static Tensor logits(PreTrainedModel m, Tensor ids) {
        return ((CausalLM) m).forward(ids, null, null, null);
    }

    static double maxAbsDiff(Tensor a, Tensor b) {
        return a.sub(b).abs().max().item_double();
    }

    static boolean bitEqual(Tensor a, Tensor b) {
        return a.scalar_type().intern() == b.scalar_type().intern() && torch.equal(a, b);
    }
}

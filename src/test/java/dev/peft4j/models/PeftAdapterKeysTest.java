package dev.peft4j.models;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.peft4j.nn.Conv1D;
import dev.peft4j.nn.Init;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import java.nio.file.Files;
import java.util.Iterator;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Real PEFT adapters (their key names and shapes, listed by adapters/list_adapter_keys.py) address modules of our
 * models built from their base configs: every {@code base_model.model.<module>.lora_A/B.weight} names a Linear or
 * Conv1D whose in/out features fit the LoRA shapes. Built on the meta device: no weight memory.
 */
class PeftAdapterKeysTest {
    static final Pattern LORA = Pattern.compile("base_model\\.model\\.(.+)\\.lora_([AB])\\.weight");

    @ParameterizedTest
    @CsvSource({"peft-regression-lora-opt125m, opt-125m, 48", "peft-lora-gpt2-tigrinya, gpt2, 72",
        "peft-lora-tinyllama-added-tokens-fms, tinyllama-v0, 2"})
    void everyLoraKeyNamesALinearOrConv1dOfTheBaseModel(String adapter, String base, int loraKeys) throws Exception {
        JsonNode keys = new ObjectMapper().readTree(Files.readString(Goldens.resource("adapters/" + adapter + ".keys.json")));
        ModelConfig config = ModelConfig.read(Goldens.resource("adapters/" + base + ".config.json"));
        try (PreTrainedModel model = AutoModel.fromConfig(config, Init.meta(ScalarType.Float))) {
            Map<String, Module> modules = model.namedModules();
            int seen = 0;
            for (Iterator<Map.Entry<String, JsonNode>> it = keys.fields(); it.hasNext();) {
                Map.Entry<String, JsonNode> e = it.next();
                Matcher m = LORA.matcher(e.getKey());
                if (!m.matches()) {
                    continue;
                }
                seen++;
                Module target = modules.get(m.group(1));
                if (target == null) {
                    fail(adapter + ": " + e.getKey() + " addresses no module of " + model.typeName());
                }
                long in;
                long out;
                if (target instanceof Linear) {
                    in = ((Linear) target).inFeatures();
                    out = ((Linear) target).outFeatures();
                } else if (target instanceof Conv1D) {
                    in = ((Conv1D) target).inFeatures();
                    out = ((Conv1D) target).outFeatures();
                } else {
                    throw new AssertionError(m.group(1) + " is a " + target.typeName());
                }
                JsonNode shape = e.getValue();
                if (m.group(2).equals("A")) {
                    assertEquals(in, shape.get(1).asLong(), e.getKey() + ": lora_A is (r, in)");
                } else {
                    assertEquals(out, shape.get(0).asLong(), e.getKey() + ": lora_B is (out, r)");
                }
            }
            assertEquals(loraKeys, seen, adapter + ": LoRA keys checked");
            assertTrue(model.getParameter(model.namedParameters().keySet().iterator().next()).device().is_meta());
        }
    }
}

package consumer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.peft4j.AdapterLoadReport;
import dev.peft4j.kernels.Kernels;
import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.nn.Init;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;

/**
 * A user's code on the published jars alone (peft4j, peft4j:linux-x86_64, pytorch-platform): a LoRA adapter
 * written by Python PEFT (the library's fixture peft-regression-lora-opt125m) loads into an OPT model of that
 * shape (vocabulary cut to 64, seeded weights), every key consumed, and changes the model's output.
 */
class LoadAdapterTest {
    private static final Path RESOURCES = Path.of(System.getProperty("peft4j.testResources"));
    private static final String VERSION = System.getProperty("peft4j.version");

    @Test
    void aPeftAdapterLoadsFromThePublishedJars() throws Exception {
        String classes = PreTrainedModel.class.getProtectionDomain().getCodeSource().getLocation().getPath();
        assertTrue(classes.endsWith("/peft4j-" + VERSION + ".jar"), "peft4j's classes came from " + classes);
        // JavaCPP extracts a library found in a jar into its cache, under the jar's name
        String kernels = Kernels.libraryPath();
        assertTrue(kernels.contains("peft4j-" + VERSION + "-linux-x86_64.jar"), "native kernels loaded from " + kernels);

        ObjectNode config = (ObjectNode) new ObjectMapper().readTree(
                Files.readString(RESOURCES.resolve("dev/peft4j/models/adapters/opt-125m.config.json")));
        config.put("vocab_size", 64).put("max_position_embeddings", 32);
        Path adapter = RESOURCES.resolve("fixtures/peft-regression-lora-opt125m");
        try (NoGradGuard g = new NoGradGuard();
                PreTrainedModel model = AutoModel.fromConfig(ModelConfig.parse(config.toString()),
                        Init.cpu(ScalarType.Float))) {
            Init.normal(model, 0.02, 11);
            torch.manual_seed(5);
            Tensor ids = torch.randint(64, new long[] {1, 5}, new TensorOptions(ScalarType.Long));
            CausalLM lm = (CausalLM) model;
            Tensor base = lm.forward(ids, null, null, null);

            AdapterLoadReport report = model.loadAdapter(adapter);
            assertEquals(List.of(), report.missingKeys(), "keys of the model the file lacks");
            assertEquals(List.of(), report.unexpectedKeys(), "keys of the file the model lacks");
            assertEquals(48, model.getAdapterStateDict().size(), "lora_A and lora_B of q_proj and v_proj, 12 layers");
            Tensor adapted = lm.forward(ids, null, null, null);
            assertTrue(adapted.sub(base).abs().max().item_double() > 1e-6, "the adapter changes the logits");
            model.mergeAdapter();
            assertTrue(lm.forward(ids, null, null, null).sub(adapted).abs().max().item_double() < 1e-5,
                    "merged == unmerged");
        }
    }
}

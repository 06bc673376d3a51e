package dev.peft4j.gguf;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.ModelFileLoader;
import dev.peft4j.models.PreTrainedModel;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ServiceLoader;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link AutoModel#fromGguf}, the public entry point that reaches {@link GgufModels} through the {@link
 * ModelFileLoader} service (models cannot call gguf directly: gguf builds on models): the service is registered, and
 * the model it loads is the one {@link GgufModels#fromGguf} loads, in the dtype asked for; bad files are refused as
 * {@link GgufModels} refuses them.
 */
class AutoModelFromGgufTest {
    @Test
    void loadsWhatGgufModelsLoads(@TempDir Path tmp) throws IOException {
        Path model = GgufFixtures.llama(tmp.resolve("model"), 41);
        Path f32 = GgufExport.exportModel(model, tmp.resolve("model-f32.gguf"), GgufExport.OutType.F32).file();
        assertTrue(ServiceLoader.load(ModelFileLoader.class).stream()
                .anyMatch(p -> p.type() == GgufModelFileLoader.class), "registered in META-INF/services");
        for (ScalarType dt : new ScalarType[] {null, ScalarType.BFloat16}) {
            try (PointerScope s = new PointerScope(); PreTrainedModel viaAuto = AutoModel.fromGguf(f32, dt);
                    PreTrainedModel direct = GgufModels.fromGguf(f32, dt);
                    PreTrainedModel folder = AutoModel.fromPretrained(model, dt == null ? ScalarType.Float : dt)) {
                assertInstanceOf(CausalLM.class, viaAuto);
                assertEquals(dt == null ? "float32" : "bfloat16", viaAuto.config().getString("torch_dtype", null));
                assertEquals(direct.stateDict().keySet(), viaAuto.stateDict().keySet());
                for (String k : direct.stateDict().keySet()) {
                    GgufModelsTest.assertBitEqual(folder.stateDict().get(k), viaAuto.stateDict().get(k), k);
                }
            }
        }
    }

    @Test
    void badFilesAreRefusedNamingThem(@TempDir Path tmp) throws IOException {
        Path notGguf = Files.writeString(tmp.resolve("config.json"), "{\"model_type\": \"llama\"}");
        GgufFormatException e = assertThrows(GgufFormatException.class, () -> AutoModel.fromGguf(notGguf, null));
        assertTrue(e.getMessage().contains(notGguf + ": malformed GGUF: the magic is"), e.getMessage());
        Path model = GgufFixtures.llama(tmp.resolve("model"), 42);
        Path lora = GgufFixtures.lora(tmp.resolve("lora"), 43);
        Path adapter = GgufExport.exportAdapter(lora, model, tmp.resolve("lora.gguf"), GgufExport.OutType.F32).file();
        IllegalArgumentException a = assertThrows(IllegalArgumentException.class,
                () -> AutoModel.fromGguf(adapter, ScalarType.Float));
        assertTrue(a.getMessage().contains(adapter + ": general.type 'adapter'"), a.getMessage());
    }
}

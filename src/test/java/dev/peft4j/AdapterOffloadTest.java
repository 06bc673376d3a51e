package dev.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.models.PreTrainedModel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code load_adapter} with {@code "disk"} modules in its {@code device_map} and an {@code offload_folder}: the
 * adapter's tensors inside those modules become views of a safetensors file in the folder, mapped copy-on-write (their
 * storage is the whole mapped file), the others and the base weights stay in memory, and the logits equal those of
 * the same adapter loaded in memory exactly. The arguments that cannot be honoured are refused by name, leaving the
 * model as it was.
 */
class AdapterOffloadTest {
    @TempDir
    Path tmp;

    static LoadAdapterOptions.Builder inMemory(String name) {
        return MixinLoadArgumentsTest.inMemory(name);
    }

    @Test
    void offloadedAdapterTensorsAreMappedFromTheFolderWithTheSameLogits() throws Exception {
        Path folder = tmp.resolve("offload");
        try (NoGradGuard g = new NoGradGuard(); PreTrainedModel mem = MixinSupport.tinyLlama(3);
                PreTrainedModel off = MixinSupport.tinyLlama(3)) {
            mem.loadAdapter(null, inMemory("a").build());
            Map<String, Object> map = new LinkedHashMap<>();
            map.put("", "cpu");
            map.put("model.layers.1", "disk");
            off.loadAdapter(null, inMemory("a").deviceMap(map).offloadFolder(folder).build());
            Path file = folder.resolve("adapter-a.safetensors");
            long fileBytes = Files.size(file);
            int offloaded = 0;
            for (Map.Entry<String, Tensor> e : off.namedParameters().entrySet()) {
                boolean adapter = e.getKey().contains(".lora_");
                boolean disk = adapter && e.getKey().startsWith("model.layers.1.");
                long storage = e.getValue().storage().nbytes();
                assertEquals(disk, storage == fileBytes, e.getKey() + ": storage of " + storage + " bytes, file "
                        + fileBytes);
                offloaded += disk ? 1 : 0;
            }
            assertEquals(4, offloaded, "q_proj and v_proj of layer 1, A and B each");
            Tensor ids = MixinSupport.ids(2, 6, 32, 5);
            try (Tensor a = MixinSupport.logits(mem, ids); Tensor b = MixinSupport.logits(off, ids)) {
                assertTrue(torch.equal(a, b), "logits of the offloaded adapter differ from the in-memory one's");
            }
            // a second adapter offloaded beside the first: its own file, both apply
            off.loadAdapter(null, inMemory("b").deviceMap(map).offloadFolder(folder).build());
            mem.loadAdapter(null, inMemory("b").build());
            assertTrue(Files.exists(folder.resolve("adapter-b.safetensors")));
            off.setAdapter("a", "b");
            mem.setAdapter("a", "b");
            try (Tensor a = MixinSupport.logits(mem, ids); Tensor b = MixinSupport.logits(off, ids)) {
                assertTrue(torch.equal(a, b), "logits with both adapters differ");
            }
        }
    }

    @Test
    void argumentsThatCannotBeHonouredAreRefusedAndNothingIsLoaded() {
        Path folder = tmp.resolve("offload");
        Map<String, LoadAdapterOptions> refused = new LinkedHashMap<>();
        refused.put("device_map['model.layers.1'] = disk needs an offload_folder",
                inMemory("a").deviceMap(Map.of("", "cpu", "model.layers.1", "disk")).build());
        refused.put("device_map maps no module to \"disk\"", inMemory("a").offloadFolder(folder).build());
        refused.put("device_map key 'model.layer.1' (disk) names no module",
                inMemory("a").deviceMap(Map.of("", "cpu", "model.layer.1", "disk")).offloadFolder(folder).build());
        refused.put("offload_index=", inMemory("a").deviceMap(Map.of("", "cpu", "model.layers.1", "disk"))
                .offloadFolder(folder).offloadIndex(folder.resolve("index.json")).build());
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            for (Map.Entry<String, LoadAdapterOptions> e : refused.entrySet()) {
                IllegalArgumentException x = assertThrows(IllegalArgumentException.class,
                        () -> m.loadAdapter(null, e.getValue()), e.getKey());
                assertTrue(x.getMessage().contains(e.getKey()), x.getMessage());
                assertFalse(m.peftAdapters().isLoaded(), e.getKey());
            }
            assertFalse(Files.exists(folder), "nothing written");
        }
    }
}

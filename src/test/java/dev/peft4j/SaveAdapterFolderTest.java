package dev.peft4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.peft4j.config.PeftConfigs;
import dev.peft4j.io.AdapterFolder;
import dev.peft4j.io.SafetensorsFile;
import dev.peft4j.models.PreTrainedModel;
import dev.peft4j.tuners.AdapterKeys;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code saveAdapter} and {@code loadAdapter} through {@link dev.peft4j.io.AtomicFolder}: the folder holds PEFT's two
 * files, written as the single-file writers write them, beside the user's files and other adapters' subfolders; a
 * killed save's leftovers are cleaned up and a half-swapped folder is put back.
 */
class SaveAdapterFolderTest {
    @TempDir
    Path tmp;

    private static TreeSet<String> entries(Path dir) throws Exception {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).collect(Collectors.toCollection(TreeSet::new));
        }
    }

    @Test
    void aSaveWritesPeftsFilesKeepsTheUsersAndRemovesLeftovers() throws Exception {
        Path dir = tmp.resolve("ad");
        try (PreTrainedModel m = MixinSupport.tinyLlama(21)) {
            m.addAdapter(MixinLoraTest.cfg(false, "q_proj", "v_proj"));
            m.addAdapter(MixinLoraTest.cfg(false, "q_proj"), "other");
            m.saveAdapter(dir, "default");
            m.saveAdapter(dir.resolve("other"), "other"); // PEFT's layout for a second adapter
            Files.writeString(dir.resolve("README.md"), "mine");
            // what a killed save left: a staging folder and a lock beside the folder, a single-file writer's temp
            Files.createDirectories(tmp.resolve(".ad.peft4j-k1ll3d.new"));
            Files.writeString(tmp.resolve(".ad.peft4j-lock"), "");
            Files.writeString(dir.resolve(".adapter_config.json.abc.tmp"), "{");

            m.saveAdapter(dir, "default");

            assertEquals(new TreeSet<>(List.of("README.md", "adapter_config.json", "adapter_model.safetensors",
                    "other")), entries(dir));
            assertEquals(new TreeSet<>(List.of("ad")), entries(tmp));
            assertEquals("mine", Files.readString(dir.resolve("README.md")));
            assertEquals(new TreeSet<>(List.of("adapter_config.json", "adapter_model.safetensors")),
                    entries(dir.resolve("other")));
            // the bytes PEFT's writers give: the same as the single-file writers into a plain folder
            Path plain = Files.createDirectories(tmp.resolve("plain"));
            Map<String, Tensor> prefixed = new LinkedHashMap<>();
            m.getAdapterStateDict("default").forEach((k, v) -> prefixed.put(AdapterKeys.addPeftPrefix(k), v));
            SafetensorsFile.write(plain.resolve(AdapterFolder.SAFETENSORS_NAME), prefixed);
            PeftConfigs.write(m.peftAdapters().peftConfig().get("default"), plain);
            for (String f : List.of("adapter_config.json", "adapter_model.safetensors")) {
                assertArrayEquals(Files.readAllBytes(plain.resolve(f)), Files.readAllBytes(dir.resolve(f)), f);
            }
        }
        try (PreTrainedModel m = MixinSupport.tinyLlama(21)) {
            m.loadAdapter(dir);
            m.loadAdapter(dir.resolve("other"), "other");
            assertEquals(new TreeSet<>(List.of("default", "other")),
                    new TreeSet<>(m.peftAdapters().peftConfig().keySet()));
        }
    }

    @Test
    void aLoadPutsBackAFolderAKilledSaveLeftRenamedAside() throws Exception {
        Path dir = tmp.resolve("ad");
        try (PreTrainedModel m = MixinSupport.tinyLlama(22)) {
            m.addAdapter(MixinLoraTest.cfg(false, "q_proj"));
            m.saveAdapter(dir, null);
        }
        // killed between the fallback's two renames: the folder aside, the new one complete beside it
        Files.move(dir, tmp.resolve(".ad.peft4j-k1ll3d.old"));
        Files.createDirectories(tmp.resolve(".ad.peft4j-k1ll3d.new"));
        try (PreTrainedModel m = MixinSupport.tinyLlama(22)) {
            m.loadAdapter(dir.toString(), null);
            assertEquals(List.of("default"), List.copyOf(m.peftAdapters().peftConfig().keySet()));
        }
        assertEquals(new TreeSet<>(List.of("ad")), entries(tmp));
    }
}

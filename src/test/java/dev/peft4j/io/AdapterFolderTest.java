package dev.peft4j.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.PeftConfigException;
import dev.peft4j.config.PeftType;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class AdapterFolderTest {
    @TempDir
    Path tmp;

    static Path res(String relative) {
        try {
            return Path.of(AdapterFolderTest.class.getResource("/" + relative).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    /** A folder with the tigrinya config and weights (the test resources keep them in two places). */
    Path gpt2Folder() throws IOException {
        Path d = Files.createDirectories(tmp.resolve("tigrinya"));
        Files.copy(res("dev/peft4j/config/peft-lora-gpt2-tigrinya/adapter_config.json"), d.resolve("adapter_config.json"));
        Files.copy(res("fixtures/peft-lora-gpt2-tigrinya/adapter_model.safetensors"), d.resolve("adapter_model.safetensors"));
        return d;
    }

    @Test
    void readsSafetensorsFolder() throws IOException {
        AdapterFolder f = AdapterFolder.read(gpt2Folder());
        assertTrue(f.config() instanceof LoraConfig);
        assertEquals(72, f.stateDict().size());
        assertEquals("adapter_model.safetensors", f.weightsFile().getFileName().toString());
        Tensor a = f.stateDict().get("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight");
        assertEquals(8, a.size(0));
        assertEquals(768, a.size(1));
    }

    @Test
    void readsBinFolder() throws IOException {
        AdapterFolder f = AdapterFolder.read(res("fixtures/peft-regression-lora-opt125m"));
        assertEquals(PeftType.LORA, f.config().peftType());
        assertEquals("adapter_model.bin", f.weightsFile().getFileName().toString());
        assertEquals(48, f.stateDict().size());
        AdapterFolder ia3 = AdapterFolder.read(res("fixtures/peft-ia3-mt0-large"));
        assertEquals(PeftType.IA3, ia3.config().peftType());
    }

    @Test
    void safetensorsPreferredOverBin() throws IOException {
        Path d = gpt2Folder();
        Files.copy(res("fixtures/peft-regression-lora-opt125m/adapter_model.bin"), d.resolve("adapter_model.bin"));
        assertEquals(d.resolve("adapter_model.safetensors"), AdapterFolder.findWeights(d));
        assertEquals(72, AdapterFolder.read(d).stateDict().size());
    }

    @Test
    void missingConfigNamesFolder() throws IOException {
        Path d = gpt2Folder();
        Files.delete(d.resolve("adapter_config.json"));
        NoSuchFileException e = assertThrows(NoSuchFileException.class, () -> AdapterFolder.read(d));
        assertTrue(e.getMessage().contains(d.toString()), e.getMessage());
        assertTrue(e.getMessage().contains("adapter_config.json"), e.getMessage());
    }

    @Test
    void missingWeightsNamesFolder() throws IOException {
        Path d = gpt2Folder();
        Files.delete(d.resolve("adapter_model.safetensors"));
        NoSuchFileException e = assertThrows(NoSuchFileException.class, () -> AdapterFolder.read(d));
        assertTrue(e.getMessage().contains(d.toString()), e.getMessage());
        assertTrue(e.getMessage().contains("adapter_model.safetensors"), e.getMessage());
        assertTrue(e.getMessage().contains("adapter_model.bin"), e.getMessage());
    }

    @Test
    void notADirectoryIsRefused() {
        Path d = tmp.resolve("nope");
        NoSuchFileException e = assertThrows(NoSuchFileException.class, () -> AdapterFolder.read(d));
        assertTrue(e.getMessage().contains(d.toString()), e.getMessage());
    }

    @Test
    void emptyStateDictNamesFile() throws IOException {
        Path d = gpt2Folder();
        SafetensorsFile.write(d.resolve("adapter_model.safetensors"), Map.of(), SafetensorsFile.PT_METADATA);
        IOException e = assertThrows(IOException.class, () -> AdapterFolder.read(d));
        assertTrue(e.getMessage().contains("adapter_model.safetensors"), e.getMessage());
        assertTrue(e.getMessage().contains("empty"), e.getMessage());
    }

    @Test
    void invalidConfigIsRefused() throws IOException {
        Path d = gpt2Folder();
        Files.writeString(d.resolve("adapter_config.json"), "{\"r\": 8}");
        assertThrows(PeftConfigException.class, () -> AdapterFolder.read(d));
    }
}

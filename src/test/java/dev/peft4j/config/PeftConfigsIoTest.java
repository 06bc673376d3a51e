package dev.peft4j.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class PeftConfigsIoTest {
    @TempDir
    Path tmp;

    static LoraConfig sample() {
        return LoraConfig.builder().targetModules("q_proj", "v_proj").loraAlpha(16).r(4).build();
    }

    @Test
    void writeCreatesTheDirectoryAndAFileWithoutTrailingNewline() throws IOException {
        Path dir = tmp.resolve("a/b");
        Path written = PeftConfigs.write(sample(), dir);
        assertEquals(dir.resolve("adapter_config.json"), written);
        String text = Files.readString(written);
        assertTrue(text.startsWith("{\n  \"alora_invocation_tokens\": null,"), text);
        assertTrue(text.endsWith("\"use_rslora\": false\n}"), "no newline after the closing brace");
        assertEquals(sample(), PeftConfigs.read(dir));
    }

    @Test
    void writeReplacesAnExistingConfigAndLeavesNoTemporaryFile() throws IOException {
        PeftConfigs.write(sample(), tmp);
        LoraConfig second = sample().toBuilder().r(32).build();
        PeftConfigs.write(second, tmp);
        assertEquals(32, ((LoraConfig) PeftConfigs.read(tmp)).r());
        try (Stream<Path> files = Files.list(tmp)) {
            assertEquals(List.of(tmp.resolve("adapter_config.json")), files.toList(), "no temporary file left");
        }
    }

    @Test
    void writtenFileGetsOrdinaryPermissionsNotThoseOfATempFile() throws IOException {
        Assumptions.assumeTrue(tmp.getFileSystem().supportedFileAttributeViews().contains("posix"));
        Path written = PeftConfigs.write(sample(), tmp);
        Path ordinary = Files.writeString(tmp.resolve("ordinary.json"), "{}");
        assertEquals(Files.getPosixFilePermissions(ordinary), Files.getPosixFilePermissions(written));
    }

    @Test
    void writeRefusesAPathThatIsAFileAsPeftDoes() throws IOException {
        Path file = Files.writeString(tmp.resolve("taken"), "x");
        IOException e = assertThrows(IOException.class, () -> PeftConfigs.write(sample(), file));
        assertTrue(e.getMessage().contains("is a file"), e.getMessage());
        assertEquals("x", Files.readString(file));
    }

    @Test
    void readAcceptsTheDirectoryOrTheFileItself() throws IOException {
        Path file = PeftConfigs.write(sample(), tmp);
        assertEquals(PeftConfigs.read(tmp), PeftConfigs.read(file));
    }

    @Test
    void readOfADirectoryWithoutConfigSaysWhichFileIsMissing() {
        NoSuchFileException e = assertThrows(NoSuchFileException.class, () -> PeftConfigs.read(tmp));
        assertEquals(tmp.resolve("adapter_config.json").toString(), e.getFile());
    }

    @Test
    void readErrorsNameTheFilePath() throws IOException {
        Path file = Files.writeString(tmp.resolve("adapter_config.json"), "{\"peft_type\": \"LORA\", \"r\": -1}");
        PeftConfigException e = assertThrows(PeftConfigException.class, () -> PeftConfigs.read(tmp));
        assertEquals(file + ": \"r\" must be a positive integer, got -1", e.getMessage());
    }

    @Test
    void nonAsciiTextIsEscapedAndReadBackUnchanged() throws IOException {
        LoraConfig c = sample().toBuilder().baseModelNameOrPath("modèle/日本").build();
        Path file = PeftConfigs.write(c, tmp);
        String text = Files.readString(file);
        assertTrue(text.contains("\"base_model_name_or_path\": \"mod\\u00e8le/\\u65e5\\u672c\","), text);
        assertFalse(text.chars().anyMatch(ch -> ch > 0x7e));
        assertEquals("modèle/日本", PeftConfigs.read(tmp).baseModelNameOrPath());
    }
}

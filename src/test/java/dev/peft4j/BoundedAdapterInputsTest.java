package dev.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.PeftConfigException;
import dev.peft4j.models.PreTrainedModel;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.function.Consumer;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Config values that would hang or exhaust the machine are refused as config errors, quickly, naming what is at
 * fault, and the model is left as it was: a catastrophic regex, a rank too large for the memory, a config that is
 * not UTF-8.
 */
class BoundedAdapterInputsTest {
    @TempDir
    Path tmp;

    /** A valid LoRA adapter folder for {@link MixinSupport#tinyLlama}, with its config edited by {@code edit}. */
    private Path adapterFolder(String name, Consumer<ObjectNode> edit) throws Exception {
        Path dir = tmp.resolve(name);
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            m.addAdapter(MixinLoraTest.cfg(false, "q_proj", "v_proj"), "x");
            m.saveAdapter(dir, "x");
        }
        Path config = dir.resolve("adapter_config.json");
        ObjectMapper json = new ObjectMapper();
        ObjectNode root = (ObjectNode) json.readTree(config.toFile());
        edit.accept(root);
        Files.writeString(config, json.writeValueAsString(root));
        return dir;
    }

    /** Loads {@code dir} into a fresh model, expecting a refusal that leaves the model as it was. */
    private static PeftConfigException refusedLeavingModelUnchanged(Path dir) throws Exception {
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            Map<String, Tensor> before = MixinLoraTest.snapshot(m);
            PeftConfigException e = inUnderASecond(() -> assertThrows(PeftConfigException.class,
                    () -> m.loadAdapter(dir)));
            MixinLoraTest.assertSameState(before, m);
            assertEquals(Map.of(), m.peftAdapters().peftConfig(), "no adapter registered");
            assertEquals(Map.of(), m.peftAdapters().tunerLayers(), "no layer wrapped");
            return e;
        }
    }

    /** Under a second of this thread's CPU time (the build machine may be shared), and a wall-clock stop. */
    private static <T> T inUnderASecond(org.junit.jupiter.api.function.ThrowingSupplier<T> task) {
        return assertTimeoutPreemptively(Duration.ofSeconds(15), () -> {
            ThreadMXBean threads = ManagementFactory.getThreadMXBean();
            long cpu0 = threads.getCurrentThreadCpuTime();
            T result = task.get();
            long cpuMs = (threads.getCurrentThreadCpuTime() - cpu0) / 1_000_000;
            assertTrue(cpuMs < 1000, "took " + cpuMs + " ms of CPU time");
            return result;
        });
    }

    @Test
    void catastrophicTargetRegexIsRefusedNamingThePattern() throws Exception {
        String pattern = "(.*)*(.*)*(.*)*z";
        Path dir = adapterFolder("regex", c -> c.put("target_modules", pattern));
        PeftConfigException e = refusedLeavingModelUnchanged(dir);
        assertTrue(e.getMessage().contains(pattern) && e.getMessage().contains("catastrophic"), e.getMessage());
    }

    @Test
    void catastrophicExcludeRegexIsRefusedNamingThePattern() throws Exception {
        String pattern = "((.*)*)*b"; // exponential in the name's length
        Path dir = adapterFolder("exclude", c -> c.put("exclude_modules", pattern));
        PeftConfigException e = refusedLeavingModelUnchanged(dir);
        assertTrue(e.getMessage().contains(pattern), e.getMessage());
    }

    @Test
    void ordinaryRegexesStillMatch() throws Exception {
        Path dir = adapterFolder("ordinary", c -> c.put("target_modules", ".*\\.(q_proj|v_proj)"));
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            m.loadAdapter(dir);
            assertEquals(4, m.peftAdapters().tunerLayers().size(), "q_proj and v_proj of both layers");
        }
    }

    @Test
    void rankTooLargeForTheMemoryIsAConfigErrorNamingFieldValueAndModule() throws Exception {
        Path dir = adapterFolder("huge_r", c -> c.put("r", 1L << 30));
        PeftConfigException e = refusedLeavingModelUnchanged(dir);
        assertTrue(e.getMessage().contains("r = 1073741824") && e.getMessage().contains("q_proj")
                && e.getMessage().contains("memory"), e.getMessage());
    }

    @Test
    void rankPatternTooLargeIsRefusedByAddAdapterToo() {
        try (PreTrainedModel m = MixinSupport.tinyLlama(3)) {
            Map<String, Tensor> before = MixinLoraTest.snapshot(m);
            LoraConfig huge = LoraConfig.builder().r(4).targetModules("q_proj", "v_proj")
                    .rankPattern(Map.of("v_proj", Integer.MAX_VALUE)).build();
            PeftConfigException e = assertThrows(PeftConfigException.class, () -> m.addAdapter(huge));
            assertTrue(e.getMessage().contains("r = " + Integer.MAX_VALUE) && e.getMessage().contains("v_proj"),
                    e.getMessage());
            MixinLoraTest.assertSameState(before, m);
            assertEquals(Map.of(), m.peftAdapters().peftConfig());
        }
    }

    @Test
    void configThatIsNotUtf8IsRefusedNamingTheFile() throws Exception {
        Path dir = adapterFolder("latin1", c -> { });
        Path config = dir.resolve("adapter_config.json");
        String text = Files.readString(config).replace("\"q_proj\"", "\"q_proj\u00e9\"");
        Files.write(config, text.getBytes(java.nio.charset.StandardCharsets.ISO_8859_1));
        PeftConfigException e = refusedLeavingModelUnchanged(dir);
        assertTrue(e.getMessage().contains(config.toString()) && e.getMessage().contains("UTF-8"), e.getMessage());
    }
}

package dev.peft4j.config;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.stream.Collectors;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Reads and writes {@code adapter_config.json} as PEFT does (spec §3.1, §3.2).
 *
 * <p>Reading picks the config class from {@code peft_type}, fills missing keys with PEFT's defaults (old files load),
 * runs PEFT's validations, and tolerates keys peft4j does not know: they are logged at debug level, exposed by
 * {@link PeftConfig#unknownKeys()} and <em>kept</em> on write, so a file written by a newer PEFT keeps its settings
 * when peft4j writes it back (PEFT itself drops such keys with a warning when it loads the file).
 *
 * <p>Writing produces Python's {@code json.dumps(config, indent=2, sort_keys=True)}: keys sorted by code point at
 * every level, two-space indent, items ending their line with a bare comma, {@code ": "} after keys, ASCII only, Python float repr
 * ({@code 1.0}, {@code 0.05}, {@code 1e-05}), no trailing newline. A config holds the keys it was read with (a PEFT
 * 0.5 file stays a PEFT 0.5 file; values written as read, such as {@code 16} vs {@code 16.0}); a config built from
 * scratch has PEFT 0.18's key set (spec A.1-A.3), or an older release's with
 * {@link PeftConfigBuilder#keysOfRelease}.
 *
 * <p>JSON values appear in Java ({@link PeftConfig#toJsonObject()}, nested configs, unknown keys) as {@code null},
 * {@link Boolean}, {@link Long} or {@link java.math.BigInteger} for a Python int, {@link Double} for a Python float,
 * {@link String}, and unmodifiable {@link java.util.List}s and {@link Map}s (keys in the file's order).
 */
public final class PeftConfigs {
    private static final Logger LOG = LoggerFactory.getLogger(PeftConfigs.class);

    /** The file name PEFT reads and writes. */
    public static final String CONFIG_FILE_NAME = "adapter_config.json";

    /** PEFT's prompt-learning methods: they add virtual tokens to the input and have no layers to inject. */
    private static final Set<String> PROMPT_LEARNING_TYPES =
            Set.of("PROMPT_TUNING", "MULTITASK_PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "CPT");

    private static final ObjectMapper MAPPER =
            new ObjectMapper().enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    private PeftConfigs() {}

    /**
     * Reads {@code adapter_config.json} from a directory, or the given file.
     *
     * @throws NoSuchFileException if there is no such file
     * @throws PeftConfigException if the file is not a config PEFT would load, or its method is not LoRA, IA3 or
     *     AdaLoRA
     */
    public static PeftConfig read(Path dirOrFile) throws IOException {
        Path file = Files.isDirectory(dirOrFile) ? dirOrFile.resolve(CONFIG_FILE_NAME) : dirOrFile;
        if (!Files.isRegularFile(file)) {
            throw new NoSuchFileException(file.toString(), null, "no " + CONFIG_FILE_NAME + " there");
        }
        long size = Files.size(file);
        if (size > MAX_CONFIG_BYTES) {
            throw new PeftConfigException(file + ": " + size + " bytes, more than the " + MAX_CONFIG_BYTES
                    + " an adapter config may have");
        }
        String text;
        try {
            text = Files.readString(file, StandardCharsets.UTF_8);
        } catch (java.nio.charset.CharacterCodingException e) {
            throw new PeftConfigException(file + ": not valid UTF-8 (JSON must be UTF-8): " + e, e);
        }
        return parse(text, file.toString());
    }

    /** Configs are a few kilobytes; one listing every module of a huge model stays far below this. */
    static final long MAX_CONFIG_BYTES = 16L << 20;

    /**
     * Parses the text of an {@code adapter_config.json}; {@code sourceName} (a file name or URL) starts every error
     * message.
     *
     * @throws PeftConfigException as {@link #read}
     */
    public static PeftConfig parse(String json, String sourceName) {
        JsonNode root;
        try {
            root = MAPPER.readTree(json);
        } catch (JsonProcessingException e) {
            throw new PeftConfigException(sourceName + ": not valid JSON: " + e.getOriginalMessage(), e);
        }
        if (root == null || !root.isObject()) {
            throw new PeftConfigException(sourceName + ": must hold a JSON object, got "
                    + (root == null ? "nothing" : root.getNodeType().toString().toLowerCase()));
        }
        Map<String, Object> values;
        try {
            @SuppressWarnings("unchecked")
            Map<String, Object> tree = (Map<String, Object>) PythonJson.fromTree(root);
            values = tree;
        } catch (IllegalArgumentException e) {
            throw new PeftConfigException(sourceName + ": " + e.getMessage(), e);
        }
        return fromJsonObject(values, sourceName);
    }

    /**
     * Makes a config from a JSON object held as Java values ({@code null}, Boolean, Long/Integer for ints, Double
     * for floats, String, List, Map with String keys).
     *
     * @throws PeftConfigException as {@link #read}
     */
    public static PeftConfig fromJsonObject(Map<String, ?> jsonObject, String sourceName) {
        @SuppressWarnings("unchecked")
        Map<String, Object> values = new LinkedHashMap<>((Map<String, Object>) PythonJson.freeze(jsonObject));
        if (values.containsKey("runtime_config")) {
            LOG.warn("{}: \"runtime_config\" is not part of a saved config; removed, as PEFT does", sourceName);
            values.remove("runtime_config");
        }
        ConfigDoc doc = new ConfigDoc(sourceName, values);
        if (!values.containsKey("peft_type")) {
            throw doc.error("missing the required key \"peft_type\" (one of " + supported() + ")");
        }
        if (!(values.get("peft_type") instanceof String type)) {
            throw doc.error("peft_type", "must be a string, one of " + supported());
        }
        PeftConfig config;
        switch (type) {
            case "LORA" -> config = new LoraConfig(doc);
            case "IA3" -> config = new IA3Config(doc);
            case "ADALORA" -> config = new AdaLoraConfig(doc);
            default -> {
                if (PROMPT_LEARNING_TYPES.contains(type)) {
                    throw doc.error("\"peft_type\" " + PythonJson.repr(type) + " is a prompt-learning method: its"
                            + " adapter adds virtual tokens to the model's input and cannot be injected into"
                            + " modules; peft4j supports " + supported());
                }
                throw doc.error("peft_type", "is not supported; peft4j supports " + supported());
            }
        }
        if (!config.unknownKeys().isEmpty() && LOG.isDebugEnabled()) {
            LOG.debug("{}: keys unknown to peft4j's {} kept as read: {}", sourceName, config.peftType(),
                    config.unknownKeys().keySet());
        }
        return config;
    }

    /** The config as PEFT writes it: {@code json.dumps(indent=2, sort_keys=True)}, no trailing newline. */
    public static String toJson(PeftConfig config) {
        return PythonJson.dumps(config.toJsonObject());
    }

    /**
     * Writes {@code dir/adapter_config.json} (creating {@code dir}): to a temporary file in {@code dir}, then
     * renamed over the target, so a reader never sees half a file.
     *
     * @return the file written
     * @throws IOException if {@code dir} is an existing file (PEFT refuses that too) or writing fails
     */
    public static Path write(PeftConfig config, Path dir) throws IOException {
        if (Files.exists(dir) && !Files.isDirectory(dir)) {
            throw new IOException(dir + ": is a file; adapter configs are saved into a directory");
        }
        Files.createDirectories(dir);
        Path target = dir.resolve(CONFIG_FILE_NAME);
        // not Files.createTempFile: that makes the file owner-only (0600), and the rename would keep it so
        Path temp = dir.resolve("." + CONFIG_FILE_NAME + "." + UUID.randomUUID() + ".tmp");
        try {
            try (FileChannel out = FileChannel.open(temp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                ByteBuffer bytes = ByteBuffer.wrap(toJson(config).getBytes(StandardCharsets.UTF_8));
                while (bytes.hasRemaining()) {
                    out.write(bytes);
                }
                out.force(true);
            }
            try {
                Files.move(temp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(temp, target, StandardCopyOption.REPLACE_EXISTING);
            }
        } finally {
            Files.deleteIfExists(temp);
        }
        return target;
    }

    private static String supported() {
        return Arrays.stream(PeftType.values()).map(PeftType::jsonValue).collect(Collectors.joining(", "));
    }
}

package dev.peft4j.models;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A model's {@code config.json}, read as transformers writes it. Getters name the file and the key when a required
 * key is missing or has the wrong type.
 */
public final class ModelConfig {
    private static final ObjectMapper JSON = new ObjectMapper();
    private final JsonNode root;
    private final String source;

    private ModelConfig(JsonNode root, String source) {
        if (root == null || !root.isObject()) {
            throw new IllegalArgumentException(source + ": not a JSON object");
        }
        this.root = root;
        this.source = source;
    }

    /** Reads {@code dir/config.json} (or the file itself, when {@code path} is a file). */
    public static ModelConfig read(Path path) throws IOException {
        Path file = Files.isDirectory(path) ? path.resolve("config.json") : path;
        if (!Files.isRegularFile(file)) {
            throw new IOException("no config.json at " + file);
        }
        try {
            return new ModelConfig(JSON.readTree(file.toFile()), file.toString());
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IOException(file + ": invalid JSON: " + e.getOriginalMessage(), e);
        }
    }

    /** A config from JSON text (tests, configs built in code). */
    public static ModelConfig parse(String json) {
        try {
            return new ModelConfig(JSON.readTree(json), "config");
        } catch (IOException e) {
            throw new IllegalArgumentException("config: invalid JSON: " + e.getMessage(), e);
        }
    }

    /**
     * A config from JSON text that came from {@code source} (named in the messages: a file, or a key of a model
     * format that holds its config otherwise, such as a GGUF file's metadata).
     */
    public static ModelConfig parse(String json, String source) {
        try {
            return new ModelConfig(JSON.readTree(json), source);
        } catch (IOException e) {
            throw new IllegalArgumentException(source + ": invalid JSON: " + e.getMessage(), e);
        }
    }

    /** A copy of this config whose {@code architectures} is {@code [architecture]}. */
    public ModelConfig withArchitecture(String architecture) {
        com.fasterxml.jackson.databind.node.ObjectNode copy = root.deepCopy();
        copy.putArray("architectures").add(architecture);
        return new ModelConfig(copy, source);
    }

    /** Where the config came from (for messages). */
    public String source() {
        return source;
    }

    /** The whole {@code config.json} object, as read; do not modify it. */
    public JsonNode json() {
        return root;
    }

    /** Whether {@code key} is present with a non-null value. */
    public boolean has(String key) {
        return root.hasNonNull(key);
    }

    /**
     * {@code model_type} ({@code "llama"}, {@code "gpt2"}, ...), or null.
     * @throws IllegalArgumentException if it is not a string
     */
    public String modelType() {
        return getString("model_type", null);
    }

    /** The first entry of {@code architectures}, or null. */
    public String architecture() {
        JsonNode a = root.get("architectures");
        return a != null && a.isArray() && a.size() > 0 ? a.get(0).asText() : null;
    }

    /**
     * The integer at {@code key}.
     * @throws IllegalArgumentException naming the file and key, if the key is missing or null, or not an integer
     */
    public long getLong(String key) {
        JsonNode n = root.get(key);
        if (n == null || n.isNull()) {
            throw new IllegalArgumentException(source + ": required key '" + key + "' is missing");
        }
        if (!n.canConvertToLong() || !n.isIntegralNumber()) {
            throw new IllegalArgumentException(source + ": '" + key + "' must be an integer, got " + n);
        }
        return n.asLong();
    }

    /**
     * The integer at {@code key}, or {@code fallback} when the key is missing or null.
     * @throws IllegalArgumentException naming the file and key, if the value is not an integer
     */
    public long getLong(String key, long fallback) {
        return has(key) ? getLong(key) : fallback;
    }

    /**
     * The integer at {@code key}, as an {@code int}.
     * @throws IllegalArgumentException naming the file and key, if the key is missing or null, or not an integer
     * @throws ArithmeticException if the value does not fit an {@code int}
     */
    public int getInt(String key) {
        return Math.toIntExact(getLong(key));
    }

    /**
     * The integer at {@code key} as an {@code int}, or {@code fallback} when the key is missing or null.
     * @throws IllegalArgumentException naming the file and key, if the value is not an integer
     * @throws ArithmeticException if the value does not fit an {@code int}
     */
    public int getInt(String key, int fallback) {
        return has(key) ? getInt(key) : fallback;
    }

    /**
     * The number at {@code key}, or {@code fallback} when the key is missing or null.
     * @throws IllegalArgumentException naming the file and key, if the value is not a number
     */
    public double getDouble(String key, double fallback) {
        JsonNode n = root.get(key);
        if (n == null || n.isNull()) {
            return fallback;
        }
        if (!n.isNumber()) {
            throw new IllegalArgumentException(source + ": '" + key + "' must be a number, got " + n);
        }
        return n.asDouble();
    }

    /**
     * The boolean at {@code key}, or {@code fallback} when the key is missing or null.
     * @throws IllegalArgumentException naming the file and key, if the value is not {@code true} or {@code false}
     */
    public boolean getBoolean(String key, boolean fallback) {
        JsonNode n = root.get(key);
        if (n == null || n.isNull()) {
            return fallback;
        }
        if (!n.isBoolean()) {
            throw new IllegalArgumentException(source + ": '" + key + "' must be true or false, got " + n);
        }
        return n.asBoolean();
    }

    /**
     * The string at {@code key}, or {@code fallback} when the key is missing or null.
     * @throws IllegalArgumentException naming the file and key, if the value is not a string
     */
    public String getString(String key, String fallback) {
        JsonNode n = root.get(key);
        if (n == null || n.isNull()) {
            return fallback;
        }
        if (!n.isTextual()) {
            throw new IllegalArgumentException(source + ": '" + key + "' must be a string, got " + n);
        }
        return n.asText();
    }

    /** The dtype named by {@code torch_dtype} (or {@code dtype}), or {@code fallback}. */
    public ScalarType dtype(ScalarType fallback) {
        String s = getString("torch_dtype", getString("dtype", null));
        return s == null ? fallback : parseDtype(s, source + ": torch_dtype");
    }

    /** {@code float32}, {@code bfloat16}, {@code float16} (also {@code torch.}-prefixed and {@code fp32}-style). */
    public static ScalarType parseDtype(String name, String what) {
        switch (name.toLowerCase(Locale.ROOT).replace("torch.", "")) {
            case "float32": case "float": case "fp32": return ScalarType.Float;
            case "bfloat16": case "bf16": return ScalarType.BFloat16;
            case "float16": case "half": case "fp16": return ScalarType.Half;
            default: throw new IllegalArgumentException(what + ": unsupported dtype '" + name
                    + "'; supported: float32, bfloat16, float16");
        }
    }
}

package dev.peft4j.io;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadConstraints;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The JSON header of a safetensors file: parsing with every check the format implies, and the exact
 * serialization of the Rust writer ({@code serde_json} compact, padded with spaces to 8 bytes).
 */
final class SafetensorsHeader {
    /** The Rust reader's cap ({@code MAX_HEADER_SIZE}); a larger length field is corrupt or hostile. */
    static final long MAX_HEADER_BYTES = 100_000_000L;

    static final String METADATA_KEY = "__metadata__";

    private static final JsonFactory JSON = JsonFactory.builder()
            .streamReadConstraints(StreamReadConstraints.builder()
                    .maxNestingDepth(64)
                    .maxNumberLength(40)
                    .build())
            .build();

    /** Tensors in data order (ascending offsets), and the metadata (insertion-ordered, empty if none). */
    record Parsed(List<TensorInfo> tensors, Map<String, String> metadata, boolean hasMetadata) {}

    private SafetensorsHeader() {}

    /**
     * Parses and validates {@code header} (the bytes after the length field, padding included) against a
     * data section of {@code dataBytes} bytes.
     */
    static Parsed parse(Path file, byte[] header, long dataBytes) throws SafetensorsException {
        if (header.length == 0 || header[0] != '{') {
            throw new SafetensorsException(file, null, "header is not a JSON object (it must start with '{', found "
                    + (header.length == 0 ? "an empty header" : "byte 0x" + Integer.toHexString(header[0] & 0xff)) + ")");
        }
        try {
            // strict UTF-8 first: Jackson would accept some malformed sequences inside strings
            StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(header));
        } catch (CharacterCodingException e) {
            throw new SafetensorsException(file, null, "header is not valid UTF-8", e);
        }
        List<TensorInfo> tensors = new ArrayList<>();
        Map<String, String> metadata = new LinkedHashMap<>();
        boolean hasMetadata = false;
        Set<String> seen = new HashSet<>();
        try (JsonParser p = JSON.createParser(header)) {
            p.nextToken(); // START_OBJECT, checked above
            for (JsonToken t = next(p); t != JsonToken.END_OBJECT; t = next(p)) {
                String name = p.currentName();
                if (!seen.add(name)) {
                    throw new SafetensorsException(file, name, "duplicate name in the header");
                }
                next(p);
                if (METADATA_KEY.equals(name)) {
                    hasMetadata = readMetadata(file, p, metadata);
                } else {
                    tensors.add(readTensor(file, name, p));
                }
            }
            JsonToken trailing = p.nextToken();
            if (trailing != null) {
                throw new SafetensorsException(file, null, "header has content after its JSON object (" + trailing
                        + "); only space padding may follow");
            }
        } catch (SafetensorsException e) {
            throw e;
        } catch (IOException | RuntimeException e) {
            throw new SafetensorsException(file, null, "header is not valid JSON: " + firstLine(e.getMessage()), e);
        }
        checkLayout(file, tensors, dataBytes);
        return new Parsed(Collections.unmodifiableList(tensors), Collections.unmodifiableMap(metadata), hasMetadata);
    }

    private static boolean readMetadata(Path file, JsonParser p, Map<String, String> into) throws IOException {
        if (p.currentToken() == JsonToken.VALUE_NULL) {
            return false;
        }
        if (p.currentToken() != JsonToken.START_OBJECT) {
            throw new SafetensorsException(file, null, METADATA_KEY + " must be an object of strings, found "
                    + p.currentToken());
        }
        for (JsonToken t = next(p); t != JsonToken.END_OBJECT; t = next(p)) {
            String key = p.currentName();
            if (next(p) != JsonToken.VALUE_STRING) {
                throw new SafetensorsException(file, null, METADATA_KEY + " entry \"" + key
                        + "\" must be a string, found " + p.currentToken());
            }
            if (into.put(key, p.getText()) != null) {
                throw new SafetensorsException(file, null, METADATA_KEY + " has duplicate key \"" + key + "\"");
            }
        }
        return true;
    }

    private static TensorInfo readTensor(Path file, String name, JsonParser p) throws IOException {
        if (p.currentToken() != JsonToken.START_OBJECT) {
            throw new SafetensorsException(file, name, "entry must be an object with dtype, shape and data_offsets, found "
                    + p.currentToken());
        }
        String dtype = null;
        long[] shape = null;
        long[] offsets = null;
        for (JsonToken t = next(p); t != JsonToken.END_OBJECT; t = next(p)) {
            String field = p.currentName();
            JsonToken value = next(p);
            switch (field) {
                case "dtype" -> {
                    if (dtype != null) {
                        throw new SafetensorsException(file, name, "duplicate field dtype");
                    }
                    if (value != JsonToken.VALUE_STRING) {
                        throw new SafetensorsException(file, name, "dtype must be a string, found " + value);
                    }
                    dtype = p.getText();
                }
                case "shape" -> {
                    if (shape != null) {
                        throw new SafetensorsException(file, name, "duplicate field shape");
                    }
                    shape = readLongs(file, name, "shape", p);
                }
                case "data_offsets" -> {
                    if (offsets != null) {
                        throw new SafetensorsException(file, name, "duplicate field data_offsets");
                    }
                    offsets = readLongs(file, name, "data_offsets", p);
                }
                default -> p.skipChildren(); // unknown fields are ignored, as the Rust reader does
            }
        }
        if (dtype == null || shape == null || offsets == null) {
            throw new SafetensorsException(file, name, "entry lacks "
                    + (dtype == null ? "dtype" : shape == null ? "shape" : "data_offsets"));
        }
        Dtype d = Dtype.byName(dtype);
        if (d == null) {
            throw new SafetensorsException(file, name, "unknown dtype \"" + dtype + "\"");
        }
        for (long dim : shape) {
            if (dim < 0) {
                throw new SafetensorsException(file, name, "negative dimension in shape " + Arrays.toString(shape));
            }
        }
        if (offsets.length != 2) {
            throw new SafetensorsException(file, name, "data_offsets must hold exactly two numbers, found "
                    + Arrays.toString(offsets));
        }
        long begin = offsets[0];
        long end = offsets[1];
        if (begin < 0 || end < 0) {
            throw new SafetensorsException(file, name, "negative data_offsets " + Arrays.toString(offsets));
        }
        if (begin > end) {
            throw new SafetensorsException(file, name, "data_offsets " + Arrays.toString(offsets)
                    + " are out of order (begin after end)");
        }
        long bits;
        try {
            long numel = 1;
            for (long dim : shape) {
                numel = Math.multiplyExact(numel, dim);
            }
            bits = Math.multiplyExact(numel, d.bits);
        } catch (ArithmeticException e) {
            throw new SafetensorsException(file, name, "shape " + Arrays.toString(shape) + " of " + dtype
                    + " is too large to address");
        }
        if (bits % 8 != 0) {
            throw new SafetensorsException(file, name, "shape " + Arrays.toString(shape) + " of " + dtype
                    + " is " + bits + " bits, not a whole number of bytes");
        }
        if (end - begin != bits / 8) {
            throw new SafetensorsException(file, name, "shape " + Arrays.toString(shape) + " of " + dtype + " needs "
                    + bits / 8 + " bytes but data_offsets " + Arrays.toString(offsets) + " span " + (end - begin));
        }
        return new TensorInfo(name, dtype, shape, begin, end);
    }

    private static long[] readLongs(Path file, String name, String field, JsonParser p) throws IOException {
        if (p.currentToken() != JsonToken.START_ARRAY) {
            throw new SafetensorsException(file, name, field + " must be an array of integers, found " + p.currentToken());
        }
        long[] values = new long[4];
        int n = 0;
        for (JsonToken t = next(p); t != JsonToken.END_ARRAY; t = next(p)) {
            if (t != JsonToken.VALUE_NUMBER_INT) {
                throw new SafetensorsException(file, name, field + " must hold integers, found " + t
                        + (t == JsonToken.VALUE_NUMBER_FLOAT ? " " + p.getText() : ""));
            }
            if (p.getNumberType() == JsonParser.NumberType.BIG_INTEGER) {
                throw new SafetensorsException(file, name, field + " value " + p.getText() + " is too large");
            }
            if (n == values.length) {
                values = Arrays.copyOf(values, n * 2);
            }
            values[n++] = p.getLongValue();
        }
        return Arrays.copyOf(values, n);
    }

    /** Offsets must tile the data section exactly: from 0, no gap, no overlap, nothing after the last. */
    private static void checkLayout(Path file, List<TensorInfo> tensors, long dataBytes) throws SafetensorsException {
        for (TensorInfo t : tensors) {
            if (t.end() > dataBytes) {
                throw new SafetensorsException(file, t.name(), "data_offsets [" + t.begin() + ", " + t.end()
                        + "] are out of range: the data section holds " + dataBytes + " bytes");
            }
        }
        // stable: zero-size tensors sharing an offset keep their header order
        tensors.sort(Comparator.comparingLong(TensorInfo::begin).thenComparingLong(TensorInfo::end));
        long expected = 0;
        TensorInfo previous = null;
        for (TensorInfo t : tensors) {
            if (t.begin() < expected) {
                throw new SafetensorsException(file, t.name(), "data_offsets [" + t.begin() + ", " + t.end()
                        + "] overlap tensor \"" + previous.name() + "\" [" + previous.begin() + ", " + previous.end() + "]");
            }
            if (t.begin() > expected) {
                throw new SafetensorsException(file, t.name(), "gap of " + (t.begin() - expected)
                        + " unused bytes in the data section before this tensor (data_offsets [" + t.begin() + ", "
                        + t.end() + "], previous data ends at " + expected + ")");
            }
            expected = t.end();
            previous = t;
        }
        if (expected != dataBytes) {
            throw new SafetensorsException(file, null, (dataBytes - expected) + " trailing bytes after the last tensor: "
                    + "the data section holds " + dataBytes + " bytes, the tensors cover " + expected);
        }
    }

    /**
     * The header bytes the Rust writer produces for tensors already in layout order: compact JSON,
     * {@code __metadata__} first when given, padded with spaces to a multiple of 8 bytes.
     */
    static byte[] format(List<TensorInfo> tensors, Map<String, String> metadata) {
        StringBuilder json = new StringBuilder(64 + 96 * tensors.size());
        json.append('{');
        boolean first = true;
        if (metadata != null) {
            appendString(json, METADATA_KEY);
            json.append(":{");
            boolean firstEntry = true;
            for (Map.Entry<String, String> e : metadata.entrySet()) {
                if (!firstEntry) {
                    json.append(',');
                }
                appendString(json, e.getKey());
                json.append(':');
                appendString(json, e.getValue());
                firstEntry = false;
            }
            json.append('}');
            first = false;
        }
        for (TensorInfo t : tensors) {
            if (!first) {
                json.append(',');
            }
            first = false;
            appendString(json, t.name());
            json.append(":{\"dtype\":");
            appendString(json, t.dtype());
            json.append(",\"shape\":[");
            long[] shape = t.shape();
            for (int i = 0; i < shape.length; i++) {
                if (i > 0) {
                    json.append(',');
                }
                json.append(shape[i]);
            }
            json.append("],\"data_offsets\":[").append(t.begin()).append(',').append(t.end()).append("]}");
        }
        json.append('}');
        byte[] bytes = json.toString().getBytes(StandardCharsets.UTF_8);
        int padded = (bytes.length + 7) / 8 * 8;
        byte[] out = Arrays.copyOf(bytes, padded);
        Arrays.fill(out, bytes.length, padded, (byte) ' ');
        return out;
    }

    /** A JSON string escaped as serde_json does: quote, backslash, control characters; nothing else. */
    static void appendString(StringBuilder out, String s) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\b' -> out.append("\\b");
                case '\f' -> out.append("\\f");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        out.append('"');
    }

    /** The next token; end of input inside the object is an error (never a null token to loop on). */
    private static JsonToken next(JsonParser p) throws IOException {
        JsonToken t = p.nextToken();
        if (t == null) {
            throw new java.io.EOFException("header ends inside its JSON object");
        }
        return t;
    }

    private static String firstLine(String message) {
        if (message == null) {
            return "(no detail)";
        }
        int nl = message.indexOf('\n');
        return nl < 0 ? message : message.substring(0, nl);
    }
}

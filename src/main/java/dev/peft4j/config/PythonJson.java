package dev.peft4j.config;

import com.fasterxml.jackson.databind.JsonNode;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.math.MathContext;
import java.math.RoundingMode;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * JSON values as plain Java objects, the way Python's {@code json} module sees them, and a writer that formats them
 * exactly as {@code json.dumps(value, indent=2, sort_keys=True)} does (PEFT's {@code save_pretrained}).
 *
 * <p>Values are {@code null}, {@link Boolean}, {@link Long} or {@link BigInteger} (a JSON number without fraction or
 * exponent: a Python {@code int}), {@link Double} (any other number: a Python {@code float}), {@link String}, an
 * unmodifiable {@link List} and an unmodifiable insertion-ordered {@link Map} with string keys. Keeping int and float
 * apart is what lets {@code "lora_alpha": 16} and {@code "lora_alpha": 16.0} both survive a round trip.
 */
final class PythonJson {
    private PythonJson() {}

    /** Python sorts dict keys by code point; Java's {@code compareTo} compares UTF-16 units, which differs above U+FFFF. */
    static final Comparator<String> CODE_POINT_ORDER = (a, b) -> {
        int i = 0;
        int j = 0;
        while (i < a.length() && j < b.length()) {
            int ca = a.codePointAt(i);
            int cb = b.codePointAt(j);
            if (ca != cb) {
                return Integer.compare(ca, cb);
            }
            i += Character.charCount(ca);
            j += Character.charCount(cb);
        }
        return Integer.compare(a.length() - i, b.length() - j);
    };

    /** Converts a Jackson tree into plain, immutable Java values (see the class comment). */
    static Object fromTree(JsonNode node) {
        if (node == null || node.isNull() || node.isMissingNode()) {
            return null;
        }
        if (node.isBoolean()) {
            return node.booleanValue();
        }
        if (node.isIntegralNumber()) {
            return node.canConvertToLong() ? (Object) node.longValue() : node.bigIntegerValue();
        }
        if (node.isNumber()) {
            double d = node.doubleValue();
            if (!Double.isFinite(d)) {
                throw new IllegalArgumentException("a number is too large for a double (Python reads it as inf)");
            }
            return d;
        }
        if (node.isTextual()) {
            return node.textValue();
        }
        if (node.isArray()) {
            List<Object> items = new ArrayList<>(node.size());
            for (JsonNode item : node) {
                items.add(fromTree(item));
            }
            return Collections.unmodifiableList(items);
        }
        if (node.isObject()) {
            Map<String, Object> entries = new LinkedHashMap<>();
            for (Map.Entry<String, JsonNode> e : node.properties()) {
                entries.put(e.getKey(), fromTree(e.getValue()));
            }
            return Collections.unmodifiableMap(entries);
        }
        throw new IllegalArgumentException("unsupported JSON node " + node.getNodeType());
    }

    /**
     * Deep, unmodifiable copy of a value built by a caller (ints widened to Long, floats to Double), rejecting
     * anything JSON cannot hold.
     */
    static Object freeze(Object value) {
        if (value == null || value instanceof Boolean || value instanceof String || value instanceof Long
                || value instanceof BigInteger) {
            return value;
        }
        if (value instanceof Integer || value instanceof Short || value instanceof Byte) {
            return ((Number) value).longValue();
        }
        if (value instanceof Double || value instanceof Float) {
            double d = ((Number) value).doubleValue();
            if (!Double.isFinite(d)) {
                throw new IllegalArgumentException("JSON has no representation for " + d);
            }
            return d;
        }
        if (value instanceof List<?> list) {
            List<Object> items = new ArrayList<>(list.size());
            for (Object item : list) {
                items.add(freeze(item));
            }
            return Collections.unmodifiableList(items);
        }
        if (value instanceof Map<?, ?> map) {
            Map<String, Object> entries = new LinkedHashMap<>();
            for (Map.Entry<?, ?> e : map.entrySet()) {
                if (!(e.getKey() instanceof String key)) {
                    throw new IllegalArgumentException("JSON object keys must be strings, got " + e.getKey());
                }
                entries.put(key, freeze(e.getValue()));
            }
            return Collections.unmodifiableMap(entries);
        }
        throw new IllegalArgumentException("not a JSON value: " + value.getClass().getName());
    }

    /** {@code json.dumps(value, indent=2, sort_keys=True)}: no trailing newline. */
    static String dumps(Object value) {
        StringBuilder out = new StringBuilder(1024);
        write(out, value, 0);
        return out.toString();
    }

    /** One value on one line, as Python writes it without indent (for error messages). */
    static String repr(Object value) {
        if (value instanceof List<?> || value instanceof Map<?, ?>) {
            return dumps(value).replaceAll("\n\\s*", "");
        }
        return dumps(value);
    }

    private static void write(StringBuilder out, Object value, int depth) {
        if (value == null) {
            out.append("null");
        } else if (value instanceof Boolean b) {
            out.append(b ? "true" : "false");
        } else if (value instanceof Long || value instanceof Integer || value instanceof BigInteger) {
            out.append(value);
        } else if (value instanceof Double d) {
            out.append(floatRepr(d));
        } else if (value instanceof String s) {
            writeString(out, s);
        } else if (value instanceof List<?> list) {
            if (list.isEmpty()) {
                out.append("[]");
                return;
            }
            out.append('[');
            boolean first = true;
            for (Object item : list) {
                out.append(first ? "" : ",");
                newline(out, depth + 1);
                write(out, item, depth + 1);
                first = false;
            }
            newline(out, depth);
            out.append(']');
        } else if (value instanceof Map<?, ?> map) {
            if (map.isEmpty()) {
                out.append("{}");
                return;
            }
            List<String> keys = new ArrayList<>();
            for (Object k : map.keySet()) {
                keys.add((String) k);
            }
            keys.sort(CODE_POINT_ORDER);
            out.append('{');
            boolean first = true;
            for (String key : keys) {
                out.append(first ? "" : ",");
                newline(out, depth + 1);
                writeString(out, key);
                out.append(": ");
                write(out, map.get(key), depth + 1);
                first = false;
            }
            newline(out, depth);
            out.append('}');
        } else {
            throw new IllegalArgumentException("not a JSON value: " + value.getClass().getName());
        }
    }

    private static void newline(StringBuilder out, int depth) {
        out.append('\n');
        for (int i = 0; i < depth; i++) {
            out.append("  ");
        }
    }

    /** Python's {@code ensure_ascii=True} escaping: everything outside space..tilde is escaped. */
    private static void writeString(StringBuilder out, String s) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                case '\b' -> out.append("\\b");
                case '\f' -> out.append("\\f");
                default -> {
                    if (c >= 0x20 && c <= 0x7e) {
                        out.append(c);
                    } else {
                        // UTF-16 units, so characters above U+FFFF come out as a surrogate pair, as in Python
                        out.append(String.format("\\u%04x", (int) c));
                    }
                }
            }
        }
        out.append('"');
    }

    /**
     * Python's {@code repr(float)}: the shortest decimal that reads back as the same double, written positionally
     * when the decimal exponent is in [-4, 16), else as {@code d.ddde±XX}; positional values always carry a
     * fraction ({@code 1.0}).
     */
    static String floatRepr(double d) {
        if (!Double.isFinite(d)) {
            throw new IllegalArgumentException("JSON has no representation for " + d);
        }
        if (d == 0) {
            return (1 / d < 0) ? "-0.0" : "0.0";
        }
        BigDecimal shortest = shortestDecimal(Math.abs(d));
        String digits = shortest.unscaledValue().toString();
        // strip trailing zeros of the digit string (e.g. unscaled 100, scale 0 → digits "1")
        int trailing = 0;
        while (digits.length() - trailing > 1 && digits.charAt(digits.length() - 1 - trailing) == '0') {
            trailing++;
        }
        digits = digits.substring(0, digits.length() - trailing);
        // value = 0.d1d2... × 10^decpt
        int decpt = digits.length() - shortest.scale() + trailing;
        StringBuilder out = new StringBuilder();
        if (d < 0) {
            out.append('-');
        }
        if (decpt <= -4 || decpt > 16) {
            out.append(digits.charAt(0));
            if (digits.length() > 1) {
                out.append('.').append(digits, 1, digits.length());
            }
            int exp = decpt - 1;
            out.append('e').append(exp < 0 ? '-' : '+');
            String e = Integer.toString(Math.abs(exp));
            out.append(e.length() < 2 ? "0" + e : e);
        } else if (decpt <= 0) {
            out.append("0.");
            out.append("0".repeat(-decpt));
            out.append(digits);
        } else if (decpt >= digits.length()) {
            out.append(digits).append("0".repeat(decpt - digits.length())).append(".0");
        } else {
            out.append(digits, 0, decpt).append('.').append(digits, decpt, digits.length());
        }
        return out.toString();
    }

    /** The shortest decimal that rounds to {@code d}; among equally short ones, the closest (as Python's repr). */
    private static BigDecimal shortestDecimal(double d) {
        BigDecimal exact = new BigDecimal(d);
        for (int precision = 1; precision <= 17; precision++) {
            BigDecimal nearest = exact.round(new MathContext(precision, RoundingMode.HALF_EVEN));
            if (nearest.doubleValue() == d) {
                return nearest;
            }
            // the rounding interval is lopsided at powers of two: a farther candidate may still read back
            for (RoundingMode mode : new RoundingMode[] {RoundingMode.FLOOR, RoundingMode.CEILING}) {
                BigDecimal candidate = exact.round(new MathContext(precision, mode));
                if (candidate.doubleValue() == d) {
                    return candidate;
                }
            }
        }
        return exact.round(MathContext.DECIMAL64);
    }
}

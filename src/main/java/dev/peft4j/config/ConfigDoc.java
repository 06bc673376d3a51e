package dev.peft4j.config;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The JSON object of one {@code adapter_config.json} while it is being turned into a typed config: typed getters
 * that apply PEFT's defaults for missing keys and fail with a message naming the source, key and value.
 */
final class ConfigDoc {
    final String source;
    final LinkedHashMap<String, Object> values;

    ConfigDoc(String source, Map<String, Object> values) {
        this.source = source;
        this.values = new LinkedHashMap<>(values);
    }

    PeftConfigException error(String key, String mustBe) {
        return new PeftConfigException(source + ": \"" + key + "\" " + mustBe
                + (values.containsKey(key) ? ", got " + PythonJson.repr(values.get(key)) : ", but the key is missing"));
    }

    PeftConfigException error(String message) {
        return new PeftConfigException(source + ": " + message);
    }

    boolean has(String key) {
        return values.containsKey(key);
    }

    Object raw(String key) {
        return values.get(key);
    }

    boolean bool(String key, boolean defaultValue) {
        if (!values.containsKey(key)) {
            return defaultValue;
        }
        if (values.get(key) instanceof Boolean b) {
            return b;
        }
        throw error(key, "must be true or false");
    }

    /** An int field; {@code null} is refused unless {@code nullable}. Returns null for JSON null. */
    Integer integer(String key, Integer defaultValue, boolean nullable) {
        if (!values.containsKey(key)) {
            return defaultValue;
        }
        Object v = values.get(key);
        if (v == null && nullable) {
            return null;
        }
        if (v instanceof Long l && l >= Integer.MIN_VALUE && l <= Integer.MAX_VALUE) {
            return l.intValue();
        }
        throw error(key, nullable ? "must be an integer or null" : "must be an integer");
    }

    /** A number field (Python int or float). */
    double number(String key, double defaultValue) {
        if (!values.containsKey(key)) {
            return defaultValue;
        }
        Object v = values.get(key);
        if (v instanceof Long || v instanceof Double) {
            return ((Number) v).doubleValue();
        }
        throw error(key, "must be a number");
    }

    String string(String key, String defaultValue, boolean nullable) {
        if (!values.containsKey(key)) {
            return defaultValue;
        }
        Object v = values.get(key);
        if (v == null && nullable) {
            return null;
        }
        if (v instanceof String s) {
            return s;
        }
        throw error(key, nullable ? "must be a string or null" : "must be a string");
    }

    /** A JSON object or null (opaque nested configs). */
    @SuppressWarnings("unchecked")
    Map<String, Object> object(String key, Map<String, Object> defaultValue, boolean nullable) {
        if (!values.containsKey(key)) {
            return defaultValue;
        }
        Object v = values.get(key);
        if (v == null && nullable) {
            return null;
        }
        if (v instanceof Map<?, ?> m) {
            return (Map<String, Object>) m;
        }
        throw error(key, nullable ? "must be an object or null" : "must be an object");
    }

    /** A list of strings or null. */
    List<String> stringList(String key) {
        Object v = values.get(key);
        if (v == null) {
            return null;
        }
        if (v instanceof List<?> list) {
            List<String> out = new ArrayList<>(list.size());
            for (Object item : list) {
                if (!(item instanceof String s)) {
                    throw error(key, "must be a list of strings");
                }
                out.add(s);
            }
            return Collections.unmodifiableList(out);
        }
        throw error(key, "must be a list of strings or null");
    }

    /** A list of ints or null. */
    List<Integer> intList(String key) {
        Object v = values.get(key);
        if (v == null) {
            return null;
        }
        if (v instanceof List<?> list) {
            List<Integer> out = new ArrayList<>(list.size());
            for (Object item : list) {
                if (!(item instanceof Long l) || l < Integer.MIN_VALUE || l > Integer.MAX_VALUE) {
                    throw error(key, "must be a list of integers");
                }
                out.add(l.intValue());
            }
            return List.copyOf(out);
        }
        throw error(key, "must be a list of integers or null");
    }

    /** A list of names, one regex string, or null. */
    ModuleSelector selector(String key) {
        Object v = values.get(key);
        if (v == null) {
            return null;
        }
        if (v instanceof String s) {
            return new ModuleSelector.Regex(s);
        }
        if (v instanceof List<?>) {
            return new ModuleSelector.Names(stringList(key));
        }
        throw error(key, "must be a list of module names, a regular expression string or null");
    }

    /** Writes a typed value back (for PEFT's own normalisations, e.g. resetting {@code loftq_config}). */
    void put(String key, Object value) {
        values.put(key, PythonJson.freeze(value));
    }

    /** The values, unmodifiable, in the file's order. */
    Map<String, Object> frozen() {
        return Collections.unmodifiableMap(new LinkedHashMap<>(values));
    }

    /** JSON form of a selector. */
    static Object toJson(ModuleSelector selector) {
        if (selector == null) {
            return null;
        }
        return selector instanceof ModuleSelector.Names n ? n.names() : ((ModuleSelector.Regex) selector).pattern();
    }
}

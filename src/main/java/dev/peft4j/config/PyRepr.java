package dev.peft4j.config;

import java.util.Collection;
import java.util.StringJoiner;

/** Python's {@code repr()} of the few value kinds PEFT's error messages print (strings, lists, sets, ints). */
public final class PyRepr {
    private PyRepr() {}

    /** {@code repr(s)}: single quotes unless {@code s} holds a single quote and no double quote. */
    public static String str(String s) {
        char quote = s.indexOf('\'') >= 0 && s.indexOf('"') < 0 ? '"' : '\'';
        StringBuilder b = new StringBuilder(s.length() + 2).append(quote);
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == quote || c == '\\') {
                b.append('\\').append(c);
            } else if (c == '\n') {
                b.append("\\n");
            } else if (c == '\r') {
                b.append("\\r");
            } else if (c == '\t') {
                b.append("\\t");
            } else if (c < 0x20 || c == 0x7f) {
                b.append(String.format("\\x%02x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.append(quote).toString();
    }

    /** {@code repr(list)} of strings or numbers: {@code ['a', 'b']}, {@code [0, 1]}. */
    public static String list(Collection<?> items) {
        return join(items, "[", "]", "[]");
    }

    /** {@code repr(set)}: {@code {'a', 'b'}} (in the collection's iteration order), {@code set()} when empty. */
    public static String set(Collection<?> items) {
        return join(items, "{", "}", "set()");
    }

    private static String join(Collection<?> items, String open, String close, String empty) {
        if (items.isEmpty()) {
            return empty;
        }
        StringJoiner j = new StringJoiner(", ", open, close);
        for (Object o : items) {
            j.add(o instanceof String ? str((String) o) : String.valueOf(o));
        }
        return j.toString();
    }
}

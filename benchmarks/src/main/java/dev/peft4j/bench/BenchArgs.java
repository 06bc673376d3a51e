package dev.peft4j.bench;

import java.util.LinkedHashMap;
import java.util.Map;

/** The {@code key=value} arguments of the plain-{@code main} benchmarks, over their defaults. */
final class BenchArgs {
    private BenchArgs() {}

    /**
     * {@code defaults} as key, value pairs, each overridden by an argument {@code key=value}, in the defaults' order.
     *
     * @throws IllegalArgumentException for an argument that is not {@code key=value} with a known key
     */
    static Map<String, String> parse(String[] args, String... defaults) {
        Map<String, String> a = new LinkedHashMap<>();
        for (int i = 0; i < defaults.length; i += 2) {
            a.put(defaults[i], defaults[i + 1]);
        }
        for (String arg : args) {
            String[] kv = arg.split("=", 2);
            if (kv.length != 2 || !a.containsKey(kv[0])) {
                throw new IllegalArgumentException("expected key=value with a key of " + a.keySet() + ", got " + arg);
            }
            a.put(kv[0], kv[1]);
        }
        return a;
    }
}

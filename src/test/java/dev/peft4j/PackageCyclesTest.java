package dev.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.spi.ToolProvider;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * No import circle between the packages of {@code src/main}: the graph of {@code dev.peft4j.*} packages, where
 * package P depends on package Q when a class of P refers to a class of Q, must have no cycle. Class-level cycles
 * inside one package are allowed (a reference within a package is no edge).
 *
 * <p>The edges are the union of two readings, so that neither's blind spot hides a circle:
 * <ul>
 *   <li>the sources in {@code src/main/java}: every {@code import} (single-type, on-demand {@code .*} and static)
 *       and every fully qualified {@code dev.peft4j.<package>.<Type>} in the code, with comments (Javadoc included)
 *       and string, text-block and char literals left out;
 *   <li>the bytecode in {@code target/classes}, read by the JDK's {@code jdeps -verbose:class}: it also sees types
 *       used without being named in the source (the return type of a chained call, a {@code var}), but not
 *       constants the compiler inlined, which the source reading sees.
 * </ul>
 * A failure names each cycle (a strongly connected set of packages) and the class references that make it.
 */
class PackageCyclesTest {
    private static final String ROOT = "dev.peft4j";
    /** A reference to a type (or all types) of a dev.peft4j package: the package is group 1. */
    private static final Pattern REFERENCE = Pattern.compile(
            "\\b(dev\\.peft4j(?:\\.[a-z_][A-Za-z0-9_]*)*)\\s*\\.\\s*([A-Z][A-Za-z0-9_]*|\\*)");
    private static final Pattern PACKAGE = Pattern.compile("^\\s*package\\s+([\\w.]+)\\s*;", Pattern.MULTILINE);
    private static final Pattern JDEPS_LINE = Pattern.compile("^\\s+(dev\\.peft4j\\.[\\w.$]+)\\s+->\\s+(dev\\.peft4j\\.[\\w.$]+)\\s");

    private static Path basedir() {
        return Path.of(System.getProperty("basedir", "."));
    }

    @Test
    void noCycleBetweenThePackagesOfSrcMain() throws IOException {
        Graph g = new Graph();
        sourceEdges(basedir().resolve("src/main/java"), g);
        int fromSources = g.edgeCount();
        jdepsEdges(basedir().resolve("target/classes"), g);
        assertTrue(fromSources > 10, "the source reading found only " + fromSources + " package dependencies");
        assertTrue(g.edges.getOrDefault("dev.peft4j.models", Map.of()).containsKey("dev.peft4j.nn"),
                "models -> nn, which every model has, was not found: " + g.edges.keySet());
        List<Set<String>> cycles = cycles(g.packages());
        assertTrue(cycles.isEmpty(), () -> describe(cycles, g));
    }

    @Test
    void aCycleIsFoundAndNamed() {
        Graph g = new Graph();
        g.add("dev.peft4j.a", "dev.peft4j.b", "A -> B");
        g.add("dev.peft4j.b", "dev.peft4j.c", "B -> C");
        g.add("dev.peft4j.c", "dev.peft4j.a", "C -> A");
        g.add("dev.peft4j.c", "dev.peft4j.d", "C -> D");
        g.add("dev.peft4j.d", "dev.peft4j.e", "D -> E");
        List<Set<String>> cycles = cycles(g.packages());
        assertEquals(List.of(Set.of("dev.peft4j.a", "dev.peft4j.b", "dev.peft4j.c")), cycles);
        String message = describe(cycles, g);
        assertTrue(message.contains("C -> A") && !message.contains("C -> D"), message);
        g.edges.get("dev.peft4j.c").remove("dev.peft4j.a");
        assertEquals(List.of(), cycles(g.packages()));
    }

    @Test
    void commentsAndLiteralsAreNoReferences() {
        String src = """
                package dev.peft4j.x;
                import dev.peft4j.nn.Module;
                import static dev.peft4j.io.SafetensorsFile.write;
                import dev.peft4j.kernels.*;
                /** {@link dev.peft4j.models.PreTrainedModel} */
                class Y { // dev.peft4j.train.Trainer
                    String s = "dev.peft4j.cli.Main \\" dev.peft4j.cli.Main";
                    char c = '"';
                    String t = \"\"\"
                        dev.peft4j.tokenizers.Tokenizer
                        \"\"\";
                    Object o = new dev.peft4j.config.LoraConfig.Builder();
                }
                """;
        Graph g = new Graph();
        addSourceEdges("Y.java", src, g);
        assertEquals(Set.of("dev.peft4j.nn", "dev.peft4j.io", "dev.peft4j.kernels", "dev.peft4j.config"),
                g.edges.get("dev.peft4j.x").keySet());
    }

    // ------------------------------------------------------------------ reading the dependencies

    /** Package → package → the class references ("File.java -> Type") behind that edge. */
    static final class Graph {
        final Map<String, Map<String, Set<String>>> edges = new TreeMap<>();

        void add(String from, String to, String why) {
            edges.computeIfAbsent(to, k -> new TreeMap<>());
            if (!from.equals(to)) {
                edges.computeIfAbsent(from, k -> new TreeMap<>()).computeIfAbsent(to, k -> new TreeSet<>()).add(why);
            }
        }

        Map<String, Set<String>> packages() {
            Map<String, Set<String>> out = new TreeMap<>();
            edges.forEach((k, v) -> out.put(k, v.keySet()));
            return out;
        }

        int edgeCount() {
            return edges.values().stream().mapToInt(Map::size).sum();
        }
    }

    private static void sourceEdges(Path root, Graph g) throws IOException {
        assertTrue(Files.isDirectory(root), root + " is not a folder");
        List<Path> files;
        try (Stream<Path> s = Files.walk(root)) {
            files = s.filter(p -> p.toString().endsWith(".java")).sorted().toList();
        }
        for (Path f : files) {
            addSourceEdges(root.relativize(f).toString(), Files.readString(f), g);
        }
    }

    private static void addSourceEdges(String file, String src, Graph g) {
        String code = withoutCommentsAndLiterals(src);
        Matcher pm = PACKAGE.matcher(code);
        assertTrue(pm.find(), file + ": no package declaration");
        String pkg = pm.group(1);
        Matcher m = REFERENCE.matcher(code);
        while (m.find()) {
            g.add(pkg, m.group(1), file + " -> " + m.group(1) + "." + m.group(2));
        }
    }

    /** The source with comments and string, text-block and char literals blanked (line breaks kept). */
    static String withoutCommentsAndLiterals(String s) {
        StringBuilder out = new StringBuilder(s.length());
        int i = 0;
        int n = s.length();
        while (i < n) {
            char c = s.charAt(i);
            if (s.startsWith("//", i)) {
                while (i < n && s.charAt(i) != '\n') {
                    i++;
                }
            } else if (s.startsWith("/*", i)) {
                int end = s.indexOf("*/", i + 2);
                i = end < 0 ? n : end + 2;
                out.append(' ');
            } else if (s.startsWith("\"\"\"", i)) {
                int j = i + 3;
                while (j < n && !s.startsWith("\"\"\"", j)) {
                    j += s.charAt(j) == '\\' ? 2 : 1;
                }
                i = Math.min(n, j + 3);
                out.append("\"\"");
            } else if (c == '"' || c == '\'') {
                int j = i + 1;
                while (j < n && s.charAt(j) != c && s.charAt(j) != '\n') {
                    j += s.charAt(j) == '\\' ? 2 : 1;
                }
                i = Math.min(n, j + 1);
                out.append(c).append(c);
            } else {
                out.append(c);
                i++;
            }
        }
        return out.toString();
    }

    private static void jdepsEdges(Path classes, Graph g) {
        assertTrue(Files.isDirectory(classes.resolve("dev/peft4j")), classes + " holds no compiled classes");
        ToolProvider jdeps = ToolProvider.findFirst("jdeps").orElse(null);
        assertNotNull(jdeps, "the JDK's jdeps tool is not available in this JVM");
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int rc = jdeps.run(new PrintWriter(out), new PrintWriter(err), "-verbose:class", "-filter:none",
                "-e", "dev\\.peft4j\\..*", classes.toString());
        assertEquals(0, rc, () -> "jdeps failed: " + err);
        int lines = 0;
        for (String line : out.toString().split("\n")) {
            Matcher m = JDEPS_LINE.matcher(line);
            if (m.find()) {
                lines++;
                g.add(packageOf(m.group(1)), packageOf(m.group(2)), m.group(1) + " -> " + m.group(2) + " (bytecode)");
            }
        }
        assertTrue(lines > 100, "jdeps reported only " + lines + " class dependencies:\n" + out);
    }

    private static String packageOf(String className) {
        return className.substring(0, className.lastIndexOf('.'));
    }

    // ------------------------------------------------------------------ cycles

    /** The strongly connected sets of two or more packages (Tarjan), each sorted, in the order found. */
    static List<Set<String>> cycles(Map<String, Set<String>> graph) {
        Map<String, Integer> index = new HashMap<>();
        Map<String, Integer> low = new HashMap<>();
        Deque<String> stack = new ArrayDeque<>();
        Set<String> onStack = new TreeSet<>();
        List<Set<String>> out = new ArrayList<>();
        for (String v : graph.keySet()) {
            if (!index.containsKey(v)) {
                connect(v, graph, index, low, stack, onStack, out);
            }
        }
        return out;
    }

    private static void connect(String v, Map<String, Set<String>> graph, Map<String, Integer> index,
            Map<String, Integer> low, Deque<String> stack, Set<String> onStack, List<Set<String>> out) {
        index.put(v, index.size());
        low.put(v, index.get(v));
        stack.push(v);
        onStack.add(v);
        for (String w : graph.getOrDefault(v, Set.of())) {
            if (!index.containsKey(w)) {
                connect(w, graph, index, low, stack, onStack, out);
                low.put(v, Math.min(low.get(v), low.get(w)));
            } else if (onStack.contains(w)) {
                low.put(v, Math.min(low.get(v), index.get(w)));
            }
        }
        if (low.get(v).equals(index.get(v))) {
            Set<String> component = new TreeSet<>();
            String w;
            do {
                w = stack.pop();
                onStack.remove(w);
                component.add(w);
            } while (!w.equals(v));
            if (component.size() > 1) {
                out.add(component);
            }
        }
    }

    private static String describe(List<Set<String>> cycles, Graph g) {
        StringBuilder sb = new StringBuilder("import circles between packages of src/main:");
        for (Set<String> cycle : cycles) {
            sb.append("\n  ").append(cycle);
            for (String from : cycle) {
                for (Map.Entry<String, Set<String>> e : g.edges.getOrDefault(from, Map.of()).entrySet()) {
                    if (cycle.contains(e.getKey())) {
                        List<String> why = new ArrayList<>(e.getValue());
                        sb.append("\n    ").append(from).append(" -> ").append(e.getKey()).append(": ")
                                .append(String.join(", ", why.subList(0, Math.min(5, why.size()))))
                                .append(why.size() > 5 ? ", ... (" + why.size() + " in all)" : "");
                    }
                }
            }
        }
        return sb.toString();
    }
}

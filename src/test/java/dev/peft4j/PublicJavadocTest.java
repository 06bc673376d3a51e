package dev.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.sun.source.util.JavacTask;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import javax.tools.Diagnostic;
import javax.tools.DiagnosticCollector;
import javax.tools.JavaCompiler;
import javax.tools.JavaFileObject;
import javax.tools.StandardJavaFileManager;
import javax.tools.ToolProvider;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Every public or protected type, method, constructor, field and enum constant of the library ({@code src/main/java})
 * has a Javadoc comment, as the JDK's doclint sees it ({@code -Xdoclint:missing/protected}, its "no comment"
 * check: overriding methods inherit their comment and need none). The sources are analysed in process by javac,
 * without writing class files. The other "missing" checks ({@code @param}, {@code @return}) are not enforced.
 */
class PublicJavadocTest {
    /**
     * Files whose Javadoc is written with the serving-engine changes that are rewriting them; each entry goes when
     * that work lands. A file listed here that has no missing comment fails the test, so the list only shrinks.
     */
    private static final Set<String> PENDING = Set.of(
            "dev/peft4j/models/CausalLM.java",
            "dev/peft4j/models/Generation.java",
            "dev/peft4j/models/KVCache.java",
            "dev/peft4j/models/LlamaForCausalLM.java",
            "dev/peft4j/models/LlamaModel.java",
            "dev/peft4j/models/PreTrainedModel.java");

    private static Path basedir() {
        return Path.of(System.getProperty("basedir", "."));
    }

    @Test
    void everyPublicMemberOfTheLibraryHasJavadoc() throws IOException {
        Path root = basedir().resolve("src/main/java").toAbsolutePath().normalize();
        List<String> missing = missingComments(root, System.getProperty("java.class.path"));
        Set<String> pendingSeen = new TreeSet<>();
        List<String> offending = new ArrayList<>();
        for (String m : missing) {
            String file = m.substring(0, m.indexOf(':'));
            if (PENDING.contains(file)) {
                pendingSeen.add(file);
            } else {
                offending.add(m);
            }
        }
        assertTrue(offending.isEmpty(), () -> offending.size() + " public or protected declarations without Javadoc:\n"
                + String.join("\n", offending));
        Set<String> done = new TreeSet<>(PENDING);
        done.removeAll(pendingSeen);
        assertTrue(done.isEmpty(), () -> "documented now, remove from PENDING: " + done);
    }

    /** The check itself: a public method, constructor and constant without a comment are each reported. */
    @Test
    void aPublicMemberWithoutJavadocIsReported(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("p/Sample.java");
        Files.createDirectories(file.getParent());
        Files.writeString(file, String.join("\n",
                "package p;",
                "/** A sample. */",
                "public class Sample {",
                "    public static final int LIMIT = 3;",
                "    public Sample() {}",
                "    /** Documented. */",
                "    public int documented() { return 1; }",
                "    public int undocumented() { return 2; }",
                "    @Override public String toString() { return \"\"; }",
                "    int packagePrivate() { return 3; }",
                "    private int hidden() { return 4; }",
                "}",
                ""));
        Files.writeString(dir.resolve("p/package-info.java"), "/** Samples. */\npackage p;\n");
        List<String> missing = missingComments(dir.toAbsolutePath(), "");
        assertEquals(List.of("p/Sample.java:4", "p/Sample.java:5", "p/Sample.java:8"),
                missing.stream().map(m -> m.substring(0, m.indexOf(' '))).collect(Collectors.toList()), missing::toString);
    }

    /** "path:line declaration" for each doclint "no comment" warning on the sources under {@code root}. */
    private static List<String> missingComments(Path root, String classpath) throws IOException {
        JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
        assertNotNull(javac, "no system Java compiler: run the tests on a JDK");
        List<Path> sources;
        try (Stream<Path> s = Files.walk(root)) {
            sources = s.filter(p -> p.toString().endsWith(".java")).sorted().collect(Collectors.toList());
        }
        assertTrue(!sources.isEmpty(), "no sources under " + root);
        DiagnosticCollector<JavaFileObject> diagnostics = new DiagnosticCollector<>();
        try (StandardJavaFileManager files = javac.getStandardFileManager(diagnostics, Locale.ROOT, null)) {
            List<String> options = List.of("-proc:none", "-Xdoclint:missing/protected", "-Xmaxwarns", "100000",
                    "-Xmaxerrs", "100000", "-classpath", classpath, "-sourcepath", root.toString());
            JavacTask task = (JavacTask) javac.getTask(null, files, diagnostics, options, null,
                    files.getJavaFileObjectsFromPaths(sources));
            task.analyze();
        }
        List<String> errors = new ArrayList<>();
        List<String> missing = new ArrayList<>();
        for (Diagnostic<? extends JavaFileObject> d : diagnostics.getDiagnostics()) {
            String message = d.getMessage(Locale.ROOT);
            if (d.getKind() == Diagnostic.Kind.ERROR) {
                errors.add(d.toString());
            } else if (message.equals("no comment") && d.getSource() != null) {
                String file = root.relativize(Path.of(d.getSource().toUri())).toString().replace('\\', '/');
                missing.add(file + ":" + d.getLineNumber() + " " + sourceLine(d));
            }
        }
        assertTrue(errors.isEmpty(), () -> "the sources did not compile:\n" + String.join("\n", errors));
        return missing;
    }

    private static String sourceLine(Diagnostic<? extends JavaFileObject> d) {
        try {
            String[] lines = d.getSource().getCharContent(true).toString().split("\n", -1);
            return lines[(int) d.getLineNumber() - 1].strip();
        } catch (IOException | RuntimeException e) {
            return "";
        }
    }
}

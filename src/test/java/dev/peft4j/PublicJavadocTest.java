package dev.peft4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Every public or protected type, method, constructor, field and enum constant of the library ({@code src/main/java})
 * has a Javadoc comment, as the JDK's doclint sees it ({@code -Xdoclint:missing/protected}, its "no comment"
 * check: overriding methods inherit their comment and need none), run by the JDK's javac in a process of its own.
 * The other "missing" checks ({@code @param}, {@code @return}) are not enforced.
 */
class PublicJavadocTest {
    /**
     * Files let off for a while (none now): a file listed here that has no missing comment fails the test, so the
     * list can only shrink.
     */
    private static final Set<String> PENDING = Set.of();

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
                missing.stream().map(m -> m.substring(0, m.indexOf(' '))).collect(Collectors.toList()),
                missing::toString);
    }

    /**
     * "path:line declaration" for each doclint "no comment" warning on the sources under {@code root}. javac runs in
     * a process of its own, so that its memory does not weigh on the tests that measure this JVM's.
     */
    private static List<String> missingComments(Path root, String classpath) throws IOException {
        List<Path> sources;
        try (Stream<Path> s = Files.walk(root)) {
            sources = s.filter(p -> p.toString().endsWith(".java")).sorted().collect(Collectors.toList());
        }
        assertTrue(!sources.isEmpty(), "no sources under " + root);
        Path work = Files.createTempDirectory("peft4j-javadoc-check");
        try {
            Path argFile = work.resolve("args");
            List<String> args = new ArrayList<>(List.of("-J-Duser.language=en", "-J-Duser.country=US",
                    "-encoding", "UTF-8", "-proc:none", "-implicit:none", "-Xdoclint:missing/protected",
                    "-Xmaxwarns", "100000", "-Xmaxerrs", "100000", "-d", work.resolve("classes").toString()));
            List<String> fileArgs = new ArrayList<>();
            if (!classpath.isEmpty()) {
                fileArgs.add("-classpath");
                fileArgs.add(classpath);
            }
            for (Path source : sources) {
                fileArgs.add(source.toString());
            }
            Files.write(argFile, fileArgs.stream().map(PublicJavadocTest::quoted).collect(Collectors.toList()));
            args.add("@" + argFile);
            Path javac = Path.of(System.getProperty("java.home"), "bin", "javac");
            assertTrue(Files.isExecutable(javac), "no javac at " + javac + ": run the tests on a JDK");
            List<String> command = new ArrayList<>();
            command.add(javac.toString());
            command.addAll(args);
            Path output = work.resolve("output");
            Process process = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(output.toFile())
                    .start();
            int status;
            try {
                status = process.waitFor();
            } catch (InterruptedException e) {
                process.destroyForcibly();
                Thread.currentThread().interrupt();
                throw new IOException("interrupted while javac ran", e);
            }
            List<String> lines = Files.readAllLines(output);
            assertEquals(0, status, () -> "javac failed on the sources:\n" + String.join("\n", lines));
            List<String> missing = new ArrayList<>();
            String prefix = root.toString() + java.io.File.separator;
            for (int k = 0; k < lines.size(); k++) {
                String line = lines.get(k);
                int at = line.indexOf(": warning: no comment");
                if (at > 0 && line.startsWith(prefix) && line.endsWith("no comment")) {
                    String fileAndLine = line.substring(prefix.length(), at).replace('\\', '/');
                    String declaration = k + 1 < lines.size() ? lines.get(k + 1).strip() : "";
                    missing.add(fileAndLine + " " + declaration);
                }
            }
            return missing;
        } finally {
            try (Stream<Path> s = Files.walk(work)) {
                s.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
    }

    /** An argument file entry: quoted, with backslashes and quotes escaped. */
    private static String quoted(String arg) {
        return "\"" + arg.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }
}

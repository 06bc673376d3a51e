package dev.peft4j.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.kernels.Kernels;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.jar.JarEntry;
import java.util.jar.JarFile;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

/**
 * Runs in the integration-test phase, with target/peft4j.jar and target/peft4j-linux-x86_64.jar (not
 * target/classes) on the class path: the Java classes come from the main jar, the native layer out of the
 * classifier jar's platform folder, as they will for a user.
 */
class PackagedJarIT {
    private static final Path JAR = Path.of("target", "peft4j.jar");
    private static final Path NATIVES = Path.of("target", "peft4j-linux-x86_64.jar");
    private static final String LIBRARY = "dev/peft4j/kernels/linux-x86_64/libjniNativeKernels.so";
    private static final String FS_LIBRARY = "dev/peft4j/io/linux-x86_64/libjniNativeFs.so";

    @Test
    void nativeLayerIsLoadedFromTheClassifierJar() {
        String codeSource = Kernels.class.getProtectionDomain().getCodeSource().getLocation().getPath();
        assertTrue(codeSource.endsWith("peft4j.jar"), "classes came from " + codeSource);
        assertEquals(NATIVES.toAbsolutePath().toUri().getPath(),
                Kernels.class.getClassLoader().getResource(LIBRARY).getPath().replaceFirst("^file:", "")
                        .replaceFirst("!/.*$", ""),
                "the class path's only copy of the library is the classifier jar's");
        String lib = Kernels.libraryPath();
        // JavaCPP extracts a library found inside a jar to its cache; one in target/classes is used in place
        assertFalse(lib.contains("target/classes"), "native library was loaded from " + lib);
        assertTrue(lib.endsWith("libjniNativeKernels.so"), lib);

        Tensor y = torch.ones(33);
        Tensor x = torch.ones(33);
        Kernels.axpy(y, x, 2.0f);
        assertTrue(y.equal(torch.full(new long[] {33}, new org.bytedeco.pytorch.Scalar(3.0f))));
        assertTrue(nativeFsLoaded(), "the file-system library (atomic folder swaps, flock) loads from the "
                + "classifier jar");
    }

    @Test
    void theMainJarHoldsJavaOnlyAndTheClassifierJarTheNativeLibraryOnly() throws IOException {
        assertTrue(Files.size(JAR) < 10_000_000, "target/peft4j.jar is " + Files.size(JAR) + " bytes");
        try (JarFile main = new JarFile(JAR.toFile()); JarFile natives = new JarFile(NATIVES.toFile())) {
            List<String> mainNative = main.stream().map(JarEntry::getName)
                    .filter(n -> n.endsWith(".so") || n.contains("/linux-x86_64/")).toList();
            assertEquals(List.of(), mainNative, "native files in the main jar");
            assertTrue(main.getEntry("dev/peft4j/kernels/Kernels.class") != null);
            assertEquals("dev.peft4j", main.getManifest().getMainAttributes().getValue("Automatic-Module-Name"));
            assertTrue(main.getEntry("META-INF/LICENSE") != null, "the license is in the main jar");

            List<String> files = natives.stream().filter(e -> !e.isDirectory()).map(JarEntry::getName)
                    .filter(n -> !n.startsWith("META-INF/")).toList();
            assertEquals(List.of(FS_LIBRARY, LIBRARY), files.stream().sorted().toList(),
                    "the classifier jar holds the native libraries only");
            assertTrue(natives.getEntry("META-INF/LICENSE") != null, "the license is in the natives jar");
        }
    }

    /** NativeFs.LOADED (package-private in dev.peft4j.io), read by reflection. */
    private static boolean nativeFsLoaded() {
        try {
            java.lang.reflect.Field f = Class.forName("dev.peft4j.io.NativeFs").getDeclaredField("LOADED");
            f.setAccessible(true);
            return f.getBoolean(null);
        } catch (ReflectiveOperationException e) {
            throw new AssertionError(e);
        }
    }
}

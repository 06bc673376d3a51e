package dev.peft4j.it;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.kernels.Kernels;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

/**
 * Runs in the integration-test phase, with target/peft4j.jar (not target/classes) on the class path:
 * the native layer must come out of the jar's platform folder, as it will for a user.
 */
class PackagedJarIT {
    private static final Path JAR = Path.of("target", "peft4j.jar");

    @Test
    void nativeLayerIsLoadedFromThePackagedJar() {
        String codeSource = Kernels.class.getProtectionDomain().getCodeSource().getLocation().getPath();
        assertTrue(codeSource.endsWith("peft4j.jar"), "classes came from " + codeSource);
        String lib = Kernels.libraryPath();
        // JavaCPP extracts a library found inside a jar to its cache; one in target/classes is used in place
        assertFalse(lib.contains("target/classes"), "native library was loaded from " + lib);
        assertTrue(lib.endsWith("libjniNativeKernels.so"), lib);

        Tensor y = torch.ones(33);
        Tensor x = torch.ones(33);
        Kernels.axpy(y, x, 2.0f);
        assertTrue(y.equal(torch.full(new long[] {33}, new org.bytedeco.pytorch.Scalar(3.0f))));
    }

    @Test
    void theJarCarriesOurCodeNotLibtorch() throws IOException {
        assertTrue(Files.size(JAR) < 10_000_000, "target/peft4j.jar is " + Files.size(JAR) + " bytes");
    }
}

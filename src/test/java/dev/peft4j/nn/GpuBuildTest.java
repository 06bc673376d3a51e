package dev.peft4j.nn;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.peft4j.models.AutoModel;
import dev.peft4j.models.CausalLM;
import dev.peft4j.models.ModelConfig;
import dev.peft4j.models.PreTrainedModel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIfSystemProperty;

/**
 * The {@code -Pgpu} build (mvn -Pgpu test -Dtest=GpuBuildTest): the presets' CUDA libtorch is the one loaded, it
 * answers whether a CUDA device is present (on a machine without an NVIDIA device: no, and a CUDA placement is
 * refused saying so), and the CPU path runs on it. Skipped in the default build, which has no GPU natives. The CUDA
 * libtorch links against the CUDA 13 / cuDNN 9 libraries; {@code org.bytedeco:cuda-redist} (in the profile) carries
 * some of them (cudart, cufft, curand, cufile, nvrtc ...), not cuBLAS, cuSPARSE, NCCL or cuDNN, which the presets
 * do not publish on Maven Central for this version: where neither that jar nor the dynamic linker has one, loading
 * would crash the JVM, so the tests are aborted (reported as skipped) naming the missing libraries and where the
 * others come from.
 */
@EnabledIfSystemProperty(named = "peft4j.gpu", matches = "true")
class GpuBuildTest {
    /** What libtorch_cuda.so of pytorch 2.10.0-1.5.13-gpu needs (readelf -d), beside libtorch's own libraries. */
    static final java.util.List<String> CUDA_LIBRARIES = java.util.List.of("libcudart.so.13", "libcublas.so.13",
            "libcublasLt.so.13", "libcusparse.so.12", "libcufft.so.12", "libcurand.so.10", "libcufile.so.0",
            "libnccl.so.2", "libcudnn.so.9");

    @org.junit.jupiter.api.BeforeAll
    static void cudaLibrariesArePresent() throws Exception {
        java.util.Set<String> found = new java.util.HashSet<>();
        Process p = new ProcessBuilder("/sbin/ldconfig", "-p").redirectErrorStream(true).start();
        for (String line : new String(p.getInputStream().readAllBytes()).split("\n")) {
            found.add(line.trim().split(" ")[0]);
        }
        p.waitFor();
        String ldPath = System.getenv("LD_LIBRARY_PATH");
        for (String dir : ldPath == null ? new String[0] : ldPath.split(":")) {
            for (String lib : CUDA_LIBRARIES) {
                if (!dir.isEmpty() && Files.exists(Path.of(dir, lib))) {
                    found.add(lib);
                }
            }
        }
        java.util.List<String> system = CUDA_LIBRARIES.stream().filter(found::contains).toList();
        java.util.List<String> jar = CUDA_LIBRARIES.stream().filter(GpuBuildTest::inRedistJar).toList();
        java.util.List<String> missing = CUDA_LIBRARIES.stream()
                .filter(l -> !found.contains(l) && !inRedistJar(l)).toList();
        System.out.println("CUDA libraries for the GPU natives: from org.bytedeco:cuda-redist " + jar
                + ", from the system " + system + ", missing " + missing);
        org.junit.jupiter.api.Assumptions.assumeTrue(missing.isEmpty(), "the GPU natives cannot load here: "
                + missing + " are neither in org.bytedeco:cuda-redist (which has " + jar + ") nor found by the "
                + "dynamic linker (install CUDA 13.1's cuBLAS / cuSPARSE, NCCL 2 and cuDNN 9, see docs/GPU.md)");
    }

    /** Whether the cuda-redist jar on the class path carries {@code lib} (JavaCPP's Loader extracts and preloads it). */
    static boolean inRedistJar(String lib) {
        return GpuBuildTest.class.getClassLoader().getResource("org/bytedeco/cuda/" + Loader.getPlatform() + "/" + lib)
                != null;
    }

    @Test
    void loadsTheCudaLibtorchAndReportsTheDevices() {
        Loader.load(torch.class);
        String jnitorch = null;
        for (Map.Entry<String, String> e : Loader.getLoadedLibraries().entrySet()) {
            if (e.getKey().contains("jnitorch")) {
                jnitorch = e.getValue();
            }
        }
        System.out.println("jnitorch loaded from " + jnitorch);
        assertTrue(jnitorch != null && jnitorch.contains("-gpu"), "the GPU natives are loaded, not " + jnitorch);
        boolean deviceNode = Files.exists(Path.of("/dev/nvidia0"));
        System.out.println("torch.cuda.is_available() = " + Devices.cudaAvailable() + ", CUDA devices: "
                + Devices.cudaDeviceCount() + ", /dev/nvidia0 present: " + deviceNode);
        assertEquals(deviceNode, Devices.cudaAvailable(), "CUDA is available exactly where an NVIDIA device is");
        if (!Devices.cudaAvailable()) {
            assertEquals("cpu", Devices.auto());
            IllegalArgumentException x = assertThrows(IllegalArgumentException.class,
                    () -> Devices.canonical("device", "cuda"));
            assertTrue(x.getMessage().startsWith("device=cuda: no CUDA device is present"), x.getMessage());
        }
    }

    @Test
    void theCpuPathRunsOnTheGpuBuild() {
        String json = "{\"model_type\":\"llama\",\"vocab_size\":32,\"hidden_size\":16,\"intermediate_size\":32,"
                + "\"num_hidden_layers\":1,\"num_attention_heads\":4,\"num_key_value_heads\":2}";
        try (PreTrainedModel m = AutoModel.fromConfig(ModelConfig.parse(json), Init.cpu(ScalarType.Float))) {
            Init.normal(m, 0.2, 1);
            Tensor ids = torch.randint(32, new long[] {2, 5}, new org.bytedeco.pytorch.TensorOptions(ScalarType.Long));
            Tensor logits = ((CausalLM) m).forward(ids, null, null, null);
            assertEquals(java.util.List.of(2L, 5L, 32L), java.util.Arrays.stream(logits.shape()).boxed().toList());
            assertTrue(logits.isfinite().all().item_bool());
        }
    }
}

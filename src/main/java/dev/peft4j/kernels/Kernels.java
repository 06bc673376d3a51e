package dev.peft4j.kernels;

import java.util.Locale;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Checked entry points of peft4j's native layer. Every tensor is validated (defined, CPU, dtype,
 * contiguity, sizes, aliasing) before its data pointer is handed to C++; a bad call throws
 * {@link IllegalArgumentException} naming the argument and what is wrong with it.
 *
 * <p>The SIMD path is picked once from the CPU's features; {@link #setActiveIsa} lowers it (tests
 * run every path, and {@code PEFT4J_ISA=scalar|avx2|avx512|avx512_bf16} pins one for a process).
 */
public final class Kernels {
    static {
        String pinned = System.getenv("PEFT4J_ISA");
        if (pinned != null && !pinned.isBlank()) {
            setActiveIsa(Isa.valueOf(pinned.trim().toUpperCase(Locale.ROOT)));
        }
    }

    private static volatile boolean fusedLayers = !"composed".equalsIgnoreCase(System.getProperty("peft4j.kernels", "fused").trim());
    private static final java.util.concurrent.atomic.LongAdder LAYER_CALLS = new java.util.concurrent.atomic.LongAdder();

    private Kernels() {}

    /**
     * Whether adapted layers run their inference forwards on these kernels ({@code true}, the default) or on the
     * composed libtorch ops that also serve autograd. Set with {@code -Dpeft4j.kernels=composed|fused} or
     * {@link #setFusedLayers}: tests and benchmarks compare the two paths with it.
     */
    public static boolean fusedLayers() {
        return fusedLayers;
    }

    /** Process-wide switch between the fused and the composed inference path of adapted layers; see {@link #fusedLayers}. */
    public static void setFusedLayers(boolean on) {
        fusedLayers = on;
    }

    /**
     * How many layer forwards the native kernels have served in this process ({@link FusedLoraLinear},
     * {@link LoraDelta}, {@link Ia3Kernel}): lets a test prove that a model's forward really took the fused path
     * instead of silently falling back to the composed one.
     */
    public static long layerCalls() {
        return LAYER_CALLS.sum();
    }

    static void countLayerCall() {
        LAYER_CALLS.increment();
    }

    /**
     * Takes {@code p} out of every open {@link org.bytedeco.javacpp.PointerScope} of this thread: state built lazily
     * inside a caller's decode-step scope must outlive that scope. Returns {@code p}.
     */
    static <P extends org.bytedeco.javacpp.Pointer> P own(P p) {
        for (java.util.Iterator<org.bytedeco.javacpp.PointerScope> it = org.bytedeco.javacpp.PointerScope.getScopeIterator();
                it != null && it.hasNext();) {
            org.bytedeco.javacpp.PointerScope s = it.next();
            p.retainReference(); // a scope's detach drops one reference
            s.detach(p);
        }
        return p;
    }

    /** The best instruction-set level this CPU (and OS) supports. */
    public static Isa bestIsa() {
        return Isa.of(NativeKernels.peft4j_best_isa());
    }

    /** The level the kernels use now. */
    public static Isa activeIsa() {
        return Isa.of(NativeKernels.peft4j_active_isa());
    }

    /**
     * Makes the kernels use {@code isa}, or the best supported level below it; returns the level set.
     * Process-wide; meant for tests and diagnostics.
     */
    public static Isa setActiveIsa(Isa isa) {
        return Isa.of(NativeKernels.peft4j_set_active_isa(isa.ordinal()));
    }

    /** The CPU features the native layer sees, space separated (e.g. {@code "avx2 fma avx512f"}). */
    public static String cpuFeatures() {
        try (BytePointer buf = new BytePointer(512)) {
            NativeKernels.peft4j_cpu_features(buf, 512);
            return buf.limit(0).getString(); // limit 0: read up to the NUL, not the whole buffer
        }
    }

    /**
     * Where the kernels' parallel loops run: {@code "openmp"} on libtorch's own OpenMP team (the default: no second
     * set of threads competing with libtorch's for the cores), {@code "own"} on peft4j's pool (when
     * {@code PEFT4J_POOL=own} is set, or no libgomp is in the process).
     */
    public static String threadPool() {
        return NativeKernels.peft4j_thread_pool_kind().getString();
    }

    /** File the JNI library was loaded from. */
    public static String libraryPath() {
        return NativeKernels.LIBRARY_PATH;
    }

    /** An empty native call: the fixed cost of crossing from Java into the native layer. */
    public static void noop() {
        NativeKernels.peft4j_noop();
    }

    /**
     * {@code y += alpha * x} in place, elementwise, for float32 or bfloat16 tensors of the same shape.
     * Computed in float32 with one fused multiply-add per element (bfloat16 rounded to nearest even).
     * Not recorded by autograd: {@code y} must not require grad.
     */
    public static void axpy(Tensor y, Tensor x, float alpha) {
        checkCpuContiguous("y", y);
        checkCpuContiguous("x", x);
        ScalarType dt = y.scalar_type().intern(); // JavaCPP returns a fresh enum object: intern() before ==
        if (dt != ScalarType.Float && dt != ScalarType.BFloat16) {
            throw new IllegalArgumentException("y: dtype " + dt + " not supported, expected Float or BFloat16");
        }
        if (x.scalar_type().intern() != dt) {
            throw new IllegalArgumentException("x: dtype " + x.scalar_type().intern() + " does not match y's " + dt);
        }
        if (!java.util.Arrays.equals(y.shape(), x.shape())) {
            throw new IllegalArgumentException("x: shape " + java.util.Arrays.toString(x.shape())
                    + " does not match y's " + java.util.Arrays.toString(y.shape()));
        }
        if (y.requires_grad()) {
            throw new IllegalArgumentException("y: requires grad; this in-place kernel is invisible to autograd");
        }
        long n = y.numel();
        if (n == 0) {
            return;
        }
        long ya = y.data_ptr().address();
        long xa = x.data_ptr().address();
        long bytes = n * y.element_size();
        if (ya != xa && ya < xa + bytes && xa < ya + bytes) {
            throw new IllegalArgumentException("x: memory partially overlaps y's");
        }
        if (dt == ScalarType.Float) {
            NativeKernels.peft4j_axpy_f32(ya, xa, alpha, n);
        } else {
            NativeKernels.peft4j_axpy_bf16(ya, xa, alpha, n);
        }
        // keep both tensors (and so their storage) reachable until the native call has returned
        java.lang.ref.Reference.reachabilityFence(y);
        java.lang.ref.Reference.reachabilityFence(x);
    }

    /** 0 for float32, 1 for bfloat16 (the native DType); anything else is refused naming {@code name}. */
    static int dtypeCode(String name, Tensor t) {
        ScalarType dt = t.scalar_type().intern();
        if (dt == ScalarType.Float) {
            return 0;
        }
        if (dt == ScalarType.BFloat16) {
            return 1;
        }
        throw new IllegalArgumentException(name + ": dtype " + dt + " not supported, expected Float or BFloat16");
    }

    static void checkSameDtype(String name, Tensor t, String refName, Tensor ref) {
        ScalarType dt = t.scalar_type().intern();
        ScalarType want = ref.scalar_type().intern();
        if (dt != want) {
            throw new IllegalArgumentException(name + ": dtype " + dt + " does not match " + refName + "'s " + want);
        }
    }

    static void checkNoGrad(String name, Tensor t) {
        if (t.requires_grad()) {
            throw new IllegalArgumentException(name + ": requires grad; this in-place kernel is invisible to autograd");
        }
    }

    static void checkNoOverlap(String name, Tensor t, String otherName, Tensor other) {
        long a = t.data_ptr().address();
        long b = other.data_ptr().address();
        long an = t.numel() * t.element_size();
        long bn = other.numel() * other.element_size();
        if (an > 0 && bn > 0 && a < b + bn && b < a + an) {
            throw new IllegalArgumentException(name + ": memory overlaps " + otherName + "'s");
        }
    }

    static void checkCpuContiguous(String name, Tensor t) {
        if (t == null || t.isNull() || !t.defined()) {
            throw new IllegalArgumentException(name + ": tensor is null or undefined");
        }
        if (!t.is_cpu()) {
            throw new IllegalArgumentException(name + ": tensor is on " + t.device().str().getString()
                    + ", the CPU kernels need a CPU tensor");
        }
        if (!t.is_contiguous()) {
            throw new IllegalArgumentException(name + ": tensor of shape " + java.util.Arrays.toString(t.shape())
                    + " and strides " + java.util.Arrays.toString(t.strides().vec().get())
                    + " is not contiguous; call contiguous() first");
        }
    }
}

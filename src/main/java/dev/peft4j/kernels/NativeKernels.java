package dev.peft4j.kernels;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Platform;

/**
 * JavaCPP binding of {@code src/main/cpp/peft4j_kernels.h}. Raw addresses only: callers are the
 * checked wrappers in {@link Kernels}, which validate every tensor before its pointer crosses.
 */
@Platform(include = "peft4j_kernels.h", compiler = "cpp17")
final class NativeKernels {
    /** Path of the loaded JNI library (from the jar's platform folder or target/classes). */
    static final String LIBRARY_PATH;

    static {
        // libtorch first: its OpenMP runtime must be in the process before the kernels' thread pool looks for it
        Loader.load(org.bytedeco.pytorch.global.torch.class);
        LIBRARY_PATH = Loader.load();
    }

    private NativeKernels() {}

    static native int peft4j_best_isa();

    static native int peft4j_active_isa();

    static native int peft4j_set_active_isa(int isa);

    static native @Cast("const char*") BytePointer peft4j_isa_name(int isa);

    static native void peft4j_cpu_features(@Cast("char*") BytePointer out, int cap);

    static native void peft4j_noop();

    static native @Cast("const char*") BytePointer peft4j_thread_pool_kind();

    static native void peft4j_axpy_f32(@Cast("float*") long y, @Cast("const float*") long x, float alpha,
            @Cast("int64_t") long n);

    static native long peft4j_adapted_linear_create(int dtype, @Cast("const void*") long w,
            @Cast("const void*") long bias, @Cast("int64_t") long k, @Cast("int64_t") long n);

    static native void peft4j_adapted_linear_set_adapters(@Cast("int64_t") long handle, int n,
            @Cast("const int64_t*") long[] aPtrs, @Cast("const int64_t*") long[] bPtrs,
            @Cast("const int32_t*") int[] ranks, @Cast("const float*") float[] scales);

    static native void peft4j_adapted_linear_forward(@Cast("int64_t") long handle, @Cast("void*") long y,
            @Cast("const void*") long x, @Cast("int64_t") long m, int threads, @Cast("const int32_t*") int[] rowSlot);

    static native void peft4j_adapted_linear_set_ia3(@Cast("int64_t") long handle,
            @Cast("const float*") float[] inScale, @Cast("const float*") float[] outScale);

    static native void peft4j_lora_delta(int dtype, @Cast("void*") long y, @Cast("const void*") long x,
            @Cast("int64_t") long m, @Cast("int64_t") long k, @Cast("int64_t") long n, int nSlots,
            @Cast("const int64_t*") long[] aPtrs, @Cast("const int64_t*") long[] bPtrs,
            @Cast("const int32_t*") int[] ranks, @Cast("const float*") float[] scales,
            @Cast("const int32_t*") int[] rowSlot, int threads);

    static native void peft4j_merge_lowrank(int dtype, @Cast("void*") long w, @Cast("int64_t") long rows,
            @Cast("int64_t") long cols, @Cast("const float*") long coef, @Cast("const float*") long v, int r,
            int threads);

    static native void peft4j_scale_matrix(int dtype, @Cast("void*") long dst, @Cast("const void*") long src,
            @Cast("int64_t") long rows, @Cast("int64_t") long cols, @Cast("const float*") long l, int byRows,
            int divide, int threads);

    static native void peft4j_adapted_linear_destroy(@Cast("int64_t") long handle);

    static native void peft4j_axpy_bf16(@Cast("uint16_t*") long y, @Cast("const uint16_t*") long x, float alpha,
            @Cast("int64_t") long n);

    // ---- DoRA (peft4j_dora.h) ----
    static native void peft4j_adapted_linear_set_dora(@Cast("int64_t") long handle,
            @Cast("const float*") float[] scale);

    static native void peft4j_dora_rescale(int dtype, @Cast("void*") long y, @Cast("const void*") long bias,
            @Cast("const float*") float[] scale, @Cast("int64_t") long m, @Cast("int64_t") long n, int threads);

    // ---- decode step ops (peft4j_decode.h) ----
    static native void peft4j_rms_norm(int dtype, @Cast("void*") long y, @Cast("const void*") long x,
            @Cast("const void*") long w, @Cast("int64_t") long rows, @Cast("int64_t") long dim, float eps,
            @Cast("int32_t") int unitOffset);

    static native void peft4j_add_rms_norm(int dtype, @Cast("void*") long r, @Cast("const void*") long a,
            @Cast("void*") long y, @Cast("const void*") long w, @Cast("int64_t") long rows, @Cast("int64_t") long dim,
            float eps, @Cast("int32_t") int unitOffset);

    static native void peft4j_rope(int dtype, @Cast("void*") long x, @Cast("int64_t") long rows,
            @Cast("int64_t") long heads, @Cast("int64_t") long dim, @Cast("const int64_t*") long[] pos,
            @Cast("const float*") long invFreq, @Cast("int64_t") long rot, float attnScaling);

    static native void peft4j_decode_attention(int dtype, @Cast("const void*") long q, @Cast("const void*") long k,
            @Cast("const void*") long v, @Cast("void*") long kc, @Cast("void*") long vc, @Cast("int64_t") long maxLen,
            @Cast("const int32_t*") int[] slot, @Cast("const int64_t*") long[] past, @Cast("int64_t") long rows,
            @Cast("int64_t") long heads, @Cast("int64_t") long kvHeads, @Cast("int64_t") long dim,
            @Cast("int64_t") long window, float scale, @Cast("void*") long out, int threads, float softcap);

    static native void peft4j_decode_rope_attention(int dtype, @Cast("void*") long q, @Cast("void*") long k,
            @Cast("const void*") long v, @Cast("void*") long kc, @Cast("void*") long vc, @Cast("int64_t") long maxLen,
            @Cast("const int32_t*") int[] slot, @Cast("const int64_t*") long[] past, @Cast("int64_t") long rows,
            @Cast("int64_t") long heads, @Cast("int64_t") long kvHeads, @Cast("int64_t") long dim,
            @Cast("int64_t") long window, float scale, @Cast("void*") long out, int threads, float softcap,
            @Cast("const float*") long invFreq, @Cast("int64_t") long rot, float attnScaling);

    // ---- weight-only quantized Linear (peft4j_quant.h) ----

    static native int peft4j_quant_path();

    static native @Cast("const char*") BytePointer peft4j_quant_path_name(int path);

    static native void peft4j_quantize(int fmt, int dtype, @Cast("const void*") long w, @Cast("int64_t") long n,
            @Cast("int64_t") long k, @Cast("void*") long qs, @Cast("uint16_t*") long d, int threads);

    static native void peft4j_dequantize(int fmt, int dtype, @Cast("const void*") long qs,
            @Cast("const uint16_t*") long d, @Cast("int64_t") long n, @Cast("int64_t") long k, @Cast("void*") long w,
            int threads);

    // ---- weight-only quantized Linear over 16-row panels (peft4j_qpanel.h) ----

    static native @Cast("int64_t") long peft4j_quant_panel_bytes(int fmt, @Cast("int64_t") long n,
            @Cast("int64_t") long k);

    static native void peft4j_quantize_panels(int fmt, int dtype, @Cast("const void*") long w, @Cast("int64_t") long n,
            @Cast("int64_t") long k, @Cast("void*") long pq, @Cast("uint16_t*") long pd, int threads);

    static native void peft4j_dequantize_panels(int fmt, int dtype, @Cast("const void*") long pq,
            @Cast("const uint16_t*") long pd, @Cast("int64_t") long n, @Cast("int64_t") long k, @Cast("void*") long w,
            int threads);

    static native void peft4j_quant_pack(int fmt, @Cast("const void*") long qs, @Cast("const uint16_t*") long d,
            @Cast("int64_t") long n, @Cast("int64_t") long k, @Cast("void*") long pq, @Cast("uint16_t*") long pd,
            int threads);

    static native void peft4j_quant_unpack(int fmt, @Cast("const void*") long pq, @Cast("const uint16_t*") long pd,
            @Cast("int64_t") long n, @Cast("int64_t") long k, @Cast("void*") long qs, @Cast("uint16_t*") long d,
            int threads);

    static native void peft4j_quant_linear_panels(int fmt, int dtype, @Cast("const void*") long pq,
            @Cast("const uint16_t*") long pd, @Cast("const void*") long bias, @Cast("const void*") long x,
            @Cast("void*") long y, @Cast("int64_t") long m, @Cast("int64_t") long k, @Cast("int64_t") long n,
            int threads);

    // ---- several decode Linears over one x in one parallel region, and the gated MLP input (peft4j_decode.h) ----

    static native void peft4j_adapted_linear_forward_group(int n, @Cast("const int64_t*") long[] handles,
            @Cast("const int64_t*") long[] ys, @Cast("const void*") long x, @Cast("int64_t") long m, int threads);

    static native void peft4j_gated_linear(@Cast("int64_t") long gate, @Cast("int64_t") long up, @Cast("void*") long y,
            @Cast("const void*") long x, @Cast("int64_t") long m, int act, int threads);

    static native void peft4j_act_mul(int dtype, int act, @Cast("void*") long y, @Cast("const void*") long g,
            @Cast("const void*") long u, @Cast("int64_t") long n);

    // ---- several quantized decode Linears over one x in one parallel region, and their gated MLP input
    // (peft4j_qgroup.h) ----

    static native void peft4j_quant_linear_group(int dtype, int n, @Cast("const int32_t*") int[] fmts,
            @Cast("const int64_t*") long[] pqs, @Cast("const int64_t*") long[] pds,
            @Cast("const int64_t*") long[] biases, @Cast("const int64_t*") long[] ys,
            @Cast("const int64_t*") long[] ns, @Cast("const void*") long x, @Cast("int64_t") long m,
            @Cast("int64_t") long k, int threads);

    static native void peft4j_quant_gated_linear(int dtype, int n, @Cast("const int32_t*") int[] fmts,
            @Cast("const int64_t*") long[] pqs, @Cast("const int64_t*") long[] pds,
            @Cast("const int64_t*") long[] biases, @Cast("const int64_t*") long[] ns, @Cast("void*") long y,
            @Cast("const void*") long x, @Cast("int64_t") long m, @Cast("int64_t") long k, int act, int threads);

    // ---- LoRA fused into the quantized decode product (peft4j_qlora.h) ----

    static native void peft4j_quant_lora_group(int dtype, int n, @Cast("const int32_t*") int[] fmts,
            @Cast("const int64_t*") long[] pqs, @Cast("const int64_t*") long[] pds,
            @Cast("const int64_t*") long[] biases, @Cast("const int64_t*") long[] ys,
            @Cast("const int64_t*") long[] ns, @Cast("const int32_t*") int[] nls, @Cast("const int64_t*") long[] as,
            @Cast("const int64_t*") long[] bs, @Cast("const int32_t*") int[] rs, @Cast("const float*") float[] ss,
            @Cast("const int32_t*") int[] rowSlot, @Cast("const void*") long x, @Cast("int64_t") long m,
            @Cast("int64_t") long k, int threads);

    static native void peft4j_quant_lora_gated_linear(int dtype, int n, @Cast("const int32_t*") int[] fmts,
            @Cast("const int64_t*") long[] pqs, @Cast("const int64_t*") long[] pds,
            @Cast("const int64_t*") long[] biases, @Cast("const int64_t*") long[] ns,
            @Cast("const int32_t*") int[] nls, @Cast("const int64_t*") long[] as, @Cast("const int64_t*") long[] bs,
            @Cast("const int32_t*") int[] rs, @Cast("const float*") float[] ss, @Cast("void*") long y,
            @Cast("const void*") long x, @Cast("int64_t") long m, @Cast("int64_t") long k, int act, int threads);

    // ---- a mixed batch's grouped decode projections, each layer with its per-row adapter index
    // (peft4j_mixgroup.h) ----

    static native void peft4j_adapted_linear_forward_group_mixed(int n, @Cast("const int64_t*") long[] handles,
            @Cast("const int64_t*") long[] ys, @Cast("const void*") long x, @Cast("int64_t") long m,
            @Cast("const int32_t*") int[] rowSlots, @Cast("const int32_t*") int[] hasSlot, int threads);

    static native void peft4j_gated_linear_mixed(@Cast("int64_t") long gate, @Cast("int64_t") long up,
            @Cast("void*") long y, @Cast("const void*") long x, @Cast("int64_t") long m, int act,
            @Cast("const int32_t*") int[] rowSlots, @Cast("const int32_t*") int[] hasSlot, int threads);
}

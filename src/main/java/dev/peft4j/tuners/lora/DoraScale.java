package dev.peft4j.tuners.lora;

import dev.peft4j.tuners.Scoped;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * The inference factor of one DoRA adapter, {@code f = m / ‖W + s·B·A‖} as float32, cached for the fused path.
 * PEFT recomputes the norm every forward (its {@code ENABLE_DORA_CACHING} is off by default), which for a decode step
 * would cost a second pass over W; here it is recomputed only when W, A, B or m change: their libtorch version
 * counters (every in-place update bumps them: a training step, a load's {@code copy_}) or the tensor objects
 * themselves (the owner builds a new one when tensors are replaced). Inference tensors have no version counter, so
 * for them it is recomputed on every call. Not thread-safe: the owner serialises {@link #current()}.
 */
final class DoraScale {
    private final Tensor w;
    private final Tensor a;
    private final Tensor b;
    private final Tensor m;
    private final double scaling;
    private final boolean fanInFanOut;
    private final long[] versions = {-2, -2, -2, -2};
    private float[] factor;
    private int refreshes;

    DoraScale(Tensor w, Tensor a, Tensor b, Tensor m, double scaling, boolean fanInFanOut) {
        this.w = w;
        this.a = a;
        this.b = b;
        this.m = m;
        this.scaling = scaling;
        this.fanInFanOut = fanInFanOut;
    }

    /** Whether this cache was built on exactly these tensors. */
    boolean sameTensors(Tensor w2, Tensor a2, Tensor b2, Tensor m2) {
        return w == w2 && a == a2 && b == b2 && m == m2;
    }

    /**
     * The factor for the current values; the same array object as the previous call when nothing changed (so the
     * caller hands a new one to the kernel only when it is new).
     */
    float[] current() {
        Tensor[] ts = {w, a, b, m};
        boolean stale = factor == null;
        for (int i = 0; i < 4; i++) {
            long v = ts[i].__dispatch_is_inference() ? -1 : ts[i].__dispatch__version();
            if (v < 0 || v != versions[i]) {
                stale = true;
            }
            versions[i] = v;
        }
        if (stale) {
            try (NoGradGuard g = new NoGradGuard(); Tensor f = Scoped.compute(() ->
                    DoraMath.factor(m, w, a, b, scaling, fanInFanOut).to(ScalarType.Float).contiguous())) {
                float[] out = new float[(int) f.numel()];
                f.data_ptr_float().get(out);
                factor = out;
            }
            refreshes++;
        }
        return factor;
    }

    /** How many times the factor was computed (for tests: once per change, not per call). */
    int refreshes() {
        return refreshes;
    }
}

package dev.peft4j.tuners.ia3;

import dev.peft4j.nn.Conv1D;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.nn.QuantizedLinear;
import dev.peft4j.tuners.Scoped;
import dev.peft4j.kernels.Ia3Kernel;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.LinearShape;
import dev.peft4j.nn.ParameterDict;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * PEFT's {@code ia3.Linear} around an {@code nn.Linear} or transformers {@code Conv1D}: children {@code base_layer}
 * and {@code ia3_l} (bare parameters {@code ia3_l.<name>}, {@code (out, 1)} or {@code (1, in)} for a feed-forward
 * layer). Several active adapters multiply; merge and the autograd forward are {@link Ia3Math}'s.
 *
 * <p>An inference forward (autograd off, CPU, an {@code nn.Linear} base in float32 / bfloat16, x of its dtype) runs
 * on {@link Ia3Kernel}: the active vectors are folded once when the active set, or a vector's values (libtorch's
 * version counter), change — not per call (vectors created under {@code InferenceMode} have no version counter and
 * are refolded on every call). Conv1D bases (weight {@code [in, out]}, which the kernel does not take)
 * and everything else take the composed ops, as does {@code -Dpeft4j.kernels=composed}.
 */
public final class Ia3Layer extends BaseTunerLayer {
    private static final Logger LOG = LoggerFactory.getLogger(Ia3Layer.class);
    private final boolean feedForward;
    private final boolean fanInFanOut;
    private final long inFeatures;
    private final long outFeatures;
    // native inference state, rebuilt lazily; null: not built or not servable
    private Ia3Kernel kernel;
    private ScalarType kernelDtype;
    private List<Tensor> kernelVectors = List.of();
    private long[] kernelVersions = new long[0];

    /**
     * Wraps {@code base} with no adapter yet; {@code feedForward} scales the input (a {@code feedforward_modules}
     * target) instead of the output.
     * @throws IllegalArgumentException if {@code base} is not a linear layer ({@code nn.Linear} or {@code Conv1D}),
     *     with PEFT's message
     */
    public Ia3Layer(Module base, boolean feedForward) {
        super(base);
        this.feedForward = feedForward;
        LinearShape shape = LinearShape.of(innermost(base)); // a tuner layer of another method: what it adapts
        if (shape == null) {
            throw new IllegalArgumentException("Target module " + base.typeName() + " is not supported. Currently, "
                    + "only `torch.nn.Linear`, `torch.nn.Conv2d`, and `Conv1D` are supported.");
        }
        fanInFanOut = shape.fanInFanOut();
        inFeatures = shape.in();
        outFeatures = shape.out();
        registerModule("ia3_l", new ParameterDict());
    }

    @Override
    public String typeName() {
        return "ia3.Linear";
    }

    @Override
    public String tunerLayerClass() {
        return "IA3Layer";
    }

    /** Whether the vectors scale the input ({@code feedforward_modules}) rather than the output. */
    public boolean feedForward() {
        return feedForward;
    }

    /** The shape a vector of this layer has. */
    public long[] vectorShape() {
        return Ia3Math.vectorShape(inFeatures, outFeatures, feedForward);
    }

    private ParameterDict dict() {
        return (ParameterDict) child("ia3_l");
    }

    /** Adds a prepared vector (taken over). */
    public void addAdapter(String name, Tensor vector, boolean trainable) {
        if (!Arrays.equals(vector.shape(), vectorShape())) {
            throw new IllegalArgumentException("adapter '" + name + "': ia3_l " + Arrays.toString(vector.shape())
                    + " does not fit this layer, which needs " + Arrays.toString(vectorShape()));
        }
        markKernelsDirty();
        dict().put(name, vector, trainable);
    }

    @Override
    public List<String> adapterNames() {
        return dict().keys();
    }

    @Override
    public Map<String, Tensor> adapterParameters(String name) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        Tensor t = dict().get(name);
        if (t != null) {
            out.put("ia3_l." + name, t);
        }
        return out;
    }

    @Override
    protected void removeAdapter(String name) {
        closeKernel();
        dict().remove(name).close();
    }

    @Override
    public Tensor forward(Tensor x) {
        Tensor baseOnly = baseOnlyForward(x, "IA³");
        if (baseOnly != null) {
            return baseOnly;
        }
        List<Tensor> act = new ArrayList<>();
        for (String n : activeAdapters()) {
            Tensor t = dict().get(n);
            if (t != null) {
                act.add(t);
            }
        }
        if (act.isEmpty()) {
            return baseForward(x);
        }
        if (kernelEligible(x)) {
            Ia3Kernel k = refreshKernel(x);
            if (k != null) {
                return k.forward(x);
            }
        }
        if (baseLayer() instanceof QuantizedLinear || wrapsTunerLayer()) {
            return aroundBaseForward(x, act);
        }
        return Ia3Math.forward(x, baseWeight(), baseBias(), act, feedForward, fanInFanOut);
    }

    /**
     * Ia3Math.forward's composition around the base layer's own forward: a quantized base has no weight to pass, and
     * a nested tuner layer of another method (PEFT's order: IA³ scales its input, or its output) must run its own.
     */
    private Tensor aroundBaseForward(Tensor x, List<Tensor> act) {
        return Scoped.compute(() -> {
            Tensor scaling = null;
            for (Tensor l : act) {
                scaling = scaling == null ? l.flatten() : scaling.mul(l.flatten());
            }
            if (feedForward) {
                ScalarType inType = x.scalar_type().intern();
                return baseForward(x.to(scaling.scalar_type()).mul(scaling).to(inType));
            }
            Tensor result = baseForward(x);
            return result.mul(scaling).to(result.scalar_type());
        });
    }

    /** The kernel for the current active vectors, rebuilt or refolded if stale; null when it cannot serve x. */
    private synchronized Ia3Kernel refreshKernel(Tensor x) {
        if (takeKernelsStale()) {
            freeKernel();
            Module b = baseLayer();
            if (b instanceof Linear l && servable(l.weight()) && (l.bias() == null
                    || servable(l.bias()) && l.bias().scalar_type().intern() == l.weight().scalar_type().intern())) {
                kernel = new Ia3Kernel(l.weight(), l.bias(), feedForward);
                kernelDtype = l.weight().scalar_type().intern();
            }
        }
        if (kernel == null || x.scalar_type().intern() != kernelDtype) {
            return null;
        }
        List<Tensor> act = new ArrayList<>();
        for (String n : activeAdapters()) {
            Tensor t = dict().get(n);
            if (t != null) {
                act.add(t);
            }
        }
        boolean refold = act.size() != kernelVectors.size();
        long[] versions = new long[act.size()];
        for (int i = 0; i < act.size(); i++) {
            // bumped by every in-place update (a training step); an inference tensor has no counter: refolded each call
            Tensor t = act.get(i);
            versions[i] = t.__dispatch_is_inference() ? -1 : t.__dispatch__version();
            refold |= versions[i] < 0;
            if (!refold) {
                refold = act.get(i) != kernelVectors.get(i) || versions[i] != kernelVersions[i];
            }
        }
        if (refold) {
            kernel.setActive(act);
            kernelVectors = act;
            kernelVersions = versions;
        }
        return kernel;
    }

    private static boolean servable(Tensor t) {
        ScalarType dt = t.scalar_type().intern();
        return t.is_cpu() && t.is_contiguous() && (dt == ScalarType.Float || dt == ScalarType.BFloat16);
    }

    private synchronized void closeKernel() {
        freeKernel();
        markKernelsDirty();
    }

    private void freeKernel() {
        if (kernel != null) {
            kernel.close();
            kernel = null;
        }
        kernelVectors = List.of();
        kernelVersions = new long[0];
    }

    @Override
    protected void releaseNative() {
        closeKernel();
    }

    @Override
    public void merge(List<String> names, boolean safeMerge) {
        markKernelsDirty();
        for (String n : names) {
            if (mergedList().contains(n) || !(dict().get(n) != null)) {
                continue;
            }
            Ia3Math.merge(baseWeight(), baseBias(), dict().get(n), feedForward, fanInFanOut, safeMerge, n);
            mergedList().add(n);
        }
    }

    @Override
    public void unmerge() {
        markKernelsDirty();
        if (!merged()) {
            LOG.warn("Already unmerged. Nothing to do.");
            return;
        }
        LOG.warn("Unmerge result can be inaccurate for (IA)^3.");
        while (!mergedList().isEmpty()) {
            String n = mergedList().remove(mergedList().size() - 1);
            if ((dict().get(n) != null)) {
                Ia3Math.unmerge(baseWeight(), baseBias(), dict().get(n), feedForward, fanInFanOut);
            }
        }
    }
}

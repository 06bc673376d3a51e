package dev.peft4j.tuners.lora;

import dev.peft4j.nn.Conv1D;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.nn.QuantizedLinear;
import dev.peft4j.kernels.DecodeLinear;
import dev.peft4j.kernels.DecodeLinearSource;
import dev.peft4j.kernels.FusedLoraLinear;
import dev.peft4j.kernels.LoraDelta;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.LinearShape;
import dev.peft4j.tuners.NativeLinear;
import dev.peft4j.nn.ModuleDict;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * PEFT's {@code lora.Linear} around an {@code nn.Linear} or a transformers {@code Conv1D} ({@code fan_in_fan_out}):
 * children {@code base_layer}, {@code lora_A.<name>} ({@code Linear(in, r)}), {@code lora_B.<name>}
 * ({@code Linear(r, out)}, bias with {@code lora_bias}), so in-memory keys are PEFT's
 * ({@code q_proj.lora_A.default.weight}). Merge, unmerge and the autograd forward are {@link LoraMath}'s.
 *
 * <p>An inference forward (autograd off, CPU, float32 / bfloat16 throughout, no {@code lora_bias}, no dropout in
 * training mode) runs on the native kernels instead ({@link NativeLinear}: one native call per layer for decode-sized
 * inputs on an {@code nn.Linear} base; libtorch's base GEMM plus an in-place native delta for larger inputs and for
 * Conv1D bases), mixed batches included (one slot per row). The native state is rebuilt lazily: activation changes
 * only mark it stale. Anything else, or {@code -Dpeft4j.kernels=composed}, takes the composed ops.
 *
 * <p>DoRA adapters ({@code use_dora}) hold a magnitude vector in {@code lora_magnitude_vector.<name>.weight}
 * ({@link DoraMath}). The fused path serves them when the active DoRA adapter is the last active one (then its factor
 * {@code m / ‖W + s·B·A‖} scales every output before the bias, in the kernel's write); the factor is cached and
 * recomputed when W, A, B or m change ({@link DoraScale}). Mixed batches naming a DoRA adapter are refused, as PEFT.
 */
public final class LoraLayer extends BaseTunerLayer implements DecodeLinearSource {
    private static final Logger LOG = LoggerFactory.getLogger(LoraLayer.class);

    private final boolean fanInFanOut;
    private final long inFeatures;
    private final long outFeatures;
    private final Map<String, Double> scaling = new LinkedHashMap<>();
    private final Map<String, Double> dropout = new LinkedHashMap<>();
    private final Map<String, Integer> rank = new LinkedHashMap<>();
    // native inference state, rebuilt lazily (see forward); null: not built or not servable
    private NativeLinear activeNative;
    private boolean activeDropout;
    private NativeLinear mixedNative;
    private List<String> mixedNames;
    private boolean mixedDropout;
    private boolean mixedBuilt;
    private DoraScale activeDora; // the DoRA factor of the fused state, when its last active adapter is DoRA
    // the weight norm each merged DoRA adapter was merged with: unmerging needs it (PEFT's _cache_store)
    private final Map<String, Tensor> mergedDoraNorms = new LinkedHashMap<>();

    /**
     * Wraps {@code base}, a {@link Linear}, {@link Conv1D} or {@link QuantizedLinear}, or a tuner layer of another
     * method around one (its output then is this layer's base output).
     */
    public LoraLayer(Module base) {
        super(base);
        LinearShape shape = LinearShape.of(innermost(base));
        if (shape == null) {
            throw new IllegalArgumentException("LoraLayer wraps Linear or Conv1D, not " + base.typeName());
        }
        fanInFanOut = shape.fanInFanOut();
        inFeatures = shape.in();
        outFeatures = shape.out();
        registerModule("lora_A", new ModuleDict<Linear>());
        registerModule("lora_B", new ModuleDict<Linear>());
    }

    @Override
    public String typeName() {
        return "lora.Linear";
    }

    @Override
    public String tunerLayerClass() {
        return "LoraLayer";
    }

    /** Whether the base layer stores its weight as {@code (in, out)} (GPT-2's {@code Conv1D}). */
    public boolean fanInFanOut() {
        return fanInFanOut;
    }

    /** The base layer's input width. */
    public long inFeatures() {
        return inFeatures;
    }

    /** The base layer's output width. */
    public long outFeatures() {
        return outFeatures;
    }

    @SuppressWarnings("unchecked")
    private ModuleDict<Linear> dictA() {
        return (ModuleDict<Linear>) child("lora_A");
    }

    @SuppressWarnings("unchecked")
    private ModuleDict<Linear> dictB() {
        return (ModuleDict<Linear>) child("lora_B");
    }

    /**
     * Adds a prepared adapter: {@code a} is {@code Linear(in, r)}, {@code b} {@code Linear(r, out)} (taken over).
     *
     * @throws IllegalArgumentException when the shapes do not fit the base layer or the name exists
     */
    public void addAdapter(String name, Linear a, Linear b, double scale, double dropoutP) {
        addAdapter(name, a, b, scale, dropoutP, null);
    }

    /**
     * Adds a prepared adapter, a DoRA one when {@code magnitude} is given: {@code a} is {@code Linear(in, r)},
     * {@code b} {@code Linear(r, out)}, {@code magnitude} the vector {@code m} {@code (out,)} (all taken over).
     *
     * @throws IllegalArgumentException when the shapes do not fit the base layer or the name exists
     */
    public void addAdapter(String name, Linear a, Linear b, double scale, double dropoutP, DoraMagnitude magnitude) {
        if ((dictA().get(name) != null)) {
            throw new IllegalArgumentException("layer already holds adapter '" + name + "'");
        }
        if (a.inFeatures() != inFeatures || b.outFeatures() != outFeatures || a.outFeatures() != b.inFeatures()) {
            throw new IllegalArgumentException("adapter '" + name + "': lora_A (" + a.outFeatures() + ", "
                    + a.inFeatures() + ") / lora_B (" + b.outFeatures() + ", " + b.inFeatures()
                    + ") do not fit a base layer with in=" + inFeatures + ", out=" + outFeatures);
        }
        if (magnitude != null) {
            Tensor m = magnitude.weight();
            if (m.dim() != 1 || m.size(0) != outFeatures) {
                throw new IllegalArgumentException("adapter '" + name + "': lora_magnitude_vector has shape "
                        + Arrays.toString(m.shape()) + ", the base layer needs [" + outFeatures + "]");
            }
            if (b.bias() != null) {
                throw new IllegalArgumentException("adapter '" + name + "': lora_bias cannot be combined with DoRA");
            }
        }
        markKernelsDirty();
        if (magnitude != null) {
            dictM().put(name, magnitude);
        }
        dictA().put(name, a);
        dictB().put(name, b);
        scaling.put(name, scale);
        dropout.put(name, dropoutP);
        rank.put(name, (int) a.outFeatures());
    }

    @SuppressWarnings("unchecked")
    private ModuleDict<DoraMagnitude> dictM() {
        if (!children().containsKey("lora_magnitude_vector")) {
            registerModule("lora_magnitude_vector", new ModuleDict<DoraMagnitude>());
        }
        return (ModuleDict<DoraMagnitude>) child("lora_magnitude_vector");
    }

    /**
     * Adapter {@code name}'s DoRA magnitude vector {@code m} {@code (out,)}, or null when it is a plain LoRA adapter
     * (or not held).
     */
    public Tensor magnitude(String name) {
        if (!children().containsKey("lora_magnitude_vector")) {
            return null;
        }
        DoraMagnitude m = dictM().get(name);
        return m == null ? null : m.weight();
    }

    /**
     * Adapter {@code name}'s scaling {@code s}.
     * @throws NullPointerException if the layer does not hold {@code name}
     */
    public double scaling(String name) {
        return scaling.get(name);
    }

    /**
     * Adapter {@code name}'s rank {@code r}.
     * @throws NullPointerException if the layer does not hold {@code name}
     */
    public int rank(String name) {
        return rank.get(name);
    }

    @Override
    public List<String> adapterNames() {
        return dictA().keys();
    }

    @Override
    public Map<String, Tensor> adapterParameters(String name) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        Linear a = dictA().get(name);
        Linear b = dictB().get(name);
        if (a == null) {
            return out;
        }
        out.put("lora_A." + name + ".weight", a.weight());
        out.put("lora_B." + name + ".weight", b.weight());
        if (b.bias() != null) {
            out.put("lora_B." + name + ".bias", b.bias());
        }
        Tensor m = magnitude(name);
        if (m != null) {
            out.put("lora_magnitude_vector." + name + ".weight", m);
        }
        return out;
    }

    @Override
    protected Iterable<Tensor> adapterTensors(String name) {
        Linear a = dictA().get(name);
        if (a == null) {
            return List.of();
        }
        Linear b = dictB().get(name);
        Tensor m = magnitude(name);
        if (m != null) {
            return List.of(a.weight(), b.weight(), m);
        }
        return b.bias() == null ? List.of(a.weight(), b.weight()) : List.of(a.weight(), b.weight(), b.bias());
    }

    @Override
    protected void removeAdapter(String name) {
        closeNative(); // before the tensors it points at go
        dictA().remove(name).close();
        dictB().remove(name).close();
        if (magnitude(name) != null) {
            dictM().remove(name).close();
        }
        Tensor norm = mergedDoraNorms.remove(name);
        if (norm != null) {
            norm.close();
        }
        scaling.remove(name);
        dropout.remove(name);
        rank.remove(name);
    }

    private LoraMath.Adapter adapter(String name) {
        Linear a = dictA().get(name);
        Linear b = dictB().get(name);
        return new LoraMath.Adapter(a.weight(), b.weight(), b.bias(), scaling.get(name), dropout.get(name));
    }

    @Override
    public Tensor forward(Tensor x) {
        if (disabled()) {
            if (merged()) {
                unmerge();
            }
            return baseForward(x);
        }
        List<String> perSample = currentAdapterNames();
        if (perSample != null) {
            if (merged()) {
                throw new IllegalStateException(
                        "Cannot pass `adapter_names` when there are merged adapters, please call `unmerge_adapter` first.");
            }
            checkNoDora(perSample);
            if (kernelEligible(x) && !wrapsTunerLayer()) {
                Tensor y = nativeMixed(x, perSample);
                if (y != null) {
                    return y;
                }
            }
            Map<String, LoraMath.Adapter> all = new LinkedHashMap<>();
            for (String n : adapterNames()) {
                all.put(n, adapter(n));
            }
            try (Tensor base = baseForward(x)) {
                return LoraMath.mixedBatchForward(base, x, perSample, all, isTraining());
            }
        }
        if (merged()) {
            return baseForward(x);
        }
        if (kernelEligible(x) && !wrapsTunerLayer()) { // nested: composed around the inner layer's output
            NativeLinear nat = null;
            synchronized (this) {
                refreshNative();
                if (activeNative != null && !(activeDropout && isTraining()) && activeNative.acceptsInput(x)) {
                    if (activeDora != null) {
                        activeNative.setDoraScale(activeDora.current()); // the same array unless W, A, B or m changed
                    }
                    nat = activeNative;
                }
            }
            if (nat != null) {
                return nat.forward(x, this::baseForward, null);
            }
        }
        List<LoraMath.Adapter> act = new ArrayList<>();
        List<Tensor> mags = new ArrayList<>();
        boolean dora = false;
        for (String n : activeAdapters()) {
            if ((dictA().get(n) != null)) {
                act.add(adapter(n));
                Tensor m = magnitude(n);
                mags.add(m);
                dora |= m != null;
            }
        }
        if (act.isEmpty()) {
            return baseForward(x);
        }
        try (Tensor base = baseForward(x)) {
            return dora ? DoraMath.forward(base, x, act, mags, baseWeight(), baseBias(), fanInFanOut, isTraining())
                    : LoraMath.forward(base, x, act, isTraining());
        }
    }

    /**
     * The native decode state that {@link #forward} runs for {@code x} now: the base layer's when the adapters are
     * disabled or merged, the fused kernel with the active adapters otherwise; null when x takes another path (a
     * mixed batch, DoRA, dropout in training, the composed ops).
     */
    @Override
    public DecodeLinear decodeLinear(Tensor x) {
        List<String> perSample = currentAdapterNames();
        if (perSample != null) {
            boolean grouped = dev.peft4j.kernels.DecodeKernels.Switch.MIXED_GROUP.on();
            return disabled() || merged() || !grouped ? null : mixedDecodeLinear(x, perSample);
        }
        if (disabled() || merged()) {
            // disabled and merged: forward unmerges first, so leave it to forward
            return disabled() && merged() || !(baseLayer() instanceof DecodeLinearSource s) ? null : s.decodeLinear(x);
        }
        if (!kernelEligible(x)) {
            return null;
        }
        synchronized (this) {
            refreshNative();
            if (activeNative == null || activeDropout && isTraining() || activeDora != null
                    || !activeNative.acceptsInput(x)) {
                return null;
            }
            if (baseLayer() instanceof QuantizedLinear q) {
                // the quantized product, then the adapters' delta in place, as forward runs them
                return q.decodeLinear(x, activeNative.deltaSlots());
            }
            return activeNative.decodeLinear(x);
        }
    }

    /**
     * The decode state of a mixed batch: the layer's adapters as slots with each row's adapter index, as
     * {@link #nativeMixed} runs it; null when forward takes another path (or refuses the batch: DoRA, a wrong length).
     */
    private DecodeLinear mixedDecodeLinear(Tensor x, List<String> perSample) {
        if (!kernelEligible(x) || wrapsTunerLayer() || x.dim() < 2 || perSample.size() != x.size(0)) {
            return null;
        }
        for (String n : new java.util.LinkedHashSet<>(perSample)) {
            if (!BASE_ADAPTER_NAME.equals(n) && magnitude(n) != null) {
                return null; // forward raises PEFT's error
            }
        }
        int[] rowSlot = mixedRowSlot(x, perSample);
        if (rowSlot == null) {
            return null;
        }
        synchronized (this) {
            if (baseLayer() instanceof QuantizedLinear q) {
                DecodeLinear d = q.decodeLinear(x, mixedNative.deltaSlots());
                return d == null ? null : d.perRow(rowSlot);
            }
            DecodeLinear d = mixedNative.decodeLinear(x);
            return d == null ? null : d.perRow(rowSlot);
        }
    }

    /** PEFT's {@code _check_forward_args}: a mixed batch may not name a DoRA adapter of this layer. */
    private void checkNoDora(List<String> perSample) {
        for (String n : new java.util.LinkedHashSet<>(perSample)) {
            if (!BASE_ADAPTER_NAME.equals(n) && magnitude(n) != null) {
                throw new IllegalArgumentException("Cannot pass `adapter_names` when DoRA is enabled.");
            }
        }
    }

    /**
     * Brings the native state up to date if it is stale: a state built on the same base tensors is kept (only its
     * slots change, and not at all when they are the same), so toggling adapters costs no native allocation.
     * The mixed-batch slots are brought up to date on their first use.
     */
    private synchronized void refreshNative() {
        if (!takeKernelsStale()) {
            return;
        }
        List<String> act = new ArrayList<>();
        for (String n : activeAdapters()) {
            if (dictA().get(n) != null) {
                act.add(n);
            }
        }
        activeDora = null;
        boolean fusable = true;
        for (int i = 0; i < act.size(); i++) {
            // DoRA rescales everything before it (base and earlier adapters), not what later adapters add
            if (magnitude(act.get(i)) != null && i != act.size() - 1) {
                fusable = false;
            }
        }
        activeNative = act.isEmpty() || !fusable ? keepOrClose(activeNative, null) : update(activeNative, act);
        if (activeNative != null) {
            String last = act.get(act.size() - 1);
            Tensor m = magnitude(last);
            if (m != null) {
                Linear a = dictA().get(last);
                Linear b = dictB().get(last);
                activeDora = new DoraScale(baseWeight(), a.weight(), b.weight(), m, scaling.get(last), fanInFanOut);
            } else {
                activeNative.setDoraScale(null);
            }
        }
        activeDropout = act.stream().anyMatch(n -> dropout.get(n) > 0);
        mixedBuilt = false;
    }

    private Tensor nativeMixed(Tensor x, List<String> perSample) {
        int[] rowSlot = mixedRowSlot(x, perSample);
        return rowSlot == null ? null : mixedNative.forward(x, this::baseForward, rowSlot);
    }

    /**
     * The mixed-batch slots brought up to date, and each row's slot index (-1 for __base__ and names the layer does
     * not hold); null when the native mixed state cannot serve x.
     */
    private int[] mixedRowSlot(Tensor x, List<String> perSample) {
        refreshNative();
        synchronized (this) {
            if (!mixedBuilt) {
                mixedBuilt = true;
                mixedNames = adapterNames();
                mixedNative = mixedNames.isEmpty() || mixedNames.size() > LoraDelta.MAX_SLOTS
                        ? keepOrClose(mixedNative, null) : update(mixedNative, mixedNames);
                mixedDropout = mixedNames.stream().anyMatch(n -> dropout.get(n) > 0);
            }
        }
        if (mixedNative == null || (mixedDropout && isTraining()) || !mixedNative.acceptsInput(x) || x.dim() < 2
                || perSample.size() != x.size(0)) {
            return null; // the composed path serves it (and reports a length mismatch with PEFT's message)
        }
        long perRow = x.numel() / x.size(0) / inFeatures;
        int[] rowSlot = new int[Math.toIntExact(x.numel() / inFeatures)];
        for (int i = 0, k = 0; i < perSample.size(); i++) {
            int slot = mixedNames.indexOf(perSample.get(i)); // -1 for __base__ and names the layer does not hold
            for (long j = 0; j < perRow; j++) {
                rowSlot[k++] = slot;
            }
        }
        return rowSlot;
    }

    /**
     * {@code state} (or a new one when it was built on other base tensors) serving {@code names} as slots; null, and
     * {@code state} closed, when some tensor cannot be served natively.
     */
    private NativeLinear update(NativeLinear state, List<String> names) {
        NativeLinear s;
        if (baseLayer() instanceof QuantizedLinear q) {
            Tensor key = q.weight().panels();
            s = state != null && state.sameBase(key, null) ? state
                    : keepOrClose(state, NativeLinear.createForQuantized(q, key));
        } else {
            Tensor w = baseWeight();
            Tensor bias = baseBias();
            s = state != null && state.sameBase(w, bias) ? state
                    : keepOrClose(state, NativeLinear.create(w, bias, fanInFanOut));
        }
        if (s == null) {
            return null;
        }
        List<FusedLoraLinear.Adapter> slots = new ArrayList<>();
        for (String n : names) {
            Linear a = dictA().get(n);
            Linear b = dictB().get(n);
            if (b.bias() != null || !s.accepts(a.weight()) || !s.accepts(b.weight())) {
                s.close();
                return null;
            }
            slots.add(new FusedLoraLinear.Adapter(a.weight(), b.weight(), (float) (double) scaling.get(n)));
        }
        s.setSlots(slots);
        return s;
    }

    /** {@code t} out of any caller's scope: state kept across calls (the layer closes it). */
    static Tensor keepOwned(Tensor t) {
        org.bytedeco.javacpp.PointerScope scope = org.bytedeco.javacpp.PointerScope.getInnerScope();
        if (scope != null) {
            t.retainReference();
            scope.detach(t);
        }
        return t;
    }

    /** Closes {@code old} unless it is {@code replacement}; returns {@code replacement}. */
    private static NativeLinear keepOrClose(NativeLinear old, NativeLinear replacement) {
        if (old != null && old != replacement) {
            old.close();
        }
        return replacement;
    }

    private synchronized void closeNative() {
        freeNative();
        markKernelsDirty();
    }

    private void freeNative() {
        if (activeNative != null) {
            activeNative.close();
            activeNative = null;
        }
        if (mixedNative != null) {
            mixedNative.close();
            mixedNative = null;
        }
        mixedBuilt = false;
    }

    @Override
    protected void releaseNative() {
        closeNative();
        mergedDoraNorms.values().forEach(Tensor::close);
        mergedDoraNorms.clear();
    }

    @Override
    public void merge(List<String> names, boolean safeMerge) {
        markKernelsDirty();
        List<String> todo = new ArrayList<>();
        for (String n : names) {
            if (mergedList().contains(n)) {
                continue;
            }
            if ((dictA().get(n) != null)) {
                todo.add(n);
            }
        }
        if (todo.isEmpty()) {
            return;
        }
        for (String n : todo) {
            Tensor m = magnitude(n);
            if (m != null) {
                Tensor norm = DoraMath.mergeLinear(baseWeight(), adapter(n), m, fanInFanOut, safeMerge, n);
                Tensor old = mergedDoraNorms.put(n, keepOwned(norm));
                if (old != null) {
                    old.close();
                }
            } else {
                LoraMath.merge(baseWeight(), baseBias(), adapter(n), fanInFanOut, safeMerge, n);
            }
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
        while (!mergedList().isEmpty()) {
            String n = mergedList().remove(mergedList().size() - 1);
            if ((dictA().get(n) != null)) {
                Tensor norm = mergedDoraNorms.remove(n);
                if (norm != null) {
                    DoraMath.unmergeLinear(baseWeight(), adapter(n), magnitude(n), norm, fanInFanOut);
                    norm.close();
                } else {
                    LoraMath.unmerge(baseWeight(), baseBias(), adapter(n), fanInFanOut);
                }
            }
        }
    }

    /**
     * Hotswap: adapter {@code name} takes the factors {@code a} {@code (r, in)} and {@code b} {@code (out, r)}, the
     * {@code lora_B} bias {@code bBias} (null without {@code lora_bias}) and the scaling {@code scale}. Values are
     * copied into the adapter's own tensors when the shapes are theirs, else new factors of rank {@code r} replace
     * them (the old ones freed); dtype, {@code requires_grad} and training mode stay the adapter's. The caller makes
     * sure no forward runs meanwhile.
     *
     * @throws IllegalArgumentException the layer does not hold {@code name}, or a shape does not fit the layer
     */
    public void swapAdapter(String name, Tensor a, Tensor b, Tensor bBias, double scale) {
        Linear la = dictA().get(name);
        Linear lb = dictB().get(name);
        if (la == null) {
            throw new IllegalArgumentException("layer does not hold adapter '" + name + "'");
        }
        if (a.dim() != 2 || b.dim() != 2 || a.size(1) != inFeatures || b.size(0) != outFeatures
                || a.size(0) != b.size(1) || (bBias == null) != (lb.bias() == null)) {
            throw new IllegalArgumentException("adapter '" + name + "': lora_A " + java.util.Arrays.toString(a.shape())
                    + " / lora_B " + java.util.Arrays.toString(b.shape()) + " do not fit a layer with in="
                    + inFeatures + ", out=" + outFeatures);
        }
        try (org.bytedeco.pytorch.NoGradGuard g = new org.bytedeco.pytorch.NoGradGuard()) {
            if (a.size(0) == la.outFeatures()) {
                markKernelsDirty(); // same tensors, new values and scaling: the native slots are refreshed
                la.weight().copy_(a);
                lb.weight().copy_(b);
                if (bBias != null) {
                    lb.bias().copy_(bBias);
                }
            } else {
                closeNative(); // it points at the factors about to be freed
                org.bytedeco.pytorch.global.torch.ScalarType dt = la.weight().scalar_type();
                Linear na = new Linear(inFeatures, a.size(0), false, dev.peft4j.nn.Init.cpu(dt));
                Linear nb = new Linear(a.size(0), outFeatures, bBias != null, dev.peft4j.nn.Init.cpu(dt));
                na.weight().copy_(a);
                nb.weight().copy_(b);
                if (bBias != null) {
                    nb.bias().copy_(bBias);
                    nb.bias().requires_grad_(lb.bias().requires_grad());
                }
                na.weight().requires_grad_(la.weight().requires_grad());
                nb.weight().requires_grad_(lb.weight().requires_grad());
                na.train(la.isTraining());
                nb.train(lb.isTraining());
                dictA().put(name, na).close();
                dictB().put(name, nb).close();
                rank.put(name, (int) a.size(0));
            }
        }
        scaling.put(name, scale);
    }

    /**
     * Hotswap of a DoRA adapter: its magnitude vector takes the values of {@code m} {@code (out,)} (copied into the
     * adapter's own tensor, so the cached DoRA factor sees the change). The caller makes sure no forward runs
     * meanwhile.
     *
     * @throws IllegalArgumentException the layer holds no DoRA adapter {@code name}, or {@code m} has another shape
     */
    public void swapMagnitude(String name, Tensor m) {
        Tensor old = magnitude(name);
        if (old == null || !Arrays.equals(old.shape(), m.shape())) {
            throw new IllegalArgumentException("adapter '" + name + "': no DoRA magnitude of shape "
                    + Arrays.toString(m.shape()) + " in this layer (out=" + outFeatures + ")");
        }
        markKernelsDirty();
        try (org.bytedeco.pytorch.NoGradGuard g = new org.bytedeco.pytorch.NoGradGuard()) {
            old.copy_(m);
        }
    }
}

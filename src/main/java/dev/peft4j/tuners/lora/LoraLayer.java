package dev.peft4j.tuners.lora;

import dev.peft4j.nn.Conv1D;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.nn.QuantizedLinear;
import dev.peft4j.kernels.FusedLoraLinear;
import dev.peft4j.kernels.LoraDelta;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.LinearShape;
import dev.peft4j.tuners.NativeLinear;
import dev.peft4j.nn.ModuleDict;
import java.util.ArrayList;
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
 */
public final class LoraLayer extends BaseTunerLayer {
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

    /** Wraps {@code base}, a {@link Linear}, {@link Conv1D} or {@link QuantizedLinear}. */
    public LoraLayer(Module base) {
        super(base);
        LinearShape shape = LinearShape.of(base);
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
        if ((dictA().get(name) != null)) {
            throw new IllegalArgumentException("layer already holds adapter '" + name + "'");
        }
        if (a.inFeatures() != inFeatures || b.outFeatures() != outFeatures || a.outFeatures() != b.inFeatures()) {
            throw new IllegalArgumentException("adapter '" + name + "': lora_A (" + a.outFeatures() + ", "
                    + a.inFeatures() + ") / lora_B (" + b.outFeatures() + ", " + b.inFeatures()
                    + ") do not fit a base layer with in=" + inFeatures + ", out=" + outFeatures);
        }
        markKernelsDirty();
        dictA().put(name, a);
        dictB().put(name, b);
        scaling.put(name, scale);
        dropout.put(name, dropoutP);
        rank.put(name, (int) a.outFeatures());
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
        return out;
    }

    @Override
    protected Iterable<Tensor> adapterTensors(String name) {
        Linear a = dictA().get(name);
        if (a == null) {
            return List.of();
        }
        Linear b = dictB().get(name);
        return b.bias() == null ? List.of(a.weight(), b.weight()) : List.of(a.weight(), b.weight(), b.bias());
    }

    @Override
    protected void removeAdapter(String name) {
        closeNative(); // before the tensors it points at go
        dictA().remove(name).close();
        dictB().remove(name).close();
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
            if (kernelEligible(x)) {
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
        if (kernelEligible(x)) {
            refreshNative();
            if (activeNative != null && !(activeDropout && isTraining()) && activeNative.acceptsInput(x)) {
                return activeNative.forward(x, this::baseForward, null);
            }
        }
        List<LoraMath.Adapter> act = new ArrayList<>();
        for (String n : activeAdapters()) {
            if ((dictA().get(n) != null)) {
                act.add(adapter(n));
            }
        }
        if (act.isEmpty()) {
            return baseForward(x);
        }
        try (Tensor base = baseForward(x)) {
            return LoraMath.forward(base, x, act, isTraining());
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
        activeNative = act.isEmpty() ? keepOrClose(activeNative, null) : update(activeNative, act);
        activeDropout = act.stream().anyMatch(n -> dropout.get(n) > 0);
        mixedBuilt = false;
    }

    private Tensor nativeMixed(Tensor x, List<String> perSample) {
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
        return mixedNative.forward(x, this::baseForward, rowSlot);
    }

    /**
     * {@code state} (or a new one when it was built on other base tensors) serving {@code names} as slots; null, and
     * {@code state} closed, when some tensor cannot be served natively.
     */
    private NativeLinear update(NativeLinear state, List<String> names) {
        NativeLinear s;
        if (baseLayer() instanceof QuantizedLinear q) {
            Tensor key = q.weight().values();
            s = state != null && state.sameBase(key, null) ? state
                    : keepOrClose(state, NativeLinear.createForQuantized(key, inFeatures, outFeatures, q.dtype()));
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
            LoraMath.merge(baseWeight(), baseBias(), adapter(n), fanInFanOut, safeMerge, n);
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
                LoraMath.unmerge(baseWeight(), baseBias(), adapter(n), fanInFanOut);
            }
        }
    }
}

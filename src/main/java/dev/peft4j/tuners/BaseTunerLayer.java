package dev.peft4j.tuners;

import dev.peft4j.nn.Layer;
import dev.peft4j.nn.Module;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;
import dev.peft4j.kernels.Kernels;
import org.bytedeco.pytorch.GradMode;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * PEFT's {@code BaseTunerLayer}: a wrapper that keeps the adapted module as child {@code base_layer} and holds
 * per-adapter state keyed by adapter name, the active adapter list, the disabled flag and the merged adapters.
 */
public abstract class BaseTunerLayer extends Module implements Layer {
    /** The name of the child that holds the adapted module, as in PEFT's state-dict keys. */
    public static final String BASE_LAYER = "base_layer";
    /** The per-sample adapter name that means "no adapter" in a mixed batch. */
    public static final String BASE_ADAPTER_NAME = "__base__";
    /** The mixed-batch context: per-sample adapter names of the forward running on this thread, or none. */
    private static final ThreadLocal<List<String>> MIXED_BATCH = new ThreadLocal<>();
    private final List<String> active = new ArrayList<>();
    private final List<String> merged = new ArrayList<>();
    private boolean disabled;
    private boolean kernelsDirty = true;
    private long kernelsEpoch = -1;

    /**
     * Wraps {@code base}, registered as child {@link #BASE_LAYER}.
     * @throws IllegalArgumentException if {@code base} is not a {@link Layer}
     */
    protected BaseTunerLayer(Module base) {
        if (!(base instanceof Layer)) {
            throw new IllegalArgumentException("base layer " + base.typeName() + " is not a Layer");
        }
        registerModule(BASE_LAYER, base);
    }

    /**
     * Runs {@code body} with per-sample adapter names for every tuner layer's forward on this thread (PEFT's
     * {@code adapter_names=} argument, §6.6): sample {@code i} (dim 0) gets adapter {@code names.get(i)},
     * {@value #BASE_ADAPTER_NAME} none. Layers that support mixed batches (LoRA, modules_to_save) read the names;
     * the others refuse a forward inside this call. The context is thread-local, so forwards on other threads are
     * not affected and each may run its own mixed batch; a nested call replaces the names until it returns.
     */
    public static <T> T withAdapterNames(List<String> names, Supplier<T> body) {
        List<String> before = MIXED_BATCH.get();
        MIXED_BATCH.set(List.copyOf(names));
        try {
            return body.get();
        } finally {
            if (before == null) {
                MIXED_BATCH.remove();
            } else {
                MIXED_BATCH.set(before);
            }
        }
    }

    /** The per-sample adapter names set by {@link #withAdapterNames} on this thread, or null. */
    public static List<String> currentAdapterNames() {
        return MIXED_BATCH.get();
    }

    /**
     * The dtype adapter tensors get, for every method (§6.10): created in fp32, cast to the base weight's dtype when
     * that is a floating type (an integer/quantised base keeps fp32), and — on PeftModel's path
     * ({@code autocast_adapter_dtype=True}) — fp16, bf16 and float8 adapters upcast back to fp32. The transformers
     * integration never upcasts.
     */
    public static ScalarType adapterDtype(ScalarType baseWeightDtype, boolean autocastAdapterDtype) {
        ScalarType base = baseWeightDtype.intern();
        if (!torch.isFloatingType(base)) {
            return ScalarType.Float;
        }
        boolean low = base == ScalarType.Half || base == ScalarType.BFloat16 || base.name().startsWith("Float8");
        return autocastAdapterDtype && low ? ScalarType.Float : base;
    }

    /** The wrapped module: the adapted module, or a tuner layer of another method that wraps it (nesting). */
    public final Module baseLayer() {
        return child(BASE_LAYER);
    }

    /**
     * PEFT's {@code get_base_layer()}: {@code m}'s {@code base_layer} followed down through every nested tuner layer
     * to the adapted module itself; {@code m} when it is not a tuner layer.
     */
    public static Module innermost(Module m) {
        while (m instanceof BaseTunerLayer t) {
            m = t.baseLayer();
        }
        return m;
    }

    /**
     * Whether this layer wraps a tuner layer of another method (transformers' integration nests a second method's
     * layer around the first's): its forward then composes around the inner layer's output, which no fused kernel
     * built on the adapted module's weight can reproduce.
     */
    public final boolean wrapsTunerLayer() {
        return baseLayer() instanceof BaseTunerLayer;
    }

    /**
     * PEFT's {@code tuner_layer_cls} this layer belongs to: a tuner's activation after an injection
     * ({@code BaseTuner.set_adapter(..., layer_cls)}) reaches only its own class's layers. LoRA and AdaLoRA share
     * {@code "LoraLayer"} (PEFT's {@code AdaLoraLayer} subclasses {@code LoraLayer}); by default the class's name.
     */
    public String tunerLayerClass() {
        return getClass().getSimpleName();
    }

    /**
     * The weight of the adapted {@code Linear} or {@code Conv1D} ({@code [out, in]}, resp. {@code [in, out]}), below
     * any nested tuner layer, as PEFT's {@code get_base_layer().weight}.
     */
    protected final Tensor baseWeight() {
        return LinearShape.weight(innermost(baseLayer()));
    }

    /** The bias of the adapted {@code Linear} or {@code Conv1D} (below any nested tuner layer), or null. */
    protected final Tensor baseBias() {
        return LinearShape.bias(innermost(baseLayer()));
    }

    /**
     * PEFT's forward prologue for a method without mixed batches (IA³, AdaLoRA): the base output when the adapters
     * are disabled (a merged layer unmerged first) or merged; null when the adapters must be applied. A mixed batch
     * ({@code adapter_names}) is refused, naming {@code method}.
     */
    protected final Tensor baseOnlyForward(Tensor x, String method) {
        if (disabled()) {
            if (merged()) {
                unmerge();
            }
            return baseForward(x);
        }
        if (currentAdapterNames() != null) {
            throw new UnsupportedOperationException("adapter_names (a mixed batch) is supported for LoRA only, not for "
                    + "the " + method + " layer " + typeName());
        }
        return merged() ? baseForward(x) : null;
    }

    /** The base layer's output for {@code x}, without any adapter. */
    protected final Tensor baseForward(Tensor x) {
        return layer(BASE_LAYER).forward(x);
    }

    /**
     * Marks the layer's native inference state stale. O(1): activation changes only set this flag, and the next
     * inference forward rebuilds the state (so a {@code setAdapter} over a whole model stays cheap).
     */
    protected final void markKernelsDirty() {
        kernelsDirty = true;
    }

    /**
     * Whether the native state must be rebuilt before this forward — after {@link #markKernelsDirty()}, or when
     * any module tensor was replaced since the last rebuild ({@link Module#tensorEpoch()}: a load, {@code to(dtype)})
     * — and clears that condition.
     */
    protected final boolean takeKernelsStale() {
        long epoch = Module.tensorEpoch();
        boolean stale = kernelsDirty || epoch != kernelsEpoch;
        kernelsDirty = false;
        kernelsEpoch = epoch;
        return stale;
    }

    /**
     * Whether this forward may take the native kernels: the switch is on ({@link Kernels#fusedLayers()}), autograd
     * is off (no grad mode / inference mode — how the project's inference entry points run) and x is on the CPU.
     * The dtype and the layer's own tensors are checked by the layer; anything else runs the composed ops.
     */
    protected static boolean kernelEligible(Tensor x) {
        return Kernels.fusedLayers() && !GradMode.is_enabled() && x.is_cpu();
    }

    /** Names of the adapters this layer holds, in insertion order. */
    public abstract List<String> adapterNames();

    /** The adapter's parameters under their local keys ({@code lora_A.default.weight}), the layer's own tensors. */
    public abstract Map<String, Tensor> adapterParameters(String adapterName);

    /** Removes the adapter's containers and frees its tensors. */
    protected abstract void removeAdapter(String adapterName);

    /**
     * PEFT's {@code merge(safe_merge, adapter_names)}: merges each named adapter this layer holds and has not merged
     * yet into the base weight, in order; names it does not hold are skipped. With {@code safeMerge} the merged weights
     * are computed aside and checked first.
     * @throws IllegalArgumentException with {@code safeMerge}, if the merged weights would hold NaN or infinity (that
     *     adapter's merge leaves the base weight as it was)
     * @throws IllegalStateException for a LoRA adapter with {@code lora_bias} on a base layer without bias
     */
    public abstract void merge(List<String> adapterNames, boolean safeMerge);

    /**
     * PEFT's {@code unmerge}: takes the merged adapters back out of the base weight, last merged first; warns when none
     * is merged.
     */
    public abstract void unmerge();

    /** The active adapters, in order (unmodifiable). */
    public final List<String> activeAdapters() {
        return Collections.unmodifiableList(active);
    }

    /** The merged adapters, in the order merged (unmodifiable). */
    public final List<String> mergedAdapters() {
        return Collections.unmodifiableList(merged);
    }

    /** Whether any adapter is merged into the base weight. */
    public final boolean merged() {
        return !merged.isEmpty();
    }

    /** The merged adapters, for subclasses to update as they merge and unmerge. */
    protected final List<String> mergedList() {
        return merged;
    }

    /** Whether the adapters are disabled: forward is then the base layer's alone. */
    public final boolean disabled() {
        return disabled;
    }

    /**
     * {@code BaseTunerLayer.set_adapter}: the active list becomes exactly {@code names} (those the layer holds are
     * trainable, the others frozen).
     */
    public final void setAdapter(List<String> names) {
        markKernelsDirty();
        active.clear();
        active.addAll(names);
        for (String a : adapterNames()) {
            boolean on = names.contains(a);
            for (Tensor t : adapterTensors(a)) {
                if (t.requires_grad() != on) {
                    t.requires_grad_(on);
                }
            }
        }
    }

    /**
     * The adapter's parameter tensors (the values of {@link #adapterParameters}), for bookkeeping loops such as
     * {@link #setAdapter}; a layer may override it to skip building the named map.
     */
    protected Iterable<Tensor> adapterTensors(String adapterName) {
        return adapterParameters(adapterName).values();
    }

    /** {@code enable_adapters(enabled)}: enabling re-applies the active list; disabling freezes every adapter. */
    public final void enableAdapters(boolean enabled) {
        markKernelsDirty();
        if (enabled) {
            setAdapter(new ArrayList<>(active));
            disabled = false;
        } else {
            for (String a : adapterNames()) {
                for (Tensor t : adapterParameters(a).values()) {
                    t.requires_grad_(false);
                }
            }
            disabled = true;
        }
    }

    /**
     * {@code BaseTunerLayer.delete_adapter}: removes the adapter; if it was active the remaining active ones stay
     * active, else the alphabetically first remaining adapter becomes active, else none.
     */
    public final void deleteAdapter(String name) {
        markKernelsDirty();
        if (adapterNames().contains(name)) {
            removeAdapter(name);
        }
        merged.remove(name);
        if (active.contains(name)) {
            List<String> rest = new ArrayList<>(active);
            rest.remove(name);
            if (rest.isEmpty()) {
                List<String> remaining = new ArrayList<>(adapterNames());
                Collections.sort(remaining);
                if (!remaining.isEmpty()) {
                    rest.add(remaining.get(0));
                }
            }
            setAdapter(rest);
        }
    }
}

package dev.peft4j.tuners.lora;

import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Module;
import dev.peft4j.nn.ModuleDict;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.nn.ParameterDict;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * PEFT's {@code lora.Embedding}: bare parameters {@code lora_embedding_A.<name>} {@code (r, num_embeddings)} and
 * {@code lora_embedding_B.<name>} {@code (embedding_dim, r)}; no dropout, no input casting. Mixed batches supported
 * (per-row adapters, {@value LoraMath#BASE_ADAPTER_NAME} = none). DoRA adapters hold a magnitude vector
 * {@code lora_magnitude_vector.<name>.weight} of {@code embedding_dim} entries ({@link DoraMath}); a mixed batch naming
 * one is refused, as PEFT.
 */
public final class LoraEmbedding extends BaseTunerLayer {
    private static final Logger LOG = LoggerFactory.getLogger(LoraEmbedding.class);
    private final long numEmbeddings;
    private final long embeddingDim;
    private final Map<String, Double> scaling = new LinkedHashMap<>();
    // the weight norm each merged DoRA adapter was merged with, for its unmerge
    private final Map<String, Tensor> mergedDoraNorms = new LinkedHashMap<>();

    /** Wraps {@code base} with no adapter yet. */
    public LoraEmbedding(Embedding base) {
        super(base);
        numEmbeddings = base.numEmbeddings();
        embeddingDim = base.embeddingDim();
        registerModule("lora_embedding_A", new ParameterDict());
        registerModule("lora_embedding_B", new ParameterDict());
    }

    @Override
    public String typeName() {
        return "lora.Embedding";
    }

    @Override
    public String tunerLayerClass() {
        return "LoraLayer";
    }

    private ParameterDict d(String n) {
        return (ParameterDict) child(n);
    }

    /**
     * Adds adapter {@code name}: {@code embA} {@code (r, num_embeddings)}, {@code embB} {@code (embedding_dim, r)},
     * scaled by {@code scale}, requiring gradients when {@code trainable}. The layer takes ownership of the tensors.
     * @throws IllegalArgumentException if the shapes do not fit the base embedding
     */
    public void addAdapter(String name, Tensor embA, Tensor embB, double scale, boolean trainable) {
        addAdapter(name, embA, embB, scale, trainable, null);
    }

    /**
     * Adds adapter {@code name}, a DoRA one when {@code magnitude} ({@code (embedding_dim,)}) is given; as
     * {@link #addAdapter(String, Tensor, Tensor, double, boolean)} otherwise.
     * @throws IllegalArgumentException if the shapes do not fit the base embedding
     */
    public void addAdapter(String name, Tensor embA, Tensor embB, double scale, boolean trainable,
            DoraMagnitude magnitude) {
        if (magnitude != null && (magnitude.weight().dim() != 1 || magnitude.weight().size(0) != embeddingDim)) {
            throw new IllegalArgumentException("adapter '" + name + "': lora_magnitude_vector has shape "
                    + Arrays.toString(magnitude.weight().shape()) + ", the Embedding needs [" + embeddingDim + "]");
        }
        if (embA.size(1) != numEmbeddings || embB.size(0) != embeddingDim || embA.size(0) != embB.size(1)) {
            throw new IllegalArgumentException("adapter '" + name + "': lora_embedding_A " + Arrays.toString(embA.shape())
                    + " / lora_embedding_B " + Arrays.toString(embB.shape()) + " do not fit an Embedding("
                    + numEmbeddings + ", " + embeddingDim + ")");
        }
        d("lora_embedding_A").put(name, embA, trainable);
        d("lora_embedding_B").put(name, embB, trainable);
        if (magnitude != null) {
            if (!children().containsKey("lora_magnitude_vector")) {
                registerModule("lora_magnitude_vector", new ModuleDict<DoraMagnitude>());
            }
            dictM().put(name, magnitude);
        }
        scaling.put(name, scale);
    }

    /**
     * Adapter {@code name}'s scaling {@code s}.
     * @throws NullPointerException if the layer does not hold {@code name}
     */
    public double scaling(String name) {
        return scaling.get(name);
    }

    @SuppressWarnings("unchecked")
    private ModuleDict<DoraMagnitude> dictM() {
        return (ModuleDict<DoraMagnitude>) child("lora_magnitude_vector");
    }

    /** Adapter {@code name}'s DoRA magnitude vector {@code (embedding_dim,)}, or null for a plain LoRA adapter. */
    public Tensor magnitude(String name) {
        if (!children().containsKey("lora_magnitude_vector")) {
            return null;
        }
        DoraMagnitude m = dictM().get(name);
        return m == null ? null : m.weight();
    }

    @Override
    public List<String> adapterNames() {
        return d("lora_embedding_A").keys();
    }

    @Override
    public Map<String, Tensor> adapterParameters(String name) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        if ((d("lora_embedding_A").get(name) != null)) {
            out.put("lora_embedding_A." + name, d("lora_embedding_A").get(name));
            out.put("lora_embedding_B." + name, d("lora_embedding_B").get(name));
            Tensor m = magnitude(name);
            if (m != null) {
                out.put("lora_magnitude_vector." + name + ".weight", m);
            }
        }
        return out;
    }

    @Override
    protected void removeAdapter(String name) {
        d("lora_embedding_A").remove(name).close();
        d("lora_embedding_B").remove(name).close();
        if (magnitude(name) != null) {
            dictM().remove(name).close();
        }
        Tensor norm = mergedDoraNorms.remove(name);
        if (norm != null) {
            norm.close();
        }
        scaling.remove(name);
    }

    private LoraMath.Adapter adapter(String n) {
        return new LoraMath.Adapter(d("lora_embedding_A").get(n), d("lora_embedding_B").get(n), scaling.get(n));
    }

    private Tensor weight() {
        return ((Embedding) baseLayer()).weight();
    }

    @Override
    public Tensor forward(Tensor ids) {
        if (disabled()) {
            if (merged()) {
                unmerge();
            }
            return baseForward(ids);
        }
        List<String> perSample = currentAdapterNames();
        if (perSample != null) {
            if (merged()) {
                throw new IllegalStateException(
                        "Cannot pass `adapter_names` when there are merged adapters, please call `unmerge_adapter` first.");
            }
            if (perSample.size() != ids.size(0)) {
                throw new IllegalArgumentException("Length of `adapter_names` should be the same as the number of "
                        + "inputs, but got " + perSample.size() + " and " + ids.size(0) + " respectively.");
            }
            for (String n : new java.util.LinkedHashSet<>(perSample)) {
                if (!BASE_ADAPTER_NAME.equals(n) && magnitude(n) != null) {
                    throw new IllegalArgumentException("Cannot pass `adapter_names` when DoRA is enabled.");
                }
            }
            try (Tensor base = baseForward(ids)) {
                Tensor result = base.clone();
                for (String n : new java.util.LinkedHashSet<>(perSample)) {
                    if (!(d("lora_embedding_A").get(n) != null)) {
                        continue;
                    }
                    long[] rows = java.util.stream.IntStream.range(0, perSample.size())
                            .filter(i -> perSample.get(i).equals(n)).asLongStream().toArray();
                    try (Tensor idx = Tensor.create(rows, rows.length).to(ids.device(),
                                    org.bytedeco.pytorch.global.torch.ScalarType.Long);
                            Tensor sub = dev.peft4j.nn.DeviceOps.indexSelect(ids, 0, idx);
                            Tensor subBase = dev.peft4j.nn.DeviceOps.indexSelect(result, 0, idx)) {
                        LoraMath.Adapter ad = adapter(n);
                        try (Tensor delta = LoraMath.embeddingDelta(sub, ad.a(), ad.b(), ad.scaling(), -1, null);
                                Tensor sum = subBase.add(delta.to(result.scalar_type()))) {
                            result.index_copy_(0, idx, sum);
                        }
                    }
                }
                return result;
            }
        }
        if (merged()) {
            return baseForward(ids);
        }
        List<LoraMath.Adapter> act = new ArrayList<>();
        boolean dora = false;
        for (String n : activeAdapters()) {
            if ((d("lora_embedding_A").get(n) != null)) {
                act.add(adapter(n));
                dora |= magnitude(n) != null;
            }
        }
        if (act.isEmpty()) {
            return baseForward(ids);
        }
        try (Tensor base = baseForward(ids)) {
            if (!dora) {
                return LoraMath.embeddingForward(base, ids, act, -1, null);
            }
            return doraForward(base, ids);
        }
    }

    // Embedding.forward with a DoRA adapter active: each active adapter in order adds its term or takes its DoRA step
    private Tensor doraForward(Tensor base, Tensor ids) {
        return dev.peft4j.tuners.Scoped.compute(() -> {
            org.bytedeco.pytorch.global.torch.ScalarType outType = base.scalar_type().intern();
            Tensor result = base;
            for (String n : activeAdapters()) {
                if (d("lora_embedding_A").get(n) == null) {
                    continue;
                }
                LoraMath.Adapter ad = adapter(n);
                Tensor m = magnitude(n);
                result = m == null ? result.add(LoraMath.embeddingDelta(ids, ad.a(), ad.b(), ad.scaling(), -1, null))
                        : DoraMath.embeddingStep(result, ids, ad.a(), ad.b(), ad.scaling(), m, weight());
            }
            return result.to(outType);
        });
    }

    @Override
    protected void releaseNative() {
        mergedDoraNorms.values().forEach(Tensor::close);
        mergedDoraNorms.clear();
    }

    @Override
    public void merge(List<String> names, boolean safeMerge) {
        for (String n : names) {
            if (mergedList().contains(n) || !(d("lora_embedding_A").get(n) != null)) {
                continue;
            }
            LoraMath.Adapter ad = adapter(n);
            Tensor m = magnitude(n);
            if (m != null) {
                Tensor norm = DoraMath.mergeEmbedding(weight(), ad.a(), ad.b(), ad.scaling(), m, safeMerge, n);
                Tensor old = mergedDoraNorms.put(n, LoraLayer.keepOwned(norm));
                if (old != null) {
                    old.close();
                }
            } else {
                LoraMath.mergeEmbedding(weight(), ad.a(), ad.b(), ad.scaling(), safeMerge, n);
            }
            mergedList().add(n);
        }
    }

    @Override
    public void unmerge() {
        if (!merged()) {
            LOG.warn("Already unmerged. Nothing to do.");
            return;
        }
        while (!mergedList().isEmpty()) {
            String n = mergedList().remove(mergedList().size() - 1);
            if ((d("lora_embedding_A").get(n) != null)) {
                LoraMath.Adapter ad = adapter(n);
                Tensor norm = mergedDoraNorms.remove(n);
                if (norm != null) {
                    DoraMath.unmergeEmbedding(weight(), ad.a(), ad.b(), ad.scaling(), magnitude(n), norm);
                    norm.close();
                } else {
                    LoraMath.unmergeEmbedding(weight(), ad.a(), ad.b(), ad.scaling());
                }
            }
        }
    }

    /**
     * Hotswap: adapter {@code name} takes {@code embA} {@code (r, num_embeddings)}, {@code embB}
     * {@code (embedding_dim, r)} and the scaling {@code scale}; copied into its tensors when the shapes are theirs,
     * else new tensors replace them (the old ones freed). Dtype and {@code requires_grad} stay the adapter's. The caller
     * makes sure no forward runs meanwhile.
     *
     * @throws IllegalArgumentException the layer does not hold {@code name}, or a shape does not fit the embedding
     */
    public void swapAdapter(String name, Tensor embA, Tensor embB, double scale) {
        Tensor oa = d("lora_embedding_A").get(name);
        Tensor ob = d("lora_embedding_B").get(name);
        if (oa == null) {
            throw new IllegalArgumentException("layer does not hold adapter '" + name + "'");
        }
        if (embA.dim() != 2 || embB.dim() != 2 || embA.size(1) != numEmbeddings || embB.size(0) != embeddingDim
                || embA.size(0) != embB.size(1)) {
            throw new IllegalArgumentException("adapter '" + name + "': lora_embedding_A " + Arrays.toString(embA.shape())
                    + " / lora_embedding_B " + Arrays.toString(embB.shape()) + " do not fit an Embedding("
                    + numEmbeddings + ", " + embeddingDim + ")");
        }
        try (org.bytedeco.pytorch.NoGradGuard g = new org.bytedeco.pytorch.NoGradGuard()) {
            if (embA.size(0) == oa.size(0)) {
                oa.copy_(embA);
                ob.copy_(embB);
            } else {
                boolean trainable = oa.requires_grad();
                Tensor na = embA.to(oa.scalar_type()).contiguous().clone();
                Tensor nb = embB.to(ob.scalar_type()).contiguous().clone();
                d("lora_embedding_A").put(name, na, trainable).close();
                d("lora_embedding_B").put(name, nb, trainable).close();
            }
        }
        scaling.put(name, scale);
    }

    /**
     * Hotswap of a DoRA adapter: its magnitude vector takes the values of {@code m} {@code (embedding_dim,)} (copied
     * into the adapter's own tensor). The caller makes sure no forward runs meanwhile.
     *
     * @throws IllegalArgumentException the layer holds no DoRA adapter {@code name}, or {@code m} has another shape
     */
    public void swapMagnitude(String name, Tensor m) {
        Tensor old = magnitude(name);
        if (old == null || !Arrays.equals(old.shape(), m.shape())) {
            throw new IllegalArgumentException("adapter '" + name + "': no DoRA magnitude of shape "
                    + Arrays.toString(m.shape()) + " in this layer (embedding_dim=" + embeddingDim + ")");
        }
        try (org.bytedeco.pytorch.NoGradGuard g = new org.bytedeco.pytorch.NoGradGuard()) {
            old.copy_(m);
        }
    }
}

package dev.peft4j;

import dev.peft4j.config.LoraConfig;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.tuners.AdapterKeys;
import dev.peft4j.tuners.BaseTuner;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.PendingAdapter;
import dev.peft4j.tuners.lora.LoraEmbedding;
import dev.peft4j.tuners.lora.LoraLayer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.locks.Lock;
import java.util.concurrent.locks.ReadWriteLock;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * Hotswapping a loaded LoRA adapter, as PEFT's {@code hotswap.py} ({@code check_hotswap_configs_compatible},
 * {@code hotswap_adapter_from_state_dict}, {@code prepare_model_for_compiled_hotswap}) with transformers'
 * {@code load_adapter(hotswap=True)} checks: same targets, ranks padded with zeros (up to the
 * {@code enable_peft_hotswap} target, or past it with new tensors), the scaling of each module recomputed from the
 * new config, old tensors the new checkpoint lacks zero-filled.
 *
 * <p>Unlike PEFT, everything is checked and the new tensors are built aside before the model changes, so an error
 * leaves the model as it was; the new values then go in under the write side of the model's forward lock, so that a
 * forward running meanwhile computes with the old adapter or the new one, never a mix. The scaling of a module follows
 * the new config's {@code rank_pattern} / {@code alpha_pattern} for that module, as a fresh load computes it.
 */
final class Hotswap {
    /** {@code CONFIG_KEYS_TO_CHECK[LORA]}. */
    private static final List<String> KEYS_TO_CHECK = List.of("use_rslora", "lora_dropout", "alpha_pattern",
            "use_dora");

    private Hotswap() {
    }

    /** One module's new values, ready to go in; {@code magnitude} is DoRA's vector (null for a plain adapter). */
    private record Swap(BaseTunerLayer layer, Tensor a, Tensor b, Tensor bias, Tensor magnitude, double scaling) {
        void apply(String name) {
            if (layer instanceof LoraLayer l) {
                l.swapAdapter(name, a, b, bias, scaling);
                if (magnitude != null) {
                    l.swapMagnitude(name, magnitude);
                }
            } else {
                LoraEmbedding e = (LoraEmbedding) layer;
                e.swapAdapter(name, a, b, scaling);
                if (magnitude != null) {
                    e.swapMagnitude(name, magnitude);
                }
            }
        }

        void close() {
            a.close();
            b.close();
            if (bias != null) {
                bias.close();
            }
            if (magnitude != null) {
                magnitude.close();
            }
        }
    }

    /**
     * Replaces adapter {@code name}'s weights and scaling by those of {@code checkpoint} and {@code config}.
     *
     * @throws IllegalArgumentException incompatible configs (PEFT's "Configs are incompatible: ..."), checkpoint keys
     *     the adapter does not have ("Hot swapping the adapter did not succeed, unexpected keys found: ..."), a shape
     *     that does not fit the module; the model is unchanged
     * @throws IllegalStateException the adapter is merged, or the calling thread is inside a forward of the model
     */
    static void swap(BaseTuner tuner, String name, PeftConfig old, PeftConfig config,
            Map<String, Tensor> checkpoint, ReadWriteLock lock) {
        checkCompatible(old, config);
        LoraConfig lc = (LoraConfig) config;
        Map<String, BaseTunerLayer> layers = new LinkedHashMap<>();
        for (Map.Entry<String, BaseTunerLayer> e : tuner.tunerLayers().entrySet()) {
            BaseTunerLayer l = e.getValue();
            if ((l instanceof LoraLayer || l instanceof LoraEmbedding) && l.adapterNames().contains(name)) {
                if (l.mergedAdapters().contains(name)) {
                    throw new IllegalStateException("Cannot hotswap adapter '" + name + "' while it is merged (module "
                            + e.getKey() + "); call unmergeAdapter() first");
                }
                layers.put(e.getKey(), l);
            }
        }
        // checkpoint keys → (module, param); anything else is a key the adapter does not have
        Map<String, Map<AdapterKeys.Param, Tensor>> byModule = new LinkedHashMap<>();
        List<String> unexpected = new ArrayList<>();
        for (Map.Entry<String, Tensor> e : checkpoint.entrySet()) {
            Optional<AdapterKeys.ParsedKey> pk = AdapterKeys.parseCheckpointKey(e.getKey());
            BaseTunerLayer l = pk.map(p -> layers.get(p.module())).orElse(null);
            AdapterKeys.Param param = pk.map(AdapterKeys.ParsedKey::param).orElse(null);
            boolean fits = l instanceof LoraLayer ll && (param == AdapterKeys.Param.LORA_A
                    || param == AdapterKeys.Param.LORA_B
                    || param == AdapterKeys.Param.LORA_B_BIAS && ll.adapterParameters(name).containsKey(
                            "lora_B." + name + ".bias")
                    || param == AdapterKeys.Param.LORA_MAGNITUDE_VECTOR && ll.magnitude(name) != null)
                    || l instanceof LoraEmbedding le && (param == AdapterKeys.Param.LORA_EMBEDDING_A
                    || param == AdapterKeys.Param.LORA_EMBEDDING_B
                    || param == AdapterKeys.Param.LORA_MAGNITUDE_VECTOR && le.magnitude(name) != null);
            if (!fits) {
                unexpected.add(e.getKey());
                continue;
            }
            byModule.computeIfAbsent(pk.get().module(), k -> new LinkedHashMap<>()).put(param, e.getValue());
        }
        if (!unexpected.isEmpty()) {
            throw new IllegalArgumentException("Hot swapping the adapter did not succeed, unexpected keys found: "
                    + String.join(", ", unexpected) + ".");
        }
        List<Swap> swaps = new ArrayList<>();
        try (NoGradGuard g = new NoGradGuard()) {
            for (Map.Entry<String, BaseTunerLayer> e : layers.entrySet()) {
                swaps.add(prepare(e.getKey(), e.getValue(), name, lc,
                        byModule.getOrDefault(e.getKey(), Map.of())));
            }
        } catch (RuntimeException e) {
            swaps.forEach(Swap::close);
            throw e;
        }
        Lock write = lock.writeLock();
        try {
            if (lock instanceof ReentrantReadWriteLock rw && rw.getReadHoldCount() > 0) {
                throw new IllegalStateException("Cannot hotswap adapter '" + name + "' from inside a forward of the "
                        + "same model (this thread holds its forward lock)");
            }
            write.lock();
            try {
                for (Swap s : swaps) {
                    s.apply(name);
                }
            } finally {
                write.unlock();
            }
        } finally {
            swaps.forEach(Swap::close);
        }
    }

    /** PEFT's {@code check_hotswap_configs_compatible}. */
    static void checkCompatible(PeftConfig old, PeftConfig config) {
        if (old.peftType() != config.peftType()) {
            throw new IllegalArgumentException("Incompatible PEFT types found: " + old.peftType().jsonValue() + " and "
                    + config.peftType().jsonValue());
        }
        if (!(config instanceof LoraConfig)) {
            throw new IllegalArgumentException("Hotswapping only supports LORA but " + config.peftType().jsonValue()
                    + " was passed.");
        }
        Map<String, Object> a = old.toJsonObject();
        Map<String, Object> b = config.toJsonObject();
        for (String key : KEYS_TO_CHECK) {
            Object va = a.get(key);
            Object vb = b.get(key);
            if (!pyEquals(va, vb)) {
                throw new IllegalArgumentException("Configs are incompatible: for " + key + ", " + py(va) + " != "
                        + py(vb));
            }
        }
    }

    /**
     * The full new values of one module: the checkpoint's factors zero-padded to the module's current rank (or
     * to theirs when larger), zeros for a factor the checkpoint lacks, in the adapter's dtype.
     */
    private static Swap prepare(String module, BaseTunerLayer layer, String name, LoraConfig lc,
            Map<AdapterKeys.Param, Tensor> given) {
        boolean embedding = layer instanceof LoraEmbedding;
        AdapterKeys.Param pa = embedding ? AdapterKeys.Param.LORA_EMBEDDING_A : AdapterKeys.Param.LORA_A;
        AdapterKeys.Param pb = embedding ? AdapterKeys.Param.LORA_EMBEDDING_B : AdapterKeys.Param.LORA_B;
        Map<String, Tensor> own = layer.adapterParameters(name);
        Tensor oldA = own.get(local(module, name, pa));
        Tensor oldB = own.get(local(module, name, pb));
        Tensor oldBias = embedding ? null : own.get(local(module, name, AdapterKeys.Param.LORA_B_BIAS));
        Tensor newA = given.get(pa);
        Tensor newB = given.get(pb);
        checkNonRank(module, pa, oldA, newA, 1);
        checkNonRank(module, pb, oldB, newB, 0);
        long rank = Math.max(oldA.size(0), Math.max(newA == null ? 0 : newA.size(0), newB == null ? 0 : newB.size(1)));
        Tensor a = padded(newA, rank, oldA.size(1), oldA, 0);
        Tensor b = padded(newB, oldB.size(0), rank, oldB, 1);
        Tensor bias = null;
        if (oldBias != null) {
            Tensor nb = given.get(AdapterKeys.Param.LORA_B_BIAS);
            if (nb != null && !Arrays.equals(nb.shape(), oldBias.shape())) {
                throw sizeMismatch(module, AdapterKeys.Param.LORA_B_BIAS, nb, oldBias);
            }
            bias = nb == null ? torch.zeros_like(oldBias) : nb.to(oldBias.scalar_type()).contiguous().clone();
        }
        // DoRA: the magnitude is one more "lora_" tensor of the adapter, of a fixed shape (out,): copied in, or zeroed
        // when the new checkpoint lacks it, as PEFT does with every tensor it lacks
        Tensor oldMag = layer instanceof LoraLayer ll ? ll.magnitude(name) : ((LoraEmbedding) layer).magnitude(name);
        Tensor mag = null;
        if (oldMag != null) {
            Tensor nm = given.get(AdapterKeys.Param.LORA_MAGNITUDE_VECTOR);
            if (nm != null && !Arrays.equals(nm.shape(), oldMag.shape())) {
                a.close();
                b.close();
                if (bias != null) {
                    bias.close();
                }
                throw sizeMismatch(module, AdapterKeys.Param.LORA_MAGNITUDE_VECTOR, nm, oldMag);
            }
            mag = nm == null ? torch.zeros_like(oldMag) : nm.to(oldMag.scalar_type()).contiguous().clone();
        }
        return new Swap(layer, a, b, bias, mag, lc.scaling(module));
    }

    // the adapter parameter's key as the layer lists it (adapterParameters: no module prefix)
    private static String local(String module, String name, AdapterKeys.Param p) {
        return AdapterKeys.modelKey(module, name, p).substring(module.length() + 1);
    }

    // every dimension but the rank must be the module's
    private static void checkNonRank(String module, AdapterKeys.Param p, Tensor old, Tensor given, int dim) {
        if (given != null && (given.dim() != 2 || given.size(dim) != old.size(dim))) {
            throw sizeMismatch(module, p, given, old);
        }
    }

    private static IllegalArgumentException sizeMismatch(String module, AdapterKeys.Param p, Tensor given,
            Tensor old) {
        return new IllegalArgumentException("Incompatible shapes found for LoRA weights "
                + AdapterKeys.checkpointKey(module, p) + ": " + Arrays.toString(old.shape()) + " vs "
                + Arrays.toString(given.shape()) + "; only the rank may differ");
    }

    /** {@code given} copied into zeros of {@code (rows, cols)} (rank dimension {@code rankDim}), dtype of {@code like}. */
    private static Tensor padded(Tensor given, long rows, long cols, Tensor like, int rankDim) {
        Tensor out = torch.zeros(new long[] {rows, cols}, new org.bytedeco.pytorch.TensorOptions(like.scalar_type()));
        if (given != null) {
            try (Tensor slot = out.narrow(rankDim, 0, given.size(rankDim))) {
                slot.copy_(given);
            }
        }
        return out;
    }

    /**
     * Refuses, before the load commits, an adapter whose rank exceeds {@code enable_peft_hotswap}'s target (PEFT:
     * "Trying to pad the adapter to the target rank ...").
     */
    static void checkPaddable(PendingAdapter p, String name, int targetRank) {
        for (Map.Entry<String, Tensor> e : p.parameters().entrySet()) {
            String k = e.getKey();
            if (k.endsWith(".lora_A." + name + ".weight") || k.endsWith(".lora_embedding_A." + name)) {
                long r = e.getValue().size(0);
                if (r > targetRank) {
                    throw new IllegalArgumentException("Trying to pad the adapter to the target rank " + targetRank
                            + ", but the original rank is larger (" + r + "). This is not possible. (adapter '"
                            + name + "', " + k + ")");
                }
            }
        }
    }

    /**
     * {@code prepare_model_for_compiled_hotswap(model, target_rank, config)}: every LoRA factor of adapter
     * {@code name} zero-padded to {@code targetRank} (outputs unchanged), and the config's {@code r} and
     * {@code rank_pattern} values set to it, as PEFT does.
     *
     * @return the config to register
     */
    static LoraConfig padToTargetRank(BaseTuner tuner, String name, LoraConfig lc, int targetRank,
            ReadWriteLock lock) {
        List<Swap> swaps = new ArrayList<>();
        try (NoGradGuard g = new NoGradGuard()) {
            for (Map.Entry<String, BaseTunerLayer> e : tuner.tunerLayers().entrySet()) {
                BaseTunerLayer l = e.getValue();
                if (!(l instanceof LoraLayer || l instanceof LoraEmbedding) || !l.adapterNames().contains(name)) {
                    continue;
                }
                double scaling = l instanceof LoraLayer ll ? ll.scaling(name) : ((LoraEmbedding) l).scaling(name);
                Map<AdapterKeys.Param, Tensor> current = new LinkedHashMap<>();
                boolean emb = l instanceof LoraEmbedding;
                for (AdapterKeys.Param p : emb ? List.of(AdapterKeys.Param.LORA_EMBEDDING_A,
                        AdapterKeys.Param.LORA_EMBEDDING_B) : List.of(AdapterKeys.Param.LORA_A,
                        AdapterKeys.Param.LORA_B, AdapterKeys.Param.LORA_B_BIAS)) {
                    Tensor t = l.adapterParameters(name).get(local(e.getKey(), name, p));
                    if (t != null) {
                        current.put(p, t);
                    }
                }
                Tensor a = current.get(emb ? AdapterKeys.Param.LORA_EMBEDDING_A : AdapterKeys.Param.LORA_A);
                if (a.size(0) == targetRank) {
                    continue;
                }
                Tensor b = current.get(emb ? AdapterKeys.Param.LORA_EMBEDDING_B : AdapterKeys.Param.LORA_B);
                Tensor bias = current.get(AdapterKeys.Param.LORA_B_BIAS);
                // a DoRA magnitude keeps its values: zero rank slots leave B·A, hence the weight norm, unchanged
                swaps.add(new Swap(l, padded(a, targetRank, a.size(1), a, 0), padded(b, b.size(0), targetRank, b, 1),
                        bias == null ? null : bias.clone(), null, scaling));
            }
        }
        Lock write = lock.writeLock();
        write.lock();
        try {
            for (Swap s : swaps) {
                s.apply(name);
            }
        } finally {
            write.unlock();
            swaps.forEach(Swap::close);
        }
        return withRank(lc, targetRank);
    }

    /** {@code lc} with {@code r} and every {@code rank_pattern} value set to {@code rank}, as PEFT's padding does. */
    static LoraConfig withRank(LoraConfig lc, int rank) {
        Map<String, Integer> pattern = new LinkedHashMap<>();
        lc.rankPattern().keySet().forEach(k -> pattern.put(k, rank));
        return lc.toBuilder().r(rank).rankPattern(pattern).build();
    }

    private static boolean pyEquals(Object a, Object b) {
        if (a instanceof Number x && b instanceof Number y) {
            return x.doubleValue() == y.doubleValue();
        }
        if (a instanceof Map<?, ?> x && b instanceof Map<?, ?> y) {
            if (!x.keySet().equals(y.keySet())) {
                return false;
            }
            for (Object k : x.keySet()) {
                if (!pyEquals(x.get(k), y.get(k))) {
                    return false;
                }
            }
            return true;
        }
        return Objects.equals(a, b);
    }

    /** A JSON value as Python prints it (PEFT's message compares {@code to_dict()} values). */
    private static String py(Object v) {
        if (v == null) {
            return "None";
        }
        if (v instanceof Boolean bool) {
            return bool ? "True" : "False";
        }
        if (v instanceof String s) {
            return "'" + s + "'";
        }
        if (v instanceof Map<?, ?> m) {
            StringBuilder sb = new StringBuilder("{");
            for (Map.Entry<?, ?> e : m.entrySet()) {
                if (sb.length() > 1) {
                    sb.append(", ");
                }
                sb.append(py(e.getKey())).append(": ").append(py(e.getValue()));
            }
            return sb.append('}').toString();
        }
        return String.valueOf(v);
    }
}

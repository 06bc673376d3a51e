package dev.peft4j.tuners;

import dev.peft4j.config.Bias;
import dev.peft4j.config.LoraSettings;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.nn.Module;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;

/**
 * PEFT's {@code save_and_load.py} for every method: an adapter's state dict as saved
 * ({@code get_peft_model_state_dict}, {@link #of}) and a checkpoint's keys mapped onto a {@link PendingAdapter}
 * ({@code set_peft_model_state_dict}, {@link #load}). Checkpoint keys are PEFT's ({@code base_model.model.} prefix,
 * no adapter name); in-memory keys hold the adapter name ({@code q_proj.lora_A.default.weight}).
 */
public final class AdapterStateDict {
    private AdapterStateDict() {
    }

    /** The keys a load left unfilled (in-memory names) and the checkpoint keys it could not place. */
    public record LoadResult(List<String> missingKeys, List<String> unexpectedKeys) {
    }

    /**
     * Whether a model key belongs to an adapter ({@code lora_*}, {@code ia3_l}, {@code modules_to_save},
     * {@code trainable_tokens_delta}).
     */
    public static boolean isAdapterKey(String key) {
        return key.contains(".lora_") || key.contains(".ia3_l.") || key.contains(".modules_to_save.")
                || key.contains("." + TrainableTokensLayer.DELTA + ".");
    }

    /**
     * Fills the pending adapter from {@code checkpoint}: adapter keys into its new tensors, other keys of the model
     * (embeddings saved alongside, §5.6; a base-layer bias) into values committed with it. Every shape is checked
     * before anything is copied; a mismatch is refused naming the key and both shapes, and nothing of the model has
     * changed. Weights the checkpoint leaves unfilled keep the values the init gives them.
     *
     * @param source the folder or repo id, for messages
     */
    public static LoadResult load(PendingAdapter p, Module model, Map<String, Tensor> checkpoint, String source) {
        String name = p.name();
        Map<String, Tensor> own = p.params();
        Map<String, Tensor> baseState = null; // the model's whole state dict: built only for a non-adapter key
        Set<String> filled = new LinkedHashSet<>();
        List<String> unexpected = new ArrayList<>();
        Map<Tensor, Tensor> values = new IdentityHashMap<>();
        try (NoGradGuard g = new NoGradGuard()) {
            for (Map.Entry<String, Tensor> e : checkpoint.entrySet()) {
                String key = AdapterKeys.stripPeftPrefix(e.getKey());
                Optional<AdapterKeys.ParsedKey> parsed = AdapterKeys.parseCheckpointKey(key);
                Tensor target = null;
                String modelKey = null;
                String wrapper = null;
                for (String w : p.modulesToSave().keySet()) {
                    if (key.startsWith(w + ".")) {
                        wrapper = w;
                    }
                }
                if (wrapper != null) {
                    modelKey = AdapterKeys.modulesToSaveModelKey(wrapper, name, key.substring(wrapper.length() + 1));
                    target = own.get(modelKey);
                } else if (parsed.isPresent()) {
                    AdapterKeys.ParsedKey pk = parsed.get();
                    boolean linearParam = pk.param() == AdapterKeys.Param.LORA_A
                            || pk.param() == AdapterKeys.Param.LORA_B || pk.param() == AdapterKeys.Param.LORA_B_BIAS
                            || pk.param() == AdapterKeys.Param.IA3_L || pk.param() == AdapterKeys.Param.ADALORA_A
                            || pk.param() == AdapterKeys.Param.ADALORA_B || pk.param() == AdapterKeys.Param.ADALORA_E
                            || pk.param() == AdapterKeys.Param.LORA_EMBEDDING_A
                            || pk.param() == AdapterKeys.Param.LORA_EMBEDDING_B
                            || pk.param() == AdapterKeys.Param.LORA_MAGNITUDE_VECTOR;
                    if (linearParam) {
                        modelKey = AdapterKeys.modelKey(pk.module(), name, pk.param());
                        target = own.get(modelKey);
                    }
                } else if (own.containsKey(key + "." + name)) {
                    // a bare parameter saved without the adapter name (trainable_tokens_delta)
                    modelKey = key + "." + name;
                    target = own.get(modelKey);
                } else if ((baseState == null ? baseState = model.stateDict() : baseState).containsKey(key)) {
                    modelKey = key;
                    target = baseState.get(key);
                } else if (key.contains(".base_layer.") && baseState.containsKey(key.replace(".base_layer.", "."))) {
                    // a base-layer bias saved from a wrapped module (bias="all"/"lora_only") into a fresh model
                    modelKey = key.replace(".base_layer.", ".");
                    target = baseState.get(modelKey);
                }
                if (target == null) {
                    unexpected.add(e.getKey());
                    continue;
                }
                Tensor src = e.getValue();
                if (!Arrays.equals(src.shape(), target.shape())) {
                    throw new IllegalArgumentException("Error(s) in loading adapter '" + name + "' from " + source
                            + ": size mismatch for " + e.getKey() + ": copying a param with shape "
                            + Arrays.toString(src.shape()) + " from checkpoint, the shape in current model is "
                            + Arrays.toString(target.shape()) + ".");
                }
                if (own.containsKey(modelKey)) {
                    values.put(target, src);
                } else {
                    Tensor v = src.to(target.scalar_type()).contiguous().clone();
                    Tensor old = p.extra.put(modelKey, v);
                    if (old != null) {
                        old.close();
                    }
                }
                filled.add(modelKey);
            }
            List<String> missing = new ArrayList<>();
            for (String k : own.keySet()) {
                if (!filled.contains(k)) {
                    missing.add(k);
                }
            }
            if (p.hasDeferredInit() && !missing.isEmpty()) {
                p.runDeferredInit(); // the missing weights keep the values addAdapter's init gives them
            }
            // all checked: fill the (still private) adapter tensors
            for (Map.Entry<Tensor, Tensor> e : values.entrySet()) {
                e.getKey().copy_(e.getValue());
            }
            return new LoadResult(missing, unexpected);
        }
    }

    /**
     * {@code get_adapter_state_dict(adapter_name)}: keys as saved but without {@code base_model.model.}; the model's
     * own tensors. {@code method} gives each tuner layer's share ({@link TunerModel#layerStateDicts});
     * {@code extraKeys} are the base keys the adapter's checkpoint filled, saved with it again.
     */
    public static Map<String, Tensor> of(TunerModel method, PeftConfig config, String name, List<String> extraKeys) {
        BaseTuner tuner = method.tuner();
        Module model = tuner.model();
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (Map.Entry<String, Map<String, Tensor>> e : method.layerStateDicts(config, name).entrySet()) {
            for (Map.Entry<String, Tensor> p : e.getValue().entrySet()) {
                out.put(AdapterKeys.removeAdapterName(e.getKey() + "." + p.getKey(), name), p.getValue());
            }
        }
        for (Map.Entry<String, ModulesToSaveWrapper> e : tuner.modulesToSaveWrappers().entrySet()) {
            Module copy = e.getValue().adapterCopies().get(name);
            if (copy != null) {
                for (Map.Entry<String, Tensor> t : copy.stateDict().entrySet()) {
                    out.put(e.getKey() + "." + t.getKey(), t.getValue());
                }
            }
        }
        for (String k : extraKeys) {
            out.put(k, model.getParameter(k));
        }
        if (config instanceof LoraSettings ls && ls.bias() != Bias.NONE) {
            for (String k : savedBiasKeys(tuner, name, ls.bias())) {
                out.put(k, model.stateDict().get(k));
            }
        }
        return out;
    }

    /** The bias keys PEFT (main) saves with an adapter of {@code bias != "none"} (§5.4). */
    private static List<String> savedBiasKeys(BaseTuner tuner, String adapterName, Bias bias) {
        Module model = tuner.model();
        List<String> out = new ArrayList<>();
        if (bias == Bias.ALL) {
            for (String k : model.stateDict().keySet()) {
                if ((k.equals("bias") || k.endsWith(".bias")) && !isAdapterKey(k)) {
                    out.add(k);
                }
            }
        } else if (bias == Bias.LORA_ONLY) {
            for (Map.Entry<String, BaseTunerLayer> e : tuner.tunerLayers().entrySet()) {
                String k = e.getKey() + "." + BaseTunerLayer.BASE_LAYER + ".bias";
                if (!e.getValue().adapterParameters(adapterName).isEmpty() && model.stateDict().containsKey(k)) {
                    out.add(k);
                }
            }
        }
        return out;
    }

    /**
     * transformers ≥ 4.52 {@code key_mapping} ({@code adapter_kwargs["key_mapping"]}): after the
     * {@code base_model.model.} prefix is stripped, the regex patterns are tried in order and the first that
     * substitutes at least once wins (Java regex syntax; replacements use {@code $1}).
     */
    public static Map<String, Tensor> applyKeyMapping(Map<String, Tensor> sd, Object mapping) {
        if (!(mapping instanceof Map<?, ?> m)) {
            throw new IllegalArgumentException("adapter_kwargs key_mapping must be a map of regex to replacement, got "
                    + mapping.getClass().getSimpleName());
        }
        List<Map.Entry<Pattern, String>> rules = new ArrayList<>();
        for (Map.Entry<?, ?> e : m.entrySet()) {
            rules.add(Map.entry(Pattern.compile(String.valueOf(e.getKey())), String.valueOf(e.getValue())));
        }
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (Map.Entry<String, Tensor> e : sd.entrySet()) {
            String key = AdapterKeys.stripPeftPrefix(e.getKey());
            for (Map.Entry<Pattern, String> r : rules) {
                Matcher mt = r.getKey().matcher(key);
                if (mt.find()) {
                    key = mt.replaceAll(r.getValue());
                    break;
                }
            }
            out.put(key, e.getValue());
        }
        return out;
    }
}

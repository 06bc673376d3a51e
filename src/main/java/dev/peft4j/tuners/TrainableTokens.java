package dev.peft4j.tuners;

import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.bytedeco.pytorch.Tensor;

/**
 * LoRA's (and AdaLoRA's) {@code trainable_token_indices}, as PEFT's {@code set_additional_trainable_modules}
 * ({@code utils/other.py}) applies it after the adapter's layers: a list of token ids targets the model's input
 * embedding; an object {@code {module_name: [ids]}} targets each module whose name ends with the key. Each target gets a
 * {@link TrainableTokensWrapper} (or, when it has one, the new adapter in it) whose rows start as the base rows. When
 * the model ties its output embedding to the input embedding (the {@code Linear} shares the embedding's weight), the
 * output embedding, and every other module sharing that weight (T5's {@code encoder.embed_tokens} and
 * {@code decoder.embed_tokens} beside {@code shared}), follows the input embedding's rows through a tied layer, unless
 * an object gave tied modules different indices (then each trains its own rows, as PEFT does without
 * {@code ensure_weight_tying}). With an untied head (mT5) nothing is tied: only the targeted module is wrapped.
 *
 * <p>The input embedding is the model's first {@code nn.Embedding} in {@code named_modules()} order (transformers'
 * {@code get_input_embeddings()} for every model peft4j has).
 */
public final class TrainableTokens {
    private static final String FIELD = "trainable_token_indices";

    private TrainableTokens() {
    }

    /**
     * Adds to {@code p} the wrappers its config's {@code trainable_token_indices} asks for; nothing of the model
     * changes until the commit.
     *
     * @param spec the config's value: a list of token ids or an object of module name to a list of token ids
     * @param modulesToSave the config's {@code modules_to_save}, or null
     * @throws IllegalArgumentException a malformed value, a target found nowhere ("Target modules {...} not found
     *     ..."), a module also listed in {@code modules_to_save}, an index out of range
     * @throws UnsupportedOperationException a target that another adapter method wraps already
     */
    public static void prepare(PendingAdapter p, BaseTuner tuner, Object spec, List<String> modulesToSave) {
        Map<String, Module> modules = tuner.modulesOutsideAdapters();
        String embName = inputEmbeddingsName(modules);
        Map<String, long[]> targets = new LinkedHashMap<>();
        if (spec instanceof Map<?, ?> m) {
            for (Map.Entry<?, ?> e : m.entrySet()) {
                targets.put(String.valueOf(e.getKey()), indices(e.getValue(), String.valueOf(e.getKey())));
            }
        } else {
            targets.put(embName == null ? "embed_tokens" : embName, indices(spec, null));
        }
        if (modulesToSave != null) {
            for (String t : targets.keySet()) {
                if (modulesToSave.contains(t)) {
                    throw new IllegalArgumentException("The embedding layer is already marked to be trained fully, "
                            + "either specify `modules_to_save=[..., \"" + t + "\", ...]` or `trainable_tokens={'" + t
                            + "': x}` but not both.");
                }
            }
        }
        List<String> tied = embName == null ? List.of() : tiedWithEmbedding(modules, embName);
        boolean weightsTied = !tied.isEmpty();
        boolean mismatch = false;
        Set<String> skip = new LinkedHashSet<>();
        if (targets.size() > 1 && weightsTied) {
            List<String> tiedKeys = new ArrayList<>();
            for (String t : targets.keySet()) {
                if (embName.endsWith(t)) {
                    tiedKeys.add(t);
                    continue;
                }
                for (String tm : tied) {
                    if (tm.endsWith(t) || Arrays.asList(tm.split("\\.")).contains(t)) {
                        tiedKeys.add(t);
                        break;
                    }
                }
            }
            if (tiedKeys.size() >= 2) {
                long[] first = targets.get(tiedKeys.get(0));
                for (String k : tiedKeys.subList(1, tiedKeys.size())) {
                    mismatch |= !Arrays.equals(first, targets.get(k));
                }
                if (!mismatch) {
                    for (String k : tiedKeys) {
                        if (tied.contains(k)) {
                            skip.add(k);
                        }
                    }
                }
            }
        }
        Set<String> layerTargets = new LinkedHashSet<>(p.targets());
        Set<String> wrapped = new LinkedHashSet<>();
        for (Map.Entry<String, long[]> t : targets.entrySet()) {
            if (skip.contains(t.getKey())) {
                continue;
            }
            boolean found = false;
            for (Map.Entry<String, Module> e : modules.entrySet()) {
                String key = e.getKey();
                if (key.isEmpty() || !key.endsWith(t.getKey()) || insideWrapper(key, modules)) {
                    continue;
                }
                found = true;
                Module m = e.getValue();
                TrainableTokensLayer existing = m instanceof TrainableTokensWrapper w ? w.tokenAdapter() : null;
                if (existing == null) {
                    refuseWrapped(key, m, layerTargets, p.name());
                }
                if (existing != null && existing.tiedTo() != null) {
                    throw new UnsupportedOperationException("adapter '" + p.name() + "': " + FIELD + " targets '" + key
                            + "', which follows the tied input embedding's trainable tokens; give both the same "
                            + "indices or target the input embedding only");
                }
                long rows = existing != null ? existing.rows() : weightOf(m).size(0);
                long[] idx = t.getValue();
                for (long i : idx) {
                    if (i < 0 || i >= rows) {
                        throw new IllegalArgumentException("adapter '" + p.name() + "': " + FIELD + " of '" + key
                                + "': token index " + i + " is out of range for a weight of " + rows + " rows");
                    }
                }
                Tensor values = existing != null ? existing.currentRows(idx) : TrainableTokensLayer.rowsOf(weightOf(m), idx);
                p.addLayerAfterModulesToSave(key, new PendingTokens(idx, values));
                wrapped.add(key);
            }
            if (!found) {
                throw new IllegalArgumentException("Target modules {'" + t.getKey() + "'} not found in the base model. "
                        + "Please check the target modules and try again.");
            }
        }
        boolean embeddingWrapped = embName != null
                && (wrapped.contains(embName) || modules.get(embName) instanceof TrainableTokensWrapper);
        if (weightsTied && embeddingWrapped && !mismatch) {
            for (String key : tied) {
                Module m = modules.get(key);
                if (m instanceof TrainableTokensWrapper w) {
                    if (w.tokenAdapter().tiedTo() == null) {
                        throw new UnsupportedOperationException("adapter '" + p.name() + "': the output embedding '"
                                + key + "' tied to '" + embName + "' trains its own token rows for another adapter; "
                                + "it cannot also follow the input embedding's");
                    }
                    continue; // already follows the input embedding's layer, whose adapters include this one
                }
                refuseWrapped(key, m, layerTargets, p.name());
                p.addLayerAfterModulesToSave(key, new PendingTied(embName));
            }
        }
    }

    /** {@code _get_input_embeddings_name}: the first embedding of the model, through any wrapper, or null. */
    static String inputEmbeddingsName(Map<String, Module> modules) {
        for (Map.Entry<String, Module> e : modules.entrySet()) {
            if (unwrap(e.getValue()) instanceof Embedding) {
                return e.getKey();
            }
        }
        return null;
    }

    /** The module a wrapper stands for (the base of a tuner layer, the original of a wrapper), or {@code m}. */
    private static Module unwrap(Module m) {
        if (m instanceof TrainableTokensWrapper w) {
            return w.originalModule();
        }
        if (m instanceof BaseTunerLayer t) {
            return unwrap(t.baseLayer());
        }
        if (m instanceof ModulesToSaveWrapper w) {
            return w.originalModule();
        }
        return m;
    }

    private static boolean insideWrapper(String key, Map<String, Module> modules) {
        for (int dot = key.lastIndexOf('.'); dot > 0; dot = key.lastIndexOf('.', dot - 1)) {
            Module parent = modules.get(key.substring(0, dot));
            if (parent instanceof TrainableTokensWrapper || parent instanceof BaseTunerLayer
                    || parent instanceof ModulesToSaveWrapper) {
                return true;
            }
        }
        return false;
    }

    /**
     * {@code _get_module_names_tied_with_embedding}: when the model ties its output embedding to the input embedding
     * (a bias-free {@code Linear}, the {@code lm_head}, shares the embedding's weight: {@code tie_word_embeddings}),
     * every module whose weight is that same tensor, sorted: the {@code lm_head}, and T5's {@code encoder.embed_tokens}
     * and {@code decoder.embed_tokens} beside its {@code shared}. None when the head is untied (mT5), as PEFT returns
     * none for {@code tie_word_embeddings=False}.
     */
    static List<String> tiedWithEmbedding(Map<String, Module> modules, String embName) {
        Tensor emb = weightOf(modules.get(embName));
        long address = emb.data_ptr().address();
        List<String> out = new ArrayList<>();
        boolean headTied = false;
        for (Map.Entry<String, Module> e : modules.entrySet()) {
            String key = e.getKey();
            if (key.equals(embName) || key.isEmpty() || insideWrapper(key, modules)) {
                continue;
            }
            Module m = unwrap(e.getValue());
            Tensor w = m instanceof Linear l ? l.weight() : m instanceof Embedding x ? x.weight() : null;
            if (w != null && w.data_ptr().address() == address && Arrays.equals(w.shape(), emb.shape())) {
                out.add(key);
                headTied |= m instanceof Linear;
            }
        }
        if (!headTied) {
            return List.of();
        }
        out.sort(null);
        return out;
    }

    private static void refuseWrapped(String key, Module m, Set<String> layerTargets, String adapter) {
        if (m instanceof BaseTunerLayer || m instanceof ModulesToSaveWrapper || layerTargets.contains(key)) {
            throw new UnsupportedOperationException("adapter '" + adapter + "': " + FIELD + " targets '" + key
                    + "', which an adapter layer or modules_to_save wraps; PEFT's TrainableTokensLayer would wrap an "
                    + "unknown layer type there, so peft4j refuses it");
        }
        if (!(m instanceof Embedding) && !(m instanceof Linear l && l.bias() == null)) {
            throw new IllegalArgumentException("adapter '" + adapter + "': " + FIELD + " targets '" + key + "', a "
                    + m.typeName() + ": TrainableTokensLayer wraps an unknown layer type, maybe you are targeting the "
                    + "wrong layer? (only nn.Embedding and an nn.Linear without bias can be wrapped)");
        }
    }

    private static Tensor weightOf(Module m) {
        Module u = unwrap(m);
        if (u instanceof Embedding e) {
            return e.weight();
        }
        if (u instanceof Linear l) {
            return l.weight();
        }
        throw new IllegalArgumentException(m.typeName() + " has no embedding weight");
    }

    private static long[] indices(Object v, String module) {
        String where = module == null ? FIELD : FIELD + "['" + module + "']";
        if (!(v instanceof List<?> list)) {
            throw new IllegalArgumentException(where + " must be a list of token indices, got " + v);
        }
        long[] out = new long[list.size()];
        for (int i = 0; i < out.length; i++) {
            Object o = list.get(i);
            if (!(o instanceof Number n) || o instanceof Double || o instanceof Float) {
                throw new IllegalArgumentException(where + " must be a list of token indices, got " + o + " at "
                        + "position " + i);
            }
            out[i] = n.longValue();
        }
        return out;
    }

    /** A new adapter's rows for a trainable-tokens target (wrapped at commit, or added to its wrapper). */
    private record PendingTokens(long[] indices, Tensor values) implements PendingLayer {
        @Override
        public void putParameters(String module, String adapterName, Map<String, Tensor> out) {
            out.put(module + "." + TrainableTokensWrapper.TOKEN_ADAPTER + "." + TrainableTokensLayer.DELTA + "."
                    + adapterName, values);
        }

        @Override
        public void commit(Module model, String module, String adapterName, boolean trainable) {
            Module m = model.getSubmodule(module);
            if (m instanceof TrainableTokensWrapper w) {
                w.tokenAdapter().addAdapter(adapterName, indices, values, trainable);
                return;
            }
            TrainableTokensLayer layer = new TrainableTokensLayer(m, null, module);
            layer.addAdapter(adapterName, indices, values, trainable);
            model.replaceSubmodule(module, new TrainableTokensWrapper(layer));
        }

        @Override
        public void discard() {
            values.close();
        }
    }

    /** An output embedding that follows the input embedding's trainable tokens (PEFT's {@code tied_adapter}). */
    private record PendingTied(String embeddingName) implements PendingLayer {
        @Override
        public void putParameters(String module, String adapterName, Map<String, Tensor> out) {
        }

        @Override
        public void commit(Module model, String module, String adapterName, boolean trainable) {
            TrainableTokensLayer source = ((TrainableTokensWrapper) model.getSubmodule(embeddingName)).tokenAdapter();
            Module m = model.getSubmodule(module);
            model.replaceSubmodule(module, new TrainableTokensWrapper(new TrainableTokensLayer(m, source, module)));
        }

        @Override
        public void discard() {
        }
    }
}

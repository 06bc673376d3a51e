package dev.peft4j.tuners;

import dev.peft4j.nn.Embedding;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.nn.ParameterDict;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRef;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * PEFT's {@code TrainableTokensLayer} ({@code tuners/trainable_tokens/layer.py}), the layer behind LoRA's
 * {@code trainable_token_indices}: for each adapter, new values of a few rows of the base weight
 * ({@code trainable_tokens_delta.<name>}, {@code (len(indices), dim)}, despite its name the rows themselves, not a
 * difference), which replace those rows in the forward. The base is an {@code nn.Embedding} (rows = token ids) or,
 * for an output embedding, a bias-free {@code nn.Linear} (rows = output features).
 *
 * <p>A layer tied to another ({@link #tiedTo()}, the output embedding of a model whose {@code lm_head} shares the
 * input embedding's weight) holds nothing of its own: it reads the other layer's indices and values, saves nothing,
 * and applies them to its own (shared) weight, as PEFT's {@code tied_adapter}.
 *
 * <p>Forward: the base output with the selected rows replaced, computed without copying the weight (an Embedding
 * takes the new row for every id in the set, a Linear recomputes the set's output columns), which equals PEFT's
 * {@code F.embedding(x, W')} / {@code F.linear(x, W')} on the weight with the rows replaced. Several active adapters
 * apply together when their indices are disjoint (PEFT's error otherwise); merging writes the rows into the weight
 * and unmerging writes back the rows the weight had when the adapter was added. Mixed batches: each sample gets its
 * adapter's rows, {@value #BASE_ADAPTER_NAME} the base rows; a sample naming an adapter this layer does not hold is
 * refused (PEFT's {@code TrainableTokensWrapper} raises a {@code KeyError} there), unless the layer is merged or
 * disabled (then every sample gets the base output, as in PEFT).
 */
public final class TrainableTokensLayer extends BaseTunerLayer {
    private static final Logger LOG = LoggerFactory.getLogger(TrainableTokensLayer.class);
    /** The container of the per-adapter rows, as in PEFT's keys. */
    public static final String DELTA = "trainable_tokens_delta";

    private final TrainableTokensLayer tiedTo;
    /** The module's name in the model, for messages; null when not known. */
    private final String moduleName;
    private final long rows;
    private final long dim;
    // per adapter: the row indices and the rows the weight had when the adapter was added (for unmerge)
    private final Map<String, long[]> indices = new LinkedHashMap<>();
    private final Map<String, Tensor> originals = new LinkedHashMap<>();

    /**
     * Wraps {@code base} (an Embedding, or a Linear without bias) with no adapter yet; with {@code tiedTo}, a layer
     * that follows that layer's adapters.
     *
     * @throws IllegalArgumentException for another base, or a tied layer whose weight shape differs
     */
    public TrainableTokensLayer(Module base, TrainableTokensLayer tiedTo) {
        this(base, tiedTo, null);
    }

    /** {@link #TrainableTokensLayer(Module, TrainableTokensLayer)} for the module named {@code moduleName}. */
    TrainableTokensLayer(Module base, TrainableTokensLayer tiedTo, String moduleName) {
        super(base);
        this.moduleName = moduleName;
        if (base instanceof Embedding e) {
            rows = e.numEmbeddings();
            dim = e.embeddingDim();
        } else if (base instanceof Linear l && l.bias() == null) {
            rows = l.outFeatures();
            dim = l.inFeatures();
        } else {
            throw new IllegalArgumentException("TrainableTokensLayer wraps an unknown layer type, maybe you are "
                    + "targeting the wrong layer? (" + base.typeName() + "; only nn.Embedding and an nn.Linear "
                    + "without bias, an output embedding, can be wrapped)");
        }
        this.tiedTo = tiedTo;
        if (tiedTo != null) {
            if (tiedTo.rows != rows || tiedTo.dim != dim) {
                throw new IllegalArgumentException("a trainable-tokens layer of " + rows + "x" + dim
                        + " cannot be tied to one of " + tiedTo.rows + "x" + tiedTo.dim);
            }
        } else {
            registerModule(DELTA, new ParameterDict());
        }
    }

    @Override
    public String typeName() {
        return "TrainableTokensLayer";
    }

    /** The layer whose adapters this one follows, or null. */
    public TrainableTokensLayer tiedTo() {
        return tiedTo;
    }

    private TrainableTokensLayer owner() {
        return tiedTo != null ? tiedTo : this;
    }

    private ParameterDict deltas() {
        return (ParameterDict) owner().child(DELTA);
    }

    /** The number of rows of the base weight (the vocabulary, or the output features). */
    public long rows() {
        return rows;
    }

    /** The width of a row. */
    public long dim() {
        return dim;
    }

    /** The base weight, {@code (rows, dim)}. */
    Tensor weight() {
        return baseLayer() instanceof Embedding e ? e.weight() : ((Linear) baseLayer()).weight();
    }

    /**
     * Checks {@code tokenIndices} against the base weight: each within {@code [0, rows)}.
     *
     * @throws IllegalArgumentException naming the first index out of range
     */
    void checkIndices(long[] tokenIndices, String what) {
        for (long i : tokenIndices) {
            if (i < 0 || i >= rows) {
                throw new IllegalArgumentException(what + ": token index " + i + " is out of range for a weight of "
                        + rows + " rows");
            }
        }
    }

    /**
     * The rows at {@code tokenIndices} of the base weight as it is now, a new tensor in its dtype: the initial value
     * of a new adapter's {@code trainable_tokens_delta} (PEFT's {@code init_weights=True}), so that a fresh adapter
     * changes nothing.
     */
    Tensor currentRows(long[] tokenIndices) {
        return rowsOf(weight(), tokenIndices);
    }

    /** The rows {@code tokenIndices} of {@code w}, a new contiguous tensor in its dtype and on its device. */
    static Tensor rowsOf(Tensor w, long[] tokenIndices) {
        try (NoGradGuard g = new NoGradGuard(); Tensor idx = index(tokenIndices);
                Tensor onDevice = idx.to(w.device(), ScalarType.Long); Tensor sel = w.index_select(0, onDevice)) {
            return sel.contiguous().clone();
        }
    }

    /**
     * Adds adapter {@code name}: the rows {@code tokenIndices} take {@code values} ({@code (len, dim)}; the layer takes
     * ownership), trainable when {@code trainable}. The rows the weight has now are kept for unmerge.
     *
     * @throws IllegalStateException on a tied layer (it follows the adapters of the layer it is tied to)
     * @throws IllegalArgumentException an index out of range, a shape that does not fit, or a name held already
     */
    public void addAdapter(String name, long[] tokenIndices, Tensor values, boolean trainable) {
        if (tiedTo != null) {
            throw new IllegalStateException("a tied trainable-tokens layer holds no adapter of its own");
        }
        if (indices.containsKey(name)) {
            throw new IllegalArgumentException("layer already holds adapter '" + name + "'");
        }
        checkIndices(tokenIndices, "adapter '" + name + "'");
        if (values.dim() != 2 || values.size(0) != tokenIndices.length || values.size(1) != dim) {
            throw new IllegalArgumentException("adapter '" + name + "': trainable_tokens_delta has shape "
                    + Arrays.toString(values.shape()) + ", " + tokenIndices.length + " token indices need ["
                    + tokenIndices.length + ", " + dim + "]");
        }
        originals.put(name, currentRows(tokenIndices));
        indices.put(name, tokenIndices.clone());
        deltas().put(name, values, trainable);
        markKernelsDirty();
    }

    /** Adapter {@code name}'s token indices (a copy), or null when the layer does not hold it. */
    public long[] tokenIndices(String name) {
        long[] idx = owner().indices.get(name);
        return idx == null ? null : idx.clone();
    }

    /** Adapter {@code name}'s rows {@code (len(indices), dim)}, the layer's own tensor; null when not held. */
    public Tensor delta(String name) {
        return deltas().get(name);
    }

    @Override
    public List<String> adapterNames() {
        return new ArrayList<>(owner().indices.keySet());
    }

    /** A tied layer's adapters belong to the layer it is tied to: it has no parameters of its own to save. */
    @Override
    public Map<String, Tensor> adapterParameters(String name) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        if (tiedTo == null && deltas().get(name) != null) {
            out.put(DELTA + "." + name, deltas().get(name));
        }
        return out;
    }

    @Override
    protected void removeAdapter(String name) {
        if (tiedTo != null) {
            return;
        }
        Tensor d = deltas().remove(name);
        if (d != null) {
            d.close();
        }
        Tensor o = originals.remove(name);
        if (o != null) {
            o.close();
        }
        indices.remove(name);
    }

    @Override
    protected void releaseNative() {
        originals.values().forEach(Tensor::close);
        originals.clear();
    }

    /**
     * PEFT's {@code _check_overlapping_tokens}: the merged adapters (first) and {@code names} must select disjoint
     * rows.
     */
    private void checkOverlappingTokens(List<String> names) {
        LinkedHashSet<String> toCheck = new LinkedHashSet<>(mergedAdapters());
        toCheck.addAll(names);
        if (toCheck.size() <= 1) {
            return;
        }
        Set<Long> seen = new HashSet<>();
        for (String n : toCheck) {
            Set<Long> mine = new HashSet<>();
            for (long i : owner().indices.get(n)) {
                mine.add(i);
            }
            for (Long i : mine) {
                if (seen.contains(i)) {
                    throw new IllegalArgumentException("Token indices of adapter " + n + " are already defined and "
                            + "would result in undefined merging behavior. Only disjunct token indices are currently "
                            + "supported.");
                }
            }
            seen.addAll(mine);
        }
    }

    private List<String> held(List<String> names) {
        List<String> out = new ArrayList<>();
        for (String n : names) {
            if (owner().indices.containsKey(n) && !out.contains(n)) {
                out.add(n);
            }
        }
        return out;
    }

    @Override
    public void merge(List<String> names, boolean safeMerge) {
        List<String> todo = new ArrayList<>();
        for (String n : held(names)) {
            if (!mergedAdapters().contains(n)) {
                todo.add(n);
            }
        }
        if (todo.isEmpty()) {
            return;
        }
        checkOverlappingTokens(todo);
        Tensor w = weight();
        try (NoGradGuard g = new NoGradGuard()) {
            for (String n : todo) {
                try (Tensor idx = index(owner().indices.get(n)); Tensor i = idx.to(w.device(), ScalarType.Long);
                        Tensor d = deltas().get(n).to(w.device(), w.scalar_type())) {
                    if (safeMerge) {
                        try (Tensor merged = w.index_copy(0, i, d); Tensor fin = torch.isfinite(merged);
                                Tensor all = fin.all()) {
                            if (!all.item_bool()) {
                                throw new IllegalArgumentException("NaNs detected in the merged weights. The adapter "
                                        + n + " seems to be broken");
                            }
                        }
                    }
                    w.index_copy_(0, i, d);
                }
                mergedList().add(n);
            }
        }
    }

    @Override
    public void unmerge() {
        if (!merged()) {
            LOG.warn("Already unmerged. Nothing to do.");
            return;
        }
        Tensor w = weight();
        try (NoGradGuard g = new NoGradGuard()) {
            while (!mergedList().isEmpty()) {
                String n = mergedList().remove(mergedList().size() - 1);
                Tensor original = owner().originals.get(n);
                if (original == null) {
                    continue;
                }
                try (Tensor idx = index(owner().indices.get(n)); Tensor i = idx.to(w.device(), ScalarType.Long);
                        Tensor o = original.to(w.device(), w.scalar_type())) {
                    w.index_copy_(0, i, o);
                }
            }
        }
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
            return mixedBatchForward(x, perSample);
        }
        if (merged()) {
            return baseForward(x);
        }
        List<String> act = held(activeAdapters());
        if (act.isEmpty()) {
            return baseForward(x);
        }
        checkOverlappingTokens(act);
        return withRows(x, act);
    }

    /**
     * PEFT's {@code _mixed_batch_forward}: sample i with adapter i's rows, {@value #BASE_ADAPTER_NAME} the base rows.
     *
     * @throws IllegalArgumentException naming the adapter and the module when a sample names an adapter without
     *     trainable tokens here (PEFT's {@code KeyError} in {@code get_merged_weights})
     */
    private Tensor mixedBatchForward(Tensor x, List<String> names) {
        if (names.size() != x.size(0)) {
            throw new IllegalArgumentException("Length of `adapter_names` should be the same as the number of inputs, "
                    + "but got " + names.size() + " and " + x.size(0) + " respectively.");
        }
        if (merged()) { // PEFT's layer returns the merged base for every sample
            return baseForward(x);
        }
        List<String> unique = new ArrayList<>(new LinkedHashSet<>(names));
        unique.remove(BASE_ADAPTER_NAME);
        for (String n : unique) {
            if (!owner().indices.containsKey(n)) {
                throw new IllegalArgumentException("adapter_names: adapter '" + n + "' has no trainable tokens on "
                        + (moduleName == null ? "this " + typeName() : "module '" + moduleName + "'") + " (it holds "
                        + adapterNames() + "); PEFT raises a KeyError here. Give its rows '" + BASE_ADAPTER_NAME
                        + "' or an adapter with trainable_token_indices on this module");
            }
        }
        return Scoped.compute(() -> {
            Tensor result = baseForward(x);
            for (String n : unique) {
                long[] rowsOf = java.util.stream.IntStream.range(0, names.size()).filter(i -> names.get(i).equals(n))
                        .asLongStream().toArray();
                Tensor idx = Tensor.create(rowsOf, rowsOf.length).to(x.device(), ScalarType.Long);
                Tensor sub = withRows(x.index_select(0, idx), List.of(n));
                result = result.index_copy(0, idx, sub.to(result.scalar_type()));
            }
            return result;
        });
    }

    /** The base output for {@code x} with the rows of {@code names} (disjoint, held) in place of the weight's. */
    private Tensor withRows(Tensor x, List<String> names) {
        return Scoped.compute(() -> {
            Tensor w = weight();
            List<Tensor> idxParts = new ArrayList<>();
            List<Tensor> valParts = new ArrayList<>();
            for (String n : names) {
                idxParts.add(index(owner().indices.get(n)));
                valParts.add(deltas().get(n));
            }
            Tensor idx = cat(idxParts).to(w.device(), ScalarType.Long);
            Tensor values = cat(valParts).to(w.device(), w.scalar_type());
            Tensor base = baseForward(x);
            if (baseLayer() instanceof Embedding) {
                // row of `values` for each token id (-1: none), later entries winning as index_copy's do
                org.bytedeco.pytorch.TensorOptions longs = new org.bytedeco.pytorch.TensorOptions(ScalarType.Long);
                Tensor rowOf = torch.full(new long[] {rows}, new Scalar(-1L), longs).to(w.device(), ScalarType.Long);
                rowOf.index_copy_(0, idx, torch.arange(new Scalar(0L), new Scalar(idx.size(0)), longs).to(w.device(),
                        ScalarType.Long));
                Tensor flatIds = x.reshape(-1).to(ScalarType.Long);
                Tensor pick = rowOf.index_select(0, flatIds);
                Tensor replaced = values.index_select(0, pick.clamp_min(new Scalar(0L)));
                Tensor mask = pick.ge(new Scalar(0L)).unsqueeze(1);
                Tensor out = torch.where(mask, replaced, base.reshape(-1, dim));
                return out.view(base.shape());
            }
            // an output embedding: the set's output columns from the new rows
            Tensor cols = torch.linear(x, values);
            return base.index_copy(base.dim() - 1, idx, cols.to(base.scalar_type()));
        });
    }

    private static Tensor index(long[] values) {
        return Tensor.create(values, values.length);
    }

    private static Tensor cat(List<Tensor> parts) {
        try (TensorVector v = new TensorVector(parts.toArray(new Tensor[0]))) {
            return torch.cat(new TensorArrayRef(v), 0);
        }
    }
}

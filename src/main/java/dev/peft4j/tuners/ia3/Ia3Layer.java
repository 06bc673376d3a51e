package dev.peft4j.tuners.ia3;

import dev.peft4j.nn.Conv1D;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.ParameterDict;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * PEFT's {@code ia3.Linear} around an {@code nn.Linear} or transformers {@code Conv1D}: children {@code base_layer}
 * and {@code ia3_l} (bare parameters {@code ia3_l.<name>}, {@code (out, 1)} or {@code (1, in)} for a feed-forward
 * layer). Several active adapters multiply; math is {@link Ia3Math}'s.
 */
public final class Ia3Layer extends BaseTunerLayer {
    private static final Logger LOG = LoggerFactory.getLogger(Ia3Layer.class);
    private final boolean feedForward;
    private final boolean fanInFanOut;
    private final long inFeatures;
    private final long outFeatures;

    public Ia3Layer(Module base, boolean feedForward) {
        super(base);
        this.feedForward = feedForward;
        if (base instanceof Linear l) {
            fanInFanOut = false;
            inFeatures = l.inFeatures();
            outFeatures = l.outFeatures();
        } else if (base instanceof Conv1D c) {
            fanInFanOut = true;
            inFeatures = c.inFeatures();
            outFeatures = c.outFeatures();
        } else {
            throw new IllegalArgumentException("Target module " + base.typeName() + " is not supported. Currently, "
                    + "only `torch.nn.Linear`, `torch.nn.Conv2d`, and `Conv1D` are supported.");
        }
        registerModule("ia3_l", new ParameterDict());
    }

    @Override
    public String typeName() {
        return "ia3.Linear";
    }

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
        dict().put(name, vector, trainable);
    }

    @Override
    public List<String> adapterNames() {
        return new ArrayList<>(dict().entries().keySet());
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
        dict().delete(name);
    }

    private Tensor weight() {
        Module b = baseLayer();
        return b instanceof Linear l ? l.weight() : ((Conv1D) b).weight();
    }

    private Tensor bias() {
        Module b = baseLayer();
        return b instanceof Linear l ? l.bias() : ((Conv1D) b).bias();
    }

    @Override
    public Tensor forward(Tensor x) {
        if (disabled()) {
            if (merged()) {
                unmerge();
            }
            return baseForward(x);
        }
        if (dev.peft4j.tuners.lora.LoraLayer.currentAdapterNames() != null) {
            throw new UnsupportedOperationException("adapter_names (a mixed batch) is supported for LoRA only, not for "
                    + "the IA³ layer " + typeName());
        }
        if (merged()) {
            return baseForward(x);
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
        return Ia3Math.forward(x, weight(), bias(), act, feedForward, fanInFanOut);
    }

    @Override
    public void merge(List<String> names, boolean safeMerge) {
        for (String n : names) {
            if (mergedList().contains(n) || !dict().contains(n)) {
                continue;
            }
            Ia3Math.merge(weight(), bias(), dict().get(n), feedForward, fanInFanOut, safeMerge, n);
            mergedList().add(n);
        }
    }

    @Override
    public void unmerge() {
        if (!merged()) {
            LOG.warn("Already unmerged. Nothing to do.");
            return;
        }
        LOG.warn("Unmerge result can be inaccurate for (IA)^3.");
        while (!mergedList().isEmpty()) {
            String n = mergedList().remove(mergedList().size() - 1);
            if (dict().contains(n)) {
                Ia3Math.unmerge(weight(), bias(), dict().get(n), feedForward, fanInFanOut);
            }
        }
    }
}

package dev.peft4j.tuners.adalora;

import dev.peft4j.nn.Conv1D;
import dev.peft4j.nn.Linear;
import dev.peft4j.nn.Module;
import dev.peft4j.tuners.BaseTunerLayer;
import dev.peft4j.tuners.ParameterDict;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * PEFT's {@code adalora.SVDLinear} around an {@code nn.Linear} or transformers {@code Conv1D}: bare parameters
 * {@code lora_A.<name>} {@code (r, in)}, {@code lora_E.<name>} {@code (r, 1)}, {@code lora_B.<name>} {@code (out, r)}
 * and the frozen {@code ranknum.<name>} {@code (1,)} (never saved). Math is {@link AdaLoraMath}'s.
 */
public final class SvdLinear extends BaseTunerLayer {
    private static final Logger LOG = LoggerFactory.getLogger(SvdLinear.class);
    private final boolean fanInFanOut;
    private final long inFeatures;
    private final long outFeatures;
    private final Map<String, Double> scaling = new LinkedHashMap<>();
    private final Map<String, Double> dropout = new LinkedHashMap<>();

    public SvdLinear(Module base) {
        super(base);
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
                    + "only `torch.nn.Linear`, `Conv1D`, and `torch.nn.Conv2d` are supported.");
        }
        registerModule("lora_A", new ParameterDict());
        registerModule("lora_B", new ParameterDict());
        registerModule("lora_E", new ParameterDict());
        registerModule("ranknum", new ParameterDict());
    }

    @Override
    public String typeName() {
        return "adalora.SVDLinear";
    }

    public long inFeatures() {
        return inFeatures;
    }

    public long outFeatures() {
        return outFeatures;
    }

    private ParameterDict d(String n) {
        return (ParameterDict) child(n);
    }

    /** Adds prepared tensors (taken over); {@code ranknum} is frozen. */
    public void addAdapter(String name, Tensor a, Tensor e, Tensor b, Tensor ranknum, double scale, double p,
            boolean trainable) {
        new AdaLoraMath.Adapter(a, e, b, ranknum, scale, p); // shape checks
        if (a.size(1) != inFeatures || b.size(0) != outFeatures) {
            throw new IllegalArgumentException("adapter '" + name + "': lora_A/lora_B do not fit in=" + inFeatures
                    + ", out=" + outFeatures);
        }
        d("lora_A").put(name, a, trainable);
        d("lora_B").put(name, b, trainable);
        d("lora_E").put(name, e, trainable);
        d("ranknum").put(name, ranknum, false);
        scaling.put(name, scale);
        dropout.put(name, p);
    }

    public double scaling(String name) {
        return scaling.get(name);
    }

    @Override
    public List<String> adapterNames() {
        return new ArrayList<>(d("lora_A").entries().keySet());
    }

    /** The trainable parameters (A, E, B); {@code ranknum} is not listed: never saved, never trained. */
    @Override
    public Map<String, Tensor> adapterParameters(String name) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        if (!d("lora_A").contains(name)) {
            return out;
        }
        out.put("lora_A." + name, d("lora_A").get(name));
        out.put("lora_B." + name, d("lora_B").get(name));
        out.put("lora_E." + name, d("lora_E").get(name));
        return out;
    }

    public Tensor ranknum(String name) {
        return d("ranknum").get(name);
    }

    @Override
    protected void removeAdapter(String name) {
        for (String c : List.of("lora_A", "lora_B", "lora_E", "ranknum")) {
            d(c).delete(name);
        }
        scaling.remove(name);
        dropout.remove(name);
    }

    private AdaLoraMath.Adapter adapter(String n) {
        return new AdaLoraMath.Adapter(d("lora_A").get(n), d("lora_E").get(n), d("lora_B").get(n),
                d("ranknum").get(n), scaling.get(n), dropout.get(n));
    }

    private Tensor weight() {
        Module b = baseLayer();
        return b instanceof Linear l ? l.weight() : ((Conv1D) b).weight();
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
                    + "the AdaLoRA layer " + typeName());
        }
        if (merged()) {
            return baseForward(x);
        }
        List<AdaLoraMath.Adapter> act = new ArrayList<>();
        for (String n : activeAdapters()) {
            if (d("lora_A").contains(n)) {
                act.add(adapter(n));
            }
        }
        if (act.isEmpty()) {
            return baseForward(x);
        }
        try (Tensor base = baseForward(x)) {
            return AdaLoraMath.forward(base, x, act, isTraining());
        }
    }

    @Override
    public void merge(List<String> names, boolean safeMerge) {
        for (String n : names) {
            if (mergedList().contains(n) || !d("lora_A").contains(n)) {
                continue;
            }
            AdaLoraMath.merge(weight(), adapter(n), fanInFanOut, safeMerge, n);
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
            if (d("lora_A").contains(n)) {
                AdaLoraMath.unmerge(weight(), adapter(n), fanInFanOut);
            }
        }
    }
}

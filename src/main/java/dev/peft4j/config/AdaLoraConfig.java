package dev.peft4j.config;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * PEFT's {@code AdaLoraConfig} (spec §3.7). PEFT makes it a subclass of {@code LoraConfig}, so its file carries every
 * LoRA key; here it carries them as {@link LoraSettings} (the same {@link LoraFields} record a {@link LoraConfig}
 * has) rather than by being a {@code LoraConfig}, because the LoRA-only behaviour must not apply: AdaLoRA ignores
 * {@code r} (every layer starts at {@code init_r}), ignores {@code alpha_pattern}, and its {@code rank_pattern} holds
 * the kept rank positions of each module, not ranks.
 */
public final class AdaLoraConfig extends ConfigBase implements PeftConfig, LoraSettings {
    private static final Logger LOG = LoggerFactory.getLogger(AdaLoraConfig.class);

    private final LoraFields lora;
    private final int targetR;
    private final int initR;
    private final int tinit;
    private final int tfinal;
    private final int deltaT;
    private final double beta1;
    private final double beta2;
    private final double orthRegWeight;
    private final int totalStep;
    private final Map<String, List<Boolean>> rankPattern;

    AdaLoraConfig(ConfigDoc doc) {
        super(LoraFields.rewriteAsPostInitDoes(doc), PeftType.ADALORA);
        lora = LoraFields.read(doc);
        targetR = doc.integer("target_r", 8, false);
        initR = doc.integer("init_r", 12, false);
        tinit = doc.integer("tinit", 0, false);
        tfinal = doc.integer("tfinal", 0, false);
        deltaT = doc.integer("deltaT", 1, false);
        beta1 = doc.number("beta1", 0.85);
        beta2 = doc.number("beta2", 0.85);
        orthRegWeight = doc.number("orth_reg_weight", 0.5);
        Integer steps = doc.integer("total_step", null, true);
        rankPattern = readRankPattern(doc);
        lora.checkPostInit(doc, targetModules()); // PEFT's AdaLoraConfig.__post_init__ runs LoraConfig's first
        if (lora.useDora()) {
            throw doc.error("use_dora", "must be false: AdaLoRA does not support DoRA");
        }
        if (!lora.loftqConfig().isEmpty()) {
            throw doc.error("loftq_config", "must be empty: AdaLoRA does not support LoftQ");
        }
        if (steps == null || steps <= 0) {
            throw doc.error("total_step", "must be a positive integer (AdaLoRA's schedule needs it since PEFT 0.15)");
        }
        totalStep = steps;
        if (orthRegWeight < 0) {
            throw doc.error("orth_reg_weight", "must be greater than or equal to 0");
        }
        if (tinit >= totalStep - tfinal) {
            throw doc.error("the schedule leaves no budgeting phase: \"tinit\" (" + tinit + ") must be less than"
                    + " \"total_step\" - \"tfinal\" (" + totalStep + " - " + tfinal + ")");
        }
        if (!(beta1 > 0 && beta1 < 1)) {
            throw doc.error("beta1", "must be between 0 and 1 (exclusive)");
        }
        if (!(beta2 > 0 && beta2 < 1)) {
            throw doc.error("beta2", "must be between 0 and 1 (exclusive)");
        }
        if (initR < 0) {
            throw doc.error("init_r", "must be a non-negative integer");
        }
        if (targetR < 0) {
            throw doc.error("target_r", "must be a non-negative integer");
        }
        if (lora.r() != 8) {
            LOG.warn("{}: \"r\" ({}) is not used by AdaLoRA and is ignored; \"init_r\" sets the initial rank",
                    doc.source, lora.r());
        }
    }

    /** A builder with PEFT's defaults; {@code totalStep} must be set before {@code build()}, as in PEFT. */
    public static Builder builder() {
        return new Builder(KnownKeys.defaults(PeftType.ADALORA));
    }

    @Override
    public Builder toBuilder() {
        return new Builder(toJsonObject());
    }

    @Override
    public PeftType peftType() {
        return PeftType.ADALORA;
    }

    @Override
    public LoraFields loraFields() {
        return lora;
    }

    /** {@code target_r}: average target rank per matrix. */
    public int targetR() {
        return targetR;
    }

    /** {@code init_r}: initial rank of every matrix. */
    public int initR() {
        return initR;
    }

    /** {@code tinit}: warm-up steps without pruning. */
    public int tinit() {
        return tinit;
    }

    /** {@code tfinal}: final steps with fixed ranks. */
    public int tfinal() {
        return tfinal;
    }

    /** {@code deltaT}: steps between two rank allocations. */
    public int deltaT() {
        return deltaT;
    }

    /** {@code beta1}: EMA factor of the sensitivity. */
    public double beta1() {
        return beta1;
    }

    /** {@code beta2}: EMA factor of the uncertainty. */
    public double beta2() {
        return beta2;
    }

    /** {@code orth_reg_weight}: orthogonal regularisation coefficient. */
    public double orthRegWeight() {
        return orthRegWeight;
    }

    /** {@code total_step}: total training steps. */
    public int totalStep() {
        return totalStep;
    }

    /**
     * {@code rank_pattern}: for each {@code <module path>.lora_E}, which rank positions are kept; null when the file
     * has null (no allocation has happened).
     */
    public Map<String, List<Boolean>> rankPattern() {
        return rankPattern;
    }

    private static Map<String, List<Boolean>> readRankPattern(ConfigDoc doc) {
        Map<String, Object> raw = doc.object("rank_pattern", null, true);
        if (raw == null) {
            return null;
        }
        Map<String, List<Boolean>> out = new LinkedHashMap<>();
        raw.forEach((module, value) -> {
            if (!(value instanceof List<?> list) || !list.stream().allMatch(b -> b instanceof Boolean)) {
                throw doc.error("rank_pattern: value of \"" + module + "\" must be a list of booleans, got "
                        + PythonJson.repr(value));
            }
            List<Boolean> kept = new ArrayList<>();
            list.forEach(b -> kept.add((Boolean) b));
            out.put(module, List.copyOf(kept));
        });
        return Collections.unmodifiableMap(out);
    }

    /** Builds an {@link AdaLoraConfig}; see {@link PeftConfigBuilder}. */
    public static final class Builder extends LoraSettingsBuilder<Builder> {
        Builder(Map<String, Object> start) {
            super(start);
        }

        /** {@code target_r}. */
        public Builder targetR(int targetR) {
            return put("target_r", targetR);
        }

        /** {@code init_r}. */
        public Builder initR(int initR) {
            return put("init_r", initR);
        }

        /** {@code tinit}. */
        public Builder tinit(int tinit) {
            return put("tinit", tinit);
        }

        /** {@code tfinal}. */
        public Builder tfinal(int tfinal) {
            return put("tfinal", tfinal);
        }

        /** {@code deltaT}. */
        public Builder deltaT(int deltaT) {
            return put("deltaT", deltaT);
        }

        /** {@code beta1}. */
        public Builder beta1(double beta1) {
            return put("beta1", beta1);
        }

        /** {@code beta2}. */
        public Builder beta2(double beta2) {
            return put("beta2", beta2);
        }

        /** {@code orth_reg_weight}. */
        public Builder orthRegWeight(double orthRegWeight) {
            return put("orth_reg_weight", orthRegWeight);
        }

        /** {@code total_step}. */
        public Builder totalStep(int totalStep) {
            return put("total_step", totalStep);
        }

        /** {@code rank_pattern}: kept rank positions per {@code <module path>.lora_E}; null for none. */
        public Builder rankPattern(Map<String, List<Boolean>> rankPattern) {
            return put("rank_pattern", rankPattern);
        }

        /**
         * Validates and builds.
         *
         * @throws PeftConfigException where reading a file with these values would fail
         */
        @Override
        public AdaLoraConfig build() {
            return new AdaLoraConfig(new ConfigDoc("AdaLoraConfig", json));
        }
    }
}

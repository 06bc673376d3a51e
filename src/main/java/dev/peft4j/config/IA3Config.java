package dev.peft4j.config;

import java.util.Map;

/** PEFT's {@code IA3Config} (spec §3.6). */
public final class IA3Config extends ConfigBase implements PeftConfig {
    private final ModuleSelector feedforwardModules;
    private final boolean initIa3Weights;

    IA3Config(ConfigDoc doc) {
        super(doc, PeftType.IA3);
        feedforwardModules = doc.selector("feedforward_modules");
        initIa3Weights = doc.bool("init_ia3_weights", true);
        if (targetModules() instanceof ModuleSelector.Names targets
                && feedforwardModules instanceof ModuleSelector.Names feedforward
                && !targets.asSet().containsAll(feedforward.asSet())) {
            throw doc.error("feedforward_modules", "must be a subset of \"target_modules\" "
                    + PythonJson.repr(targets.names()));
        }
    }

    /** A builder with PEFT's defaults. */
    public static Builder builder() {
        return new Builder(KnownKeys.defaults(PeftType.IA3));
    }

    @Override
    public Builder toBuilder() {
        return new Builder(toJsonObject());
    }

    @Override
    public PeftType peftType() {
        return PeftType.IA3;
    }

    /**
     * {@code feedforward_modules}: modules whose input, not output, is scaled; or null. A list entry matches a
     * module whose name ends with it, without a dot boundary (§4.3).
     */
    public ModuleSelector feedforwardModules() {
        return feedforwardModules;
    }

    /** {@code init_ia3_weights}: vectors start at ones (true) or standard normal (false). */
    public boolean initIa3Weights() {
        return initIa3Weights;
    }

    /** Builds an {@link IA3Config}; see {@link PeftConfigBuilder}. */
    public static final class Builder extends PeftConfigBuilder<Builder> {
        Builder(Map<String, Object> start) {
            super(start);
        }

        /** {@code feedforward_modules}; null for the model type's defaults. */
        public Builder feedforwardModules(ModuleSelector feedforwardModules) {
            return put("feedforward_modules", ConfigDoc.toJson(feedforwardModules));
        }

        /** {@code feedforward_modules} as a list of names. */
        public Builder feedforwardModules(String... names) {
            return feedforwardModules(ModuleSelector.names(names));
        }

        /** {@code init_ia3_weights}. */
        public Builder initIa3Weights(boolean initIa3Weights) {
            return put("init_ia3_weights", initIa3Weights);
        }

        /**
         * Validates and builds.
         *
         * @throws PeftConfigException where reading a file with these values would fail
         */
        @Override
        public IA3Config build() {
            return new IA3Config(new ConfigDoc("IA3Config", json));
        }
    }
}

package dev.peft4j.config;

import java.util.Locale;

/**
 * {@code init_lora_weights}: a boolean or the name of an initialisation method ({@code "gaussian"}, {@code "pissa"},
 * {@code "pissa_niter_16"}, {@code "olora"}, {@code "loftq"}, {@code "eva"}, {@code "corda"}, {@code "lora_ga"},
 * {@code "orthogonal"}, {@code "mica"}, ...; spec §3.8). Names are kept as written: PEFT does not check them when
 * reading a config, only when it builds a layer.
 */
public sealed interface InitLoraWeights permits InitLoraWeights.Flag, InitLoraWeights.Method {

    /** PEFT's default, {@code true}. */
    InitLoraWeights DEFAULT = new Flag(true);

    /** {@code true} or {@code false}. */
    record Flag(boolean value) implements InitLoraWeights {}

    /** A named method. */
    record Method(String name) implements InitLoraWeights {
        /**
         * Checks that {@code name} is given.
         * @throws NullPointerException if {@code name} is null
         */
        public Method {
            if (name == null) {
                throw new NullPointerException("name");
            }
        }
    }

    /** Whether loading a trained adapter with this init needs nothing but its weights ({@code true}, {@code false}, gaussian). */
    default boolean isSimple() {
        return this instanceof Flag || "gaussian".equals(((Method) this).name().toLowerCase(Locale.ROOT));
    }

    /**
     * Whether PEFT rewrites the base weights when it injects an adapter with this init (PiSSA, OLoRA, CorDA, LoRA-GA,
     * LoftQ): such a checkpoint is only right relative to the rewritten base (§3.8).
     */
    default boolean mutatesBaseWeights() {
        if (!(this instanceof Method m)) {
            return false;
        }
        String n = m.name().toLowerCase(Locale.ROOT);
        return n.startsWith("pissa") || n.equals("olora") || n.equals("corda") || n.equals("lora_ga")
                || n.equals("loftq");
    }

    /** {@code true} / {@code false}. */
    static InitLoraWeights of(boolean value) {
        return new Flag(value);
    }

    /** A named method. */
    static InitLoraWeights of(String method) {
        return new Method(method);
    }
}

package dev.peft4j;

import dev.peft4j.config.AdaLoraConfig;
import dev.peft4j.config.IA3Config;
import dev.peft4j.config.PeftConfig;
import dev.peft4j.config.PeftType;
import dev.peft4j.tuners.BaseTuner;
import dev.peft4j.tuners.TunerModel;
import dev.peft4j.tuners.adalora.AdaLoraModel;
import dev.peft4j.tuners.ia3.IA3Model;
import dev.peft4j.tuners.lora.LoraModel;

/**
 * The methods a model's adapters may use, each config type to its {@link TunerModel} (PEFT's
 * {@code PEFT_TYPE_TO_TUNER_MAPPING}): a new method is its package {@code tuners.<method>} and one entry here.
 */
final class TunerModels {
    private final LoraModel lora;
    private final IA3Model ia3;
    private final AdaLoraModel adaLora;

    TunerModels(BaseTuner tuner) {
        this.lora = new LoraModel(tuner);
        this.ia3 = new IA3Model(tuner);
        this.adaLora = new AdaLoraModel(tuner);
    }

    /** The method of {@code config}; other PEFT methods are refused, naming the adapter. */
    TunerModel of(PeftConfig config, String name) {
        if (config instanceof IA3Config) {
            return ia3;
        }
        if (config instanceof AdaLoraConfig) {
            return adaLora;
        }
        if (config.peftType() != PeftType.LORA) {
            throw new UnsupportedOperationException("peft_type " + config.peftType() + " is not supported yet by "
                    + "peft4j's adapter mixin (only LORA is); adapter '" + name + "' was not added");
        }
        return lora;
    }
}

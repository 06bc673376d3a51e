package dev.peft4j.config;

/** LoRA {@code bias}: which biases of the base model are trained and saved (spec §5.4). */
public enum Bias {
    NONE("none"),
    ALL("all"),
    LORA_ONLY("lora_only");

    private final String jsonValue;

    Bias(String jsonValue) {
        this.jsonValue = jsonValue;
    }

    /** The string PEFT writes. */
    public String jsonValue() {
        return jsonValue;
    }

    static Bias fromJson(String value) {
        for (Bias b : values()) {
            if (b.jsonValue.equals(value)) {
                return b;
            }
        }
        return null;
    }
}

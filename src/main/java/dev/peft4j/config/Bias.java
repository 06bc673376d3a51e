package dev.peft4j.config;

/** LoRA {@code bias}: which biases of the base model are trained and saved (spec §5.4). */
public enum Bias {
    /** No bias is trained. */
    NONE("none"),
    /** Every bias of the base model is trained and saved with the adapter. */
    ALL("all"),
    /** Only the biases of the layers the adapter targets are trained and saved. */
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

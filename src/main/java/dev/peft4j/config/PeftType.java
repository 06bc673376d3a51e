package dev.peft4j.config;

/** The adapter methods peft4j can inject ({@code peft_type}). */
public enum PeftType {
    LORA,
    IA3,
    ADALORA;

    /** The string PEFT writes ({@code "LORA"}, {@code "IA3"}, {@code "ADALORA"}). */
    public String jsonValue() {
        return name();
    }
}

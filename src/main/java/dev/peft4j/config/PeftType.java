package dev.peft4j.config;

/** The adapter methods peft4j can inject ({@code peft_type}). */
public enum PeftType {
    /** LoRA: a low-rank update {@code B A} added to the target's output. */
    LORA,
    /** (IA)³: learned vectors that rescale the target's activations. */
    IA3,
    /** AdaLoRA: LoRA in SVD form whose ranks are pruned during training. */
    ADALORA;

    /** The string PEFT writes ({@code "LORA"}, {@code "IA3"}, {@code "ADALORA"}). */
    public String jsonValue() {
        return name();
    }
}

package dev.peft4j.config;

/** {@code task_type}: PEFT's task types (spec §3.3), written as their names. */
public enum TaskType {
    /** Sequence classification ({@code AutoModelForSequenceClassification}). */
    SEQ_CLS,
    /** Sequence-to-sequence language modelling. */
    SEQ_2_SEQ_LM,
    /** Causal language modelling ({@code AutoModelForCausalLM}). */
    CAUSAL_LM,
    /** Token classification. */
    TOKEN_CLS,
    /** Extractive question answering. */
    QUESTION_ANS,
    /** Feature extraction (the base model's hidden states). */
    FEATURE_EXTRACTION
}

package dev.peft4j.config;

/** {@code task_type}: PEFT's task types (spec §3.3), written as their names. */
public enum TaskType {
    SEQ_CLS,
    SEQ_2_SEQ_LM,
    CAUSAL_LM,
    TOKEN_CLS,
    QUESTION_ANS,
    FEATURE_EXTRACTION
}

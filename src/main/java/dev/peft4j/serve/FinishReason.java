package dev.peft4j.serve;

/** Why a request stopped producing tokens (OpenAI's {@code finish_reason}). */
public enum FinishReason {
    /** It produced its {@code maxNewTokens}. */
    LENGTH,
    /** It produced a stop token (a stop id or the model's eos) or its text reached a stop string. */
    STOP;

    /** {@code "length"} or {@code "stop"}, as OpenAI writes it. */
    public String openAiName() {
        return this == LENGTH ? "length" : "stop";
    }
}

package dev.peft4j.serve;

import java.time.Duration;
import java.util.List;
import java.util.Set;

/**
 * One generation request for a {@link ServingEngine}: an adapter (or none, the base model), a prompt as token ids or
 * text, how many tokens to generate, greedy or seeded sampling, where to stop, a timeout and an optional listener of
 * tokens as they come. Build it with {@link #builder()}; the values are checked there.
 *
 * @param adapter a registered adapter's name, or null for the base model
 * @param promptIds the prompt's token ids, or null when {@code promptText} is given
 * @param promptText the prompt's text (the engine needs a tokenizer), or null
 * @param addSpecialTokens with {@code promptText}: let the tokenizer add the model's special tokens (a BOS)
 * @param maxNewTokens at least 1
 * @param doSample false: greedy (argmax); true: temperature, then top-k, then top-p, drawn from a generator seeded
 *     with {@code seed}, so that a seed reproduces a run whatever else the engine serves
 * @param stopTokenIds tokens that end the request (kept as its last token, left out of its text)
 * @param stopStrings strings that end the request (its text is cut before the first one; needs a tokenizer)
 * @param ignoreEos when false, the model config's {@code eos_token_id}s stop it too
 * @param timeout from submission to the last token; null for the engine's default
 * @param listener called with each token in order, then at the end; null for none
 */
public record ServeRequest(String adapter, long[] promptIds, String promptText, boolean addSpecialTokens,
        int maxNewTokens, boolean doSample, double temperature, int topK, double topP, long seed,
        Set<Long> stopTokenIds, List<String> stopStrings, boolean ignoreEos, Duration timeout, TokenListener listener) {

    /**
     * Checks and copies the request's values.
     *
     * @throws IllegalArgumentException naming the value at fault: no prompt or both forms, an empty prompt,
     *     {@code maxNewTokens < 1}, a non-positive sampling temperature, {@code topK < 0}, {@code topP} outside
     *     (0, 1], a non-positive timeout, an empty stop string
     */
    public ServeRequest {
        if ((promptIds == null) == (promptText == null)) {
            throw new IllegalArgumentException("give the prompt as token ids or as text (exactly one of them)");
        }
        if (promptIds != null && promptIds.length == 0 || promptText != null && promptText.isEmpty()) {
            throw new IllegalArgumentException("the prompt is empty: nothing to continue");
        }
        if (maxNewTokens < 1) {
            throw new IllegalArgumentException("maxNewTokens must be ≥ 1, got " + maxNewTokens);
        }
        if (doSample && !(temperature > 0 && Double.isFinite(temperature))) {
            throw new IllegalArgumentException("temperature must be > 0 when sampling, got " + temperature);
        }
        if (topK < 0) {
            throw new IllegalArgumentException("topK must be ≥ 0, got " + topK);
        }
        if (!(topP > 0 && topP <= 1)) {
            throw new IllegalArgumentException("topP must be in (0, 1], got " + topP);
        }
        if (timeout != null && (timeout.isNegative() || timeout.isZero())) {
            throw new IllegalArgumentException("timeout must be positive, got " + timeout);
        }
        promptIds = promptIds == null ? null : promptIds.clone();
        stopTokenIds = stopTokenIds == null ? Set.of() : Set.copyOf(stopTokenIds);
        stopStrings = stopStrings == null ? List.of() : List.copyOf(stopStrings);
        for (String s : stopStrings) {
            if (s.isEmpty()) {
                throw new IllegalArgumentException("a stop string is empty");
            }
        }
    }

    /** @return a copy of the prompt's token ids, or null when the prompt is text */
    @Override
    public long[] promptIds() {
        return promptIds == null ? null : promptIds.clone();
    }

    /** @return a builder with the defaults {@link Builder} lists */
    public static Builder builder() {
        return new Builder();
    }

    /** Defaults: base model, 16 new tokens, greedy, special tokens added to a text prompt, eos stops. */
    public static final class Builder {
        private String adapter;
        private long[] promptIds;
        private String promptText;
        private boolean addSpecialTokens = true;
        private int maxNewTokens = 16;
        private boolean doSample;
        private double temperature = 1.0;
        private int topK;
        private double topP = 1.0;
        private long seed;
        private Set<Long> stopTokenIds;
        private List<String> stopStrings;
        private boolean ignoreEos;
        private Duration timeout;
        private TokenListener listener;

        private Builder() {}

        /** A registered adapter, or null for the base model. */
        public Builder adapter(String v) {
            adapter = v;
            return this;
        }

        /** The prompt as token ids of the model's vocabulary (or give {@link #promptText}). */
        public Builder promptIds(long... v) {
            promptIds = v;
            return this;
        }

        /** The prompt as text, encoded by the engine's tokenizer (or give {@link #promptIds}). */
        public Builder promptText(String v) {
            promptText = v;
            return this;
        }

        /** With {@link #promptText}: whether the tokenizer adds the model's special tokens (default true). */
        public Builder addSpecialTokens(boolean v) {
            addSpecialTokens = v;
            return this;
        }

        /** At most this many generated tokens, at least 1 (default 16). */
        public Builder maxNewTokens(int v) {
            maxNewTokens = v;
            return this;
        }

        /** Greedy decoding (the default). */
        public Builder greedy() {
            doSample = false;
            return this;
        }

        /** Seeded sampling: temperature, then top-k (0 = all), then top-p (1 = all). */
        public Builder sampling(double temperature, int topK, double topP, long seed) {
            this.doSample = true;
            this.temperature = temperature;
            this.topK = topK;
            this.topP = topP;
            this.seed = seed;
            return this;
        }

        /** Token ids that end the request; the stop token is its last token, left out of its text. */
        public Builder stopTokenIds(Set<Long> v) {
            stopTokenIds = v;
            return this;
        }

        /** Strings that end the request, its text cut before the first one (needs the engine's tokenizer). */
        public Builder stopStrings(List<String> v) {
            stopStrings = v;
            return this;
        }

        /** True: the model config's {@code eos_token_id}s do not stop the request (default false). */
        public Builder ignoreEos(boolean v) {
            ignoreEos = v;
            return this;
        }

        /** From submission to the last token; null (the default) for the engine's default timeout. */
        public Builder timeout(Duration v) {
            timeout = v;
            return this;
        }

        /** Called with each token in order, then once at the end, on the engine's callback threads. */
        public Builder listener(TokenListener v) {
            listener = v;
            return this;
        }

        /** @throws IllegalArgumentException naming the value at fault */
        public ServeRequest build() {
            return new ServeRequest(adapter, promptIds, promptText, addSpecialTokens, maxNewTokens, doSample,
                    temperature, topK, topP, seed, stopTokenIds, stopStrings, ignoreEos, timeout, listener);
        }
    }
}

package dev.peft4j.serve;

/**
 * Receives a request's tokens as they are produced. Calls for one request come in order, one at a time, on one of the
 * engine's callback threads (never its scheduler thread, so a slow listener delays only its own request's events);
 * {@link #onToken} for every token happens before the request's result future completes. An exception thrown here
 * fails that request (its result completes exceptionally with it) and no other.
 */
@FunctionalInterface
public interface TokenListener {
    /**
     * @param index the token's index among the new tokens (0 first)
     * @param tokenId the token
     * @param textDelta the text this token adds (held back while it may still become part of a stop string or an
     *     incomplete UTF-8 character), or null when the engine has no tokenizer
     */
    void onToken(int index, long tokenId, String textDelta) throws Exception;
}

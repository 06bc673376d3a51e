package dev.peft4j.serve;

/**
 * A token of a request's stream ({@link RequestHandle#tokens()}).
 *
 * @param index the token's index among the request's new tokens (0 first)
 * @param tokenId the token
 * @param textDelta the text this token adds (held back while it may still become part of a stop string or an
 *     incomplete UTF-8 character), or null when the engine has no tokenizer
 */
public record StreamedToken(int index, long tokenId, String textDelta) {}

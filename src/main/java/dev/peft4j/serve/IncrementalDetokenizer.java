package dev.peft4j.serve;

import dev.peft4j.tokenizers.Tokenizer;
import java.util.Arrays;

/**
 * The text of a growing sequence of generated tokens, decoded a few tokens at a time as vLLM's
 * {@code detokenize_incrementally} does, so that streaming n tokens costs O(n) decoded tokens, not O(n²).
 *
 * <p>Text is settled window by window: the window {@code ids[prefixOffset, n)} is decoded, and what it adds to the
 * text of its settled start {@code ids[prefixOffset, readOffset)} becomes settled too unless it ends in U+FFFD (an
 * incomplete UTF-8 sequence of byte-fallback tokens, which later tokens may complete); then the window moves on. The
 * window always starts with tokens already decoded, so a decoder step that depends on the start of the text (the
 * Llama tokenizers' {@code Strip} of one leading space) treats both decodes alike. A decoder whose text of a window
 * does not start with the text of the window's start falls back to decoding the whole sequence for that call.
 *
 * <p>Not thread-safe: the engine's scheduler thread owns it with its sequence.
 */
final class IncrementalDetokenizer {
    private final Tokenizer tokenizer;
    private final StringBuilder settled = new StringBuilder();
    private int prefixOffset;
    private int readOffset;
    private String prefixText = "";

    IncrementalDetokenizer(Tokenizer tokenizer) {
        this.tokenizer = tokenizer;
    }

    /**
     * The text of {@code ids[0, n)} (special tokens skipped), where {@code n} is at least the {@code n} of every
     * earlier call minus one and the ids before it are those of the earlier calls.
     */
    String text(long[] ids, int n) {
        if (n < prefixOffset) {
            return tokenizer.decode(Arrays.copyOf(ids, n), true);
        }
        String window = tokenizer.decode(Arrays.copyOfRange(ids, prefixOffset, n), true);
        if (!window.startsWith(prefixText)) {
            return tokenizer.decode(Arrays.copyOf(ids, n), true);
        }
        String added = window.substring(prefixText.length());
        if (added.isEmpty() || added.endsWith("\uFFFD") || n <= readOffset) {
            return settled + added;
        }
        settled.append(added);
        prefixOffset = readOffset;
        readOffset = n;
        prefixText = tokenizer.decode(Arrays.copyOfRange(ids, prefixOffset, readOffset), true);
        return settled.toString();
    }
}

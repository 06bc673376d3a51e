package dev.peft4j.serve;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import dev.peft4j.tokenizers.Tokenizer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The engine's incremental detokenizer against whole-sequence decodes, on the Llama-style test tokenizer (BPE with
 * byte fallback: {@code <0xC3>} {@code <0xA9>} is "é" in two tokens; a {@code Strip} decoder drops the text's one
 * leading space).
 */
class IncrementalDetokenizerTest {
    // ids of the fixture's vocabulary
    private static final long S_END = 2;
    private static final long NEWLINE = 3;
    private static final long BANG = 4;
    private static final long C3 = 8;
    private static final long A9 = 9;
    private static final long SPACE = 11;
    private static final long HELLO = 41;
    private static final long WORLD = 46;
    private static final long ADAPTER = 53;
    private static final long T = 20;

    private static Tokenizer tokenizer;

    @BeforeAll
    static void open() throws Exception {
        tokenizer = Tokenizer.fromFile(Path.of(IncrementalDetokenizerTest.class
                .getResource("/dev/peft4j/tokenizers/llama-bpe/tokenizer.json").toURI()));
    }

    @AfterAll
    static void close() {
        tokenizer.close();
    }

    /** Every prefix's incremental text equals the decode of that prefix whole, and the last one the whole decode. */
    private static void assertStreamsAsWhole(long... ids) {
        IncrementalDetokenizer d = new IncrementalDetokenizer(tokenizer);
        List<String> texts = new ArrayList<>();
        for (int n = 1; n <= ids.length; n++) {
            String got = d.text(ids, n);
            long[] prefix = java.util.Arrays.copyOf(ids, n);
            String whole = tokenizer.decode(prefix, true);
            if (!whole.endsWith("\uFFFD")) {
                // a prefix ending inside a multi-byte character is the one place the texts may differ (the window
                // waits for the rest); everywhere else they are equal
                assertEquals(whole, got, "text of the first " + n + " tokens");
            }
            texts.add(got);
        }
        assertEquals(tokenizer.decode(ids, true), texts.get(texts.size() - 1), "final text");
    }

    @Test
    void byteFallbackCharactersSplitAcrossTokensStreamAsTheWholeDecode() {
        // "hello é world!\né t" with the two bytes of é as separate tokens, twice, and a space token
        assertStreamsAsWhole(HELLO, SPACE, C3, A9, WORLD, BANG, NEWLINE, C3, A9, SPACE, T, ADAPTER, S_END);
    }

    @Test
    void theLeadingSpaceIsStrippedOnceAsInTheWholeDecode() {
        assertStreamsAsWhole(WORLD, HELLO, WORLD, HELLO);
        assertStreamsAsWhole(SPACE, SPACE, HELLO);
    }

    @Test
    void anIncompleteCharacterIsHeldUntilItsLastByteThenSettled() {
        IncrementalDetokenizer d = new IncrementalDetokenizer(tokenizer);
        long[] ids = {HELLO, C3, A9, WORLD};
        assertEquals("hello", d.text(ids, 1));
        String partial = d.text(ids, 2);
        assertEquals(tokenizer.decode(new long[] {HELLO, C3}, true), partial, "while the second byte is missing");
        assertEquals("hello\u00e9", d.text(ids, 3));
        assertEquals("hello\u00e9 world", d.text(ids, 4));
    }

    @Test
    void aStrayContinuationByteStaysAReplacementCharacterAsInTheWholeDecode() {
        assertStreamsAsWhole(HELLO, A9, WORLD, A9);
        String end = new IncrementalDetokenizer(tokenizer).text(new long[] {A9}, 1);
        assertFalse(end.isEmpty(), "a lone continuation byte decodes to a replacement character, not nothing");
    }

    @Test
    void theTextWithoutTheLastTokenIsThatOfThePreviousCall() {
        // the engine asks for the text without a stop token it has just appended
        IncrementalDetokenizer d = new IncrementalDetokenizer(tokenizer);
        long[] ids = {HELLO, WORLD, C3, A9, S_END};
        for (int n = 1; n <= 4; n++) {
            d.text(ids, n);
        }
        assertEquals("hello world\u00e9", d.text(ids, 4));
        assertEquals(tokenizer.decode(new long[] {HELLO, WORLD, C3, A9}, true), d.text(ids, 4));
    }
}

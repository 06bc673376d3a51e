package dev.peft4j.tokenizers;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Optional;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link Tokenizer} on the two hand-made fixtures of {@code src/test/resources/dev/peft4j/tokenizers} (see its
 * PROVENANCE.md). Every expected id below is worked out by hand from the fixture's vocabulary and merge ranks.
 */
class TokenizerTest {
    // llama-bpe ids (vocab of 64): special and byte tokens
    static final long UNK = 0, BOS = 1, EOS = 2, NL = 3, BANG = 4, C3 = 8, A9 = 9;
    // single characters
    static final long SPACE = 11, A = 12, E = 14, O = 17, C = 26, F = 27, I = 24, B = 32;
    // merged tokens
    static final long SP_H = 35, ELL = 39, HELLO = 41, WORLD = 46, THE = 37, LOW = 56, RANK = 60, ADAPTER = 53,
            SP_A = 63;

    static Tokenizer llama;
    static Tokenizer bert;

    static Path fixture(String name) {
        try {
            return Path.of(TokenizerTest.class.getResource("/dev/peft4j/tokenizers/" + name).toURI());
        } catch (URISyntaxException | NullPointerException e) {
            throw new IllegalStateException("test resource missing: " + name, e);
        }
    }

    @BeforeAll
    static void load() throws Exception {
        llama = Tokenizer.fromPretrained(fixture("llama-bpe")).orElseThrow();
        bert = Tokenizer.fromPretrained(fixture("wordlevel")).orElseThrow();
    }

    @AfterAll
    static void close() {
        llama.close();
        bert.close();
    }

    // ---------------------------------------------------------------- Llama-style: byte-fallback BPE

    @Test
    void bpeMergesFollowTheirRanksAndTheTemplateAddsBos() {
        // "▁hello▁world": ▁h (rank 2) before h e (3), so ll, ell, ▁hell, ▁hello; ▁w, or, ▁wor, ld, ▁world
        assertArrayEquals(new long[] {BOS, HELLO, WORLD}, llama.encode("hello world"));
        assertArrayEquals(new long[] {HELLO, WORLD}, llama.encode("hello world", false));
        assertArrayEquals(new long[] {BOS, THE, LOW, RANK, ADAPTER}, llama.encode("the low rank adapter"));
        assertEquals(List.of("<s>", "▁the", "▁low", "▁rank", "▁adapter"), llama.tokens("the low rank adapter", true));
    }

    @Test
    void charactersOutsideTheVocabularyFallBackToByteTokens() {
        // é is not in the vocabulary: its UTF-8 bytes C3 A9 are; ! is the byte token <0x21>; \n is <0x0A>
        assertArrayEquals(new long[] {BOS, SPACE, C, A, F, C3, A9}, llama.encode("café"));
        assertArrayEquals(new long[] {BOS, SP_H, I, BANG}, llama.encode("hi!"));
        assertArrayEquals(new long[] {BOS, SP_A, NL, B}, llama.encode("a\nb"));
        assertEquals("café", llama.decode(llama.encode("café"), true));
        assertEquals("hi!", llama.decode(llama.encode("hi!"), true));
        assertEquals("a\nb", llama.decode(llama.encode("a\nb"), true));
    }

    @Test
    void withoutAllItsByteTokensACharacterIsUnknownAndUnknownsFuse() {
        // H (0x48) has no byte token: <unk>; then l l -> ll, e ll -> ell
        assertArrayEquals(new long[] {BOS, SPACE, UNK, ELL, O}, llama.encode("Hello"));
        // 😀 is F0 9F 98 80, none in the vocabulary; fuse_unk makes two of them one <unk>
        assertArrayEquals(new long[] {BOS, SPACE, UNK}, llama.encode("😀😀"));
    }

    @Test
    void decodeKeepsOrSkipsSpecialTokensAndStripsTheLeadingSpace() {
        long[] ids = {BOS, HELLO, WORLD, EOS};
        assertEquals("<s> hello world</s>", llama.decode(ids));
        assertEquals("hello world", llama.decode(ids, true));
        // <unk> is special too (added_tokens marks it so, as Llama's does): skipped with the others
        assertEquals("<s> <unk>ello", llama.decode(new long[] {BOS, SPACE, UNK, ELL, O}));
        assertEquals("ello", llama.decode(new long[] {BOS, SPACE, UNK, ELL, O}, true));
        assertEquals("", llama.decode(new long[0]));
    }

    @Test
    void roundTripsTextMadeOfTheVocabulary() {
        for (String s : new String[] {"hello world", "the low rank adapter is", "a world, hello?", "café!\nhello"}) {
            assertEquals(s, llama.decode(llama.encode(s), true), s);
        }
    }

    @Test
    void theNonLegacyLlamaLayoutWithAMetaspacePreTokenizerGivesTheSameIds(@TempDir Path tmp) throws Exception {
        // what transformers' LlamaConverter writes with legacy=False: no normalizer, Metaspace(prepend_scheme
        // "first", split false) instead; same model and decoder
        ObjectMapper om = new ObjectMapper();
        ObjectNode json = (ObjectNode) om.readTree(fixture("llama-bpe/tokenizer.json").toFile());
        json.putNull("normalizer");
        json.putObject("pre_tokenizer").put("type", "Metaspace").put("replacement", "\u2581")
                .put("prepend_scheme", "first").put("split", false);
        om.writeValue(tmp.resolve("tokenizer.json").toFile(), json);
        try (Tokenizer t = Tokenizer.fromPretrained(tmp).orElseThrow()) {
            for (String s : new String[] {"hello world", "the low rank adapter", "café", "Hello", "a\nb"}) {
                assertArrayEquals(llama.encode(s), t.encode(s), s);
                assertEquals(llama.decode(llama.encode(s), true), t.decode(t.encode(s), true), s);
            }
            assertArrayEquals(new long[] {BOS, HELLO, WORLD}, t.encode("hello world"));
        }
    }

    // ---------------------------------------------------------------- BERT-style: WordLevel, [CLS] … [SEP]

    @Test
    void wordLevelLowercasesSplitsAndWrapsInClsSep() {
        assertArrayEquals(new long[] {2, 5, 6, 7, 8, 5, 9, 10, 3}, bert.encode("The cat sat on the mat."));
        assertArrayEquals(new long[] {5, 6, 7, 8, 5, 9, 10}, bert.encode("The cat sat on the mat.", false));
        // bird is not a word of the vocabulary: [UNK] (1)
        assertArrayEquals(new long[] {2, 5, 1, 7, 13, 3}, bert.encode("The bird sat?"));
    }

    @Test
    void wordPieceDecoderJoinsWithSpacesAndCleansUpPunctuation() {
        long[] ids = {2, 5, 6, 7, 8, 5, 9, 10, 3};
        assertEquals("the cat sat on the mat.", bert.decode(ids, true));
        assertEquals("[CLS] the cat sat on the mat. [SEP]", bert.decode(ids));
        assertEquals("[CLS] the [UNK] sat? [SEP]", bert.decode(new long[] {2, 5, 1, 7, 13, 3}));
        assertEquals("the sat?", bert.decode(new long[] {2, 5, 1, 7, 13, 3}, true), "[UNK] is special: skipped");
    }

    // ---------------------------------------------------------------- files

    @Test
    void aFolderWithoutTokenizerJsonHasNoTokenizer(@TempDir Path tmp) throws Exception {
        assertEquals(Optional.empty(), Tokenizer.fromPretrained(tmp));
        assertFalse(Tokenizer.existsIn(tmp));
        assertTrue(Tokenizer.existsIn(fixture("llama-bpe")));
    }

    @Test
    void malformedFilesAreErrorsNamingTheFile(@TempDir Path tmp) throws Exception {
        Path notJson = tmp.resolve("a");
        Files.createDirectories(notJson);
        Files.writeString(notJson.resolve("tokenizer.json"), "{ this is not json");
        TokenizerException e = assertThrows(TokenizerException.class, () -> Tokenizer.fromPretrained(notJson));
        assertTrue(e.getMessage().startsWith(notJson.resolve("tokenizer.json") + ": not a valid tokenizer: "),
                e.getMessage());
        assertEquals(notJson.resolve("tokenizer.json"), e.file());

        // JSON, but a merge names a token the vocabulary lacks
        Path badMerge = tmp.resolve("b");
        Files.createDirectories(badMerge);
        String good = Files.readString(fixture("llama-bpe/tokenizer.json"));
        Files.writeString(badMerge.resolve("tokenizer.json"), good.replace("\"l d\"", "\"l q\""));
        e = assertThrows(TokenizerException.class, () -> Tokenizer.fromPretrained(badMerge));
        assertTrue(e.getMessage().startsWith(badMerge.resolve("tokenizer.json") + ": not a valid tokenizer: "),
                e.getMessage());

        Path latin1 = tmp.resolve("c");
        Files.createDirectories(latin1);
        Files.write(latin1.resolve("tokenizer.json"), "{\"x\": \"caf\u00e9\"}".getBytes(StandardCharsets.ISO_8859_1));
        e = assertThrows(TokenizerException.class, () -> Tokenizer.fromPretrained(latin1));
        assertEquals(latin1.resolve("tokenizer.json") + ": not UTF-8 text", e.getMessage());
    }

    @Test
    void truncationAndPaddingStoredInTheFileAreNotApplied(@TempDir Path tmp) throws Exception {
        String good = Files.readString(fixture("llama-bpe/tokenizer.json"));
        String withLimits = good.replace("\"truncation\": null", "\"truncation\": {\"direction\": \"Right\","
                + " \"max_length\": 2, \"strategy\": \"LongestFirst\", \"stride\": 0}");
        Files.writeString(tmp.resolve("tokenizer.json"), withLimits);
        try (Tokenizer t = Tokenizer.fromPretrained(tmp).orElseThrow()) {
            assertArrayEquals(new long[] {BOS, THE, LOW, RANK, ADAPTER}, t.encode("the low rank adapter"));
        }
    }

    @Test
    void djlTelemetryAndCudaLibraryDownloadsAreOffUnlessTheUserSaysOtherwise() {
        // set on first use (the @BeforeAll load): DJL reads these as environment variables or system properties
        if (System.getenv("OPT_OUT_TRACKING") == null) {
            assertEquals("true", System.getProperty("OPT_OUT_TRACKING"));
        }
        if (System.getenv("RUST_FLAVOR") == null) {
            assertEquals("cpu", System.getProperty("RUST_FLAVOR"));
        }
    }
}

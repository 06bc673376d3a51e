package dev.peft4j.tuners;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class PatternKeysTest {

    static <V> Map<String, V> ordered(Object... kv) {
        Map<String, V> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            @SuppressWarnings("unchecked")
            V v = (V) kv[i + 1];
            m.put((String) kv[i], v);
        }
        return m;
    }

    @Test
    void rankAndAlphaResolveIndependentlyAsInPeftInitTest() {
        // test_initialization: rank_pattern {"embed": 9, "conv2d": 16}, alpha_pattern {"linear": 11, "conv2d": 13},
        // r=25, lora_alpha=17 -> scaling linear 11/25, embed 17/9, conv2d 13/16
        Map<String, Integer> rank = ordered("embed", 9, "conv2d", 16);
        Map<String, Number> alpha = ordered("linear", 11, "conv2d", 13);
        assertEquals(25, PatternKeys.rank(rank, "linear", 25));
        assertEquals(11.0, PatternKeys.alpha(alpha, "linear", 17));
        assertEquals(9, PatternKeys.rank(rank, "embed", 25));
        assertEquals(17.0, PatternKeys.alpha(alpha, "embed", 17));
        assertEquals(16, PatternKeys.rank(rank, "conv2d", 25));
        assertEquals(13.0, PatternKeys.alpha(alpha, "conv2d", 17));
    }

    @Test
    void patternMatchesWholeTrailingComponentsNotSubstrings() {
        List<String> keys = List.of("q_proj");
        assertEquals("q_proj", PatternKeys.patternKey(keys, "model.layers.0.self_attn.q_proj"));
        assertEquals("q_proj", PatternKeys.patternKey(keys, "q_proj"));
        assertEquals("model.layers.0.xq_proj", PatternKeys.patternKey(keys, "model.layers.0.xq_proj"));
        assertEquals("model.q_proj.inner", PatternKeys.patternKey(keys, "model.q_proj.inner"));
    }

    @Test
    void firstPatternInInsertionOrderWins() {
        Map<String, Integer> rank = ordered("layers.0.self_attn.q_proj", 4, "q_proj", 16);
        assertEquals(4, PatternKeys.rank(rank, "model.layers.0.self_attn.q_proj", 8));
        assertEquals(16, PatternKeys.rank(rank, "model.layers.1.self_attn.q_proj", 8));
        Map<String, Integer> reversed = ordered("q_proj", 16, "layers.0.self_attn.q_proj", 4);
        assertEquals(16, PatternKeys.rank(reversed, "model.layers.0.self_attn.q_proj", 8));
    }

    @Test
    void patternsAreRegexFragments() {
        Map<String, Integer> rank = ordered("layers\\.[0-3]\\..*proj", 2, "^model\\.layers\\.5\\.mlp\\.up_proj", 3);
        assertEquals(2, PatternKeys.rank(rank, "model.layers.3.self_attn.v_proj", 8));
        assertEquals(8, PatternKeys.rank(rank, "model.layers.4.self_attn.v_proj", 8));
        // '^' inside the group still anchors at the start of the key (re.match semantics)
        assertEquals(3, PatternKeys.rank(rank, "model.layers.5.mlp.up_proj", 8));
    }

    @Test
    void exactNameFallbackUsesTheKeyItself() {
        // "a+b" as a regex does not match the literal "a+b", so get_pattern_key returns the key: the dict lookup hits
        Map<String, Integer> rank = ordered("a+b", 5);
        assertEquals(5, PatternKeys.rank(rank, "a+b", 8));
    }

    @Test
    void legacyPatternsNeedADotAndShareOneMatchForRankAndAlpha() {
        Map<String, Integer> rank = ordered("q_proj", 4);
        Map<String, Number> alpha = ordered("self_attn.q_proj", 32);
        assertEquals("q_proj", PatternKeys.legacyPatternKey(rank, alpha, "model.self_attn.q_proj"));
        assertEquals("q_.*", PatternKeys.patternKey(List.of("q_.*"), "q_proj"));
        assertEquals("q_proj", PatternKeys.legacyPatternKey(ordered("q_.*", 4), null, "q_proj"),
                "legacy needs a dot before the pattern: no match, the key itself");
        // PEFT >= 0.15 resolves the alpha override separately
        assertEquals(32.0, PatternKeys.alpha(alpha, "model.self_attn.q_proj", 8));
    }

    @Test
    void invalidPatternNamesThePattern() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> PatternKeys.rank(ordered("q_proj(", 4), "q_proj", 8));
        assertTrue(e.getMessage().contains("'q_proj('"), e.getMessage());
    }
}

package dev.peft4j.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** rank_pattern / alpha_pattern resolution (spec §4.6) and scaling (§6.1), hand-computed. */
class LoraPatternTest {

    /** The example of PEFT's tests quoted in §4.6: r=25, alpha=17. */
    static LoraConfig.Builder peftTestExample() {
        Map<String, Integer> ranks = new LinkedHashMap<>();
        ranks.put("embed", 9);
        ranks.put("conv2d", 16);
        Map<String, Integer> alphas = new LinkedHashMap<>();
        alphas.put("linear", 11);
        alphas.put("conv2d", 13);
        return LoraConfig.builder().r(25).loraAlpha(17).rankPattern(ranks).alphaPattern(alphas);
    }

    @Test
    void rankAndAlphaResolveIndependentlyAsInPeftsTestExample() {
        LoraConfig c = peftTestExample().build();
        assertEquals(25, c.rankFor("linear"));
        assertEquals(11.0, c.alphaFor("linear"));
        assertEquals(11.0 / 25, c.scaling("linear"));
        assertEquals(9, c.rankFor("embed"));
        assertEquals(17.0, c.alphaFor("embed"));
        assertEquals(17.0 / 9, c.scaling("embed"));
        assertEquals(16, c.rankFor("conv2d"));
        assertEquals(13.0 / 16, c.scaling("conv2d"));
    }

    @Test
    void rsloraDividesBySquareRootOfTheResolvedRank() {
        LoraConfig c = peftTestExample().useRslora(true).build();
        assertEquals(11.0 / 5, c.scaling("linear")); // sqrt(25) = 5
        assertEquals(17.0 / 3, c.scaling("embed")); // sqrt(9) = 3
        assertEquals(13.0 / 4, c.scaling("conv2d")); // sqrt(16) = 4
    }

    @Test
    void patternMatchesAWholeDottedSuffixOfTheModuleName() {
        LoraConfig c = LoraConfig.builder().r(8).rankPattern(Map.of("q_proj", 4)).build();
        assertEquals(4, c.rankFor("model.layers.0.self_attn.q_proj"));
        assertEquals(4, c.rankFor("q_proj"));
        assertEquals(8, c.rankFor("model.layers.0.self_attn.xq_proj"), "needs a dot boundary");
        assertEquals(8, c.rankFor("model.layers.0.self_attn.q_proj.base"), "must end the name");
    }

    @Test
    void patternIsARegexAndMaySpanSeveralSegments() {
        LoraConfig c = LoraConfig.builder().r(8).rankPattern(Map.of("layers\\.[01]\\.self_attn\\.(q|v)_proj", 2))
                .build();
        assertEquals(2, c.rankFor("model.layers.1.self_attn.v_proj"));
        assertEquals(8, c.rankFor("model.layers.2.self_attn.v_proj"));
        assertEquals(8, c.rankFor("model.layers.1.self_attn.k_proj"));
    }

    @Test
    void firstMatchingPatternInMapOrderWins() {
        Map<String, Integer> ranks = new LinkedHashMap<>();
        ranks.put("self_attn.q_proj", 4);
        ranks.put(".*q_proj", 32);
        LoraConfig c = LoraConfig.builder().rankPattern(ranks).build();
        assertEquals(4, c.rankFor("model.layers.0.self_attn.q_proj"));
        Map<String, Integer> reversed = new LinkedHashMap<>();
        reversed.put(".*q_proj", 32);
        reversed.put("self_attn.q_proj", 4);
        assertEquals(32, LoraConfig.builder().rankPattern(reversed).build().rankFor("model.layers.0.self_attn.q_proj"));
    }

    @Test
    void patternOrderAfterReadingIsTheFilesOrder() {
        // what PEFT saves is sorted, so ".*q_proj" (code point 0x2e) comes before "self_attn.q_proj"
        LoraConfig c = (LoraConfig) PeftConfigs.parse("{\"peft_type\": \"LORA\", \"rank_pattern\": "
                + "{\".*q_proj\": 32, \"self_attn.q_proj\": 4}}", "t.json");
        assertEquals(32, c.rankFor("model.layers.0.self_attn.q_proj"));
    }

    @Test
    void keyThatMatchesNoPatternIsLookedUpByExactName() {
        // "a+b" as a regex does not match the literal name "a+b"; PEFT then looks the name itself up
        LoraConfig c = LoraConfig.builder().r(8).rankPattern(Map.of("a+b", 3)).alphaPattern(Map.of("a+b", 5.5))
                .build();
        assertEquals(3, c.rankFor("a+b"));
        assertEquals(5.5, c.alphaFor("a+b"));
        assertEquals(3, c.rankFor("aab"), "and the regex still matches what it matches");
    }

    @Test
    void noPatternsGiveRAndLoraAlphaEverywhere() {
        LoraConfig c = LoraConfig.builder().r(16).loraAlpha(32).build();
        assertEquals(16, c.rankFor("any.module"));
        assertEquals(2.0, c.scaling("any.module"));
    }

    @Test
    void invalidPatternRegexIsRejectedNamingTheKey() {
        PeftConfigException e = assertThrows(PeftConfigException.class,
                () -> LoraConfig.builder().rankPattern(Map.of("q_proj(", 4)).build());
        assertTrue(e.getMessage().startsWith("LoraConfig: rank_pattern: key \"q_proj(\" is not a valid regular"),
                e.getMessage());
    }

    @Test
    void nonPositiveRankInPatternIsRejected() {
        PeftConfigException e = assertThrows(PeftConfigException.class,
                () -> LoraConfig.builder().rankPattern(Map.of("q_proj", 0)).build());
        assertEquals("LoraConfig: rank_pattern: rank of \"q_proj\" must be a positive integer, got 0", e.getMessage());
    }
}

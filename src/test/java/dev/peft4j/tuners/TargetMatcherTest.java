package dev.peft4j.tuners;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

class TargetMatcherTest {

    /**
     * PEFT's {@code tests/test_tuners_utils.py::REGEX_TEST_CASES}, every row, in order:
     * key, target_modules (list or regex), layers_to_transform, layers_pattern (list, str or null), expected.
     */
    static Stream<Arguments> pefRegexTestCases() {
        List<Integer> none = null;
        return Stream.of(
                // some basic examples
                Arguments.of("", List.of(), none, null, false),
                Arguments.of("", List.of("foo"), none, null, false),
                Arguments.of("foo", List.of(), none, null, false),
                Arguments.of("foo", List.of("foo"), none, null, true),
                Arguments.of("foo", List.of("bar"), none, null, false),
                Arguments.of("foo", List.of("foo", "bar"), none, null, true),
                // with regex
                Arguments.of("foo", "foo", none, null, true),
                Arguments.of("foo", ".*oo", none, null, true),
                Arguments.of("foo", "fo.*", none, null, true),
                Arguments.of("foo", ".*bar.*", none, null, false),
                Arguments.of("foobar", ".*oba.*", none, null, true),
                // with layers_to_transform
                Arguments.of("foo.bar.1.baz", List.of("baz"), List.of(1), List.of("bar"), true),
                Arguments.of("foo.bar.1.baz", List.of("baz"), List.of(0), List.of("bar"), false),
                Arguments.of("foo.bar.1.baz", List.of("baz"), List.of(2), List.of("bar"), false),
                Arguments.of("foo.bar.10.baz", List.of("baz"), List.of(0), List.of("bar"), false),
                Arguments.of("foo.bar.10.baz", List.of("baz"), List.of(1), List.of("bar"), false),
                Arguments.of("foo.bar.1.baz", List.of("baz"), List.of(0, 1, 2), List.of("bar"), true),
                Arguments.of("foo.bar.1.baz", List.of("baz", "spam"), List.of(1), List.of("bar"), true),
                Arguments.of("foo.bar.1.baz", List.of("baz", "spam"), List.of(0, 1, 2), List.of("bar"), true),
                // empty layers_pattern
                Arguments.of("foo.whatever.1.baz", List.of("baz"), List.of(1), List.of(), true),
                Arguments.of("foo.whatever.1.baz", List.of("baz"), List.of(0), List.of(), false),
                Arguments.of("foo.whatever.1.baz", List.of("baz"), List.of(1), "", true),
                Arguments.of("foo.whatever.1.baz", List.of("baz"), List.of(0), "", false),
                Arguments.of("foo.whatever.1.baz", List.of("baz"), List.of(1), null, true),
                Arguments.of("foo.whatever.1.baz", List.of("baz"), List.of(0), null, false),
                // some realistic examples: transformers model
                Arguments.of("transformer.h.1.attn.attention.q_proj.foo", List.of("q_proj"), none, List.of(), false),
                Arguments.of("transformer.h.1.attn.attention.q_proj", List.of(), none, List.of(), false),
                Arguments.of("transformer.h.1.attn.attention.q_proj", List.of("q_proj"), none, List.of(), true),
                Arguments.of("transformer.h.1.attn.attention.q_proj", List.of("q_proj", "v_proj"), none, List.of(), true),
                Arguments.of("transformer.h.1.attn.attention.resid_dropout", List.of("q_proj", "v_proj"), none,
                        List.of(), false),
                Arguments.of("transformer.h.1.attn.attention.q_proj", List.of("q_proj"), List.of(1), List.of("h"), true),
                Arguments.of("transformer.h.1.attn.attention.q_proj", List.of("q_proj"), List.of(0), List.of("h"), false),
                Arguments.of("transformer.h.1.attn.attention.q_proj", List.of("q_proj"), List.of(2), List.of("h"), false),
                Arguments.of("transformer.h.1.attn.attention.q_proj", List.of("q_proj"), List.of(0, 1, 2), List.of("h"),
                        true),
                Arguments.of("transformer.h.1.attn.attention.q_proj", List.of("q_proj", "v_proj"), List.of(0, 1, 2),
                        List.of("h"), true),
                Arguments.of("foo.bar.q_proj", List.of("q_proj"), none, List.of(), true),
                Arguments.of("foo.bar.1.baz", List.of("baz"), List.of(1), List.of("foo"), false),
                // other corner cases: layers_pattern is one of the target modules
                Arguments.of("foo.bar.1.baz", List.of("baz"), List.of(1), List.of("baz"), false),
                // layers_pattern 'bar' needs a '.bar' in the key
                Arguments.of("bar.1.baz", List.of("baz"), List.of(1), List.of("bar"), false),
                Arguments.of("foo.bar.001.baz", List.of("baz"), List.of(1), List.of("bar"), true),
                Arguments.of("foo.bar.1.spam.2.baz", List.of("baz"), List.of(1), List.of("bar"), true),
                Arguments.of("foo.bar.2.spam.1.baz", List.of("baz"), List.of(1), List.of("bar"), false),
                // module using nn.Sequential
                Arguments.of("blocks.1.weight", List.of("weight"), List.of(1), List.of("blocks"), false),
                Arguments.of("blocks.1.bias", List.of("weight"), List.of(1), List.of("blocks"), false),
                Arguments.of("mlp.blocks.1.weight", List.of("weight"), List.of(1), List.of("blocks"), true),
                Arguments.of("mlp.blocks.1.bias", List.of("weight"), List.of(1), List.of("blocks"), false));
    }

    @SuppressWarnings("unchecked")
    @ParameterizedTest(name = "[{index}] {0} | {1} | {2} | {3} -> {4}")
    @MethodSource("pefRegexTestCases")
    void matchesPeftRegexTestCases(String key, Object targets, List<Integer> layers, Object pattern, boolean expected) {
        TargetMatcher.Builder b = TargetMatcher.builder();
        if (targets instanceof String) {
            b.targetModules((String) targets);
        } else {
            b.targetModules((List<String>) targets);
        }
        b.layersToTransform(layers);
        if (pattern instanceof String) {
            b.layersPattern((String) pattern);
        } else {
            b.layersPattern((List<String>) pattern);
        }
        assertEquals(expected, b.build().matches(key));
    }

    @Test
    void listEntryMatchesByDottedSuffixOnly() {
        TargetMatcher m = TargetMatcher.builder().targetModules(List.of("q_proj", "attn.v_proj")).build();
        assertTrue(m.matches("model.layers.0.self_attn.q_proj"));
        assertFalse(m.matches("model.layers.0.self_attn.xq_proj"));
        assertTrue(m.matches("model.layers.0.self.attn.v_proj"));
        assertFalse(m.matches("model.layers.0.self_attn.v_proj"));
    }

    @Test
    void exactNameBypassesLayerFilter() {
        TargetMatcher m = TargetMatcher.builder().targetModules(List.of("model.layers.3.q_proj", "k_proj"))
                .layersToTransform(List.of(0)).layersPattern(List.of("layers")).build();
        assertTrue(m.matches("model.layers.3.q_proj"));
        assertFalse(m.matches("model.layers.3.k_proj"));
        assertTrue(m.matches("model.layers.0.k_proj"));
    }

    @Test
    void layersToTransformAsIntFiltersLikeAOneElementList() {
        TargetMatcher m = TargetMatcher.builder().targetModules(List.of("q_proj")).layersToTransform(2).build();
        assertTrue(m.matches("model.layers.2.q_proj"));
        assertFalse(m.matches("model.layers.1.q_proj"));
    }

    @Test
    void defaultLayerSearchTakesFirstNumberedSegment() {
        // PEFT 0.20+: lazy .*? — the layer index, not the expert index of MoE names
        TargetMatcher m = TargetMatcher.builder().targetModules(List.of("w1")).layersToTransform(List.of(1)).build();
        assertTrue(m.matches("model.layers.1.experts.0.w1"));
        assertFalse(m.matches("model.layers.0.experts.1.w1"));
    }

    @Test
    void regexTargetMustMatchTheWholeKey() {
        TargetMatcher m = TargetMatcher.builder().targetModules(".*(q_proj|v_proj)").build();
        assertTrue(m.matches("model.layers.0.self_attn.v_proj"));
        assertFalse(m.matches("model.layers.0.self_attn.v_proj.lora_A"));
        TargetMatcher alt = TargetMatcher.builder().targetModules("a|ab").build();
        assertTrue(alt.matches("ab"), "fullmatch backtracks into the second alternative");
    }

    @Test
    void regexUsesPythonUnicodeClassesAndNamedGroups() {
        TargetMatcher m = TargetMatcher.builder().targetModules("layer\\.(?P<layer_idx>\\d+)\\.(?P=layer_idx)").build();
        assertTrue(m.matches("layer.7.7"));
        assertFalse(m.matches("layer.7.8"));
        // Python 3 str patterns: \d matches any Unicode decimal digit
        assertTrue(TargetMatcher.builder().targetModules("h\\.\\d").build().matches("h.\u0663"));
        // a brace that opens no repetition is a literal in Python
        assertTrue(TargetMatcher.builder().targetModules("a{x}").build().matches("a{x}"));
        assertTrue(TargetMatcher.builder().targetModules("a{,2}").build().matches("aa"));
        // inside a class, '[' and '&&' are literals in Python
        assertTrue(TargetMatcher.builder().targetModules("[a&&b]").build().matches("&"));
        // conditional groups exist only in Python: refused with the field named
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TargetMatcher.builder().targetModules("(a)?(?(1)b|c)").build());
        assertTrue(e.getMessage().startsWith("target_modules: invalid regular expression"), e.getMessage());
    }

    @Test
    void excludeModulesListUsesDottedSuffixAndRegexFullMatch() {
        TargetMatcher list = TargetMatcher.builder().targetModules(List.of("q_proj"))
                .excludeModules(List.of("layers.1.self_attn.q_proj")).build();
        assertEquals(TargetMatcher.Result.EXCLUDED, list.check("model.layers.1.self_attn.q_proj"));
        assertEquals(TargetMatcher.Result.TARGETED, list.check("model.layers.11.self_attn.q_proj"));
        TargetMatcher regex = TargetMatcher.builder().targetModules(List.of("q_proj"))
                .excludeModules(".*layers\\.1\\..*").build();
        assertEquals(TargetMatcher.Result.EXCLUDED, regex.check("model.layers.1.self_attn.q_proj"));
        assertEquals(TargetMatcher.Result.TARGETED, regex.check("model.layers.2.self_attn.q_proj"));
        TargetMatcher empty = TargetMatcher.builder().targetModules(List.of("q_proj")).excludeModules("").build();
        assertEquals(TargetMatcher.Result.TARGETED, empty.check("q_proj"), "an empty exclude regex is falsy in PEFT");
    }

    @Test
    void modulesToSaveAndEverythingBelowAreNeverTargeted() {
        TargetMatcher m = TargetMatcher.builder().targetModules(".*").modulesToSave(List.of("lm_head", "score")).build();
        assertEquals(TargetMatcher.Result.EXCLUDED, m.check("lm_head"));
        assertEquals(TargetMatcher.Result.EXCLUDED, m.check("model.lm_head.inner"));
        assertEquals(TargetMatcher.Result.TARGETED, m.check("model.lm_head2"));
        assertEquals(TargetMatcher.Result.TARGETED, m.check("xscore"));
    }

    @Test
    void noTargetModulesMatchesNothing() {
        assertEquals(TargetMatcher.Result.NOT_TARGETED, TargetMatcher.builder().build().check("q_proj"));
    }

    static final List<String> LLAMA = List.of("", "model", "model.layers", "model.layers.0", "model.layers.0.self_attn",
            "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.0.mlp",
            "model.layers.0.mlp.down_proj", "lm_head");

    @Test
    void selectTargetsKeepsModelOrderAndSkipsTunerInternals() {
        TargetMatcher m = TargetMatcher.builder().targetModules(List.of("v_proj", "q_proj", "lora_A")).build();
        List<String> names = new java.util.ArrayList<>(LLAMA);
        names.add(6, "model.layers.0.self_attn.q_proj.lora_A");
        assertEquals(List.of("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"),
                m.selectTargets(names, List.of("model.layers.0.self_attn.q_proj")));
    }

    @Test
    void insideTunerMeansBelowItsDottedNameOnly() {
        TargetMatcher m = TargetMatcher.builder().targetModules(List.of("q_proj", "lora_A", "default")).build();
        List<String> names = List.of("model", "model.q", "model.q_proj", "model.q.lora_A", "model.q.lora_A.default",
                "model.q_proj.lora_A");
        // "model.q_proj" starts with "model.q" but is not inside it; everything below model.q is skipped
        assertEquals(List.of("model.q_proj", "model.q_proj.lora_A"), m.selectTargets(names, List.of("model.q")));
        assertEquals(List.of("model.q_proj"), m.selectTargets(names, java.util.Set.of("model.q", "model.q_proj")));
    }

    @Test
    void nothingMatchedRaisesPeftMessageWithLayerNotes() {
        TargetMatcher m = TargetMatcher.builder().targetModules(List.of("query", "value"))
                .layersToTransform(List.of(0, 1)).layersPattern(List.of("h")).build();
        NoMatchingModuleException e = assertThrows(NoMatchingModuleException.class,
                () -> m.selectTargets(LLAMA, List.of()));
        assertEquals("Target modules {'query', 'value'} not found in the base model. Please check the target modules "
                + "and try again. Note: You specified 'layers_to_transform': [0, 1]. You also specified "
                + "'layers_pattern': ['h'].", e.getMessage());
        TargetMatcher regex = TargetMatcher.builder().targetModules(".*query").layersToTransform(3).layersPattern("h")
                .build();
        assertEquals("Target modules .*query not found in the base model. Please check the target modules and try "
                + "again. Note: You specified 'layers_to_transform': 3. You also specified 'layers_pattern': h.",
                assertThrows(NoMatchingModuleException.class, () -> regex.selectTargets(LLAMA, List.of())).getMessage());
    }

    @Test
    void allExcludedRaisesPeftMessage() {
        TargetMatcher m = TargetMatcher.builder().targetModules(".*").excludeModules(".*").build();
        assertEquals("All modules were excluded. This is likely unintended. Check your `target_modules`, "
                + "`exclude_modules` and `modules_to_save` configuration.",
                assertThrows(NoMatchingModuleException.class, () -> m.selectTargets(LLAMA, List.of())).getMessage());
    }

    @Test
    void mixOfUnmatchedAndExcludedRaisesPeftMessage() {
        TargetMatcher m = TargetMatcher.builder().targetModules(List.of("q_proj")).excludeModules(List.of("q_proj"))
                .build();
        assertTrue(assertThrows(NoMatchingModuleException.class, () -> m.selectTargets(LLAMA, List.of()))
                .getMessage().startsWith("No modules were targeted for adaptation. This might be caused by a "
                        + "combination of mismatched target modules and excluded modules."));
    }

    @Test
    void missingTargetModulesRaisesPeftMessage() {
        assertEquals("No `target_modules` passed but also no `target_parameters` found. Please check the values for "
                + "these arguments.", assertThrows(NoMatchingModuleException.class,
                        () -> TargetMatcher.builder().build().selectTargets(LLAMA, List.of())).getMessage());
    }

    @Test
    void dummyTargetModulesSuppressesTheError() {
        TargetMatcher m = TargetMatcher.builder().targetModules(TargetMatcher.DUMMY_TARGET_MODULES).build();
        assertEquals(List.of(), m.selectTargets(LLAMA, List.of()));
    }

    @Test
    void invalidRegexNamesTheField() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TargetMatcher.builder().targetModules("(q_proj").build());
        assertTrue(e.getMessage().startsWith("target_modules: invalid regular expression '(q_proj'"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> TargetMatcher.builder().targetModules(List.of("x")).excludeModules("[").build());
        assertTrue(e.getMessage().startsWith("exclude_modules:"), e.getMessage());
    }

    @Test
    void unexpandedAllLinearIsRefused() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TargetMatcher.builder().targetModules("All-Linear").build());
        assertTrue(e.getMessage().contains("allLinearTargets"), e.getMessage());
        assertTrue(TargetMatcher.isAllLinear("ALL-LINEAR"));
        assertFalse(TargetMatcher.isAllLinear("all_linear"));
    }

    @Test
    void allLinearTakesLinearAndConv1dButNotTheOutputEmbedding() {
        Map<String, ModuleType> gpt2 = new LinkedHashMap<>();
        gpt2.put("", ModuleType.OTHER);
        gpt2.put("transformer.wte", ModuleType.EMBEDDING);
        gpt2.put("transformer.h.0.attn.c_attn", ModuleType.TRANSFORMERS_CONV1D);
        gpt2.put("transformer.h.0.attn.c_proj", ModuleType.TRANSFORMERS_CONV1D);
        gpt2.put("transformer.h.0.mlp.c_fc", ModuleType.TRANSFORMERS_CONV1D);
        gpt2.put("transformer.h.0.ln_1", ModuleType.OTHER);
        gpt2.put("lm_head", ModuleType.LINEAR);
        assertEquals(Set.of("transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_fc"),
                TargetMatcher.allLinearTargets(gpt2, "lm_head", false, List.of()));
        // GPT-NeoX names its head embed_out: it is excluded by identity, not by name
        Map<String, ModuleType> neox = Map.of("gpt_neox.layers.0.attention.dense", ModuleType.LINEAR,
                "embed_out", ModuleType.LINEAR);
        assertEquals(Set.of("gpt_neox.layers.0.attention.dense"),
                TargetMatcher.allLinearTargets(neox, "embed_out", false, List.of()));
    }

    @Test
    void allLinearSkipsSeqClsHeadAndTunerInternals() {
        Map<String, ModuleType> m = new LinkedHashMap<>();
        m.put("model.layers.0.q_proj", ModuleType.LINEAR); // already a lora.Linear: still targeted
        m.put("model.layers.0.q_proj.base_layer", ModuleType.LINEAR);
        m.put("model.layers.0.q_proj.lora_A.default", ModuleType.LINEAR);
        m.put("score", ModuleType.LINEAR);
        m.put("classifier", ModuleType.LINEAR);
        assertEquals(Set.of("model.layers.0.q_proj", "classifier"),
                TargetMatcher.allLinearTargets(m, null, true, List.of("model.layers.0.q_proj")));
        assertEquals(Set.of("model.layers.0.q_proj", "score", "classifier"),
                TargetMatcher.allLinearTargets(m, null, false, List.of("model.layers.0.q_proj")));
    }

    @Test
    void minimalTargetModulesOfPeftDocstring() {
        List<String> targets = new java.util.ArrayList<>();
        List<String> others = new java.util.ArrayList<>();
        for (int i = 0; i < 100; i++) {
            targets.add("model.decoder.layers." + i + ".self_attn.q_proj");
            targets.add("model.decoder.layers." + i + ".self_attn.v_proj");
            others.add("model.encoder.layers." + i + ".self_attn.k_proj");
        }
        assertEquals(Set.of("q_proj", "v_proj"), TargetMatcher.findMinimalTargetModules(targets, others));
    }

    @Test
    void minimalTargetModulesKeepsLongerSuffixWhenTheShortOneIsTaken() {
        // encoder q_proj must not be selected: the decoder targets need "decoder...q_proj"-level suffixes
        List<String> targets = List.of("model.decoder.layers.0.q_proj", "model.decoder.layers.1.q_proj");
        List<String> others = List.of("model.encoder.layers.0.q_proj", "model.encoder.layers.1.q_proj");
        assertEquals(Set.of("decoder.layers.0.q_proj", "decoder.layers.1.q_proj"),
                TargetMatcher.findMinimalTargetModules(targets, others));
        assertEquals("target_modules and other_module_names contain common elements, this should not happen, please "
                + "open a GitHub issue at https://github.com/huggingface/peft/issues with the code to reproduce this "
                + "issue", assertThrows(IllegalArgumentException.class,
                        () -> TargetMatcher.findMinimalTargetModules(List.of("a"), List.of("a"))).getMessage());
        assertEquals("target_modules should not contain an empty string.", assertThrows(IllegalArgumentException.class,
                () -> TargetMatcher.findMinimalTargetModules(List.of("a", ""), List.of())).getMessage());
    }

    @Test
    void condensationOnlyForTwentyOrMoreNonIa3Targets() {
        List<String> names = new java.util.ArrayList<>();
        List<String> targets = new java.util.ArrayList<>();
        for (int i = 0; i < 10; i++) {
            for (String p : List.of("q_proj", "v_proj", "k_proj")) {
                names.add("model.layers." + i + ".self_attn." + p);
            }
            targets.add("model.layers." + i + ".self_attn.q_proj");
            targets.add("model.layers." + i + ".self_attn.v_proj");
        }
        assertEquals(Set.of("q_proj", "v_proj"), TargetMatcher.condenseTargetModules(targets, names, false));
        assertEquals(20, TargetMatcher.condenseTargetModules(targets, names, true).size());
        assertEquals(19, TargetMatcher.condenseTargetModules(targets.subList(0, 19), names, false).size());
    }

    @Test
    void embeddingTargetedByListEntryOrByRegexOverEmbeddingNames() {
        assertTrue(TargetMatcher.embeddingIsTargeted(List.of("q_proj", "lm_head")));
        assertFalse(TargetMatcher.embeddingIsTargeted(List.of("q_proj", "model.embed_tokens")));
        List<String> names = List.of("model.embed_tokens", "model.layers.0.q_proj", "lm_head");
        assertTrue(TargetMatcher.embeddingIsTargeted(".*embed_tokens", names));
        assertFalse(TargetMatcher.embeddingIsTargeted(".*q_proj", names));
        assertFalse(TargetMatcher.embeddingIsTargeted("all-linear", names));
    }
}

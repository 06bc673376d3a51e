package dev.peft4j.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** PEFT's validations (spec §3.2, §3.3, §3.5-§3.7), each with the message peft4j gives. */
class ConfigValidationTest {

    static PeftConfig parse(String jsonBody) {
        return PeftConfigs.parse("{" + jsonBody + "}", "adapter_config.json");
    }

    static String error(String jsonBody) {
        return assertThrows(PeftConfigException.class, () -> parse(jsonBody)).getMessage();
    }

    static final String ADALORA = "\"peft_type\": \"ADALORA\", \"total_step\": 100, ";

    // --- peft_type, task_type, document shape

    @Test
    void rejectsPromptLearningPeftTypeAsNotInjectable() {
        for (String type : List.of("PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "MULTITASK_PROMPT_TUNING", "CPT")) {
            String msg = error("\"peft_type\": \"" + type + "\", \"num_virtual_tokens\": 20");
            assertTrue(msg.startsWith("adapter_config.json: \"peft_type\" \"" + type + "\" is a prompt-learning"), msg);
            assertTrue(msg.contains("cannot be injected into modules"), msg);
            assertTrue(msg.endsWith("peft4j supports LORA, IA3, ADALORA"), msg);
        }
    }

    @Test
    void rejectsUnknownPeftTypeListingTheSupportedOnes() {
        assertEquals("adapter_config.json: \"peft_type\" is not supported; peft4j supports LORA, IA3, ADALORA,"
                + " got \"LOHA\"", error("\"peft_type\": \"LOHA\""));
    }

    @Test
    void rejectsMissingPeftType() {
        assertEquals("adapter_config.json: missing the required key \"peft_type\" (one of LORA, IA3, ADALORA)",
                error("\"r\": 8"));
    }

    @Test
    void rejectsNonStringPeftType() {
        assertEquals("adapter_config.json: \"peft_type\" must be a string, one of LORA, IA3, ADALORA, got 1",
                error("\"peft_type\": 1"));
    }

    @Test
    void rejectsInvalidTaskTypeListingValidOnes() {
        assertEquals("adapter_config.json: \"task_type\" must be null or one of SEQ_CLS, SEQ_2_SEQ_LM, CAUSAL_LM,"
                + " TOKEN_CLS, QUESTION_ANS, FEATURE_EXTRACTION, got \"CAUSAL\"",
                error("\"peft_type\": \"LORA\", \"task_type\": \"CAUSAL\""));
    }

    @Test
    void rejectsTextThatIsNotAJsonObject() {
        assertEquals("x.json: must hold a JSON object, got array",
                assertThrows(PeftConfigException.class, () -> PeftConfigs.parse("[1]", "x.json")).getMessage());
        String msg = assertThrows(PeftConfigException.class, () -> PeftConfigs.parse("{\"r\": ", "x.json"))
                .getMessage();
        assertTrue(msg.startsWith("x.json: not valid JSON: "), msg);
        assertThrows(PeftConfigException.class, () -> PeftConfigs.parse("{} {}", "x.json"));
    }

    @Test
    void rejectsNumbersBeyondDoubleRange() {
        assertEquals("x.json: a number is too large for a double (Python reads it as inf)",
                assertThrows(PeftConfigException.class, () -> PeftConfigs.parse(
                        "{\"peft_type\": \"LORA\", \"lora_alpha\": 1e999}", "x.json")).getMessage());
    }

    @Test
    void dropsRuntimeConfigAsPeftDoes() {
        PeftConfig c = parse("\"peft_type\": \"LORA\", \"runtime_config\": {\"ephemeral_gpu_offload\": false}");
        assertFalse(c.toJsonObject().containsKey("runtime_config"));
        assertEquals(Map.of(), c.unknownKeys());
    }

    @Test
    void toleratesAndKeepsUnknownKeys() {
        PeftConfig c = parse("\"peft_type\": \"IA3\", \"some_future_key\": null, \"other\": [1]");
        assertInstanceOf(IA3Config.class, c);
        assertEquals(List.of("some_future_key", "other"), List.copyOf(c.unknownKeys().keySet()));
        assertTrue(PeftConfigs.toJson(c).contains("\"some_future_key\": null"));
    }

    @Test
    void rejectsWrongTypesNamingKeyAndValue() {
        assertEquals("adapter_config.json: \"use_rslora\" must be true or false, got \"true\"",
                error("\"peft_type\": \"LORA\", \"use_rslora\": \"true\""));
        assertEquals("adapter_config.json: \"r\" must be an integer, got 8.0",
                error("\"peft_type\": \"LORA\", \"r\": 8.0"));
        assertEquals("adapter_config.json: \"target_modules\" must be a list of module names, a regular expression"
                + " string or null, got 3", error("\"peft_type\": \"LORA\", \"target_modules\": 3"));
        assertEquals("adapter_config.json: \"target_modules\" must be a list of strings, got [\"q\",1]",
                error("\"peft_type\": \"LORA\", \"target_modules\": [\"q\", 1]"));
        assertEquals("adapter_config.json: \"lora_alpha\" must be a number, got \"16\"",
                error("\"peft_type\": \"LORA\", \"lora_alpha\": \"16\""));
    }

    // --- LoRA (§3.4, §3.5)

    @Test
    void rejectsNonPositiveRank() {
        assertEquals("adapter_config.json: \"r\" must be a positive integer, got -1",
                error("\"peft_type\": \"LORA\", \"r\": -1"));
    }

    @Test
    void rejectsLayersToTransformWithRegexTargetModules() {
        assertEquals("adapter_config.json: \"layers_to_transform\" cannot be used when \"target_modules\" is a"
                + " regular expression string (\".*q_proj\"), got [0]", error("\"peft_type\": \"LORA\","
                + " \"target_modules\": \".*q_proj\", \"layers_to_transform\": [0]"));
    }

    @Test
    void rejectsLayersPatternWithRegexTargetModules() {
        String msg = error("\"peft_type\": \"LORA\", \"target_modules\": \".*q_proj\", \"layers_pattern\": \"layers\"");
        assertTrue(msg.startsWith("adapter_config.json: \"layers_pattern\" cannot be used when \"target_modules\""),
                msg);
    }

    @Test
    void rejectsLayersPatternWithoutLayersToTransform() {
        assertEquals("adapter_config.json: \"layers_pattern\" needs \"layers_to_transform\" too (which is null),"
                + " got \"layers\"", error("\"peft_type\": \"LORA\", \"layers_pattern\": \"layers\""));
    }

    @Test
    void treatsLayerIndexZeroAsUnsetWithLayersPatternAsPeftsTruthinessCheckDoes() {
        assertTrue(error("\"peft_type\": \"LORA\", \"layers_pattern\": \"layers\", \"layers_to_transform\": 0")
                .contains("needs \"layers_to_transform\" too (which is 0)"));
        LoraConfig ok = (LoraConfig) parse("\"peft_type\": \"LORA\", \"layers_pattern\": \"layers\","
                + " \"layers_to_transform\": [0]");
        assertTrue(ok.layersToTransform().includes(0));
        assertEquals(LayersPattern.of(""), ((LoraConfig) parse("\"peft_type\": \"LORA\", \"layers_pattern\": \"\""))
                .layersPattern(), "an empty pattern needs no layers_to_transform");
    }

    @Test
    void rejectsDoraWithMegatronConfig() {
        String msg = error("\"peft_type\": \"LORA\", \"use_dora\": true, \"megatron_config\": {\"tp\": 2}");
        assertTrue(msg.startsWith("adapter_config.json: \"use_dora\": true cannot be combined with"
                + " \"megatron_config\""), msg);
        assertTrue(((LoraConfig) parse("\"peft_type\": \"LORA\", \"use_dora\": true")).useDora());
    }

    @Test
    void rejectsLoftqInitWithoutLoftqConfig() {
        assertEquals("adapter_config.json: \"loftq_config\" must be given when \"init_lora_weights\" is \"loftq\","
                + " got {}", error("\"peft_type\": \"LORA\", \"init_lora_weights\": \"loftq\", \"loftq_config\": {}"));
        LoraConfig ok = (LoraConfig) parse("\"peft_type\": \"LORA\", \"init_lora_weights\": \"loftq\","
                + " \"loftq_config\": {\"loftq_bits\": 4}");
        assertEquals(Map.of("loftq_bits", 4L), ok.loftqConfig());
    }

    @Test
    void resetsLoftqConfigWhenInitIsNotLoftqAsPeftDoes() {
        LoraConfig c = (LoraConfig) parse("\"peft_type\": \"LORA\", \"loftq_config\": {\"loftq_bits\": 4}");
        assertEquals(Map.of(), c.loftqConfig());
        assertTrue(PeftConfigs.toJson(c).contains("\"loftq_config\": {}"));
    }

    @Test
    void rejectsLoraBiasWithNonBooleanInit() {
        assertEquals("adapter_config.json: \"lora_bias\": true needs \"init_lora_weights\" true or false, got"
                + " \"pissa\"", error("\"peft_type\": \"LORA\", \"lora_bias\": true, \"init_lora_weights\": \"pissa\""));
    }

    @Test
    void rejectsLoraBiasWithDora() {
        assertEquals("adapter_config.json: \"lora_bias\": true cannot be combined with \"use_dora\": true",
                error("\"peft_type\": \"LORA\", \"lora_bias\": true, \"use_dora\": true"));
    }

    @Test
    void rejectsUnknownBias() {
        assertEquals("adapter_config.json: \"bias\" must be one of \"none\", \"all\", \"lora_only\", got \"some\"",
                error("\"peft_type\": \"LORA\", \"bias\": \"some\""));
        assertEquals(Bias.LORA_ONLY, ((LoraConfig) parse("\"peft_type\": \"LORA\", \"bias\": \"lora_only\"")).bias());
    }

    @Test
    void rejectsDropoutOutsideZeroToOne() {
        assertEquals("adapter_config.json: \"lora_dropout\" must be a probability between 0 and 1, got 1.5",
                error("\"peft_type\": \"LORA\", \"lora_dropout\": 1.5"));
        assertEquals(0.0, ((LoraConfig) parse("\"peft_type\": \"LORA\", \"lora_dropout\": 0")).loraDropout());
    }

    @Test
    void rejectsTargetParametersGivenAsString() {
        assertEquals("adapter_config.json: \"target_parameters\" must be a list of parameter names, not a string,"
                + " got \"experts.w1\"", error("\"peft_type\": \"LORA\", \"target_parameters\": \"experts.w1\""));
    }

    @Test
    void rejectsMalformedLayerReplication() {
        assertTrue(error("\"peft_type\": \"LORA\", \"layer_replication\": [[0, 4, 8]]")
                .contains("\"layer_replication\" must be a list of [start, end] layer index pairs"));
        assertEquals(List.of(new LayerRange(0, 4), new LayerRange(2, 6)), ((LoraConfig) parse(
                "\"peft_type\": \"LORA\", \"layer_replication\": [[0, 4], [2, 6]]")).layerReplication());
    }

    // --- IA3 (§3.6)

    @Test
    void rejectsIa3FeedforwardModulesNotSubsetOfTargets() {
        assertEquals("adapter_config.json: \"feedforward_modules\" must be a subset of \"target_modules\""
                + " [\"k\",\"v\"], got [\"wo\"]",
                error("\"peft_type\": \"IA3\", \"target_modules\": [\"k\", \"v\"], \"feedforward_modules\": [\"wo\"]"));
    }

    @Test
    void acceptsIa3RegexFeedforwardWithListTargets() {
        IA3Config c = (IA3Config) parse("\"peft_type\": \"IA3\", \"target_modules\": [\"k\", \"wo\"],"
                + " \"feedforward_modules\": \".*wo\"");
        assertEquals(ModuleSelector.regex(".*wo"), c.feedforwardModules());
    }

    // --- AdaLoRA (§3.7)

    @Test
    void rejectsAdaLoraWithoutTotalStepAsOldFilesFailInPeft015() {
        assertEquals("adapter_config.json: \"total_step\" must be a positive integer (AdaLoRA's schedule needs it"
                + " since PEFT 0.15), got null", error("\"peft_type\": \"ADALORA\", \"total_step\": null"));
        assertTrue(error("\"peft_type\": \"ADALORA\", \"total_step\": 0").endsWith("got 0"));
        assertTrue(error("\"peft_type\": \"ADALORA\"").endsWith("\"total_step\" must be a positive integer (AdaLoRA's"
                + " schedule needs it since PEFT 0.15), but the key is missing"));
    }

    @Test
    void rejectsAdaLoraWithDora() {
        assertEquals("adapter_config.json: \"use_dora\" must be false: AdaLoRA does not support DoRA, got true",
                error(ADALORA + "\"use_dora\": true"));
    }

    @Test
    void rejectsAdaLoraWithLoftq() {
        assertTrue(error(ADALORA + "\"init_lora_weights\": \"loftq\", \"loftq_config\": {\"loftq_bits\": 4}")
                .startsWith("adapter_config.json: \"loftq_config\" must be empty: AdaLoRA does not support LoftQ"));
    }

    @Test
    void adaLoraRunsLorasPostInitFirstSoAStrayLoftqConfigIsResetNotRejected() {
        AdaLoraConfig c = (AdaLoraConfig) parse(ADALORA + "\"loftq_config\": {\"loftq_bits\": 4}");
        assertEquals(Map.of(), c.loftqConfig());
        assertTrue(error(ADALORA + "\"target_modules\": \"q\", \"layers_pattern\": \"layers\"")
                .contains("\"layers_pattern\" cannot be used when \"target_modules\" is a regular expression"));
        assertTrue(error(ADALORA + "\"lora_bias\": true, \"init_lora_weights\": \"gaussian\"")
                .contains("\"lora_bias\": true needs \"init_lora_weights\" true or false"));
    }

    /** PEFT's tests/test_config.py timing vectors (total_step, tinit, tfinal). */
    @ParameterizedTest
    @CsvSource({"100, 0, 0", "100, 10, 10", "100, 79, 20", "100, 80, 19"})
    void acceptsAdaLoraSchedulesPeftAccepts(int totalStep, int tinit, int tfinal) {
        AdaLoraConfig c = AdaLoraConfig.builder().totalStep(totalStep).tinit(tinit).tfinal(tfinal).build();
        assertEquals(tinit, c.tinit());
    }

    @ParameterizedTest
    @CsvSource({"100, 20, 80", "100, 80, 20", "10, 20, 0", "10, 0, 10", "10, 10, 0", "10, 20, 20", "10, 0, 20"})
    void rejectsAdaLoraSchedulesPeftRejects(int totalStep, int tinit, int tfinal) {
        PeftConfigException e = assertThrows(PeftConfigException.class,
                () -> AdaLoraConfig.builder().totalStep(totalStep).tinit(tinit).tfinal(tfinal).build());
        assertTrue(e.getMessage().startsWith("AdaLoraConfig: the schedule leaves no budgeting phase"), e.getMessage());
    }

    @Test
    void rejectsNegativeOrthRegWeightButAcceptsZero() {
        assertEquals("adapter_config.json: \"orth_reg_weight\" must be greater than or equal to 0, got -0.1",
                error(ADALORA + "\"orth_reg_weight\": -0.1"));
        assertEquals(0.0, ((AdaLoraConfig) parse(ADALORA + "\"orth_reg_weight\": 0")).orthRegWeight());
    }

    @Test
    void rejectsScheduleWithoutBudgetingPhase() {
        assertEquals("adapter_config.json: the schedule leaves no budgeting phase: \"tinit\" (60) must be less than"
                + " \"total_step\" - \"tfinal\" (100 - 40)", error(ADALORA + "\"tinit\": 60, \"tfinal\": 40"));
        assertEquals(59, ((AdaLoraConfig) parse(ADALORA + "\"tinit\": 59, \"tfinal\": 40")).tinit());
    }

    @Test
    void rejectsBetasOutsideOpenUnitInterval() {
        assertEquals("adapter_config.json: \"beta1\" must be between 0 and 1 (exclusive), got 1.0",
                error(ADALORA + "\"beta1\": 1.0"));
        assertEquals("adapter_config.json: \"beta2\" must be between 0 and 1 (exclusive), got 0",
                error(ADALORA + "\"beta2\": 0"));
    }

    @Test
    void rejectsAdaLoraLayersToTransformWithRegexTargets() {
        assertTrue(error(ADALORA + "\"target_modules\": \"q\", \"layers_to_transform\": 1")
                .contains("\"layers_to_transform\" cannot be used when \"target_modules\" is a regular expression"));
    }

    @Test
    void rejectsAdaLoraRankPatternThatIsNotBooleanMasks() {
        assertEquals("adapter_config.json: rank_pattern: value of \"q.lora_E\" must be a list of booleans, got 4",
                error(ADALORA + "\"rank_pattern\": {\"q.lora_E\": 4}"));
    }

    @Test
    void adaLoraIgnoresLoraRankAndCarriesEveryLoraKey() {
        AdaLoraConfig c = (AdaLoraConfig) parse(ADALORA + "\"r\": 0, \"lora_alpha\": 32, \"init_r\": 6,"
                + " \"lora_dropout\": 0.1, \"target_modules\": [\"q\"]");
        assertEquals(6, c.initR());
        assertEquals(32.0, c.loraAlpha());
        assertEquals(0.1, c.loraDropout());
        assertEquals(100, c.totalStep());
        assertEquals(null, c.rankPattern());
        assertEquals(c.loraFields(), ((AdaLoraConfig) parse(ADALORA + "\"r\": 0, \"lora_alpha\": 32, \"init_r\": 6,"
                + " \"lora_dropout\": 0.1, \"target_modules\": [\"q\"]")).loraFields());
    }
}
